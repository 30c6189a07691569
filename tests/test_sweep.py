"""Seeds and sweeps (``tofmra sweep``): real smoke units through submitit's debug and local executors.

The slow tests share one run folder whose data are prepared once (as notebook 01 does). To stay
cheap they sweep one GAN (DCGAN, one snapshot and one label-fraction scale, so no snapshot
scoring), its U-net and one transfer cell fine-tuned from that U-net, for two seeds.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pandas as pd
import pytest

from tofmra_utils.cli import main
from tofmra_utils.io import DataError
from tofmra_utils.profiles import get_profile
from tofmra_utils.sweep import (aggregate_frame, plan_units, run_sweep, seed_aggregate, seed_results, status_table,
                                status_text)
from tofmra_utils.sweep.submit import prepare_data
from tofmra_utils.sweep.units import Unit
from tofmra_utils.unet.train import plan_steps

SEEDS = (0, 1)
#: The units the slow tests sweep (per seed: one GAN, its U-net, one transfer run from that U-net).
CHOICE = dict(gans=("dcgan",), unets=("dcgan",), arms=("synthetic",), n_subjects=(1,))


def _profile():
    smoke = get_profile("smoke")
    return dataclasses.replace(
        smoke,
        gan=dataclasses.replace(smoke.gan, snapshots=1, label_fraction_scales=(1.0,)),
        transfer=dataclasses.replace(smoke.transfer, pretrained_gan="dcgan", finetunes=("full",)),
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep_run")
    prepare_data(root, _profile(), log=lambda _: None)
    return root


# ----------------------------------------------------------------------------- planning (fast)
def test_plan_covers_every_unit_of_the_profile_per_seed():
    smoke = get_profile("smoke")
    units = plan_units(smoke, [0, 1])
    per_seed = [u for u in units if u.seed == 0]
    assert [u.model for u in per_seed if u.stage == "gans"] == ["dcgan", "wgan_gp", "wgan_gp_sn"]
    assert [u.model for u in per_seed if u.stage == "unets"] == ["real", "dcgan", "wgan_gp", "wgan_gp_sn"]
    transfer = [u for u in per_seed if u.stage == "transfer"]
    # n = 0: the two pretrained arms as they are; n > 0: scratch (full) + 2 pretrained arms x 2 variants.
    assert len(transfer) == 2 + 5 * (len(smoke.transfer.n_subjects) - 1)
    assert len(units) == 2 * len(per_seed) and len({u.key for u in units}) == len(units)
    synthetic = next(u for u in transfer if u.arm == "synthetic" and u.n_subjects == 1)
    assert synthetic.upstream(smoke) == [Unit("unets", smoke.transfer.pretrained_gan, 0)]
    assert Unit("unets", "dcgan", 1).upstream(smoke) == [Unit("gans", "dcgan", 1)]
    assert Unit("unets", "real", 1).upstream(smoke) == []


@pytest.mark.parametrize("bad", [dict(stages=("gans", "nope")), dict(gans=("stylegan",)), dict(unets=("fake",))])
def test_plan_refuses_unknown_names(bad):
    with pytest.raises(ValueError):
        plan_units(get_profile("smoke"), [0], **{"stages": ("gans", "unets"), **bad})


def test_aggregate_is_mean_and_sample_sd_over_seeds():
    summary = pd.DataFrame({"stage": ["unets"] * 3 + ["gans"], "model": ["real"] * 3 + ["dcgan"],
                            "seed": [0, 1, 2, 0], "dsc": [0.5, 0.7, 0.9, None], "generator_steps": [None] * 3 + [12]})
    agg = aggregate_frame(summary).set_index("model")
    assert agg.loc["real", "n_seeds"] == 3 and agg.loc["real", "seeds"] == "0;1;2"
    assert agg.loc["real", "dsc_mean"] == pytest.approx(0.7)
    assert agg.loc["real", "dsc_sd"] == pytest.approx(0.2)
    assert agg.loc["dcgan", "generator_steps_mean"] == 12 and pd.isna(agg.loc["dcgan", "generator_steps_sd"])


def test_sweep_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--profile", "smoke", "--seeds", "0", "--stages", "gans,bogus", "--out", str(out),
                 "--run", str(tmp_path / "run")]) == 2
    assert main(["sweep", "--profile", "smoke", "--out", str(out)]) == 2  # no --seeds
    assert main(["sweep", "--profile", "smoke", "--status", "--out", str(out)]) == 2  # nothing swept there
    err = capsys.readouterr().err
    assert "bogus" in err and "--seeds" in err and "state.json" in err
    assert not out.exists() and not (tmp_path / "run").exists()
    with pytest.raises(SystemExit):
        main(["sweep", "--profile", "smoke", "--seeds", "0,x"])


def test_slurm_jobs_ask_for_the_stage_resources_of_the_profile(tmp_path, monkeypatch):
    from tofmra_utils.sweep.submit import make_executor

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    res = get_profile("paper").sweep.unets
    script = make_executor("slurm", tmp_path / "logs" / "%j", "unets", res, partition="gpu",
                           array_parallelism=3)._executor._make_submission_file_text("python -c pass", "uid")
    for line in (f"--time={res.minutes}", f"--cpus-per-task={res.cpus}", f"--gpus-per-node={res.gpus}",
                 f"--mem={res.mem_gb}GB", "--partition=gpu", "--job-name=tofmra-unets"):
        assert f"#SBATCH {line}" in script, line


def test_slurm_without_slurm_is_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun anywhere
    assert main(["sweep", "--profile", "smoke", "--seeds", "0", "--executor", "slurm", "--out", str(tmp_path / "s"),
                 "--run", str(tmp_path / "run")]) == 2
    assert "srun" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_seed_results_is_none_without_a_sweep(tmp_path):
    assert seed_results(tmp_path) is None and seed_aggregate(tmp_path) is None


# ----------------------------------------------------------------------------- real sweeps (slow)
@pytest.mark.slow
def test_sweep_debug_then_a_partial_rerun_with_the_local_executor(run_dir, capsys):
    profile = _profile()
    report = run_sweep(profile, SEEDS, executor="debug", run_dir=run_dir, log=lambda _: None, **CHOICE)
    keys = [f"{stage}-{model}-s{s}" for stage, model in (("gans", "dcgan"), ("unets", "dcgan"),
                                                            ("transfer", "synthetic-full-n01")) for s in SEEDS]
    assert report.ok and sorted(report.ran) == sorted(keys) and not report.skipped
    sweep = run_dir / "sweep"
    assert report.sweep_dir == sweep

    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == 6 and set(summary.seed) == set(SEEDS)
    assert list(summary.columns[:3]) == ["stage", "model", "seed"]
    unets = summary[summary.stage == "unets"]
    n_real = profile.data.n_train * profile.data.patches_per_subject  # notebook 05's budget: the real set's
    assert unets.dsc.between(0, 1).all() and (unets.steps == plan_steps(n_real, profile.unet, profile.unet.batch_size, None)).all()
    assert (summary[summary.stage == "gans"].generator_steps > 0).all()
    aggregate = pd.read_csv(sweep / "aggregate.csv").set_index(["stage", "model"])
    assert len(aggregate) == 3 and (aggregate.n_seeds == 2).all()
    assert aggregate.loc[("unets", "dcgan"), "dsc_mean"] == pytest.approx(unets.dsc.mean())
    assert aggregate.loc[("unets", "dcgan"), "dsc_sd"] == pytest.approx(unets.dsc.std(ddof=1))
    # What notebooks 05 and 06 read: the run folder's sweep, one stage at a time.
    assert list(seed_results(run_dir, "unets").seed) == list(SEEDS)
    assert set(seed_results(run_dir, "transfer").arm) == {"synthetic"}
    assert seed_aggregate(run_dir, "unets").loc[0, "n_seeds"] == 2
    # Each seed is a run folder: the shared data linked in, its own models, notebook 06's table.
    for s in SEEDS:
        seed_dir = sweep / f"seed-{s}"
        assert (seed_dir / "data").is_symlink() and (seed_dir / "unets" / "dcgan" / "best.pt").exists()
        assert len(pd.read_csv(seed_dir / "transfer" / "results.csv")) == profile.data.site_b_n_test
    assert set(status_table(sweep).status) == {"done"}
    before = {k: json.loads((sweep / "units" / f"{k}.json").read_text()) for k in keys}

    # A killed sweep: seed 1's U-net lost its weights, seed 0's transfer run never recorded its end.
    (sweep / "seed-1" / "unets" / "dcgan" / "best.pt").unlink()
    record = sweep / "units" / "transfer-synthetic-full-n01-s0.json"
    record.write_text(json.dumps({**before["transfer-synthetic-full-n01-s0"], "status": "running"}))
    started = time.perf_counter()
    rerun = run_sweep(profile, SEEDS, executor="local", run_dir=run_dir, log=print, parallel=2, **CHOICE)
    assert sorted(rerun.ran) == ["transfer-synthetic-full-n01-s0", "unets-dcgan-s1"], capsys.readouterr().out
    assert rerun.ok and len(rerun.skipped) == 4 and time.perf_counter() - started < 300
    after = {k: json.loads((sweep / "units" / f"{k}.json").read_text()) for k in keys}
    for key in keys:  # the same numbers, bit for bit: the local jobs redo exactly what the debug run did
        assert after[key]["fingerprint"] == before[key]["fingerprint"]
        assert after[key]["result"]["metrics"] == before[key]["result"]["metrics"], key
        assert after[key]["result"]["digest"] == before[key]["result"]["digest"], key
    # Seed 1's transfer run kept its result: the retrained U-net's weights are the same file.
    assert "transfer-synthetic-full-n01-s1" in rerun.skipped
    assert run_sweep(profile, SEEDS, executor="debug", run_dir=run_dir, log=lambda _: None, **CHOICE).ran == []
    assert main(["sweep", "--profile", "smoke", "--status", "--out", str(sweep)]) == 0
    assert "gans      2 done" in capsys.readouterr().out


@pytest.mark.slow
def test_a_failed_unit_is_reported_with_its_log_and_the_others_go_on(run_dir):
    profile, out = _profile(), run_dir / "sweep_failing"
    run_sweep(profile, [0], stages=("gans",), executor="debug", out=out, run_dir=run_dir, log=lambda _: None,
              gans=("dcgan",))
    (out / "seed-0" / "synthetic" / "dcgan" / "patches.npz").write_bytes(b"not an npz file")
    report = run_sweep(profile, [0], stages=("unets", "transfer"), executor="debug", out=out, run_dir=run_dir,
                       log=lambda _: None, unets=("real", "dcgan"), arms=("synthetic", "real"), n_subjects=(0,))
    assert report.failed == ["unets-dcgan-s0"] and not report.ok
    assert "unets-real-s0" in report.ran and "transfer-real-none-n00-s0" in report.ran
    assert report.blocked == ["transfer-synthetic-none-n00-s0"]  # it needs the failed U-net
    log = report.logs["unets-dcgan-s0"]
    assert "Traceback" in open(log).read()
    status = status_table(out).set_index("key")
    assert status.loc["unets-dcgan-s0", "status"] == "failed" and status.loc["unets-dcgan-s0", "log"] == log
    assert status.loc["transfer-synthetic-none-n00-s0", "status"] == "blocked"
    assert log in status_text(out)
    # The summary holds what finished; the failed unit is not in it.
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.model) == {"dcgan", "real", "real-none-n00"} and len(summary) == 3
    with pytest.raises(DataError):
        status_text(run_dir / "no_sweep_here")
