"""Metrics: DSC and both 95HD variants against medpy, empty masks, crop invariance, CLI."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from medpy.metric.binary import dc as medpy_dc  # GPL: tests only, never from tofmra_utils
from medpy.metric.binary import hd95 as medpy_hd95
from scipy import ndimage
from scipy.spatial.distance import directed_hausdorff

import tofmra_utils
from tofmra_utils.cli import main as cli_main
from tofmra_utils.io import DataError, save_volume
from tofmra_utils.metrics import (
    METRIC_KEYS,
    crop_to_union,
    dice,
    evaluate_files,
    evaluate_masks,
    hd95_mm,
    hd95_study,
    hd_quantile_tool_emulation,
    hd_quantile_voxels,
    surface_distances,
)


def blobs(rng: np.random.Generator, shape: tuple[int, ...], level: float = 0.6, sigma: float = 1.5) -> np.ndarray:
    """Seeded random blobs: smoothed noise above a level."""
    return ndimage.gaussian_filter(rng.random(shape), sigma) > np.quantile(ndimage.gaussian_filter(rng.random(shape), sigma), level)


def random_pair(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Random shape, random overlapping/non-overlapping blobs, random anisotropic spacing."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(8, 30, 3))
    truth = blobs(rng, shape, level=rng.uniform(0.6, 0.95))
    # prediction: a shifted, partly eroded copy of the truth plus its own blobs
    pred = np.roll(truth, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 3)))
    pred = (pred & (rng.random(shape) > 0.2)) | blobs(rng, shape, level=0.97)
    if not pred.any():
        pred[tuple(s // 2 for s in shape)] = True
    if not truth.any():
        truth[0, 0, 0] = True
    spacing = tuple(float(v) for v in rng.uniform(0.3, 2.5, 3))
    return pred, truth, spacing


# ----------------------------------------------------------------------------- against medpy
@pytest.mark.parametrize("seed", range(12))
def test_dice_and_hd95_match_medpy(seed):
    pred, truth, spacing = random_pair(seed)
    assert dice(pred, truth) == pytest.approx(medpy_dc(pred, truth), abs=1e-12)
    assert hd95_mm(pred, truth, spacing) == pytest.approx(medpy_hd95(pred, truth, voxelspacing=spacing), abs=1e-6)
    # symmetric, and spacing matters (anisotropic)
    assert hd95_mm(truth, pred, spacing) == pytest.approx(hd95_mm(pred, truth, spacing), abs=1e-9)


def test_hd95_matches_medpy_on_masks_touching_the_array_edge():
    rng = np.random.default_rng(7)
    truth = blobs(rng, (12, 15, 9), level=0.3)  # large blobs reach every face
    pred = blobs(rng, (12, 15, 9), level=0.4)
    assert truth[0].any() and truth[-1].any()
    assert hd95_mm(pred, truth, (0.5, 0.9, 2.0)) == pytest.approx(medpy_hd95(pred, truth, (0.5, 0.9, 2.0)), abs=1e-6)


def test_hd95_2d_and_scalar_spacing_match_medpy():
    rng = np.random.default_rng(3)
    a, b = blobs(rng, (40, 33), 0.8), blobs(rng, (40, 33), 0.8)
    assert hd95_mm(a, b, 0.7) == pytest.approx(medpy_hd95(a, b, 0.7), abs=1e-6)


# ----------------------------------------------------------------------------- crop invariance
@pytest.mark.parametrize("seed", range(4))
def test_crop_does_not_change_any_metric(seed):
    pred, truth, spacing = random_pair(100 + seed)
    big_p = np.zeros((60, 50, 40), bool)
    big_t = np.zeros_like(big_p)
    sl = tuple(slice(5, 5 + s) for s in pred.shape)
    big_p[sl], big_t[sl] = pred, truth
    cp, ct = crop_to_union(big_p, big_t)
    assert cp.size < big_p.size and cp.sum() == pred.sum() and ct.sum() == truth.sum()
    # equal up to float rounding (coordinates differ by the crop offset)
    assert hd95_mm(big_p, big_t, spacing, crop=True) == pytest.approx(hd95_mm(big_p, big_t, spacing, crop=False), abs=1e-9)
    assert hd_quantile_voxels(big_p, big_t, crop=True) == pytest.approx(hd_quantile_voxels(big_p, big_t, crop=False), abs=1e-9)
    d_crop = surface_distances(big_p, big_t, spacing, crop=True)
    d_full = surface_distances(big_p, big_t, spacing, crop=False)
    for a, b in zip(d_crop, d_full):
        np.testing.assert_allclose(np.sort(a), np.sort(b), rtol=0, atol=1e-9)
    assert evaluate_masks(big_p, big_t, spacing) == pytest.approx(evaluate_masks(pred, truth, spacing), abs=1e-9)


def test_evaluate_masks_agrees_with_the_single_metrics():
    pred, truth, spacing = random_pair(42)
    res = evaluate_masks(pred, truth, spacing)
    assert tuple(res) == METRIC_KEYS
    assert res["dsc"] == dice(pred, truth)
    assert res["hd95_mm"] == pytest.approx(hd95_mm(pred, truth, spacing), abs=1e-12)
    assert res["hd95_study"] == pytest.approx(hd95_study(pred, truth), abs=1e-12)


# ----------------------------------------------------------------------------- empty masks
def test_empty_masks_give_documented_values_without_warnings():
    empty = np.zeros((6, 7, 8), bool)
    some = empty.copy()
    some[2:4, 3, 4] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = evaluate_masks(empty, empty, (1.0, 1.0, 2.0))
        one_a = evaluate_masks(empty, some, (1.0, 1.0, 2.0))
        one_b = evaluate_masks(some, empty, (1.0, 1.0, 2.0))
        assert hd_quantile_tool_emulation(empty, some) != hd_quantile_tool_emulation(empty, some)  # NaN
    assert both == {"dsc": 1.0, "hd95_mm": 0.0, "hd95_study": 0.0}
    for res in (one_a, one_b):
        assert res["dsc"] == 0.0 and math.isnan(res["hd95_mm"]) and math.isnan(res["hd95_study"])


def test_identical_masks_are_perfect():
    pred, truth, spacing = random_pair(5)
    assert evaluate_masks(truth, truth, spacing) == {"dsc": 1.0, "hd95_mm": 0.0, "hd95_study": 0.0}


def test_non_binary_input_and_shape_mismatch_are_refused():
    with pytest.raises(ValueError, match="binary"):
        dice(np.full((3, 3, 3), 0.7), np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="shape"):
        hd95_mm(np.ones((3, 3, 3)), np.ones((3, 3, 4)), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        hd95_mm(np.ones((3, 3, 3)), np.ones((3, 3, 3)), (1.0, 0.0, 1.0))


# ----------------------------------------------------------------------------- the study variant
def plane_with_outliers(n_out: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Truth: the plane z = 0 (30 x 30 voxels). Prediction: the plane plus one false positive at
    each height z = 1..n_out (at x = y = z), whose nearest truth voxel is exactly z below it."""
    truth = np.zeros((30, 30, 25), bool)
    truth[:, :, 0] = True
    pred = truth.copy()
    for k in range(1, n_out + 1):
        pred[k, k, k] = True
    return pred, truth


def test_hd95_study_known_answer():
    pred, truth = plane_with_outliers(20)
    # mismatch distances are exactly 1, 2, ..., 20 voxels; the tool's quantile takes
    # sorted[int(0.95 * 19)] = sorted[18] = 19 (no interpolation; np.percentile would say 19.05)
    assert hd95_study(pred, truth) == 19.0
    assert hd_quantile_voxels(pred, truth, 1.0) == 20.0
    assert hd_quantile_voxels(pred, truth, 0.5) == 10.0  # sorted[int(9.5)] = sorted[9]
    # voxel units: the study variant ignores spacing; hd95_mm does not
    assert evaluate_masks(pred, truth, (1.0, 1.0, 3.0))["hd95_study"] == 19.0
    # medpy's border-based 95HD counts the whole (correct) plane border, so it is 0 here
    assert hd95_mm(pred, truth, 1.0) == pytest.approx(medpy_hd95(pred, truth), abs=1e-9) == 0.0


def test_hd95_study_single_missed_voxel_and_symmetry():
    truth = np.zeros((10, 10, 10), bool)
    truth[2, 2, 2] = truth[2, 2, 7] = True
    pred = np.zeros_like(truth)
    pred[2, 2, 2] = True  # the voxel at z = 7 is missed; 5 voxels from the nearest prediction
    assert hd95_study(pred, truth) == 5.0  # a single distance -> the maximum
    assert hd95_study(truth, pred) == 5.0


@pytest.mark.parametrize("seed", range(4))
def test_hd_quantile_one_is_the_voxel_set_hausdorff_distance(seed):
    pred, truth, _ = random_pair(200 + seed)
    pts_p, pts_t = np.argwhere(pred).astype(float), np.argwhere(truth).astype(float)
    expected = max(directed_hausdorff(pts_p, pts_t)[0], directed_hausdorff(pts_t, pts_p)[0])
    assert hd_quantile_voxels(pred, truth, 1.0) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_tool_emulation_bounds_and_determinism(seed):
    pred, truth, _ = random_pair(300 + seed)
    exact = hd95_study(pred, truth)
    tool = hd_quantile_tool_emulation(pred, truth, seed=seed)
    # each listed distance of the tool is an over-estimate of the exact one, and never above
    # the Hausdorff distance, so the quantile is bracketed
    assert exact - 1e-9 <= tool <= hd_quantile_voxels(pred, truth, 1.0) + 1e-9
    assert tool == hd_quantile_tool_emulation(pred, truth, seed=seed)
    assert hd_quantile_tool_emulation(pred, truth, 1.0, seed=seed) == pytest.approx(hd_quantile_voxels(pred, truth, 1.0))


def test_tool_emulation_inflates_the_quantile_on_the_plane_case():
    pred, truth = plane_with_outliers(20)
    values = {hd_quantile_tool_emulation(pred, truth, seed=s) for s in range(5)}
    assert min(values) >= 19.0 and max(values) <= 20.0


# ----------------------------------------------------------------------------- files and CLI
def write_pair(tmp_path: Path, pred: np.ndarray, truth: np.ndarray, spacing=(0.5, 0.6, 1.2)) -> tuple[Path, Path]:
    affine = np.diag([*spacing, 1.0])
    return (
        save_volume(tmp_path / "pred.nii.gz", pred.astype(np.uint8), affine),
        save_volume(tmp_path / "truth.nii.gz", truth.astype(np.uint8), affine),
    )


def test_evaluate_files_uses_truth_spacing_and_allows_an_empty_prediction(tmp_path):
    pred, truth, _ = random_pair(9)
    p, t = write_pair(tmp_path, pred, truth)
    res = evaluate_files(p, t)
    assert res["hd95_mm"] == pytest.approx(medpy_hd95(pred, truth, (0.5, 0.6, 1.2)), abs=1e-5)
    assert res["dsc"] == pytest.approx(medpy_dc(pred, truth))
    p0, t0 = write_pair(tmp_path, np.zeros_like(truth), truth)
    res0 = evaluate_files(p0, t0)
    assert res0["dsc"] == 0.0 and math.isnan(res0["hd95_mm"])


def test_evaluate_files_rejects_bad_input(tmp_path):
    pred, truth, _ = random_pair(10)
    p, t = write_pair(tmp_path, pred, truth)
    other = save_volume(tmp_path / "other.nii.gz", pred.astype(np.uint8), np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(DataError, match="other.nii.gz: affine"):
        evaluate_files(other, t)
    prob = save_volume(tmp_path / "prob.nii.gz", pred * 0.5, np.diag([0.5, 0.6, 1.2, 1.0]))
    with pytest.raises(DataError, match="prob.nii.gz: segmentation must be binary"):
        evaluate_files(prob, t)
    with pytest.raises(DataError, match="missing.nii.gz: file not found"):
        evaluate_files(tmp_path / "missing.nii.gz", t)


def test_cli_evaluate_json(tmp_path, capsys):
    pred, truth, _ = random_pair(11)
    p, t = write_pair(tmp_path, pred, truth)
    assert cli_main(["evaluate", "--pred", str(p), "--truth", str(t), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["dsc", "hd95_mm", "hd95_study"]
    assert out["hd95_mm"] == pytest.approx(medpy_hd95(pred, truth, (0.5, 0.6, 1.2)), abs=1e-5)
    # an empty prediction prints strict JSON (null for the undefined distances)
    p0, t0 = write_pair(tmp_path, np.zeros_like(truth), truth)
    assert cli_main(["evaluate", "--pred", str(p0), "--truth", str(t0), "--json"]) == 0
    raw = capsys.readouterr().out
    assert json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}")) == {
        "dsc": 0.0, "hd95_mm": None, "hd95_study": None}
    # bad input: exit status 2, one line naming the file
    bad = save_volume(tmp_path / "bad.nii.gz", pred * 0.5, np.diag([0.5, 0.6, 1.2, 1.0]))
    assert cli_main(["evaluate", "--pred", str(bad), "--truth", str(t)]) == 2
    assert "bad.nii.gz" in capsys.readouterr().err


# ----------------------------------------------------------------------------- licence hygiene
def test_package_never_imports_medpy():
    pkg = Path(tofmra_utils.__file__).parent
    pattern = re.compile(r"^\s*(import\s+medpy|from\s+medpy)", re.MULTILINE)
    offenders = [str(f) for f in pkg.rglob("*.py") if pattern.search(f.read_text())]
    assert offenders == [], f"medpy (GPL) imported by the package: {offenders}"


def test_evaluate_and_report_never_import_torch(tmp_path):
    """Commands that do not train stay light: `tofmra evaluate` and `report` run without torch."""
    import subprocess
    import sys

    pred, truth, _ = random_pair(3)
    p, t = write_pair(tmp_path, pred, truth)
    code = ("import sys\nfrom tofmra_utils.cli import main\n"
            f"rc = main(['evaluate', '--pred', {str(p)!r}, '--truth', {str(t)!r}, '--json'])\n"
            "main(['report', '--run', '/nonexistent'])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "NO-TORCH 0"


@pytest.mark.parametrize("shape", [(7,), (9, 11), (6, 8, 5), (12, 10, 9)])
def test_border_equals_mask_minus_its_face_erosion(shape):
    """The gather-based border is exactly medpy's: the mask minus its 6-connected erosion,
    with the array's outside counted as background (masks touch every edge here)."""
    from tofmra_utils.metrics import _border

    rng = np.random.default_rng(len(shape))
    for density in (0.3, 0.7, 1.0):
        mask = rng.random(shape) < density
        eroded = ndimage.binary_erosion(mask, ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)
        np.testing.assert_array_equal(_border(mask), mask & ~eroded)
        view = mask[::2] if mask.ndim > 1 else mask[1:]  # non-contiguous input
        eroded_view = ndimage.binary_erosion(view, ndimage.generate_binary_structure(view.ndim, 1), border_value=0)
        np.testing.assert_array_equal(_border(view), view & ~eroded_view)


def test_fortran_ordered_masks_give_the_same_metrics():
    """NIfTI data arrive in Fortran order; the metrics transpose them (with the spacing) instead
    of copying, and must give the C-order values (up to the order of a float sum)."""
    pred, truth, spacing = random_pair(3)
    expected = evaluate_masks(pred, truth, spacing)
    got = evaluate_masks(np.asfortranarray(pred), np.asfortranarray(truth), spacing)
    assert got == pytest.approx(expected, rel=1e-12)
    assert hd95_mm(np.asfortranarray(pred), np.asfortranarray(truth), spacing) == pytest.approx(expected["hd95_mm"], rel=1e-12)


def test_the_books_worked_example_is_computed_at_staging(tmp_path):
    """book/metrics.md carries a marker, not numbers; staging puts the computed example there, and
    the example shows what the page says: exact quantile <= tool emulation <= maximum distance."""
    from tofmra_utils.book import METRICS_MARKER, write_metrics_example
    from tofmra_utils.metrics_example import worked_example

    source = Path(__file__).resolve().parents[1] / "book" / "metrics.md"
    assert METRICS_MARKER in source.read_text().splitlines()
    page = tmp_path / "metrics.md"
    page.write_text(source.read_text())
    write_metrics_example(page)
    text = page.read_text()
    assert METRICS_MARKER not in text and "| `hd95_study` (exact mismatch-voxel quantile) |" in text
    ex = worked_example()
    assert ex["hd95_study"] <= min(ex["hd95_tool"]) and max(ex["hd95_tool"]) <= ex["hd_max"]
    page.write_text("no marker\n")
    with pytest.raises(DataError, match="metrics.md: the marker line"):
        write_metrics_example(page)
