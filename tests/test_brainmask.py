"""Brain masks of whole heads: the TOF method keeps brain and arteries, drops scalp, skull and background."""

from __future__ import annotations

import numpy as np
import pytest

from tofmra_utils.data.brainmask import BRAIN_MASK_METHODS, brain_mask, otsu_threshold, tof_brain_mask


def synthetic_head(shape=(64, 64, 48), spacing=(2.0, 2.0, 2.0), seed=0):
    """Brain ellipsoid (grey 100) in a dark skull shell (15) in a bright scalp shell (140), noisy background (10).

    An artery (grey 250) runs inside the brain and leaves it downwards through the skull base.
    Returns image, brain (bool), scalp (bool), artery (bool).
    """
    rng = np.random.default_rng(seed)
    c = (np.array(shape) - 1) / 2
    x, y, z = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(float)
    r = np.sqrt(((x - c[0]) / 22) ** 2 + ((y - c[1]) / 26) ** 2 + ((z - c[2]) / 18) ** 2)
    brain, skull, scalp = r <= 1.0, (r > 1.0) & (r <= 1.2), (r > 1.2) & (r <= 1.35)
    image = 10 + 4 * rng.standard_normal(shape)
    image[brain] = 100 + 8 * rng.standard_normal(int(brain.sum()))
    image[skull] = 15 + 4 * rng.standard_normal(int(skull.sum()))
    image[scalp] = 140 + 8 * rng.standard_normal(int(scalp.sum()))
    artery = (np.hypot(x - c[0] - 4, y - c[1]) <= 1.5) & (z <= c[2])
    artery_in = artery & brain
    image[artery] = 250
    return image.astype(np.float32), brain, scalp, artery_in


def test_otsu_splits_two_populations():
    values = np.concatenate([np.full(100, 10.0), np.full(100, 100.0)])
    assert 10 < otsu_threshold(values) < 100


def test_tof_mask_keeps_brain_and_arteries_drops_scalp_and_background():
    image, brain, scalp, artery = synthetic_head()
    mask = tof_brain_mask(image, (2.0, 2.0, 2.0), margin_mm=0) > 0
    assert mask.dtype == bool and mask.shape == image.shape
    dice = 2 * (mask & brain).sum() / (mask.sum() + brain.sum())
    assert dice > 0.95
    assert (mask & scalp).sum() / scalp.sum() < 0.05, "the scalp is outside"
    assert (mask & artery).sum() == artery.sum(), "the intracranial artery stays in"
    # the threshold mask of the older method takes the whole head
    assert (brain_mask(image, method="threshold")[0] > 0)[scalp].mean() > 0.9


def test_tof_mask_of_a_slab_cut_by_the_field_of_view():
    """TOF-MRA slabs cut the brain at the top and bottom: the brain touching the border must survive."""
    image, brain, scalp, _ = synthetic_head(shape=(64, 64, 48))
    slab = slice(18, 30)  # the middle 12 slices: brain cut above and below
    mask = tof_brain_mask(image[:, :, slab], (2.0, 2.0, 2.0), margin_mm=0) > 0
    b = brain[:, :, slab]
    assert 2 * (mask & b).sum() / (mask.sum() + b.sum()) > 0.9
    assert (mask & scalp[:, :, slab]).sum() / scalp[:, :, slab].sum() < 0.1


def test_fine_spacing_is_worked_on_at_about_two_mm():
    image, brain, _, _ = synthetic_head(shape=(64, 64, 48))
    fine = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)  # 1 x 1 x 2 mm voxels
    mask = tof_brain_mask(fine, (1.0, 1.0, 2.0), margin_mm=0) > 0
    assert mask.shape == fine.shape
    coarse = mask[::2, ::2, :]
    assert 2 * (coarse & brain).sum() / (coarse.sum() + brain.sum()) > 0.93


def test_auto_none_and_errors():
    image, brain, _, _ = synthetic_head()
    stripped = np.where(brain, image, 0)
    assert brain_mask(stripped, (2, 2, 2), "auto")[1] == "threshold"
    assert brain_mask(image, (2, 2, 2), "auto")[1] == "tof"
    mask, used = brain_mask(image, method="none")
    assert used == "none" and mask.all()
    assert not tof_brain_mask(np.zeros((8, 8, 8))).any()
    with pytest.raises(ValueError, match="unknown brain-mask method"):
        brain_mask(image, method="bet")
    assert set(BRAIN_MASK_METHODS) == {"auto", "tof", "threshold", "none"}


def test_benchmark_prints_the_table_on_the_real_crop(capsys):
    """benchmarks/bench_brainmask.py runs (here on the committed crop; on the full sample it is the issue's table)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bench_brainmask", root / "benchmarks" / "bench_brainmask.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    crop = root / "tests" / "fixtures" / "real_crop"
    assert bench.main(["--image", str(crop / "images" / "icbm0590.nii.gz"), "--label", str(crop / "labels" / "icbm0590.nii.gz"),
                       "--skull-base", "0"]) == 0
    out = capsys.readouterr().out
    assert "vessels inside %" in out and "tof (ours)" in out and "threshold (before)" in out
