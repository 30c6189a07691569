"""Whole-volume inference: tiling, sliding window, NIfTI geometry, evaluation, the CLI."""

from __future__ import annotations

from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from builders import VolumesDataset
from tofmra_utils.cli import main
from tofmra_utils.io import DataError, load_volume
from tofmra_utils.metrics import evaluate_masks
from tofmra_utils.conventions import normalize_patch
from tofmra_utils.patchset import PatchSet
from tofmra_utils.profiles import UnetConfig
from tofmra_utils.unet.infer import _gaussian_weight, evaluate_subjects, predict_volume, segment_file, tile_plan
from tofmra_utils.unet.train import load_unet, predict_patches, train_unet

PATCH = 16




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny U-net (16 px patches, 2 poolings) trained a few steps on bright lines."""
    rng = np.random.default_rng(0)
    n = 32
    label = np.zeros((n, PATCH, PATCH), np.uint8)
    for i in range(n):
        label[i, :, rng.integers(2, PATCH - 2) + np.arange(-1, 1)] = 1
    image = rng.normal(0, 0.3, label.shape) + 2.0 * label
    image = 2 * (image - image.min(axis=(1, 2), keepdims=True)) / np.ptp(image, axis=(1, 2), keepdims=True) - 1
    train = PatchSet(image=image, label=label, subject=np.full(n, "s"), kind=np.zeros(n), centre=np.zeros((n, 3)))
    cfg = UnetConfig(base_width=2, depth=2, dropout=0.0, batch_size=16, epochs=1, lr=1e-2)
    out = tmp_path_factory.mktemp("unet")
    with torch.random.fork_rng():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        result = train_unet(train, None, cfg, out, seed=0, max_steps=6, progress=False)
        torch.set_num_threads(before)
    model, info = load_unet(result.checkpoint, device="cpu")
    return SimpleNamespace(path=result.checkpoint, model=model, info=info)


def volume(shape, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Image with bright lines and a brain mask with a margin (so some voxels lie outside)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 10, shape).astype(np.float32)
    image[:, shape[1] // 2, :] += 80
    mask = np.zeros(shape, np.uint8)
    mask[1:-1, 2:-1, :] = 1
    return image, mask


# ----------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("mode", ["tiles", "sliding"])
@pytest.mark.parametrize("shape", [(37, 29, 5), (9, 11, 3), (50, 33, 2)])
def test_any_volume_size_gives_a_probability_volume(trained, mode, shape):
    image, mask = volume(shape)
    prob = predict_volume(trained.model, trained.info, image, mask, PATCH, mode=mode, batch_size=7)
    assert prob.shape == shape and prob.dtype == np.float32
    assert np.all(prob[mask == 0] == 0.0)  # zero outside the brain
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    assert prob[mask == 1].max() > 0.0  # every brain voxel went through the network (sigmoid > 0)
    assert np.all(prob[mask == 1] > 0.0)


def test_batch_size_does_not_change_the_result(trained):
    image, mask = volume((37, 29, 4))
    a = predict_volume(trained.model, trained.info, image, mask, PATCH, batch_size=1)
    b = predict_volume(trained.model, trained.info, image, mask, PATCH, batch_size=500)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_tile_is_normalized_like_a_training_patch(trained):
    # One slice exactly one tile large: the volume prediction must equal the patch prediction of
    # the min-max scaled slice (same per-patch scaling, same stored z-score statistics).
    rng = np.random.default_rng(3)
    image = rng.normal(500, 50, (PATCH, PATCH, 2)).astype(np.float32)
    prob = predict_volume(trained.model, trained.info, image, None, PATCH)
    patches = normalize_patch(np.moveaxis(image, 2, 0))
    expected = predict_patches(trained.model, patches, trained.info["norm_mean"], trained.info["norm_std"])
    np.testing.assert_allclose(np.moveaxis(prob, 2, 0), expected, atol=1e-5)
    # Sliding over a single tile is the same tile (weights cancel out).
    sliding = predict_volume(trained.model, trained.info, image, None, PATCH, mode="sliding")
    np.testing.assert_allclose(sliding, prob, atol=1e-5)


def test_tile_plan_covers_the_brain_box():
    mask = np.zeros((70, 45, 3), bool)
    mask[5:60, 10:40, 1] = True
    for mode in ("tiles", "sliding"):
        ((bx, ax), (by, ay)), xs, ys, zs = tile_plan(mask, PATCH, mode, overlap=0.5)
        assert zs == [1]
        covered = np.zeros((70 + bx + ax, 45 + by + ay), bool)
        for x in xs:
            for y in ys:
                covered[x : x + PATCH, y : y + PATCH] = True
        assert covered[bx:, by:][:70, :45][mask[..., 1]].all()
        assert max(xs) + PATCH <= 70 + bx + ax and max(ys) + PATCH <= 45 + by + ay
    # Tiles do not overlap; sliding tiles do, by about half a tile.
    _, xs, _, _ = tile_plan(mask, PATCH, "tiles")
    assert np.all(np.diff(xs) == PATCH) and len(xs) == 4  # 55 px of brain -> 4 tiles
    _, xs, _, _ = tile_plan(mask, PATCH, "sliding", overlap=0.5)
    assert np.all(np.diff(xs) <= PATCH // 2 + 1) and xs[0] == 5 and xs[-1] + PATCH == 60


def test_tile_plan_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown inference mode"):
        tile_plan(np.ones((4, 4, 1)), PATCH, "cubes")
    with pytest.raises(ValueError, match="overlap"):
        tile_plan(np.ones((4, 4, 1)), PATCH, "sliding", overlap=1.0)


def test_gaussian_weight_peaks_in_the_centre():
    w = _gaussian_weight(PATCH)
    assert w.shape == (PATCH, PATCH) and w.min() > 0 and w.max() == 1.0
    assert w[PATCH // 2, PATCH // 2] > w[0, 0]


def test_empty_mask_gives_zeros(trained):
    image, _ = volume((20, 20, 2))
    prob = predict_volume(trained.model, trained.info, image, np.zeros(image.shape, np.uint8), PATCH)
    assert prob.shape == image.shape and not prob.any()


def test_bad_arguments(trained):
    image, mask = volume((20, 20, 2))
    with pytest.raises(ValueError, match="multiple of"):
        predict_volume(trained.model, trained.info, image, mask, 18)
    with pytest.raises(ValueError, match="mask shape"):
        predict_volume(trained.model, trained.info, image, mask[:-1], PATCH)
    with pytest.raises(ValueError, match=r"\(X, Y, Z\)"):
        predict_volume(trained.model, trained.info, image[..., 0], None, PATCH)


# ----------------------------------------------------------------------------- files
AFFINE = np.array([[0.0, -0.5, 0.0, 20.0], [0.6, 0.0, 0.0, -7.5], [0.0, 0.0, 0.8, 3.0], [0, 0, 0, 1]])


def write_nifti(path, data, affine=AFFINE, scale=None):
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"tof test"
    if scale is not None:
        img.header.set_slope_inter(*scale)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("mode", ["tiles", "sliding"])
def test_segment_file_keeps_the_geometry(trained, tmp_path, mode):
    image, mask = volume((37, 29, 5))
    img_path = write_nifti(tmp_path / "img.nii.gz", image.astype(np.int16), scale=(2.0, 1.0))
    mask_path = write_nifti(tmp_path / "mask.nii.gz", mask)
    out = segment_file(trained.path, img_path, tmp_path / "seg.nii.gz", mask_path=mask_path, mode=mode)
    seg = nib.load(str(out))
    assert seg.shape == (37, 29, 5)
    np.testing.assert_allclose(seg.affine, AFFINE)
    np.testing.assert_allclose(seg.header.get_zooms(), (0.6, 0.5, 0.8), rtol=1e-6)
    assert seg.header["descrip"].tobytes().startswith(b"tof test")
    data = np.asarray(seg.dataobj)
    assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
    assert not data[mask == 0].any()
    # The written mask is exactly the thresholded probability of the loaded image.
    vol = load_volume(img_path)
    prob = predict_volume(trained.model, trained.info, vol.data, mask, PATCH, mode=mode)
    np.testing.assert_array_equal(data, (prob >= 0.5).astype(np.uint8))


def test_segment_file_probability_and_computed_mask(trained, tmp_path):
    inner, _ = volume((28, 26, 4))
    image = np.zeros((40, 38, 4), np.float32)  # a 'head' on a dark background for the brain-mask heuristic
    image[6:-6, 6:-6] = inner
    img_path = write_nifti(tmp_path / "img.nii", image)
    out = segment_file(trained.path, img_path, tmp_path / "prob.nii", save_probability=True)
    prob = np.asarray(nib.load(str(out)).dataobj)
    assert prob.dtype == np.float32 and prob.min() >= 0 and prob.max() <= 1 and prob.any()
    np.testing.assert_allclose(nib.load(str(out)).affine, AFFINE)


def test_segment_file_rejects_a_mask_of_other_geometry(trained, tmp_path):
    image, mask = volume((20, 18, 3))
    img_path = write_nifti(tmp_path / "img.nii.gz", image)
    bad_mask = write_nifti(tmp_path / "mask.nii.gz", mask[:, :-1])
    with pytest.raises(DataError, match="mask.nii.gz"):
        segment_file(trained.path, img_path, tmp_path / "seg.nii.gz", mask_path=bad_mask)
    assert not (tmp_path / "seg.nii.gz").exists()


def test_cli_segment(trained, tmp_path, capsys):
    image, mask = volume((24, 20, 3))
    img_path = write_nifti(tmp_path / "img.nii.gz", image)
    mask_path = write_nifti(tmp_path / "mask.nii.gz", mask)
    out = tmp_path / "seg.nii.gz"
    rc = main(["segment", "--model", str(trained.path), "--image", str(img_path), "--mask", str(mask_path),
               "--out", str(out), "--mode", "sliding", "--overlap", "0.25", "--batch-size", "4"])
    assert rc == 0 and out.exists() and str(out) in capsys.readouterr().out
    np.testing.assert_allclose(nib.load(str(out)).affine, AFFINE)
    whole = tmp_path / "seg_slices.nii.gz"  # whole slices with the study's volume scaling
    rc = main(["segment", "--model", str(trained.path), "--image", str(img_path), "--mask", str(mask_path),
               "--out", str(whole), "--mode", "slice", "--scaling", "volume", "--probability"])
    assert rc == 0 and whole.exists()
    prob = np.asarray(nib.load(str(whole)).dataobj)
    assert prob.shape == image.shape and prob.max() <= 1.0 and (prob[mask == 0] == 0).all() and prob[mask == 1].min() > 0
    rc = main(["segment", "--model", str(trained.path), "--image", str(tmp_path / "missing.nii.gz"),
               "--out", str(tmp_path / "x.nii.gz")])
    assert rc == 2 and "missing.nii.gz" in capsys.readouterr().err


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_subjects(trained):
    vols = {}
    for i, shape in enumerate([(30, 26, 4), (21, 33, 3)]):
        image, mask = volume(shape, seed=i)
        label = np.zeros(shape, np.uint8)
        label[2:-2, shape[1] // 2, :] = 1
        vols[f"sub-{i}"] = (image, label, mask)
    ds = VolumesDataset(vols, split="test")
    table = evaluate_subjects(trained.model, trained.info, ds, split="test")
    assert isinstance(table, pd.DataFrame) and list(table.columns) == [
        "subject", "dsc", "hd95_mm", "hd95_study", "hd95_tool", "fp_brain_edge", "fp_interior"]
    assert list(table["subject"]) == ["sub-0", "sub-1"]
    image, label, mask = vols["sub-1"]
    prob = predict_volume(trained.model, trained.info, image, mask, PATCH)
    expected = evaluate_masks(prob >= 0.5, label, (0.5, 0.5, 0.8))
    row = table.iloc[1]
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, nan_ok=True)
    from tofmra_utils.metrics import hd_quantile_tool_emulation

    tool = hd_quantile_tool_emulation(prob >= 0.5, label > 0, seed=0)
    assert row["hd95_tool"] == pytest.approx(tool, nan_ok=True)
    assert np.isnan(tool) or tool >= row["hd95_study"] - 1e-9, "the tool's search never goes below the exact value"
    false_pos = (prob >= 0.5) & (label == 0)
    assert row["fp_brain_edge"] + row["fp_interior"] == np.count_nonzero(false_pos)
    from tofmra_utils.unet.infer import brain_edge

    assert row["fp_brain_edge"] == np.count_nonzero(false_pos & brain_edge(mask > 0))
    with pytest.raises(DataError, match="no subjects"):
        evaluate_subjects(trained.model, trained.info, ds, split="val")
