"""A run killed with SIGKILL in the middle of a GAN or of the transfer sweep, then started again,
finishes with the results of a run never interrupted.

Runs after tests/test_pipeline.py (file order), whose smoke run in ``$TOFMRA_RUN_DIR`` is the
uninterrupted reference: a copy of it loses one GAN (or the transfer sweep), ``tofmra run`` is
started on that notebook, killed (the whole process group, kernel included) as soon as the stage
has written part of its work, started again, and the notebook's key results must equal the
reference's. Times and paths are left out of the comparison; everything else must match.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

POLL_S = 0.01


def _reference() -> Path:
    ref = Path(os.environ.get("TOFMRA_RUN_DIR", ""))
    summary = ref / "summary.json"
    if not summary.exists() or json.loads(summary.read_text()).get("status") != "ok":
        pytest.skip("needs the finished smoke run of tests/test_pipeline.py in $TOFMRA_RUN_DIR (make test)")
    return ref


def _copy_run(ref: Path, dest: Path, drop: list[str]) -> Path:
    shutil.copytree(ref, dest, ignore=shutil.ignore_patterns("book", "notebooks", ".tofmra-run.lock"))
    for rel in drop:
        shutil.rmtree(dest / rel, ignore_errors=True)
    return dest


def _run_cmd(run_dir: Path, only: str) -> list[str]:
    return [sys.executable, "-m", "tofmra_utils.cli", "run", "--profile", "smoke", "--out", str(run_dir), "--only", only]


def _start_and_kill(run_dir: Path, only: str, partial, done, timeout: float = 300.0) -> None:
    """Start ``tofmra run --only``; SIGKILL its process group once ``partial()`` holds.

    Fails when the run finished (``done()``) before it could be killed: the test must kill a
    stage in the middle, not restart a finished one.
    """
    proc = subprocess.Popen(_run_cmd(run_dir, only), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        while not partial():
            assert proc.poll() is None, f"tofmra run --only {only} ended (rc {proc.returncode}) before it could be killed"
            assert time.monotonic() - t0 < timeout, "the stage never wrote partial work"
            time.sleep(POLL_S)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not done(), "the stage had already finished when it was killed"


def _finish(run_dir: Path, only: str) -> dict:
    out = subprocess.run(_run_cmd(run_dir, only), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads((run_dir / "summary.json").read_text())


def _comparable(results: dict) -> dict:
    """Key results without wall times and absolute paths (they differ between folders and runs)."""
    return {k: v for k, v in results.items()
            if "seconds" not in k and "minutes" not in k and not (isinstance(v, str) and os.sep in v)}


def _notebook_results(summary: dict, name: str) -> dict:
    entry = summary["notebooks"][name]
    assert entry["status"] == "ok"
    return _comparable(entry["results"])


def test_gan_killed_mid_training_finishes_with_the_uninterrupted_results(tmp_path):
    ref = _reference()
    run = _copy_run(ref, tmp_path / "run", ["gans/wgan_gp", "synthetic/wgan_gp"])
    checkpoint = run / "gans" / "wgan_gp" / "checkpoint.pt"
    synthetic = run / "synthetic" / "wgan_gp" / "patches.npz"
    _start_and_kill(run, "03", partial=checkpoint.exists, done=synthetic.exists)
    summary = _finish(run, "03")
    reference = json.loads((ref / "summary.json").read_text())
    assert _notebook_results(summary, "03_wgan_gp") == _notebook_results(reference, "03_wgan_gp")


def test_transfer_sweep_killed_midway_finishes_with_the_uninterrupted_results(tmp_path):
    ref = _reference()
    n_units = len(list((ref / "transfer" / "results").glob("*.json")))
    assert n_units >= 3
    run = _copy_run(ref, tmp_path / "run", ["transfer"])
    results = run / "transfer" / "results"

    def some_units_done() -> bool:
        return results.is_dir() and any(results.glob("*.json"))

    def all_units_done() -> bool:
        return results.is_dir() and len(list(results.glob("*.json"))) >= n_units

    _start_and_kill(run, "06", partial=some_units_done, done=all_units_done)
    summary = _finish(run, "06")
    reference = json.loads((ref / "summary.json").read_text())
    assert _notebook_results(summary, "06_transfer_learning") == _notebook_results(reference, "06_transfer_learning")
