"""One fingerprinted, resumable unit of work: the single rule for every trainer and cache.

A *unit* is a folder whose contents depend on some settings: a GAN training, a U-net
training, one run of the transfer sweep, a prepared data set. Every unit keeps:

``run.json``
    The settings, their fingerprint (SHA-256 of their canonical JSON), a status (``running`` or
    ``done``) and, when done, a small result dict. Human-readable: ``cat`` it to see what made
    the folder.
``<state>.pt`` (trainers)
    The latest training state (models, optimizers, counters, RNG states), written atomically and
    stamped with the fingerprint; loads with ``weights_only=True``.
``<history>.csv`` (trainers)
    One row per step, written atomically.

**One policy on mismatch.** When a unit is opened with settings whose fingerprint differs from
the stored one, the stored state, history and record are removed and the unit starts afresh,
with one line on standard error naming the folder and what changed (``lr 0.0005 -> 0.001``).
Nothing is silently reused and nothing stale is silently mixed in. What is *not* part of the
settings may change without a restart: a trainer's step budget (a longer run continues from
the stored state; a stored state already past the budget starts afresh) and how often it
reports.

Used by the GAN trainer (:mod:`tofmra_utils.gan.train`), the U-net trainer
(:mod:`tofmra_utils.unet.train`), the transfer sweep (:mod:`tofmra_utils.transfer`) and the
data caches (:mod:`tofmra_utils.data`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .io import DataError, atomic_path, read_json, write_json

__all__ = ["ResumableUnit", "fingerprint", "settings_diff", "array_digest", "RUN_FILE"]

RUN_FILE = "run.json"


def _canonical(settings: Any) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(settings: dict[str, Any]) -> str:
    """SHA-256 (24 hex digits) of the settings' canonical JSON: equal settings, equal fingerprint."""
    return hashlib.sha256(_canonical(settings).encode()).hexdigest()[:24]


def array_digest(*arrays: np.ndarray) -> str:
    """BLAKE2b (32 hex digits) of arrays' dtypes, shapes and bytes: the identity of a data set."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix or "value": d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def settings_diff(old: dict[str, Any] | None, new: dict[str, Any], limit: int = 4) -> str:
    """``"lr 0.0005 -> 0.001; seed 1 -> 2"``: the settings that differ (nested keys dotted)."""
    if old is None:
        return "no stored settings"
    a, b = _flatten(_json_roundtrip(old)), _flatten(_json_roundtrip(new))
    changed = [f"{k} {_short(a.get(k, '(none)'))} -> {_short(b.get(k, '(none)'))}"
               for k in sorted(set(a) | set(b)) if a.get(k, "(none)") != b.get(k, "(none)")]
    more = f"; and {len(changed) - limit} more" if len(changed) > limit else ""
    return "; ".join(changed[:limit]) + more if changed else "none (format changed)"


def _json_roundtrip(d: Any) -> Any:
    """Settings as JSON stores them (tuples become lists), so stored and new compare alike."""
    return json.loads(_canonical(d))


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ResumableUnit:
    """A folder holding one fingerprinted unit of work (see the module docstring).

    Parameters
    ----------
    folder
        The unit's folder (created by :meth:`open`).
    settings
        Everything the unit's result depends on (JSON-serializable; tuples become lists).
    state_name, history_name
        File names of the training state and the step history inside ``folder``; ``None`` for a
        unit that stores only its result (a sweep cell, a cache).
    owned
        Further files or folders (relative to ``folder``) that belong to the stored run and go
        with it when the settings change (e.g. a GAN's sample grids).
    record_name
        File name of the record (default ``run.json``; two units sharing a folder need two).
    log
        Where the one-line restart message goes (default: standard error).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        settings: dict[str, Any],
        state_name: str | None = "state.pt",
        history_name: str | None = "history.csv",
        owned: Iterable[str] = (),
        record_name: str = RUN_FILE,
        log: Callable[[str], None] = _say,
    ) -> None:
        self.folder = Path(folder)
        self.settings = _json_roundtrip(settings)
        self.fingerprint = fingerprint(self.settings)
        # A unit without a training state (a stored result, a cache) names neither file.
        self.state_file = self.folder / state_name if state_name else None
        self.history_file = self.folder / history_name if history_name else None
        self.run_file = self.folder / record_name
        self.owned = tuple(owned)
        self.log = log

    # ------------------------------------------------------------------------- the record
    def record(self) -> dict[str, Any] | None:
        """The stored ``run.json`` (``None`` when missing or unreadable)."""
        if not self.run_file.exists():
            return None
        try:
            return read_json(self.run_file)
        except DataError:
            return None

    def matches(self) -> bool:
        """Whether the stored record was made with these settings."""
        rec = self.record()
        return rec is not None and rec.get("fingerprint") == self.fingerprint

    def is_done(self) -> bool:
        """Whether the unit finished with these settings (its result can be reused)."""
        rec = self.record()
        return rec is not None and rec.get("fingerprint") == self.fingerprint and rec.get("status") == "done"

    def result(self) -> dict[str, Any] | None:
        """The result stored by :meth:`finish` if the unit is done with these settings."""
        return self.record().get("result") if self.is_done() else None  # type: ignore[union-attr]

    # ------------------------------------------------------------------------- lifecycle
    def reset(self, reason: str | None = None) -> None:
        """Remove the stored run (record, state, history, owned files); say why when given."""
        if reason and self.folder.exists():
            self.log(f"{self.folder}: {reason}; starting afresh")
        for path in (self.run_file, self.state_file, self.history_file, *(self.folder / o for o in self.owned)):
            if path is None:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def open(self, fresh: bool = False) -> None:
        """Make the folder this unit's: keep a matching stored run, else reset it (the one policy).

        ``fresh=True`` resets in any case (a deliberate start-over says nothing).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        rec = self.record()
        if fresh:
            self.reset()
        elif rec is not None and rec.get("fingerprint") != self.fingerprint:
            self.reset(f"settings changed since the stored run ({settings_diff(rec.get('settings'), self.settings)})")
        elif rec is None and any(f is not None and f.exists() for f in (self.state_file, self.history_file)):
            self.reset("no record of the settings that made the stored files")
        if not self.matches():
            write_json(self.run_file, {"fingerprint": self.fingerprint, "status": "running", "settings": self.settings})

    def finish(self, result: dict[str, Any] | None = None) -> None:
        """Mark the unit done (with a small JSON-serializable result)."""
        write_json(self.run_file, {"fingerprint": self.fingerprint, "status": "done", "settings": self.settings,
                                   "result": result or {}})

    # ------------------------------------------------------------------------- training state
    def load_state(self, is_usable: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        """The stored training state, or ``None`` to start from scratch.

        Call after :meth:`open`. A state stamped with another fingerprint, an unreadable one, or
        one that ``is_usable`` rejects (e.g. already past a smaller step budget) is reset with a
        message.
        """
        from .checkpoint import load_checkpoint  # torch only for trainers

        if self.state_file is None or not self.state_file.exists():
            return None
        try:
            state = load_checkpoint(self.state_file, map_location="cpu")  # RNG states must stay CPU tensors
        except DataError as err:
            self.reset(f"unreadable training state ({err})")
            self.open()
            return None
        if state.get("fingerprint") != self.fingerprint:
            self.reset("the training state belongs to other settings")
        elif is_usable is not None and not is_usable(state):
            self.reset("the stored training state does not fit this run's budget")
        else:
            return state
        self.open()
        return None

    def save_state(self, state: dict[str, Any]) -> Path:
        """Write the training state atomically, stamped with the fingerprint."""
        from .checkpoint import save_checkpoint

        if self.state_file is None:
            raise ValueError(f"{self.folder}: this unit keeps no training state")
        return save_checkpoint(self.state_file, {**state, "fingerprint": self.fingerprint})

    def write_history(self, frame: Any) -> Path:
        """Write the step history (a pandas DataFrame) atomically as CSV."""
        if self.history_file is None:
            raise ValueError(f"{self.folder}: this unit keeps no history")
        with atomic_path(self.history_file) as tmp:
            frame.to_csv(tmp, index=False)
        return self.history_file
