"""Data preparation: patch sampling, splits by subject, the cached site data set, the phantom site.

Volumes are tiny boxes with straight tubes (a few ms to write), not the phantom, so these tests
check the preparation logic on inputs whose answer is known.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from tofmra_utils.cli import main
from tofmra_utils.io import DataError
from tofmra_utils.conventions import normalize_patch
from tofmra_utils.data import (
    SiteDataset,
    Subject,
    compute_brain_mask,
    cut_patches,
    extract_patches,
    load_dataset,
    phantom_seed,
    prepare_dataset,
    prepare_phantom_site,
    split_subjects,
)
from tofmra_utils.patchset import KIND_RANDOM, KIND_VESSEL
from tofmra_utils.profiles import get_profile
from tofmra_utils.runs import RunPaths

from builders import SHAPE, data_profile, tube_volumes, write_tube_subjects

# ----------------------------------------------------------------------------- scaling and masks
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


# ----------------------------------------------------------------------------- patch cutting
def test_cut_patches_centre_convention_and_border_padding():
    vol = np.arange(10 * 12 * 3, dtype=np.float32).reshape(10, 12, 3)
    centres = np.array([[5, 6, 1], [0, 0, 2], [9, 11, 0]])
    p = cut_patches(vol, centres, 6)
    assert p.shape == (3, 6, 6)
    for patch, (x, y, z) in zip(p, centres):
        assert patch[3, 3] == vol[x, y, z]
    np.testing.assert_array_equal(p[0], vol[2:8, 3:9, 1])  # interior: a plain slice
    # corner patch: rows/cols before the volume repeat the edge voxel (image) ...
    np.testing.assert_array_equal(p[1][:3, :3], np.full((3, 3), vol[0, 0, 2]))
    np.testing.assert_array_equal(p[1][3:, 3:], vol[0:3, 0:3, 2])
    # ... and are 0 for labels
    lab = cut_patches(np.ones((10, 12, 3), np.uint8), centres, 6, pad_mode="zero")
    assert lab.dtype == np.uint8 and lab[1][:3, :].sum() == 0 and lab[1][3:, 3:].all()
    assert lab[2][4:, :].sum() == 0 and lab[2][:, 5:].sum() == 0  # past x=9 / y=11 on the far side


def test_extract_patches_vessel_centred_and_random_in_brain():
    image, label, mask, _ = tube_volumes(0)
    ps = extract_patches(image, label, mask, 30, 8, 0.5, np.random.default_rng(1), subject="s")
    assert len(ps) == 30 and ps.image.shape == (30, 8, 8) and ps.patch_size == 8
    assert (ps.kind == KIND_VESSEL).sum() == 15 and (ps.kind == KIND_RANDOM).sum() == 15
    assert ps.image.min() >= -1 and ps.image.max() <= 1 and set(np.unique(ps.label)) <= {0, 1}
    vessel = ps.kind == KIND_VESSEL
    assert (ps.label[vessel, 4, 4] == 1).all(), "every vessel-centred patch has a vessel at its centre pixel"
    cx, cy, cz = ps.centre.T
    assert (label[cx[vessel], cy[vessel], cz[vessel]] == 1).all()
    assert (mask[cx[~vessel], cy[~vessel], cz[~vessel]] == 1).all(), "random patches sit inside the brain"
    np.testing.assert_array_equal(ps.label, cut_patches(label, ps.centre, 8, "zero"))
    np.testing.assert_allclose(ps.image, normalize_patch(cut_patches(image, ps.centre, 8)))
    assert (ps.subject == "s").all()
    again = extract_patches(image, label, mask, 30, 8, 0.5, np.random.default_rng(1), subject="s")
    np.testing.assert_array_equal(again.centre, ps.centre)  # the generator alone decides
    assert ps.label[vessel].mean() > ps.label[~vessel].mean()  # vessel-centred patches hold more vessel


def test_extract_patches_fraction_extremes():
    image, label, mask, _ = tube_volumes(1)
    all_vessel = extract_patches(image, label, mask, 7, 8, 1.0, np.random.default_rng(0))
    assert (all_vessel.kind == KIND_VESSEL).all()
    none_vessel = extract_patches(image, label, mask, 7, 8, 0.0, np.random.default_rng(0))
    assert (none_vessel.kind == KIND_RANDOM).all()
    with pytest.raises(ValueError):
        extract_patches(image, label, mask, 7, 8, 1.5, np.random.default_rng(0))


def test_split_subjects_disjoint_sized_and_seeded():
    ids = [f"s{i}" for i in range(12)]
    a = split_subjects(ids, n_val=2, n_test=3, seed=5)
    assert [len(a[k]) for k in ("train", "val", "test")] == [7, 2, 3]
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(ids)
    assert split_subjects(list(reversed(ids)), 2, 3, 5) == a  # input order does not matter
    assert any(split_subjects(ids, 2, 3, s) != a for s in range(6, 10))  # the seed does


# ----------------------------------------------------------------------------- prepared site A
@pytest.fixture(scope="module")
def site_a(tmp_path_factory):
    root = write_tube_subjects(tmp_path_factory.mktemp("site_a_in"), 7)
    out = tmp_path_factory.mktemp("site_a_out")
    ds = prepare_dataset(root / "images", root / "labels", out, data_profile(), masks_dir=root / "masks", site="A")
    return root, out, ds


def test_prepare_site_a_splits_patches_and_record(site_a):
    root, out, ds = site_a
    assert not ds.from_cache
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [3, 2, 2]
    all_ids = ds.splits["train"] + ds.splits["val"] + ds.splits["test"]
    assert sorted(all_ids) == sorted(ds.subjects) and len(set(all_ids)) == 7
    train, val = ds.patches("train"), ds.patches("val")
    assert len(train) == 3 * 20 and len(val) == 2 * 20 and train.image.shape[1:] == (8, 8)
    assert set(train.subject) == set(ds.splits["train"]) and set(val.subject) == set(ds.splits["val"])
    assert not set(train.subject) & set(ds.splits["test"])
    with pytest.raises(DataError, match="test"):
        ds.patches("test")
    record = json.loads((out / "dataset.json").read_text())
    for key in ("subjects", "splits", "seed", "profile", "sizes", "cache_key"):
        assert key in record
    assert record["profile"] == "smoke" and record["seed"] == get_profile("smoke").seed
    assert record["sizes"]["patches"] == {"train": 60, "val": 40}
    for s in record["subjects"].values():
        assert all(Path(s[k]).is_absolute() and Path(s[k]).exists() for k in ("image", "label", "mask"))
    # the vessel fraction recorded per subject is the label's share of the brain mask
    sid = ds.splits["test"][0]
    image, label, mask = ds.load_subject(sid)
    assert image.shape == SHAPE and image.spacing == (0.5, 0.5, 1.0)
    expected = label.data[mask.data > 0].sum() / mask.data.sum()
    assert ds.subject_info(sid)["vessel_fraction"] == pytest.approx(expected)


def test_split_table_and_describe(site_a):
    _, _, ds = site_a
    table = ds.split_table()
    assert list(table.columns) == ["subject", "split", "n_patches", "vessel_fraction", "shape", "spacing"]
    assert len(table) == 7 and table.subject.is_unique
    assert table.groupby("split").n_patches.sum().to_dict() == {"test": 0, "train": 60, "val": 40}
    assert table.vessel_fraction.between(0.005, 0.2).all()
    assert set(table.spacing) == {(0.5, 0.5, 1.0)} and set(table["shape"]) == {SHAPE}
    text = ds.describe()
    assert "site A" in text and "60 train + 40 val" in text and "8x8 px" in text


def test_rerun_is_cached_and_changes_invalidate(site_a):
    root, out, ds = site_a
    patch_file = ds.patch_file("train")
    mtime = patch_file.stat().st_mtime_ns
    again = prepare_dataset(root / "images", root / "labels", out, data_profile(), masks_dir=root / "masks")
    # served from the cache: no patch file rewritten (what costs time, without timing a shared machine)
    assert again.from_cache and patch_file.stat().st_mtime_ns == mtime
    assert again.splits == ds.splits
    # different settings: rebuilt with the new patch count
    other = prepare_dataset(root / "images", root / "labels", out, data_profile(patches_per_subject=10),
                            masks_dir=root / "masks")
    assert not other.from_cache and len(other.patches("train")) == 30
    # force and a touched input both rebuild
    assert not prepare_dataset(root / "images", root / "labels", out, data_profile(patches_per_subject=10),
                               masks_dir=root / "masks", force=True).from_cache
    label_file = root / "labels" / "sub-00.nii.gz"
    os.utime(label_file, ns=(time.time_ns(), label_file.stat().st_mtime_ns + 10**9))
    assert not prepare_dataset(root / "images", root / "labels", out, data_profile(), masks_dir=root / "masks").from_cache
    # a deleted patch file is noticed
    ds2 = prepare_dataset(root / "images", root / "labels", out, data_profile(), masks_dir=root / "masks")
    assert ds2.from_cache
    ds2.patch_file("val").unlink()
    assert not prepare_dataset(root / "images", root / "labels", out, data_profile(), masks_dir=root / "masks").from_cache


def test_changed_setting_reprepares_with_the_resumable_message(tmp_path, capsys):
    """The preparation cache is a resumable unit: the one message, naming the folder and what changed."""
    root = write_tube_subjects(tmp_path / "in", 7)
    out = (tmp_path / "out").resolve()

    def prepare(**data):
        return prepare_dataset(root / "images", root / "labels", out, data_profile(**data), masks_dir=root / "masks")

    first = prepare()
    assert not first.from_cache and capsys.readouterr().err == "", "a first preparation has nothing to replace"
    other = prepare(patches_per_subject=10)
    assert not other.from_cache and len(other.patches("train")) == 3 * 10
    assert capsys.readouterr().err.strip() == (
        f"{out}: settings changed since the stored run (patches_per_subject 20 -> 10); starting afresh")
    record = json.loads((out / "preparation.json").read_text())
    assert record["status"] == "done" and record["settings"]["patches_per_subject"] == 10
    assert record["fingerprint"] == json.loads((out / "dataset.json").read_text())["cache_key"]
    assert set(record["settings"]["volumes"]["sub-00"]) == {"image", "label", "mask"}
    # the same settings again: served from the cache, silently
    assert prepare(patches_per_subject=10).from_cache and capsys.readouterr().err == ""
    # a touched input file is named key by key
    label_file = root / "labels" / "sub-03.nii.gz"
    os.utime(label_file, ns=(time.time_ns(), label_file.stat().st_mtime_ns + 10**9))
    assert not prepare(patches_per_subject=10).from_cache
    err = capsys.readouterr().err
    assert err.startswith(f"{out}: settings changed since the stored run (volumes.sub-03.label.mtime_ns ")
    assert err.rstrip().endswith("); starting afresh") and err.count("\n") == 1


def test_data_set_without_a_record_is_not_trusted(tmp_path, capsys):
    """A dataset.json from before the record existed is prepared afresh, saying so, like a trainer's unrecorded files."""
    root = write_tube_subjects(tmp_path / "in", 7)
    out = (tmp_path / "out").resolve()
    prepare_dataset(root / "images", root / "labels", out, data_profile(), masks_dir=root / "masks")
    (out / "preparation.json").unlink()
    again = prepare_dataset(root / "images", root / "labels", out, data_profile(), masks_dir=root / "masks")
    assert not again.from_cache and (out / "preparation.json").exists()
    assert capsys.readouterr().err.strip() == (
        f"{out}: no record of the settings that made the stored files; starting afresh")
    assert prepare_dataset(root / "images", root / "labels", out, data_profile(), masks_dir=root / "masks").from_cache


def test_same_seed_same_patches_other_seed_other_split(tmp_path):
    root = write_tube_subjects(tmp_path / "in", 7)
    a = prepare_dataset(root / "images", root / "labels", tmp_path / "a", data_profile(), masks_dir=root / "masks")
    b = prepare_dataset(root / "images", root / "labels", tmp_path / "b", data_profile(), masks_dir=root / "masks")
    np.testing.assert_array_equal(a.patches("train").image, b.patches("train").image)
    splits = [prepare_dataset(root / "images", root / "labels", tmp_path / f"s{s}", data_profile(), masks_dir=root / "masks",
                              seed=s).splits for s in (1, 2, 3)]
    assert any(s != a.splits for s in splits)


def test_site_b_has_pool_val_and_test(tmp_path):
    root = write_tube_subjects(tmp_path / "in", 5, spacing=(0.7, 0.7, 1.2))
    ds = prepare_dataset(root / "images", root / "labels", tmp_path / "out", data_profile(site_b_n_val=1),
                         masks_dir=root / "masks", site="B")
    assert ds.site == "B" and len(ds.splits["val"]) == 1 and len(ds.splits["test"]) == 2 and len(ds.splits["train"]) == 2
    assert len(ds.patches("val")) == 20 and len(ds.patches("train")) == 40
    assert "pool 2" in ds.describe()
    assert load_dataset(tmp_path / "out").splits == ds.splits
    # validation subjects come out of the pool, never out of the test set
    without = prepare_dataset(root / "images", root / "labels", tmp_path / "out0", data_profile(site_b_n_val=0),
                              masks_dir=root / "masks", site="B")
    assert without.splits["val"] == [] and without.splits["test"] == ds.splits["test"]
    assert sorted(without.splits["train"]) == sorted(ds.splits["train"] + ds.splits["val"])


def test_masks_are_computed_when_not_given(tmp_path):
    root = write_tube_subjects(tmp_path / "in", 5, with_masks=False)
    ds = prepare_dataset(root / "images", None, tmp_path / "out", data_profile(), site="B")  # labels: sibling folder
    for s in ds.subjects.values():
        assert s.mask is not None and s.mask.parent == (tmp_path / "out" / "computed_masks").resolve()
        assert ds.subject_info(s.id)["mask_computed"]
    _, label, mask = ds.load_subject(ds.splits["test"][0])
    truth = tube_volumes(int(ds.splits["test"][0][-2:]))[2]
    assert (mask.data == truth).mean() > 0.95


def test_hand_built_subject_loads_like_a_prepared_one(tmp_path):
    """load_subject shares the preparation's loader: a missing mask is computed, a missing label named."""
    root = write_tube_subjects(tmp_path / "in", 1, with_masks=False)
    image_file, label_file = root / "images" / "sub-00.nii.gz", root / "labels" / "sub-00.nii.gz"
    subjects = {"sub-00": Subject("sub-00", image_file, label_file, None), "bare": Subject("bare", image_file, None, None)}
    ds = SiteDataset(tmp_path, "A", subjects, {"train": [], "val": [], "test": ["sub-00", "bare"]}, seed=0)
    image, label, mask = ds.load_subject("sub-00")
    np.testing.assert_array_equal(mask.data, compute_brain_mask(image.data))
    assert label.data.any() and mask.path is None
    with pytest.raises(DataError, match="this subject has no label"):
        ds.load_subject("bare")


def test_cli_prepare_prints_summary(tmp_path, capsys):
    root = write_tube_subjects(tmp_path / "in", 4)
    rc = main(["prepare", "--images", str(root / "images"), "--labels", str(root / "labels"), "--masks",
               str(root / "masks"), "--out", str(tmp_path / "out"), "--profile", "smoke"])
    assert rc == 0
    assert "site A" in capsys.readouterr().out
    ds = load_dataset(tmp_path / "out")
    assert len(ds.patches("train")) == get_profile("smoke").data.patches_per_subject  # smoke: 1 train subject
    assert ds.patch_size == get_profile("smoke").data.patch_size


# ----------------------------------------------------------------------------- the phantom site
def _fake_phantom(calls: list):
    """Stand-in phantom module (the real one is tested on its own): tubes, one call logged per write."""

    def write_phantom_dataset(out_dir, site, n_subjects, seed, volume_shape):
        calls.append((site, n_subjects, seed, tuple(volume_shape)))
        spacing = (0.5, 0.5, 1.0) if site == "A" else (0.7, 0.7, 1.4)
        write_tube_subjects(Path(out_dir), n_subjects, spacing=spacing, shape=tuple(volume_shape))
        return sorted((Path(out_dir) / "images").glob("*.nii.gz"))

    return types.SimpleNamespace(write_phantom_dataset=write_phantom_dataset, PHANTOM_VERSION="test")


def test_prepare_phantom_site_generates_once_then_caches(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "tofmra_utils.phantom", _fake_phantom(calls))
    paths = RunPaths(tmp_path / "run")
    prof = data_profile()
    a = prepare_phantom_site(paths, prof, "A")
    b = prepare_phantom_site(paths, prof, "B")
    assert calls == [("A", 7, phantom_seed(prof.seed, "A"), SHAPE), ("B", 5, phantom_seed(prof.seed, "B"), SHAPE)]
    assert phantom_seed(prof.seed, "A") != phantom_seed(prof.seed, "B")
    assert a.root == paths.site("A").root and (paths.site("A").dataset_file).exists()
    assert len(a.subjects) == 7 and len(b.subjects) == 5 and len(b.splits["val"]) == prof.data.site_b_n_val
    assert a.info["source"]["kind"] == "phantom"
    again = prepare_phantom_site(paths, prof, "A")
    assert again.from_cache and len(calls) == 2, "a rerun neither regenerates nor resamples"
    # another profile seed regenerates the volumes
    prepare_phantom_site(paths, dataclasses.replace(prof, seed=prof.seed + 1), "A")
    assert len(calls) == 3 and calls[-1][2] == phantom_seed(prof.seed + 1, "A")


def test_prepare_phantom_site_with_the_real_phantom(tmp_path):
    pytest.importorskip("tofmra_utils.phantom")
    prof = data_profile(site_a_subjects=4, n_val=1, n_test=1, volume_shape=get_profile("smoke").data.volume_shape,
                        patch_size=16)
    ds = prepare_phantom_site(RunPaths(tmp_path), prof, "A")
    assert len(ds.subjects) == 4 and len(ds.patches("train")) == 2 * 20
    image, label, mask = ds.load_subject(ds.splits["test"][0])
    assert image.shape == label.shape == mask.shape and label.data.any()
    train = ds.patches("train")
    assert (train.label[train.kind == KIND_VESSEL, 8, 8] == 1).all()


def test_load_dataset_missing_names_notebook(tmp_path):
    with pytest.raises(DataError, match="01_data_preparation"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{}")
    with pytest.raises(DataError, match="malformed"):
        load_dataset(tmp_path)


def test_prepare_site_with_a_user_folder(tmp_path):
    from tofmra_utils.data import prepare_site

    root = write_tube_subjects(tmp_path / "mine", 5, with_masks=False)
    paths = RunPaths(tmp_path / "run")
    ds = prepare_site(paths, data_profile(), "B", data_dir=root)
    assert ds.root == paths.site("B").root and ds.info["source"]["kind"] == "user data"
    assert all(ds.subject_info(s)["mask_computed"] for s in ds.subjects)
    assert prepare_site(paths, data_profile(), "B", data_dir=str(root)).from_cache
    with pytest.raises(DataError, match="data folder not found"):
        prepare_site(paths, data_profile(), "B", data_dir=tmp_path / "nowhere")
