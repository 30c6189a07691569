"""A real TOF-MRA case end to end: prepare -> segment -> evaluate on the committed ICBM crop.

The fixture (``tests/fixtures/real_crop``, licence notice beside it) is a crop of one real head
around the Circle of Willis with its vessel label and brain mask. The smoke profile needs four
subjects (1 val, 2 test, 1 train), so the crop's 48 axial slices are cut into four slabs of 12.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tofmra_utils.cli import main
from tofmra_utils.data import load_dataset
from tofmra_utils.io import save_volume
from tofmra_utils.profiles import UnetConfig
from tofmra_utils.unet.train import train_unet

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "real_crop"
SUBJECT = "icbm0590"
SLABS = 4


def _load(folder: str) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(FIXTURE / folder / f"{SUBJECT}.nii.gz"))
    return np.asarray(img.dataobj), np.asarray(img.affine)


def write_slabs(root: Path, with_masks: bool = True) -> Path:
    """The crop as four subjects of 12 axial slices each, uint8 as the source, in root/images|labels|masks."""
    image, affine = _load("images")
    label, _ = _load("labels")
    mask, _ = _load("masks")
    depth = image.shape[2] // SLABS
    for i in range(SLABS):
        z = slice(i * depth, (i + 1) * depth)
        shifted = affine.copy()
        shifted[:3, 3] += affine[:3, 2] * z.start
        for folder, data in (("images", image), ("labels", label), ("masks", mask)):
            if folder == "masks" and not with_masks:
                continue
            save_volume(root / folder / f"slab{i}.nii.gz", np.ascontiguousarray(data[:, :, z]).astype(np.uint8), shifted)
    return root


def test_fixture_is_small_real_and_licensed():
    image, affine = _load("images")
    label, _ = _load("labels")
    mask, _ = _load("masks")
    assert image.dtype == np.uint8 and image.shape == label.shape == mask.shape
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*.nii.gz")) < 4 * 2**20
    assert "Louis Collins" in (FIXTURE / "README.md").read_text()
    # The brain mask keeps the Circle of Willis: nearly every labelled voxel of the crop is inside.
    assert (label & mask).sum() / label.sum() > 0.9
    assert 0.3 < mask.mean() < 0.95, "the crop keeps scalp and skull outside the mask"


def test_prepare_computes_masks_warns_and_records(tmp_path, capsys):
    root = write_slabs(tmp_path / "in", with_masks=False)
    rc = main(["prepare", "--images", str(root / "images"), "--out", str(tmp_path / "site"), "--profile", "smoke",
               "--brain-mask", "tof"])
    assert rc == 0
    out = capsys.readouterr().out
    info = json.loads((tmp_path / "site" / "dataset.json").read_text())
    assert info["brain_mask"] == "tof" and info["settings"]["brain_mask"] == "tof"
    for si in info["subject_info"].values():
        assert si["mask_computed"] and si["mask_method"] == "tof" and 0 < si["mask_fraction"] < 1
        assert any("8-bit" in w for w in si["warnings"]) and any("1 mm" in w or "unknown" in w for w in si["warnings"])
    assert "brain masks computed (tof)" in out and "8-bit" in out


@pytest.mark.slow
def test_prepare_segment_evaluate_inside_the_brain_mask(tmp_path, capsys, monkeypatch):
    root = write_slabs(tmp_path / "in")
    site = tmp_path / "site"
    assert main(["prepare", "--images", str(root / "images"), "--masks", str(root / "masks"), "--out", str(site),
                 "--profile", "smoke"]) == 0
    ds = load_dataset(site)
    assert ds.info["brain_mask"] == "given" and "brain_mask" not in ds.info["settings"]
    train = ds.patches("train")
    assert len(train) > 0 and train.label.any()
    # A tiny U-net trained a few steps on the real patches: enough to run the chain, not to segment well.
    cfg = UnetConfig(base_width=2, depth=2, dropout=0.0, batch_size=16, epochs=1, lr=1e-2)
    with torch.random.fork_rng():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        result = train_unet(train, None, cfg, tmp_path / "unet", seed=0, max_steps=4, progress=False)
        torch.set_num_threads(before)
    subject = ds.subjects_in("test")[0]
    pred = tmp_path / "pred.nii.gz"
    assert main(["segment", "--model", str(result.checkpoint), "--image", str(subject.image), "--mask", str(subject.mask),
                 "--out", str(pred)]) == 0
    seg = nib.load(str(pred))
    np.testing.assert_allclose(seg.affine, nib.load(str(subject.image)).affine)
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(pred), "--truth", str(subject.label), "--mask", str(subject.mask)]) == 0
    out = capsys.readouterr().out
    assert "inside the brain mask" in out and "dsc" in out
    assert main(["evaluate", "--pred", str(pred), "--truth", str(subject.label), "--mask", str(subject.mask), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0.0 <= scores["dsc"] <= 1.0
    label = np.asarray(nib.load(str(subject.label)).dataobj) > 0
    mask = np.asarray(nib.load(str(subject.mask)).dataobj) > 0
    assert scores["truth_voxels_inside"] == int((label & mask).sum())
    assert scores["truth_voxels_outside"] == int((label & ~mask).sum())
    # notebook 05's evaluation of user data counts only the brain, and says so
    from tofmra_utils.unet.infer import evaluate_subjects
    from tofmra_utils.unet.train import load_unet

    # The tool's randomized 95HD search is tested in test_metrics; on an untrained U-net's many false
    # positives it takes half a minute, so here it is replaced by a stand-in.
    monkeypatch.setattr("tofmra_utils.metrics.hd_quantile_tool_emulation", lambda pred, truth, seed=0: float("nan"))
    model, info = load_unet(result.checkpoint, device="cpu")
    table = evaluate_subjects(model, info, ds, "test")
    assert table.attrs["evaluated_in"] == "brain mask" and len(table) == 2
    assert table.loc[table.subject == subject.id, "dsc"].item() == pytest.approx(scores["dsc"], abs=1e-9)


def test_user_data_get_warnings_with_numbers_not_phantom_assertions(tmp_path):
    """Real labels are sparse: notebook 01's checks warn about user data instead of stopping (issue 18, item 6)."""
    from tofmra_utils.data.stage import user_data_warnings
    from tofmra_utils.profiles import get_profile

    root = write_slabs(tmp_path / "in")
    assert main(["prepare", "--images", str(root / "images"), "--masks", str(root / "masks"), "--out", str(tmp_path / "site"),
                 "--profile", "smoke"]) == 0
    ds = load_dataset(tmp_path / "site")
    profile = get_profile("smoke")
    found = user_data_warnings(profile, ds, ds, {"A": 0.0001, "B": 0.003})
    assert any("site A: vessels are 0.010 % of the brain" in w for w in found)
    assert not any(w.startswith("site B: vessels") for w in found)
    assert any(f"4 subjects, profile 'smoke' is designed for {profile.data.site_a_subjects}" in w for w in found)
    assert any("8-bit" in w for w in found)
