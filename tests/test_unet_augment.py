"""The study's U-net augmentation: one affine map per patch, image and label moved together."""

from __future__ import annotations

import torch

from tofmra_utils.unet.augment import AugmentSettings, augment_batch


def _bars(b: int = 16, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    label = torch.zeros(b, 1, size, size)
    label[:, :, 12:20, 6:26] = 1.0
    return label * 2.0 - 0.5, label


def test_image_and_label_get_the_same_map_and_labels_stay_binary():
    image, label = _bars()
    out_image, out_label = augment_batch(image, label, seed=3, step=10)
    assert out_image.shape == image.shape and out_label.shape == label.shape
    assert set(torch.unique(out_label).tolist()) <= {0.0, 1.0}
    # Where the bilinear image is clearly inside or outside the bar, the nearest-neighbour label agrees.
    inside, outside = out_image > 1.4, out_image < -0.4
    assert (out_label[inside] == 1).all() and (out_label[outside] == 0).all()
    assert not torch.equal(out_label, label), "the maps moved the bar"
    assert out_label.sum() > 0.5 * label.sum(), "a rotated bar stays mostly inside the patch"


def test_draws_repeat_per_seed_and_step_and_no_ranges_is_the_identity():
    image, label = _bars()
    a = augment_batch(image, label, seed=1, step=5)
    b = augment_batch(image, label, seed=1, step=5)
    c = augment_batch(image, label, seed=1, step=6)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    still = AugmentSettings(rotation_deg=0.0, shear_deg=0.0, vertical_flip=False)
    same_image, same_label = augment_batch(image, label, seed=1, step=5, settings=still)
    assert torch.allclose(same_image, image, atol=1e-5) and torch.equal(same_label, label)


def test_vertical_flip_alone_mirrors_the_rows():
    image = torch.arange(16.0).view(1, 1, 4, 4).repeat(8, 1, 1, 1)
    flip = AugmentSettings(rotation_deg=0.0, shear_deg=0.0, vertical_flip=True)
    out, _ = augment_batch(image, torch.zeros_like(image), seed=0, step=0, settings=flip)
    for o in out:
        assert torch.allclose(o, image[0], atol=1e-4) or torch.allclose(o, image[0].flip(-2), atol=1e-4)
    assert any(torch.allclose(o, image[0].flip(-2), atol=1e-4) for o in out)
