"""Profiles, atomic IO, checkpoints with RNG state, the patch-set format, the notebook context."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from tofmra_utils import setup_notebook
from tofmra_utils.checkpoint import load_checkpoint, save_checkpoint, strip_module_prefix
from tofmra_utils.io import DataError, atomic_path, load_volume, save_volume, write_json
from tofmra_utils.patchset import KIND_SYNTHETIC, PatchSet
from tofmra_utils.profiles import GAN_NAMES, PROFILES, UnknownProfileError, get_profile
from tofmra_utils.runs import RunPaths
from tofmra_utils.seeding import get_rng_state, set_rng_state


# ----------------------------------------------------------------------------- profiles
def test_unknown_profile_names_the_choices():
    with pytest.raises(UnknownProfileError, match="unknown profile 'nope'.*course"):
        get_profile("nope")


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_sizes_are_consistent(name):
    p = get_profile(name)
    d = p.data
    assert d.n_train >= 1 and d.n_val >= 1 and d.n_test >= 1
    assert d.site_b_pool >= max(p.transfer.n_subjects), "transfer sweep needs that many site-B subjects"
    assert d.site_b_n_test >= 1
    # The generator doubles the base map once per channel entry: patch = base * 2**len(channels).
    base, rest = divmod(d.patch_size, 2 ** len(p.gan.generator_channels))
    assert rest == 0 and base >= 2
    # The U-net pools `depth` times.
    assert d.patch_size % 2**p.unet.depth == 0
    assert set(p.gan.variants) == set(GAN_NAMES)
    for s in p.gan.variants.values():
        assert all(isinstance(b, float) for b in s.betas), "Adam betas must be floats"
    assert p.transfer.pretrained_gan in GAN_NAMES
    json.dumps(p.to_dict())  # manifests store it


def test_paper_profile_holds_the_study_settings():
    p = get_profile("paper")
    assert (p.data.site_a_subjects, p.data.n_val, p.data.n_test, p.data.n_train) == (66, 11, 14, 41)
    assert (p.data.patch_size, p.data.patches_per_subject) == (96, 1000)
    assert p.gan.generator_channels == (1536, 768, 384, 192, 96)
    assert p.gan.n_synthetic == 41000 and p.gan.label_threshold == 0.8
    dc, gp, sn = (p.gan.variants[n] for n in GAN_NAMES)
    assert (dc.z_dim, dc.lr, dc.betas, dc.batch_size, dc.epochs) == (100, 3e-4, (0.5, 0.999), 250, 300)
    assert (gp.z_dim, gp.lr, gp.betas, gp.batch_size, gp.epochs, gp.n_critic, gp.gp_weight) == (
        128, 1e-4, (0.0, 0.9), 300, 200, 5, 10.0)
    assert sn == gp
    assert (p.unet.base_width, p.unet.depth, p.unet.lr, p.unet.epochs) == (64, 4, 1e-4, 10)
    assert p.transfer.n_subjects == tuple(range(0, 16))  # the study's 1..15, and 0: site-A weights as they are


# ----------------------------------------------------------------------------- io
def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"dsc": 0.8})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("crash while writing")
    assert json.loads(target.read_text()) == {"dsc": 0.8}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"], "temporary file left behind"


def test_write_json_is_strict_json(tmp_path):
    # an undefined hd95 (NaN) must not produce the non-standard token NaN that strict readers reject
    target = write_json(tmp_path / "r.json", {"hd95": float("nan"), "n": np.float32(np.inf), "ok": np.float64(0.5),
                                             "rows": [1.0, np.nan], "arr": np.array([np.nan, 2.0])})
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}")) == {
        "hd95": None, "n": None, "ok": 0.5, "rows": [1.0, None], "arr": [None, 2.0]}


def test_volume_roundtrip_keeps_geometry(tmp_path):
    affine = np.diag([0.5, 0.7, 1.2, 1.0])
    affine[:3, 3] = [-10, 5, 3]
    data = np.random.default_rng(0).random((7, 6, 5)).astype(np.float32)
    path = save_volume(tmp_path / "s.nii.gz", data, affine)
    vol = load_volume(path)
    np.testing.assert_allclose(vol.data, data)
    np.testing.assert_allclose(vol.affine, affine)
    assert vol.spacing == pytest.approx((0.5, 0.7, 1.2))


def test_load_volume_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.nii.gz: file not found"):
        load_volume(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really a nifti")
    with pytest.raises(DataError, match="bad.nii.gz: unreadable or truncated"):
        load_volume(bad)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_roundtrip_restores_rng_streams(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.0, 0.9))
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict(), "opt": opt.state_dict(), "step": 1, "rng": get_rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    state = load_checkpoint(path)  # weights_only=True inside
    set_rng_state(state["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
    fresh = torch.nn.Linear(4, 2)
    fresh.load_state_dict(state["model"])
    assert torch.equal(fresh.weight, model.weight) and state["step"] == 1


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="c.pt: unreadable checkpoint"):
        load_checkpoint(path)


def test_strip_module_prefix():
    assert strip_module_prefix({"module.a": 1, "module.b": 2}) == {"a": 1, "b": 2}
    assert strip_module_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}


# ----------------------------------------------------------------------------- patch sets
def _patchset(n=5, size=8):
    rng = np.random.default_rng(0)
    return PatchSet(
        image=rng.uniform(-1, 1, (n, size, size)),
        label=rng.integers(0, 2, (n, size, size)),
        subject=[f"A-{i % 2:03d}" for i in range(n)],
        kind=[i % 2 for i in range(n)],
        centre=[[i, i, i] for i in range(n)],
        meta={"profile": "smoke"},
    )


def test_patchset_roundtrip_and_subject_selection(tmp_path):
    ps = _patchset()
    loaded = PatchSet.load(ps.save(tmp_path / "p.npz"))
    np.testing.assert_array_equal(loaded.image, ps.image)
    np.testing.assert_array_equal(loaded.label, ps.label)
    assert loaded.meta == {"profile": "smoke"} and len(loaded) == 5 and loaded.patch_size == 8
    sub = loaded.for_subjects(["A-001"])
    assert len(sub) == 2 and set(sub.subject) == {"A-001"}


def test_at_most_per_subject_keeps_both_kinds_evenly_spaced():
    # subject a: 10 patches stored vessel-centred first (kind 1) then random (kind 0); subject b: 3 patches
    subject = ["a"] * 10 + ["b"] * 3
    kind = [1] * 5 + [0] * 5 + [1, 0, 0]
    ps = PatchSet(image=np.zeros((13, 4, 4)), label=np.zeros((13, 4, 4)), subject=subject, kind=kind,
                  centre=[[i, 0, 0] for i in range(13)])
    kept = ps.at_most_per_subject(4)
    np.testing.assert_array_equal(kept.centre[:, 0], [0, 3, 6, 9, 10, 11, 12])  # a: 4 evenly spaced; b: all 3
    assert list(kept.kind[:4]) == [1, 1, 0, 0]  # a prefix would have been vessel-centred only
    assert len(ps.at_most_per_subject(100)) == 13
    with pytest.raises(ValueError, match="at least 1"):
        ps.at_most_per_subject(0)


def test_patchset_rejects_bad_values(tmp_path):
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        PatchSet(image=np.full((2, 4, 4), 3.0), label=np.zeros((2, 4, 4)), subject=["a", "b"], kind=[0, 0], centre=np.zeros((2, 3)))
    with pytest.raises(DataError, match="label shape"):
        PatchSet(image=np.zeros((2, 4, 4)), label=np.zeros((2, 4, 5)), subject=["a", "b"], kind=[0, 0], centre=np.zeros((2, 3)))
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="x.npz: unreadable patch set"):
        PatchSet.load(tmp_path / "x.npz")


def test_synthetic_patchset_carries_no_subject():
    ps = PatchSet.synthetic(np.zeros((3, 4, 4)), np.ones((3, 4, 4)), meta={"gan": "dcgan"})
    assert set(ps.subject) == {"synthetic"} and set(ps.kind) == {KIND_SYNTHETIC}
    assert (ps.centre == -1).all() and ps.vessel_fraction() == 1.0


# ----------------------------------------------------------------------------- notebook context
def test_setup_notebook_resolves_environment_and_records(tmp_path, monkeypatch):
    monkeypatch.setenv("TOFMRA_PROFILE", "smoke")
    monkeypatch.setenv("TOFMRA_RUN_DIR", str(tmp_path / "run"))
    ctx = setup_notebook("99_test")
    assert ctx.profile.name == "smoke" and ctx.paths.root == (tmp_path / "run").resolve()
    ctx.record(dsc=0.5)
    ctx.record(hd95=3.0)
    assert ctx.recorded("99_test") == {"dsc": 0.5, "hd95": 3.0}
    explicit = setup_notebook("99_test", profile="course", run_dir=str(tmp_path / "other"))
    assert explicit.profile.name == "course" and explicit.paths.root.name == "other"
    with pytest.raises(DataError, match="file not found"):
        ctx.recorded("01_never_ran")


def test_training_seed_comes_from_tofmra_run_seed_and_the_data_seed_stays(tmp_path, monkeypatch):
    monkeypatch.delenv("TOFMRA_SEED", raising=False)
    plain = setup_notebook("99_test", profile="smoke", run_dir=str(tmp_path / "a"))
    assert plain.seed == plain.profile.seed and plain.train_seed is None
    monkeypatch.setenv("TOFMRA_SEED", "7")
    seeded = setup_notebook("99_test", profile="smoke", run_dir=str(tmp_path / "b"))
    assert seeded.seed == 7 and seeded.profile.seed == plain.profile.seed, "the data keep the profile's seed"
    first = torch.rand(3)
    setup_notebook("99_test", profile="smoke", run_dir=str(tmp_path / "b"))
    assert torch.equal(first, torch.rand(3)), "the global generators are seeded from the training seed"


# ----------------------------------------------------------------------------- run folder layout
def test_run_paths_figure_table_and_exercise_names(tmp_path):
    paths = RunPaths(tmp_path / "run")
    results = (tmp_path / "run" / "results").resolve()
    # the notebooks' file names stay exactly as given (the book and README refer to them)
    assert paths.figure_file("dcgan_losses.png") == results / "dcgan_losses.png"
    assert paths.figure_file("unet_errors_real.png") == results / "unet_errors_real.png"
    assert paths.table_file("unet_synthetic_vs_real.csv") == results / "unet_synthetic_vs_real.csv"
    assert paths.exercise_dir("random_only") == (tmp_path / "run" / "exercises" / "random_only").resolve()
    assert not (tmp_path / "run").exists(), "asking for a path creates nothing"


@pytest.mark.parametrize(
    "method, name, problem",
    [
        ("figure_file", "losses.csv", "end in '.png'"),
        ("figure_file", "losses", "end in '.png'"),
        ("figure_file", ".png", "end in '.png'"),
        ("figure_file", "sub/losses.png", "without a folder part"),
        ("figure_file", "../losses.png", "without a folder part"),
        ("figure_file", "/tmp/losses.png", "without a folder part"),
        ("table_file", "summary.png", "end in '.csv'"),
        ("table_file", "a\\b.csv", "without a folder part"),
        ("table_file", "", "non-empty"),
        ("exercise_dir", "..", "without a folder part"),
        ("exercise_dir", "a/b", "without a folder part"),
        ("exercise_dir", "", "non-empty"),
    ],
)
def test_run_paths_refuse_names_that_leave_the_layout(tmp_path, method, name, problem):
    with pytest.raises(ValueError, match=problem.replace(".", r"\.")) as info:
        getattr(RunPaths(tmp_path), method)(name)
    assert repr(name) in str(info.value), "the message names the offending name"
