"""Notebook 06's record-and-check cell: the key results for ``summary.json`` and the sweep's checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .plan import NO_FINETUNE, steps_by_n
from .summary import scratch_noise, summary_value
from .sweep import results_file

__all__ = ["record_and_check"]


def record_and_check(
    ctx: Any, results: pd.DataFrame, summary: pd.DataFrame, gain: pd.DataFrame, n_runs: int, n_test: int,
    sweep_minutes: float, conclusion: str, selection: str,
) -> dict[str, Any]:
    """Record notebook 06's key results for ``summary.json`` and check the sweep did what it claims.

    Recorded beside the small/large-n values: ``synthetic_gain_dsc_by_n`` (n -> mean paired
    gain over seeds) with ``synthetic_gain_dsc_sd_by_n``, ``steps_by_n`` (the step rule's
    budget), ``selection`` (what chose the weights, :func:`selection_rule`) and, when the sweep
    has ``n = 0``, the DSC of the site-A U-nets applied to site B as they are.

    Checks (``AssertionError``): every planned run finished and was scored once on every site-B
    test subject (in memory and in ``results.csv``), DSC in [0, 1]; beyond ``smoke``: no empty
    prediction (named by run and subject), training from scratch is not clearly worse (beyond
    :func:`scratch_noise`) with the most site-B data than with the least, and some fine-tuned
    model segments vessels (DSC > 0.3).
    """
    trained = summary[summary.n_subjects > 0]
    small, large = int(trained.n_subjects.min()), int(trained.n_subjects.max())
    has_gain = len(gain) > 0
    g = gain.set_index("n_subjects") if has_gain else pd.DataFrame()
    by_n = {str(int(n)): float(r.gain_mean) for n, r in g.iterrows()} if has_gain else {}
    sd_by_n = {str(int(n)): (float(r.gain_sd) if pd.notna(r.gain_sd) else None) for n, r in g.iterrows()} if has_gain else {}
    untuned = {f"{arm}_dsc_n0": summary_value(summary, arm, 0, finetune=NO_FINETUNE)
               for arm in summary[summary.finetune == NO_FINETUNE].arm.unique()}
    recorded = ctx.record(
        transfer_runs=n_runs, transfer_minutes=round(sweep_minutes, 2), n_small=small, n_large=large,
        n_seeds=int(trained.n_seeds.max()), selection=selection,
        steps_by_n={str(n): v for n, v in steps_by_n(ctx.profile, sorted(summary.n_subjects.unique())).items()},
        **{f"{arm}_dsc_{size}{suffix}": summary_value(summary, arm, n, stat=stat)
           for arm in ("scratch", "synthetic") for size, n in (("small", small), ("large", large))
           for suffix, stat in (("", "mean"), ("_sd", "sd"))},
        real_dsc_small=summary_value(summary, "real", small),
        **untuned,
        synthetic_gain_dsc_small=by_n.get(str(small)),
        synthetic_gain_dsc_large=by_n.get(str(large)),
        synthetic_gain_dsc_small_sd=sd_by_n.get(str(small)),
        synthetic_gain_dsc_large_sd=sd_by_n.get(str(large)),
        synthetic_gain_dsc_by_n=by_n,
        synthetic_gain_dsc_sd_by_n=sd_by_n,
        scratch_hd95_mm_small=summary_value(summary, "scratch", small, metric="hd95_mm"),
        synthetic_hd95_mm_small=summary_value(summary, "synthetic", small, metric="hd95_mm"),
        conclusion=conclusion,
    )
    assert len(results) == n_runs * n_test, (len(results), n_runs, n_test)
    assert not results.duplicated(["arm", "finetune", "n_subjects", "seed", "subject"]).any()
    assert len(pd.read_csv(results_file(ctx.paths.transfer_dir))) == n_runs * n_test
    assert results.dsc.between(0, 1).all()
    if ctx.profile.name != "smoke":
        empty = results[~np.isfinite(results[["hd95_mm", "hd95_study"]].to_numpy()).all(axis=1)]
        assert empty.empty, ("empty predictions in a course run: " + ", ".join(
            f"{r.arm}-{r.finetune} n={r.n_subjects} seed={r.seed} on {r.subject}" for r in empty.itertuples()))
        scratch_small, scratch_large = summary_value(summary, "scratch", small), summary_value(summary, "scratch", large)
        margin = scratch_noise(summary, small, large)
        assert scratch_large >= scratch_small - margin, (
            f"more site-B data must not make training from scratch clearly worse: n={large} {scratch_large:.3f}, "
            f"n={small} {scratch_small:.3f} (allowed: {margin:.3f}, the larger of 0.02 and the seeds' sd)")
        assert trained.dsc_mean.max() > 0.3, trained.dsc_mean.max()
    return recorded
