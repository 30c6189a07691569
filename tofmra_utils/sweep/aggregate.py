"""The sweep's tables: ``summary.csv`` (stage, model, seed and its metrics) and ``aggregate.csv``
(mean and sd over seeds), read back by :func:`seed_results` for notebooks 05 and 06.

Both are built from the unit records only (``<sweep>/units/<key>.json``), so they always show the
units that finished, whoever ran them and in whatever order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import DataError, atomic_path, read_json

__all__ = ["SUMMARY_FILE", "AGGREGATE_FILE", "SWEEP_DIR", "summary_frame", "aggregate_frame", "write_tables",
           "seed_results", "seed_aggregate", "find_sweep"]

SUMMARY_FILE = "summary.csv"
AGGREGATE_FILE = "aggregate.csv"
#: The sweep folder inside a run folder (``tofmra sweep``'s default ``--out``).
SWEEP_DIR = "sweep"
#: Metrics of ``summary.csv`` per stage, in column order (others follow).
_FIRST = ("dsc", "hd95_mm", "hd95_study", "best_val_dice", "train_seconds")
#: Columns that describe a row rather than measure it (not averaged).
_LABELS = ("arm", "finetune", "n_subjects")


def summary_frame(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per finished unit: ``stage, model, seed`` then its metrics (NaN where a stage has none)."""
    rows = []
    for f in sorted((Path(sweep_dir) / "units").glob("*.json")):
        try:
            rec = read_json(f)
        except DataError:
            continue
        if rec.get("status") != "done":
            continue
        unit = rec.get("settings", {}).get("unit", {})
        metrics = rec.get("result", {}).get("metrics", {})
        rows.append({"stage": unit.get("stage"), "model": unit.get("model"), "seed": unit.get("seed"), **metrics,
                     "unit_seconds": rec.get("result", {}).get("seconds")})
    if not rows:
        return pd.DataFrame(columns=["stage", "model", "seed"])
    df = pd.DataFrame(rows)
    rest = [c for c in df.columns if c not in ("stage", "model", "seed", *_FIRST)]
    df = df[["stage", "model", "seed", *[c for c in _FIRST if c in df.columns], *rest]]
    order = {"gans": 0, "unets": 1, "transfer": 2}
    return df.sort_values(["stage", "model", "seed"], key=lambda s: s.map(order) if s.name == "stage" else s,
                          ignore_index=True)


def aggregate_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Per ``stage, model``: ``n_seeds``, then ``<metric>_mean`` and ``<metric>_sd`` (sample sd over seeds)."""
    if summary.empty:
        return pd.DataFrame(columns=["stage", "model", "n_seeds"])
    labels = [c for c in _LABELS if c in summary.columns]
    metrics = [c for c in summary.columns if c not in ("stage", "model", "seed", *labels)
               and pd.api.types.is_numeric_dtype(summary[c])]
    rows = []
    for (stage, model), grp in summary.groupby(["stage", "model"], sort=False):
        row: dict[str, Any] = {"stage": stage, "model": model, "n_seeds": int(grp["seed"].nunique()),
                               "seeds": ";".join(str(int(s)) for s in sorted(grp["seed"]))}
        row.update({c: grp[c].iloc[0] for c in labels})
        for c in metrics:
            values = grp[c].dropna()
            if values.empty:
                continue
            row[f"{c}_mean"] = float(values.mean())
            row[f"{c}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def write_tables(sweep_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``aggregate.csv`` (atomically); returns their paths."""
    sweep_dir = Path(sweep_dir)
    summary = summary_frame(sweep_dir)
    out = []
    for name, frame in ((SUMMARY_FILE, summary), (AGGREGATE_FILE, aggregate_frame(summary))):
        with atomic_path(sweep_dir / name) as tmp:
            frame.to_csv(tmp, index=False)
        out.append(sweep_dir / name)
    return out[0], out[1]


def find_sweep(run_dir: str | os.PathLike[str]) -> Path | None:
    """The sweep folder of a run (``<run>/sweep``, or ``run_dir`` itself if it is one), else ``None``."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / SWEEP_DIR, run_dir):
        if (candidate / SUMMARY_FILE).exists():
            return candidate
    return None


def seed_results(run_dir: str | os.PathLike[str], stage: str | None = None) -> pd.DataFrame | None:
    """Seed-level results of the run's sweep (``summary.csv``), or ``None`` when it has none.

    Parameters
    ----------
    run_dir
        A run folder (its sweep is ``<run>/sweep``, ``tofmra sweep``'s default) or a sweep folder.
    stage
        Keep one stage: ``"gans"``, ``"unets"`` (notebook 05) or ``"transfer"`` (notebook 06).

    Returns
    -------
    pandas.DataFrame or None
        One row per stage, model and seed with its metrics (U-nets: test ``dsc``, ``hd95_mm``,
        ``hd95_study``; transfer: the run's mean test ``dsc`` over site-B test subjects with
        ``arm``, ``finetune``, ``n_subjects``); ``None`` when no sweep exists or none of its units
        of ``stage`` finished.
    """
    sweep = find_sweep(run_dir)
    if sweep is None:
        return None
    df = pd.read_csv(sweep / SUMMARY_FILE)
    if stage is not None:
        df = df[df["stage"] == stage].dropna(axis=1, how="all").reset_index(drop=True)
    return df if len(df) else None


def seed_aggregate(run_dir: str | os.PathLike[str], stage: str | None = None) -> pd.DataFrame | None:
    """Mean and sd over seeds (``aggregate.csv``) of the run's sweep, like :func:`seed_results`."""
    sweep = find_sweep(run_dir)
    if sweep is None or not (sweep / AGGREGATE_FILE).exists():
        return None
    df = pd.read_csv(sweep / AGGREGATE_FILE)
    if stage is not None:
        df = df[df["stage"] == stage].dropna(axis=1, how="all").reset_index(drop=True)
    return df if len(df) else None
