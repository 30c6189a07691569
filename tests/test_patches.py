"""Per-patch scaling and the brain mask (the parts of patch preparation that exist so far)."""

import numpy as np

from tofmra_utils.patches import compute_brain_mask, normalize_patch


def test_normalize_patch_scales_each_patch_on_its_own():
    x = np.stack([np.arange(16.0).reshape(4, 4), 100 + 3 * np.arange(16.0).reshape(4, 4)])
    y = normalize_patch(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    for p in y:
        assert p.min() == -1.0 and p.max() == 1.0
    np.testing.assert_allclose(y[0], y[1], atol=1e-6)  # same pattern, different range


def test_normalize_patch_constant_patch_has_no_nan():
    y = normalize_patch(np.full((2, 5, 5), 7.0))
    assert np.isfinite(y).all() and (y == -1.0).all()


def test_brain_mask_finds_the_ellipsoid_and_fills_holes():
    g = np.mgrid[:40, :40, :20].astype(np.float32)
    inside = ((g[0] - 20) / 15) ** 2 + ((g[1] - 20) / 12) ** 2 + ((g[2] - 10) / 8) ** 2 <= 1
    image = np.where(inside, 1.0, 0.0) + 0.01 * np.random.default_rng(0).random((40, 40, 20))
    image[20, 20, 10] = 0.0  # a dark voxel inside (CSF-like) must stay in the mask
    image[2, 2, 2] = 1.0     # an isolated bright speck outside must not
    mask = compute_brain_mask(image)
    assert mask.dtype == np.uint8 and mask[20, 20, 10] == 1 and mask[2, 2, 2] == 0
    agreement = (mask.astype(bool) == inside).mean()
    assert agreement > 0.98
    assert not compute_brain_mask(np.zeros((5, 5, 5))).any()
