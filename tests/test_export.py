"""``tofmra export``: nothing of the source leaks, copies are refused unless forced, bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tofmra_utils.cli import main
from tofmra_utils.export import ExportRefused, export_synthetic, find_leaks
from tofmra_utils.io import DataError, write_json
from tofmra_utils.patchset import PatchSet
from tofmra_utils.privacy import audit_synthetic
from tofmra_utils.privacy.datasheet import AUDIT_KEY, audit_entry, file_sha256, write_audit
from tofmra_utils.runs import RunPaths

TRAIN_IDS = [f"sub-secret-{i:02d}" for i in range(6)]
VAL_IDS = ["sub-hidden-a", "sub-hidden-b", "sub-hidden-c"]
TEST_IDS = ["sub-tested-x"]


def _patches(subjects: list[str], per_subject: int, seed: int, size: int = 16) -> PatchSet:
    rng = np.random.default_rng(seed)
    n = len(subjects) * per_subject
    image = rng.uniform(-1, 1, (n, size, size)).astype(np.float32)
    label = (rng.random((n, size, size)) < 0.05).astype(np.uint8)
    centre = rng.integers(0, 60, (n, 3))
    meta = {"source": "/data/hospital/tof/images", "subjects": subjects}
    return PatchSet(image, label, np.repeat(subjects, per_subject), np.ones(n), centre, meta=meta)


def _fake_run(root: Path, copies: bool = False, gan: str = "wgan_gp") -> RunPaths:
    """A run folder with real patches, a synthetic set, its datasheet (with source paths in it) and its audit."""
    paths = RunPaths(root)
    site = paths.site("A")
    train = _patches(TRAIN_IDS, 30, seed=1)
    val = _patches(VAL_IDS, 30, seed=2)
    train.save(site.patch_file("train"))
    val.save(site.patch_file("val"))
    write_json(site.dataset_file, {
        "splits": {"train": TRAIN_IDS, "val": VAL_IDS, "test": TEST_IDS},
        "subjects": {s: {"image": f"/data/hospital/tof/images/{s}.nii.gz"} for s in TRAIN_IDS + VAL_IDS + TEST_IDS},
        "inputs": {"images": "/data/hospital/tof/images"},
    })
    # Provenance as a careless generator might record it: the export must not carry it along.
    meta = {"source": "gan", "gan": gan, "checkpoint": str(paths.gan_dir(gan) / "checkpoint.pt"), "trained_on": TRAIN_IDS}
    if copies:
        synthetic = PatchSet.synthetic(train.image[:90], train.label[:90], meta=meta)
    else:
        fresh = _patches(["other"], 90, seed=3)
        synthetic = PatchSet.synthetic(fresh.image, fresh.label, meta=meta)
    synthetic.save(paths.synthetic_file(gan))
    sheet = {"dataset": "synthetic", "gan": gan, "n": 90, "patch_size": 16, "profile": "smoke", "threshold": 0.6,
             "checkpoint_file": "checkpoint.pt", "selection": {"snapshot": str(paths.gan_dir(gan) / "snapshots" / "s.pt")},
             "real_vessel_fraction": 0.05, "vessel_fraction": 0.05}
    write_json(paths.datasheet_file(gan), sheet)
    audits = {f: audit_synthetic(synthetic, train, val, features=f, n_boot=10) for f in ("pixels", "random")}
    write_audit(paths.datasheet_file(gan), audit_entry(audits, file_sha256(paths.synthetic_file(gan)), "pixels",
                                                       max_copy_rate=0.05, seed=0, flips=True))
    return paths


def _all_source_strings(paths: RunPaths) -> list[str]:
    return TRAIN_IDS + VAL_IDS + TEST_IDS + ["/data/hospital", str(paths.root), "snapshots", "checkpoint.pt"]


@pytest.mark.parametrize("fmt", ["npz", "nifti"])
def test_an_export_contains_no_source_subject_id_or_path(tmp_path, fmt):
    paths = _fake_run(tmp_path / "run")
    out = export_synthetic(paths.root, "wgan_gp", tmp_path / "share", fmt=fmt)
    files = sorted(p.name for p in out.iterdir())
    expected = ["synthetic.npz"] if fmt == "npz" else ["images.nii.gz", "labels.nii.gz"]
    assert files == sorted(["DATASHEET.md", "datasheet.json", *expected])
    assert find_leaks(out, _all_source_strings(paths)) == []
    # The search itself works: the source folder is full of what the export must not hold.
    assert find_leaks(paths.root / "data", TRAIN_IDS)
    assert find_leaks(paths.synthetic_dir("wgan_gp"), _all_source_strings(paths))
    sheet = json.loads((out / "datasheet.json").read_text())
    assert sheet["training_data"]["training_patches"] == 180 and sheet["training_data"]["training_subjects"] == 6
    assert sheet["privacy_audit"]["copy_flagged"] is False and sheet["forced"] is False
    assert set(sheet["privacy_audit"]["by_features"]) == {"pixels", "random"}
    for key in ("intended_use", "licence", "limits"):
        assert sheet[key]
    assert "real_vessel_fraction" not in sheet["generated_by"] and "selection" not in sheet["generated_by"]
    md = (out / "DATASHEET.md").read_text()
    for heading in ("## What made it", "## Training data (counts only)", "## Privacy audit", "## Fidelity",
                    "## Intended use", "## Licence", "## Limits"):
        assert heading in md
    assert "evidence, not a proof" in md
    if fmt == "npz":
        exported = PatchSet.load(out / "synthetic.npz")
        assert set(exported.subject) == {"synthetic"} and (exported.centre == -1).all()
        assert np.array_equal(exported.image, PatchSet.load(paths.synthetic_file("wgan_gp")).image)
    else:
        img = nib.load(str(out / "images.nii.gz"))
        assert img.shape == (16, 16, 90) and np.allclose(img.affine, np.eye(4))
        assert set(np.unique(np.asarray(nib.load(str(out / "labels.nii.gz")).dataobj))) <= {0, 1}


def test_an_export_of_a_copying_generator_is_refused_unless_forced(tmp_path, capsys):
    paths = _fake_run(tmp_path / "run", copies=True)
    with pytest.raises(ExportRefused, match="copy rate"):
        export_synthetic(paths.root, "wgan_gp", tmp_path / "share")
    assert not (tmp_path / "share").exists()
    assert main(["export", "--run", str(paths.root), "--gan", "wgan_gp", "--out", str(tmp_path / "share")]) == 1
    assert "refused" in capsys.readouterr().err
    assert not (tmp_path / "share").exists()
    assert main(["export", "--run", str(paths.root), "--gan", "wgan_gp", "--out", str(tmp_path / "share"), "--force"]) == 0
    sheet = json.loads((tmp_path / "share" / "datasheet.json").read_text())
    assert sheet["forced"] is True and sheet["privacy_audit"]["copy_flagged"] is True
    assert "Forced export" in (tmp_path / "share" / "DATASHEET.md").read_text()
    assert find_leaks(tmp_path / "share", _all_source_strings(paths)) == []


def test_a_leak_aborts_the_export_and_writes_nothing(tmp_path, monkeypatch):
    import tofmra_utils.export as export

    paths = _fake_run(tmp_path / "run")
    monkeypatch.setattr(export, "INTENDED_USE", f"made from {TRAIN_IDS[2]}")
    with pytest.raises(RuntimeError, match=TRAIN_IDS[2]):
        export_synthetic(paths.root, "wgan_gp", tmp_path / "share")
    assert not (tmp_path / "share").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".share")]


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in needles), err


def test_export_without_an_audit_or_with_a_stale_one_exits_2(tmp_path, capsys):
    paths = _fake_run(tmp_path / "run")
    args = ["export", "--run", str(paths.root), "--gan", "wgan_gp", "--out", str(tmp_path / "share")]
    regenerated = PatchSet.load(paths.synthetic_file("wgan_gp"))
    regenerated.image[0, 0, 0] = -regenerated.image[0, 0, 0]
    regenerated.save(paths.synthetic_file("wgan_gp"))
    assert main(args) == 2
    _one_line_error(capsys, str(paths.datasheet_file("wgan_gp")), "another synthetic set")
    sheet = json.loads(paths.datasheet_file("wgan_gp").read_text())
    del sheet[AUDIT_KEY]
    write_json(paths.datasheet_file("wgan_gp"), sheet)
    assert main(args) == 2
    _one_line_error(capsys, str(paths.datasheet_file("wgan_gp")), "no privacy audit")
    assert not (tmp_path / "share").exists()


def test_export_of_a_missing_set_or_into_a_used_folder_exits_2(tmp_path, capsys):
    paths = _fake_run(tmp_path / "run")
    assert main(["export", "--run", str(paths.root), "--gan", "dcgan", "--out", str(tmp_path / "a")]) == 2
    _one_line_error(capsys, str(paths.synthetic_file("dcgan")))
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert main(["export", "--run", str(paths.root), "--gan", "wgan_gp", "--out", str(used)]) == 2
    _one_line_error(capsys, str(used), "already exists")
    assert sorted(p.name for p in used.iterdir()) == ["keep.txt"]
    assert main(["export", "--run", str(paths.root), "--gan", "../data", "--out", str(tmp_path / "c")]) == 2
    _one_line_error(capsys, "bad GAN name")
    with pytest.raises(DataError, match="unknown format"):
        export_synthetic(paths.root, "wgan_gp", tmp_path / "b", fmt="png")
