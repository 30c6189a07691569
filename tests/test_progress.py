"""Progress of a running stage, written by the trainers and printed by `tofmra run`."""

from __future__ import annotations

import json
import time

from tofmra_utils import progress
from tofmra_utils.pipeline import run_pipeline


def test_report_writes_step_total_and_time_left_only_when_asked(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    monkeypatch.delenv(progress.ENV, raising=False)
    progress.report("dcgan", 1, 10)
    assert not path.exists(), "no file without the environment variable"
    monkeypatch.setenv(progress.ENV, str(path))
    monkeypatch.setattr(progress, "MIN_INTERVAL", 0.0)
    progress.report("dcgan", 0, 10)
    time.sleep(0.05)
    progress.report("dcgan", 5, 10)
    record = progress.read_progress(path)
    assert (record["stage"], record["step"], record["total"]) == ("dcgan", 5, 10)
    assert record["left_s"] is not None and abs(record["left_s"] - record["elapsed_s"]) < 0.05, "half done: as long again"
    assert progress.progress_line(record).startswith("dcgan: step 5 / 10, about ")
    progress.report("U-net real", 3, 400)  # a new stage starts its own clock
    assert progress.read_progress(path)["left_s"] is None
    assert progress.progress_line({"stage": "x", "step": 1, "total": 9, "left_s": 600}) == "x: step 1 / 9, about 10 min left"


def test_the_runner_prints_a_running_notebooks_progress(tmp_path, monkeypatch):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    cells = [
        {"id": "params", "cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": 'profile = ""\nrun_dir = ""\n',
         "outputs": [], "execution_count": None},
        {"id": "work", "cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "import time\nfrom tofmra_utils.progress import report\n"
                   "for step in range(1, 9):\n    report('toy stage', step, 8)\n    time.sleep(0.25)\n"},
    ]
    notebook = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (nb_dir / "01_toy.ipynb").write_text(json.dumps(notebook))
    monkeypatch.setattr(progress, "MIN_INTERVAL", 0.0)
    monkeypatch.setattr("tofmra_utils.pipeline.PROGRESS_EVERY", 0.2)
    lines: list[str] = []
    summary = run_pipeline("smoke", out=tmp_path / "run", notebooks_dir=nb_dir, log=lines.append)
    assert summary["status"] == "ok", summary
    shown = [line for line in lines if "toy stage: step" in line]
    assert shown and all(line.startswith("    toy stage: step ") for line in shown), lines
    assert not (tmp_path / "run" / ".progress.json").exists(), "the progress file goes with its notebook"
    assert progress.ENV not in __import__("os").environ
