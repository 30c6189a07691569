"""``tofmra run --dry-run``: real steps of every stage at a profile's shapes and the projection of each stage."""

from __future__ import annotations

import pytest
import torch

from tofmra_utils.cli import main
from tofmra_utils.dryrun import CPU_BATCH, _duration, _timed, dry_run, format_projection, projection_table
from tofmra_utils.gan.train import total_generator_steps
from tofmra_utils.profiles import GAN_NAMES, get_profile
from tofmra_utils.transfer.plan import plan_runs
from tofmra_utils.cuda_speedups import BF16_ENV, CHANNELS_LAST_ENV, cuda_speedups
from tofmra_utils.unet.train import plan_steps


def test_durations_read_as_people_read_them():
    assert _duration(42) == "42 s" and _duration(600) == "10 min" and _duration(5 * 3600) == "5.0 h"
    assert _duration(10 * 86400) == "10.0 days"


def test_timing_skips_the_first_call_when_repeating():
    calls = []
    seconds = _timed(lambda: calls.append(1), 3, torch.device("cpu"))
    assert len(calls) == 3 and seconds >= 0
    _timed(lambda: calls.append(1), 1, torch.device("cpu"))
    assert len(calls) == 4


def test_smoke_dry_run_projects_every_stage_from_its_steps(capsys, tmp_path):
    profile = get_profile("smoke")
    rows = dry_run(profile, device="cpu", log=lambda _: None)
    by_stage = {r.stage: r for r in rows}
    assert list(by_stage) == ["data", *(f"gan {g}" for g in GAN_NAMES), "generation", "unet training",
                              "unet inference", "transfer"]
    n_real = profile.data.n_train * profile.data.patches_per_subject
    for name in GAN_NAMES:
        row, s = by_stage[f"gan {name}"], profile.gan.variants[name]
        assert row.steps == total_generator_steps(n_real, s.batch_size, s.epochs, s.min_steps)
        assert row.measured_batch == min(CPU_BATCH, s.batch_size) and row.full_batch == s.batch_size
        # Linear in the batch from the measured one, times the stage's steps.
        assert row.full_batch_step_s == pytest.approx(row.step_s * s.batch_size / row.measured_batch)
        assert row.projected_s == pytest.approx(row.full_batch_step_s * row.steps)
    unet = by_stage["unet training"]
    assert unet.steps == 4 * plan_steps(n_real, profile.unet, profile.unet.batch_size, None)
    assert by_stage["data"].steps == profile.data.site_a_subjects + profile.data.site_b_subjects
    t = profile.transfer
    runs = plan_runs(t.arms, t.finetunes, t.n_subjects, t.seeds)
    assert by_stage["transfer"].steps == sum(t.steps_for(r.n_subjects) for r in runs)
    assert by_stage["transfer"].projected_s > by_stage["transfer"].full_batch_step_s * by_stage["transfer"].steps
    for r in rows:
        assert r.step_s > 0 and r.projected_s > 0 and r.peak_mb > 0 and r.memory.startswith("CPU peak RSS")
    assert len(projection_table(rows)) == len(rows)
    text = format_projection(rows, profile, torch.device("cpu"), 1.0)
    assert "PROJECTION" in text and text.count("\n| ") == len(rows) + 1

    # The command prints the same table and writes nothing but the README block it is asked to fill.
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- dryrun:begin -->\nold table\n<!-- dryrun:end -->\noutro\n")
    assert main(["run", "--profile", "smoke", "--dry-run", "--out", "/nonexistent/never-written",
                 "--readme", str(readme)]) == 0
    out = capsys.readouterr().out
    assert "PROJECTION" in out and "| gan wgan_gp_sn |" in out and "Projected total" in out
    written = readme.read_text()
    assert written.startswith("intro\n<!-- dryrun:begin -->\nDry run of profile 'smoke'") and "old table" not in written
    assert "| gan wgan_gp_sn |" in written and "--dry-run --readme" in written and written.endswith("<!-- dryrun:end -->\noutro\n")
    assert main(["run", "--profile", "smoke", "--readme", str(readme)]) == 2
    assert "--readme needs --dry-run" in capsys.readouterr().err


def test_cuda_speedups_never_touch_a_cpu_run(monkeypatch):
    monkeypatch.setenv(BF16_ENV, "1")
    monkeypatch.setenv(CHANNELS_LAST_ENV, "1")
    speed = cuda_speedups(torch.device("cpu"))
    assert not speed.bf16 and not speed.channels_last and speed.settings() == {}
    x = torch.ones(2, 1, 4, 4)
    assert speed.layout(x) is x
    with speed.autocast(torch.device("cpu")):
        assert (x @ x).dtype == torch.float32


def test_cuda_speedups_enter_the_fingerprint_only_when_on():
    from tofmra_utils.cuda_speedups import CudaSpeedups

    on = CudaSpeedups(bf16=True, channels_last=True)
    assert on.settings() == {"cuda_speedups": {"cuda_bf16": True, "cuda_channels_last": True}}
    assert on.layout(torch.ones(2, 3, 4, 5)).is_contiguous(memory_format=torch.channels_last)
    assert CudaSpeedups(bf16=True).settings() == {"cuda_speedups": {"cuda_bf16": True}}
