"""The sweep's state file and ``tofmra sweep --status``: what is queued, running, done, failed.

The driver (:func:`~tofmra_utils.sweep.submit.run_sweep`) alone writes ``<sweep>/state.json``:
per unit key its stage, status, job id and log file, updated on every change. Jobs never write
it (they run side by side); each job's own record ``units/<key>.json`` says ``running`` while it
works and ``done`` once finished, so :func:`status_table` is right even after the driver was
killed: a unit whose record is done counts as done, one whose job is gone as ``stopped``.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from ..io import DataError, read_json, write_json

__all__ = ["STATE_FILE", "STATUSES", "SweepState", "status_table", "status_text"]

STATE_FILE = "state.json"
#: What a unit can be, in the order ``--status`` counts them.
STATUSES: tuple[str, ...] = ("pending", "queued", "running", "done", "failed", "blocked", "stopped")


class SweepState:
    """``<sweep>/state.json``: the driver's view of every unit (written atomically on each change)."""

    def __init__(self, sweep_dir: str | os.PathLike[str]) -> None:
        self.file = Path(sweep_dir) / STATE_FILE
        self.data: dict[str, Any] = {"units": {}}
        if self.file.exists():
            try:
                self.data = read_json(self.file)
            except DataError:
                pass  # a broken state file is rebuilt from the unit records
        self.data.setdefault("units", {})

    def set(self, key: str, stage: str, status: str, **info: Any) -> None:
        entry = self.data["units"].setdefault(key, {})
        entry.update(stage=stage, status=status, updated=_dt.datetime.now().isoformat(timespec="seconds"), **info)
        if status in ("queued", "done"):
            entry.pop("error", None)
        self.save()

    def plan(self, keys_and_stages: list[tuple[str, str]]) -> None:
        """List planned units not seen before as ``pending`` (so ``--status`` shows them before they are submitted)."""
        for key, stage in keys_and_stages:
            self.data["units"].setdefault(key, {"stage": stage, "status": "pending"})
        self.save()

    def describe(self, **info: Any) -> None:
        """Sweep-level facts (profile, seeds, executor, start time)."""
        self.data.update(info)
        self.save()

    def save(self) -> None:
        write_json(self.file, self.data)


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def status_table(sweep_dir: str | os.PathLike[str]) -> Any:
    """One row per unit the sweep knows: ``key, stage, status, job, log, error`` (a pandas DataFrame).

    The unit's own record wins over the state file: ``done`` when it is done; a unit the state
    file calls queued or running whose local job process is gone is ``stopped`` (rerun the sweep).
    """
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    state = SweepState(sweep_dir)
    rows = []
    for key, entry in sorted(state.data["units"].items()):
        status = entry.get("status", "pending")
        record_file = sweep_dir / "units" / f"{key}.json"
        record = read_json(record_file) if record_file.exists() else None
        if record is not None and record.get("status") == "done" and status != "blocked":
            status = "done"
        elif status in ("queued", "running") and entry.get("executor") == "local" and not _alive(entry.get("job")):
            status = "stopped"
        elif status == "queued" and record is not None and record.get("status") == "running":
            status = "running"
        rows.append({"key": key, "stage": entry.get("stage"), "status": status, "job": entry.get("job"),
                     "log": entry.get("log"), "error": entry.get("error")})
    return pd.DataFrame(rows, columns=["key", "stage", "status", "job", "log", "error"])


def status_text(sweep_dir: str | os.PathLike[str]) -> str:
    """What ``tofmra sweep --status`` prints: counts per stage, then every unit not done."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / STATE_FILE).exists():
        raise DataError(sweep_dir / STATE_FILE, "no sweep state here: run `tofmra sweep` with this --out first")
    table = status_table(sweep_dir)
    info = SweepState(sweep_dir).data
    lines = [f"sweep {sweep_dir}: profile {info.get('profile')}, seeds {info.get('seeds')}, "
             f"executor {info.get('executor')}, started {info.get('started')}"]
    order = {"gans": 0, "unets": 1, "transfer": 2}  # the stages in the order they run
    for stage, grp in sorted(table.groupby("stage"), key=lambda item: order.get(str(item[0]), 3)):
        counts = grp["status"].value_counts()
        lines.append(f"  {stage:9s} " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts))
    for r in table[table.status != "done"].itertuples():
        extra = f"  log: {r.log}" if isinstance(r.log, str) and r.log and r.status in ("failed", "stopped") else ""
        err = f"  ({r.error})" if isinstance(r.error, str) and r.error else ""
        lines.append(f"  {r.status:8s} {r.key}{err}{extra}")
    return "\n".join(lines)
