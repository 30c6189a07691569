"""Progress of a long stage, visible outside the notebook that runs it.

Inside a notebook opened by a person, tqdm bars show each trainer's progress. Under
``tofmra run`` the notebooks run headless in papermill's kernels, and the terminal would show one
line per notebook and then nothing for minutes. So the trainers also call :func:`report`: when
``TOFMRA_PROGRESS_FILE`` is set (the runner sets it for each notebook), the current stage, its
step, its total and an estimate of the time left are written to that file, atomically and at
most every :data:`MIN_INTERVAL` seconds; the runner reads it and prints a line
(:class:`ProgressWatcher`). Without the variable :func:`report` does nothing.

The estimate is the stage's own pace so far: ``elapsed / done * (total - done)``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ENV", "MIN_INTERVAL", "report", "read_progress", "progress_line", "ProgressWatcher"]

#: Environment variable naming the progress file.
ENV = "TOFMRA_PROGRESS_FILE"
#: Seconds between two writes of the file (the last step of a stage is always written).
MIN_INTERVAL = 2.0

_state: dict[str, Any] = {"stage": None, "started": 0.0, "first_step": 0, "written": 0.0}


def report(stage: str, step: int, total: int) -> None:
    """Record that ``stage`` has done ``step`` of ``total`` steps (no-op without :data:`ENV`)."""
    path = os.environ.get(ENV)
    if not path:
        return
    now = time.monotonic()
    if _state["stage"] != stage or step < _state["first_step"]:
        _state.update(stage=stage, started=now, first_step=int(step), written=0.0)
    if now - _state["written"] < MIN_INTERVAL and step < total:
        return
    done = step - _state["first_step"]
    elapsed = now - _state["started"]
    left = elapsed / done * (total - step) if done > 0 else None
    from .io import write_json

    try:
        write_json(Path(path), {"stage": stage, "step": int(step), "total": int(total),
                                "elapsed_s": round(elapsed, 1), "left_s": None if left is None else round(left, 1)})
    except OSError:  # progress is a courtesy: never stop training for it
        return
    _state["written"] = now


def read_progress(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last progress record, or ``None`` when there is none (or it is being replaced)."""
    from .io import read_json

    try:
        return read_json(Path(path))
    except Exception:  # missing or half-visible file: no news
        return None


def progress_line(record: dict[str, Any]) -> str:
    """``"dcgan: step 400 / 1000, about 1 min left"``."""
    left = record.get("left_s")
    if left is None:
        eta = "time left not known yet"
    elif left < 90:
        eta = f"about {left:.0f} s left"
    else:
        eta = f"about {left / 60:.0f} min left"
    return f"{record['stage']}: step {record['step']} / {record['total']}, {eta}"


class ProgressWatcher:
    """A thread that prints :func:`progress_line` whenever the progress file changes.

    Parameters
    ----------
    path
        The progress file (set as :data:`ENV` for the notebook being run).
    log
        Where lines go (the runner's ``log``).
    every
        Seconds between two looks at the file.
    prefix
        Put before each line (e.g. ``"    "``).
    """

    def __init__(self, path: Path, log: Callable[[str], None], every: float = 15.0, prefix: str = "    ") -> None:
        self.path, self.log, self.every, self.prefix = Path(path), log, every, prefix
        self._stop = threading.Event()
        self._last: tuple[Any, Any] | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "ProgressWatcher":
        self.path.unlink(missing_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            record = read_progress(self.path)
            if record is None:
                continue
            key = (record.get("stage"), record.get("step"))
            if key != self._last:
                self._last = key
                self.log(self.prefix + progress_line(record))
