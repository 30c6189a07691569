"""Bad input to data preparation: a clear DataError naming the file and the problem, nothing half-written.

Every case starts from four valid tube subjects (``builders.write_tube_subjects``), breaks
one thing about ``sub-02`` (processed after two valid subjects, so a preparation that wrote as it
went would leave files behind), and checks the message and that the output folder holds no
``dataset.json`` and no patch file afterwards.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tofmra_utils.cli import main
from tofmra_utils.io import DataError, save_volume
from tofmra_utils.data import prepare_dataset
from tofmra_utils.profiles import UnknownProfileError

from builders import data_profile, tube_volumes, write_tube_subjects

BAD = "sub-02"


def _profile():
    return data_profile(n_val=1, n_test=1)  # 4 subjects: 2 train, 1 val, 1 test


def _raw_nifti(path: Path, data: np.ndarray, affine=None) -> None:
    """Write any array (2D, 4D, NaN...) straight through nibabel, bypassing save_volume's checks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))


def _assert_nothing_written(out: Path) -> None:
    assert not (out / "dataset.json").exists()
    assert not list(out.rglob("*.npz")), list(out.rglob("*.npz"))
    assert not list(out.rglob("*.partial*")), "temporary files left behind"


def _prepare(root: Path, out: Path, masks: bool = True):
    return prepare_dataset(root / "images", root / "labels", out, _profile(), masks_dir=root / "masks" if masks else None)


@pytest.fixture()
def inputs(tmp_path):
    return write_tube_subjects(tmp_path / "in", 4)


def _expect(root: Path, out: Path, file: Path | str, problem: str, masks: bool = True) -> DataError:
    with pytest.raises(DataError) as info:
        _prepare(root, out, masks=masks)
    message = str(info.value)
    name = Path(file).name
    assert name in message, (name, message)
    assert problem.lower() in message.lower(), (problem, message)
    _assert_nothing_written(out)
    return info.value


def test_unreadable_nifti(inputs, tmp_path):
    bad = inputs / "images" / f"{BAD}.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file at all" * 10)
    _expect(inputs, tmp_path / "out", bad, "unreadable")


def test_truncated_nifti(inputs, tmp_path):
    bad = inputs / "images" / f"{BAD}.nii.gz"
    raw = gzip.decompress(bad.read_bytes())
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]))  # a valid gzip of half a NIfTI: header fine, data short
    _expect(inputs, tmp_path / "out", bad, "truncated")


def test_truncated_gzip_stream(inputs, tmp_path):
    bad = inputs / "labels" / f"{BAD}.nii.gz"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # an interrupted download
    _expect(inputs, tmp_path / "out", bad, "unreadable or truncated")


def test_2d_volume(inputs, tmp_path):
    bad = inputs / "images" / f"{BAD}.nii.gz"
    _raw_nifti(bad, np.ones((40, 40), np.float32))
    _expect(inputs, tmp_path / "out", bad, "expected a 3D volume, got 2D")


def test_4d_volume(inputs, tmp_path):
    bad = inputs / "images" / f"{BAD}.nii.gz"
    _raw_nifti(bad, np.ones((40, 40, 8, 2), np.float32))
    _expect(inputs, tmp_path / "out", bad, "got 4D")


def test_shape_mismatch(inputs, tmp_path):
    bad = inputs / "labels" / f"{BAD}.nii.gz"
    label = tube_volumes(2)[1][:, :, :6]
    save_volume(bad, label, np.diag([0.5, 0.5, 1.0, 1.0]))
    _expect(inputs, tmp_path / "out", bad, "does not match")


def test_affine_mismatch(inputs, tmp_path):
    bad = inputs / "masks" / f"{BAD}.nii.gz"
    save_volume(bad, tube_volumes(2)[2], np.diag([0.6, 0.5, 1.0, 1.0]))
    _expect(inputs, tmp_path / "out", bad, "affine does not match")


def test_non_binary_label(inputs, tmp_path):
    bad = inputs / "labels" / f"{BAD}.nii.gz"
    label = tube_volumes(2)[1].astype(np.float32) * 2.0  # 0/2 instead of 0/1
    save_volume(bad, label, np.diag([0.5, 0.5, 1.0, 1.0]))
    _expect(inputs, tmp_path / "out", bad, "must be binary")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_voxels(inputs, tmp_path, value):
    bad = inputs / "images" / f"{BAD}.nii.gz"
    image = tube_volumes(2)[0]
    image[10, 10, 3] = value
    _raw_nifti(bad, image, np.diag([0.5, 0.5, 1.0, 1.0]))
    _expect(inputs, tmp_path / "out", bad, "NaN/inf voxels")


def test_empty_brain_mask(inputs, tmp_path):
    bad = inputs / "masks" / f"{BAD}.nii.gz"
    save_volume(bad, np.zeros((40, 40, 8), np.uint8), np.diag([0.5, 0.5, 1.0, 1.0]))
    _expect(inputs, tmp_path / "out", bad, "empty brain mask")


def test_computed_brain_mask_empty(tmp_path):
    root = write_tube_subjects(tmp_path / "in", 4, with_masks=False)
    bad = root / "images" / f"{BAD}.nii.gz"
    save_volume(bad, np.zeros((40, 40, 8), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]))
    _expect(root, tmp_path / "out", bad, "computed brain mask is empty", masks=False)
    assert not list((tmp_path / "out").rglob("*.nii.gz")), "no computed mask of the failed run is kept"


def test_label_without_vessel(inputs, tmp_path):
    bad = inputs / "labels" / f"{BAD}.nii.gz"
    save_volume(bad, np.zeros((40, 40, 8), np.uint8), np.diag([0.5, 0.5, 1.0, 1.0]))
    _expect(inputs, tmp_path / "out", bad, "no vessel voxel")


def test_missing_label(inputs, tmp_path):
    (inputs / "labels" / f"{BAD}.nii.gz").unlink()
    err = _expect(inputs, tmp_path / "out", inputs / "images" / f"{BAD}.nii.gz", "no label for this image")
    assert "labels" in str(err)


def test_missing_mask_when_masks_given(inputs, tmp_path):
    (inputs / "masks" / f"{BAD}.nii.gz").unlink()
    _expect(inputs, tmp_path / "out", inputs / "images" / f"{BAD}.nii.gz", "no brain mask for this image")


def test_missing_file_in_folder_and_empty_folder(tmp_path):
    (tmp_path / "in" / "images").mkdir(parents=True)
    (tmp_path / "in" / "labels").mkdir()
    _expect(tmp_path / "in", tmp_path / "out", tmp_path / "in" / "images", "no NIfTI volumes", masks=False)
    with pytest.raises(DataError, match="folder not found"):
        prepare_dataset(tmp_path / "nowhere", tmp_path / "in" / "labels", tmp_path / "out", _profile())


def test_too_few_subjects(tmp_path):
    root = write_tube_subjects(tmp_path / "in", 2)
    err = _expect(root, tmp_path / "out", root / "images", "too few subjects")
    assert "found 2" in str(err) and "at least 3" in str(err)


def test_site_b_too_few_subjects(tmp_path):
    root = write_tube_subjects(tmp_path / "in", 2)  # site B of the tiny profile: 2 test + at least 1 pool
    with pytest.raises(DataError, match="too few subjects"):
        prepare_dataset(root / "images", root / "labels", tmp_path / "out", _profile(), site="B")
    _assert_nothing_written(tmp_path / "out")


def test_failed_rerun_keeps_nothing_of_its_own(inputs, tmp_path):
    """A good run, then a bad one into the same folder: the bad one adds and changes nothing."""
    out = tmp_path / "out"
    good = _prepare(inputs, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    label = tube_volumes(2)[1].astype(np.float32) * 3.0
    save_volume(inputs / "labels" / f"{BAD}.nii.gz", label, np.diag([0.5, 0.5, 1.0, 1.0]))
    with pytest.raises(DataError, match="binary"):
        _prepare(inputs, out)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert len(good.patches("train")) == 2 * 20


def test_unknown_profile_in_python(inputs, tmp_path):
    with pytest.raises(UnknownProfileError, match="nope"):
        prepare_dataset(inputs / "images", inputs / "labels", tmp_path / "out", "nope")


def test_cli_unknown_profile_exits_2(inputs, tmp_path, capsys):
    rc = main(["prepare", "--images", str(inputs / "images"), "--out", str(tmp_path / "out"), "--profile", "nope"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown profile 'nope'" in err and "smoke" in err
    _assert_nothing_written(tmp_path / "out")


def test_cli_bad_volume_exits_2_with_file_and_problem(inputs, tmp_path, capsys):
    bad = inputs / "images" / f"{BAD}.nii.gz"
    _raw_nifti(bad, np.ones((40, 40), np.float32))
    rc = main(["prepare", "--images", str(inputs / "images"), "--labels", str(inputs / "labels"), "--out",
               str(tmp_path / "out"), "--profile", "smoke"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{BAD}.nii.gz" in err and "3D" in err and "Traceback" not in err
    _assert_nothing_written(tmp_path / "out")
