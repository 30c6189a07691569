"""Transfer-learning sweep: planning, subject draws, resume without duplicates, summaries.

The sweep logic is tested with a fake U-net backend (fast, and independent of the U-net code);
one small end-to-end test runs the real trainer and inference on tiny phantom data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tofmra_utils import transfer
from tofmra_utils.io import DataError, read_json, write_json
from tofmra_utils.patchset import PatchSet
from tofmra_utils.profiles import get_profile
from tofmra_utils.runs import RunPaths
from tofmra_utils.transfer import (
    RESULT_COLUMNS,
    TransferRun,
    UnetBackend,
    draw_subjects,
    plan_runs,
    run_transfer_sweep,
    study_comparison_table,
    summarize_transfer,
)

POOL = [f"B{i:02d}" for i in range(8)]
VAL = ["V0", "V1"]
TEST = ["T0", "T1", "T2"]


class FakeDataset:
    """What the sweep uses of a SiteDataset: splits, pool and validation patches, a root."""

    def __init__(self, root: Path, val: list[str] = VAL) -> None:
        self.root = root
        self.splits = {"train": list(POOL), "val": list(val), "test": list(TEST)}
        self.patch_calls = 0

    def patches(self, split: str) -> PatchSet:
        assert split in ("train", "val")
        self.patch_calls += split == "train"
        ids = POOL if split == "train" else self.splits["val"]
        n = 4 * len(ids)
        return PatchSet(
            image=np.zeros((n, 8, 8), np.float32), label=np.zeros((n, 8, 8), np.uint8),
            subject=np.repeat(ids, 4), kind=np.zeros(n, np.uint8), centre=np.zeros((n, 3), np.int32),
        )


class FakeBackend:
    """Records every training call; metrics depend on the inputs so the tests can check them."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[dict] = []
        self.eval_modes: list[str] = []
        self.fail_after = fail_after

    def train_unet(self, train, val, config, out_dir, seed, device=None, init_checkpoint=None, freeze_encoder=False,
                   max_steps=None, lr=None, batch_size=None, progress=True, val_every=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # what a user's Ctrl-C looks like mid-sweep
        subjects = sorted(set(train.subject.tolist()))
        self.calls.append(dict(subjects=subjects, seed=seed, init=init_checkpoint, freeze=freeze_encoder,
                               steps=max_steps, lr=lr, batch_size=batch_size, val=val, val_every=val_every,
                               out_dir=Path(out_dir)))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        ckpt = Path(out_dir) / "best.pt"
        ckpt.write_text("weights")
        info = {"n": len(subjects), "pretrained": init_checkpoint is not None, "step": max_steps}
        ckpt.with_suffix(".info").write_text(repr(info))
        best = None if val is None else 0.6
        return SimpleNamespace(checkpoint=ckpt, history=pd.DataFrame(), best_val_dice=best, seconds=0.5)

    def load_unet(self, checkpoint, device=None):
        info_file = Path(checkpoint).with_suffix(".info")
        if not info_file.exists():  # a pretrained site-A checkpoint applied as it is (n = 0)
            return "model", {"n": 0, "pretrained": True}
        return "model", eval(info_file.read_text())

    def evaluate_subjects(self, model, info, dataset, split="test", mode="tiles", threshold=0.5, device=None):
        assert split == "test"
        self.eval_modes.append(mode)
        base = 0.5 + 0.03 * info["n"] + (0.2 if info["pretrained"] else 0.0)
        return pd.DataFrame({
            "subject": dataset.splits["test"],
            "dsc": [base + 0.01 * i for i in range(len(TEST))],
            "hd95_mm": [10.0 - info["n"]] * len(TEST),
            "hd95_study": [20.0 - info["n"]] * len(TEST),
            "hd95_tool": [21.0 - info["n"]] * len(TEST),
        })

    def backend(self) -> UnetBackend:
        return UnetBackend(self.train_unet, self.load_unet, self.evaluate_subjects)


def small_profile(steps: int = 3, per_subject: int = 0, n_subjects=(1, 3)):
    """Smoke with a sweep of n = 1, 3 and 2 seeds; ``steps`` per run (growing by ``per_subject`` x n)."""
    p = get_profile("smoke")
    return dataclasses.replace(p, transfer=dataclasses.replace(
        p.transfer, n_subjects=n_subjects, seeds=(0, 1), min_steps=steps, steps_per_subject=per_subject))


def fake_checkpoints(tmp_path: Path) -> dict[str, Path | None]:
    return {"scratch": None, "synthetic": tmp_path / "syn.pt", "real": tmp_path / "real.pt"}


# ----------------------------------------------------------------------------- planning and draws
def test_plan_gives_scratch_only_full_finetuning():
    runs = plan_runs(["scratch", "synthetic", "real"], ["full", "frozen_encoder"], [1, 2], [0, 1, 2])
    assert len(runs) == 2 * 3 * (1 + 2 + 2)
    assert not any(r.arm == "scratch" and r.finetune != "full" for r in runs)
    assert len({r.key for r in runs}) == len(runs)
    assert TransferRun("synthetic", "full", 2, 1).key == "synthetic-full-n02-s1"
    with pytest.raises(ValueError, match="unknown"):
        plan_runs(["pretrained"], ["full"], [1], [0])


def test_draws_are_nested_in_n_and_differ_between_seeds():
    for seed in range(3):
        draws = [draw_subjects(POOL, n, seed, base_seed=7) for n in range(1, len(POOL) + 1)]
        for small, big in zip(draws, draws[1:]):
            assert big[: len(small)] == small
        assert sorted(draws[-1]) == sorted(POOL)
    assert draw_subjects(POOL, 3, 0, 7) == draw_subjects(list(reversed(POOL)), 3, 0, 7)  # order-free
    firsts = {tuple(draw_subjects(POOL, 3, s, 7)) for s in range(6)}
    assert len(firsts) > 1
    with pytest.raises(ValueError, match="pool of 8"):
        draw_subjects(POOL, 9, 0)


# ----------------------------------------------------------------------------- the sweep with fakes
def test_sweep_runs_every_cell_with_the_same_budget(tmp_path):
    profile = small_profile()
    fake, ds = FakeBackend(), FakeDataset(tmp_path)
    df = run_transfer_sweep(ds, profile, tmp_path / "transfer", fake_checkpoints(tmp_path), progress=False,
                            backend=fake.backend())
    n_runs = 2 * 2 * (1 + 2 + 2)
    assert len(fake.calls) == n_runs and len(df) == n_runs * len(TEST)
    assert list(df.columns) == list(RESULT_COLUMNS)
    assert {(c["steps"], c["lr"], c["batch_size"]) for c in fake.calls} == {
        (profile.transfer.min_steps, profile.transfer.lr, profile.transfer.batch_size)}
    # every run is selected on the site-B validation subjects' patches, never on a test subject
    assert all(sorted(set(c["val"].subject)) == VAL for c in fake.calls)
    assert {c["val_every"] for c in fake.calls} == {-(-profile.transfer.min_steps // profile.transfer.val_checks)}
    stored = read_json(tmp_path / "transfer" / "results" / "synthetic-full-n03-s1.json")
    assert stored["settings"]["val_subjects"] == VAL and stored["result"]["selection"]["best_val_dice"] == 0.6
    assert fake.eval_modes == [profile.transfer.eval_mode] * n_runs  # every run scored the profile's way
    # frozen encoder only for the pretrained arms, and the right initial weights
    for _, row in df.drop_duplicates(["arm", "finetune", "n_subjects", "seed"]).iterrows():
        call = next(c for c in fake.calls if c["out_dir"].name == TransferRun(row.arm, row.finetune, row.n_subjects, row.seed).key)
        assert call["freeze"] == (row.finetune == "frozen_encoder")
        assert call["init"] == fake_checkpoints(tmp_path)[row.arm]
        assert call["subjects"] == sorted(row.subjects_drawn.split(";"))
        assert len(call["subjects"]) == row.n_subjects
    # arms share subjects and training seed for the same (n, seed); seeds differ
    by_cell = df.groupby(["n_subjects", "seed"])["subjects_drawn"].nunique()
    assert (by_cell == 1).all()
    seeds_by_cell = {}
    for c in fake.calls:
        seeds_by_cell.setdefault((len(c["subjects"]), tuple(c["subjects"])), set()).add(c["seed"])
    assert all(len(s) == 1 for s in seeds_by_cell.values())
    # one patch load for the whole sweep; work folders removed, results kept
    assert ds.patch_calls == 1
    assert not any((tmp_path / "transfer" / "work").glob("*/best.pt"))
    assert len(list((tmp_path / "transfer" / "results").glob("*.json"))) == n_runs
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "transfer" / "results.csv"), df)


def test_interrupted_sweep_resumes_without_duplicates(tmp_path):
    profile, ds, ckpts = small_profile(), FakeDataset(tmp_path), fake_checkpoints(tmp_path)
    out = tmp_path / "transfer"
    first = FakeBackend(fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        run_transfer_sweep(ds, profile, out, ckpts, progress=False, backend=first.backend())
    partial = pd.read_csv(out / "results.csv")
    assert len(partial) == 4 * len(TEST)  # the four finished runs are on disk
    second = FakeBackend()
    df = run_transfer_sweep(ds, profile, out, ckpts, progress=False, backend=second.backend())
    n_runs = 2 * 2 * 5
    assert len(second.calls) == n_runs - 4
    assert len(df) == n_runs * len(TEST)
    assert not df.duplicated(["arm", "finetune", "n_subjects", "seed", "subject"]).any()
    trained_first = {c["out_dir"].name for c in first.calls}
    assert trained_first.isdisjoint({c["out_dir"].name for c in second.calls})
    # a third call has nothing left to do
    third = FakeBackend()
    again = run_transfer_sweep(ds, profile, out, ckpts, progress=False, backend=third.backend())
    assert third.calls == [] and len(again) == len(df)


def test_changed_budget_recomputes_stale_results(tmp_path):
    ds, ckpts, out = FakeDataset(tmp_path), {"scratch": None}, tmp_path / "transfer"
    run_transfer_sweep(ds, small_profile(3), out, ckpts, progress=False, backend=FakeBackend().backend())
    again = FakeBackend()
    df = run_transfer_sweep(ds, small_profile(4), out, ckpts, progress=False, backend=again.backend())
    assert len(again.calls) == 4 and {c["steps"] for c in again.calls} == {4}
    assert len(df) == 4 * len(TEST)
    stored = read_json(out / "results" / "scratch-full-n01-s0.json")
    assert stored["settings"]["steps"] == 4
    # scoring the volumes another way is another result too
    other = dataclasses.replace(small_profile(4), transfer=dataclasses.replace(small_profile(4).transfer, eval_mode="tiles"))
    third = FakeBackend()
    run_transfer_sweep(ds, other, out, ckpts, progress=False, backend=third.backend())
    assert len(third.calls) == 4 and set(third.eval_modes) == {"tiles"}


def test_validation_patches_are_capped_per_subject_and_the_cap_is_part_of_the_result(tmp_path):
    ds, ckpts, out = FakeDataset(tmp_path), {"scratch": None}, tmp_path / "transfer"
    base = small_profile(3)
    run_transfer_sweep(ds, base, out, ckpts, progress=False, backend=FakeBackend().backend())
    capped = dataclasses.replace(base, transfer=dataclasses.replace(base.transfer, val_patches_per_subject=2))
    again = FakeBackend()
    run_transfer_sweep(ds, capped, out, ckpts, progress=False, backend=again.backend())
    assert len(again.calls) == 4  # another validation set is another selection: every run recomputed
    for call in again.calls:  # FakeDataset holds 4 patches per validation subject
        assert sorted(call["val"].subject.tolist()) == ["V0", "V0", "V1", "V1"]
    assert read_json(out / "results" / "scratch-full-n01-s0.json")["settings"]["val_patches_per_subject"] == 2
    assert transfer.selection_rule(ds, capped).startswith("best Dice on at most 2 patches of each of 2 site-B")


def test_a_run_killed_before_its_result_is_trained_again(tmp_path):
    ds, out = FakeDataset(tmp_path), tmp_path / "transfer"
    kw = dict(n_subjects=[1], seeds=[0], progress=False)
    run_transfer_sweep(ds, small_profile(), out, {"scratch": None}, backend=FakeBackend().backend(), **kw)
    record = out / "results" / "scratch-full-n01-s0.json"
    stored = read_json(record)
    write_json(record, {**stored, "status": "running"})  # as left by a run killed while training
    again = FakeBackend()
    df = run_transfer_sweep(ds, small_profile(), out, {"scratch": None}, backend=again.backend(), **kw)
    assert len(again.calls) == 1 and len(df) == len(TEST)
    assert read_json(record)["status"] == "done"


def test_budget_grows_with_n_and_is_the_same_for_every_arm(tmp_path):
    profile = small_profile(steps=4, per_subject=3)
    fake = FakeBackend()
    run_transfer_sweep(FakeDataset(tmp_path), profile, tmp_path / "t", fake_checkpoints(tmp_path), progress=False,
                       backend=fake.backend())
    steps = {}
    for c in fake.calls:
        steps.setdefault(len(c["subjects"]), set()).add(c["steps"])
    assert steps == {1: {4}, 3: {9}}  # max(4, 3 n): grows with n, one value for all arms
    assert transfer.steps_by_n(profile) == {1: 4, 3: 9}
    capped = dataclasses.replace(profile.transfer, max_steps=6)
    assert [capped.steps_for(n) for n in (0, 1, 3)] == [0, 4, 6]


def test_n0_applies_the_site_a_weights_without_training(tmp_path):
    profile = small_profile(n_subjects=(0, 1))
    fake, ckpts = FakeBackend(), fake_checkpoints(tmp_path)
    df = run_transfer_sweep(FakeDataset(tmp_path), profile, tmp_path / "t", ckpts, progress=False,
                            backend=fake.backend())
    n0 = df[df.n_subjects == 0]
    # one run per pretrained arm (nothing random to repeat), no training, its own "finetune"
    assert sorted(n0.drop_duplicates("arm").arm) == ["real", "synthetic"] and set(n0.finetune) == {"none"}
    assert set(n0.seed) == {0} and (n0.train_seconds == 0).all() and set(n0.subjects_drawn.fillna("")) == {""}
    assert all(len(c["subjects"]) == 1 for c in fake.calls)  # only the n = 1 runs trained
    assert n0.dsc.mean() == pytest.approx(0.5 + 0.2 + 0.01)  # the fake scores the init weights (n = 0)
    s = summarize_transfer(df)
    assert transfer.summary_value(s, "synthetic", 0, finetune="none") == pytest.approx(0.71)
    assert list(transfer.pretraining_gain(df).n_subjects) == [1]  # no scratch at n = 0, no gain there
    from tofmra_utils.plots import transfer_curves

    fig = transfer_curves(s)
    assert any(line.get_label() == "synthetic (not fine-tuned)" for line in fig.axes[0].lines)
    with pytest.raises(ValueError, match=">= 0"):
        plan_runs(["scratch"], ["full"], [-1], [0])


def test_selection_rule_names_the_validation_subjects(tmp_path):
    profile = get_profile("course")
    assert transfer.selection_rule(FakeDataset(tmp_path), profile) == (
        f"best Dice on at most {profile.transfer.val_patches_per_subject} patches of each of 2 site-B validation "
        f"subjects, checked {profile.transfer.val_checks} times per run")
    paper = get_profile("paper")  # the study's settings: every validation patch
    assert transfer.selection_rule(FakeDataset(tmp_path), paper).startswith("best Dice on the patches of 2 site-B")
    without = FakeDataset(tmp_path, val=[])
    assert transfer.selection_rule(without, profile).startswith("final weights")
    fake = FakeBackend()
    run_transfer_sweep(without, small_profile(), tmp_path / "t", {"scratch": None}, progress=False,
                       backend=fake.backend())
    assert all(c["val"] is None for c in fake.calls)


def test_pool_too_small_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="pool has 8 subjects, the sweep needs 9"):
        run_transfer_sweep(FakeDataset(tmp_path), small_profile(), tmp_path / "t", {"scratch": None},
                           n_subjects=[9], progress=False, backend=FakeBackend().backend())


def test_missing_pretrained_unet_names_the_notebook(tmp_path):
    with pytest.raises(DataError, match="run notebook 05"):
        transfer.pretrained_checkpoints(RunPaths(tmp_path), get_profile("smoke"))
    paths = RunPaths(tmp_path)
    for name in ("real", "wgan_gp_sn"):
        paths.unet_dir(name).mkdir(parents=True)
        (paths.unet_dir(name) / "best.pt").write_text("x")
    ck = transfer.pretrained_checkpoints(paths, get_profile("smoke"))
    assert ck == {"scratch": None, "synthetic": paths.unet_dir("wgan_gp_sn") / "best.pt",
                  "real": paths.unet_dir("real") / "best.pt"}


# ----------------------------------------------------------------------------- summaries
def test_summary_is_mean_and_sd_over_seeds_of_subject_means(tmp_path):
    df = run_transfer_sweep(FakeDataset(tmp_path), small_profile(), tmp_path / "t", fake_checkpoints(tmp_path),
                            progress=False, backend=FakeBackend().backend())
    s = summarize_transfer(df)
    assert len(s) == 2 * 5 and (s.n_seeds == 2).all()
    row = s[(s.arm == "synthetic") & (s.finetune == "full") & (s.n_subjects == 3)].iloc[0]
    # fake: dsc = 0.5 + 0.03 n + 0.2 (pretrained) + 0.01 i, i over 3 test subjects -> mean +0.01
    assert row.dsc_mean == pytest.approx(0.5 + 0.09 + 0.2 + 0.01) and row.dsc_sd == pytest.approx(0.0)
    assert row.hd95_mm_mean == pytest.approx(7.0) and row.n_undefined == 0
    assert list(s.arm.unique()) == ["scratch", "synthetic", "real"]
    # sd over seeds, with NaN distances skipped and counted
    df2 = df.copy()
    df2.loc[(df2.arm == "scratch") & (df2.seed == 1), "dsc"] += 0.1
    df2.loc[df2.index[0], "hd95_mm"] = np.nan
    s2 = summarize_transfer(df2)
    r = s2[(s2.arm == "scratch") & (s2.n_subjects == 1)].iloc[0]
    assert r.dsc_sd == pytest.approx(np.std([0.0, 0.1], ddof=1)) and r.n_undefined == 1
    table = study_comparison_table(s, n=1)
    assert list(table["study DSC"][:2]) == [0.91, 0.84]
    assert table["our DSC"].iloc[0].startswith(f"{0.5 + 0.03 + 0.2 + 0.01:.3g}")
    # beside the study's tool numbers: the tool's emulation, then the exact lower bound, then mm
    assert list(table.columns[4:8]) == ["our 95HD (voxels, tool emulation)",
                                        "our 95HD (voxels, exact: lower bound of the tool's value)",
                                        "our 95HD (mm)", "empty predictions"]
    assert table["our 95HD (voxels, tool emulation)"].iloc[0].startswith("20 ")  # fake tool = 21 - n, n = 1
    assert table["our 95HD (voxels, exact: lower bound of the tool's value)"].iloc[0].startswith("19 ")


def test_pretraining_gain_is_paired_and_the_sentence_reports_it(tmp_path):
    df = run_transfer_sweep(FakeDataset(tmp_path), small_profile(), tmp_path / "t", fake_checkpoints(tmp_path),
                            progress=False, backend=FakeBackend().backend())
    df.loc[(df.arm == "scratch") & (df.seed == 1) & (df.n_subjects == 1), "dsc"] += 0.3  # scratch wins once
    gain = transfer.pretraining_gain(df)
    assert list(gain.n_subjects) == [1, 3]
    g1 = gain.iloc[0]
    assert g1.gain_mean == pytest.approx((0.2 + (0.2 - 0.3)) / 2) and g1.seeds_positive == 1 and g1.n_seeds == 2
    assert gain.iloc[1].gain_mean == pytest.approx(0.2) and gain.iloc[1].seeds_positive == 2
    text = transfer.gain_sentence(gain)
    assert "With 1 site-B subject, synthetic pretraining is not measured well enough to tell" in text
    assert "DSC +0.050 ± 0.212" in text
    assert "better in 1 of 2" in text and "3 site-B subjects" in text
    assert "not measured well enough" in text  # 2 seeds make no finding
    assert "Too few seeds to say how the gain changes with n." in text


def _gain(rows):
    return pd.DataFrame(rows, columns=["n_subjects", "gain_mean", "gain_sd", "n_seeds", "seeds_positive"])


def test_gain_verdicts_need_three_seeds_and_a_mean_beyond_the_spread():
    shrinking = _gain([(1, 0.10, 0.02, 3, 3), (10, 0.01, 0.02, 3, 2)])
    text = transfer.gain_sentence(shrinking)
    assert "With 1 site-B subject, synthetic pretraining helps: DSC +0.100 ± 0.020" in text
    assert "with 10 site-B subjects, synthetic pretraining makes no clear difference" in text
    assert "The gain shrinks as site-B data grow (-0.090 from n=1 to n=10), as in the study." in text
    hurting = _gain([(1, -0.10, 0.02, 3, 0), (10, 0.05, 0.02, 3, 3)])
    text = transfer.gain_sentence(hurting)
    assert "pretraining hurts" in text and "The gain grows with more site-B data (+0.150)" in text
    flat = _gain([(1, 0.03, 0.05, 4, 3), (10, 0.02, 0.05, 4, 3)])
    assert "does not change beyond the seeds' spread" in transfer.gain_sentence(flat)


def test_transfer_figures(tmp_path):
    import matplotlib.pyplot as plt

    from tofmra_utils.plots import site_comparison, transfer_curves

    df = run_transfer_sweep(FakeDataset(tmp_path), small_profile(), tmp_path / "t", fake_checkpoints(tmp_path),
                            progress=False, backend=FakeBackend().backend())
    fig = transfer_curves(summarize_transfer(df), metrics=("dsc", "hd95_study"))
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 5  # one line per arm/variant
    rng = np.random.default_rng(0)
    vol = {s: (rng.random((12, 10, 6)), rng.random((12, 10, 6)) > 0.9) for s in ("site A", "site B")}
    fig2 = site_comparison(vol, spacings={"site A": (0.5, 0.5, 0.8)})
    assert len(fig2.axes) == 6 and "0.5 x 0.5 x 0.8 mm" in fig2.axes[0].get_title()
    plt.close("all")


# ----------------------------------------------------------------------------- end to end, real U-net
class TinySite:
    """A few 32 x 32 x 4 volumes with a bright bar as 'vessel', enough for the real trainer and inference."""

    def __init__(self, root: Path, n_pool: int = 3, n_test: int = 1) -> None:
        from tofmra_utils.io import Volume

        self.root = root
        rng = np.random.default_rng(0)
        self.volumes = {}
        ids = [f"P{i}" for i in range(n_pool)] + [f"T{i}" for i in range(n_test)]
        for k, sid in enumerate(ids):
            label = np.zeros((32, 32, 4), np.uint8)
            label[8 + k : 12 + k, 4:28, :] = 1
            image = (rng.normal(0.2, 0.05, label.shape) + 0.8 * label).astype(np.float32)
            affine = np.diag([0.5, 0.5, 1.0, 1.0])
            self.volumes[sid] = tuple(Volume(a, affine) for a in (image, label, np.ones_like(label)))
        self.splits = {"train": ids[:n_pool], "val": [], "test": ids[n_pool:]}

    def subjects_in(self, split):
        return [SimpleNamespace(id=s) for s in self.splits[split]]

    def load_subject(self, subject_id):
        return self.volumes[subject_id]

    def patches(self, split):
        images, labels, subjects = [], [], []
        for sid in self.splits[split]:
            image, label, _ = self.volumes[sid]
            for z in range(image.shape[2]):
                sl = image.data[:, :, z]
                images.append(2 * (sl - sl.min()) / (sl.max() - sl.min()) - 1)
                labels.append(label.data[:, :, z])
                subjects.append(sid)
        n = len(images)
        return PatchSet(image=np.stack(images), label=np.stack(labels), subject=np.array(subjects),
                        kind=np.ones(n, np.uint8), centre=np.zeros((n, 3), np.int32))


def test_end_to_end_with_the_real_unet(tmp_path):
    from tofmra_utils.unet.train import train_unet

    profile = small_profile(steps=2)
    site = TinySite(tmp_path / "site_B")
    pre = train_unet(site.patches("train"), None, profile.unet, tmp_path / "pre", seed=1, device="cpu",
                     max_steps=2, progress=False)
    ckpts = {"scratch": None, "synthetic": pre.checkpoint}
    df = run_transfer_sweep(site, profile, tmp_path / "transfer", ckpts, n_subjects=[1, 2], seeds=[0],
                            device="cpu", progress=False)
    assert len(df) == 2 * (1 + 2) * 1  # n values x (scratch + 2 synthetic variants) x 1 test subject
    assert df.dsc.between(0, 1).all() and (df.train_seconds > 0).all()
    again = run_transfer_sweep(site, profile, tmp_path / "transfer", ckpts, n_subjects=[1, 2], seeds=[0],
                               device="cpu", progress=False)
    pd.testing.assert_frame_equal(again, df)  # all finished: nothing re-run, same table


def test_scratch_noise_is_the_seed_spread_with_a_floor():
    rows = [{"arm": "scratch", "finetune": "full", "n_subjects": n, "dsc_mean": m, "dsc_sd": sd}
            for n, m, sd in ((1, 0.777, 0.031), (10, 0.753, 0.061))]
    summary = pd.DataFrame(rows)
    assert transfer.scratch_noise(summary, 1, 10) == pytest.approx(0.061)
    quiet = summary.assign(dsc_sd=[0.001, float("nan")])
    assert transfer.scratch_noise(quiet, 1, 10) == pytest.approx(0.02)
