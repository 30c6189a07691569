"""Summaries of a sweep: mean ± sd over seeds, the paired gain of pretraining, conclusions in words."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..study import STUDY_TL_ONE_PATIENT
from .plan import ARMS
from .sweep import METRICS

__all__ = [
    "MIN_SEEDS_FOR_FINDING", "summarize_transfer", "pretraining_gain", "gain_sentence", "study_comparison_table",
    "summary_value", "scratch_noise",
]

def summarize_transfer(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds per (arm, finetune, n_subjects).

    Each run is first reduced to its mean over the test subjects (NaN distances, from empty
    predictions, are skipped and counted in ``n_undefined``); then the run means are averaged
    over seeds. ``*_sd`` is the sample standard deviation over seeds (NaN with one seed).

    Returns
    -------
    pandas.DataFrame
        Columns ``arm, finetune, n_subjects, n_seeds, dsc_mean, dsc_sd, hd95_mm_mean,
        hd95_mm_sd, hd95_study_mean, hd95_study_sd, n_undefined``, sorted by arm and n.
    """
    keys = ["arm", "finetune", "n_subjects", "seed"]
    per_run = results.groupby(keys, sort=False)[list(METRICS)].mean().reset_index()
    undefined = results.groupby(keys, sort=False)["hd95_mm"].apply(lambda s: int(s.isna().sum())).reset_index(name="n_undefined")
    per_run = per_run.merge(undefined, on=keys)
    grouped = per_run.groupby(["arm", "finetune", "n_subjects"], sort=False)
    out = grouped.agg(
        n_seeds=("seed", "nunique"),
        **{f"{m}_{stat}": (m, stat if stat == "mean" else "std") for m in METRICS for stat in ("mean", "sd")},
        n_undefined=("n_undefined", "sum"),
    ).reset_index()
    order = {a: i for i, a in enumerate(ARMS)}
    out["_arm"] = out["arm"].map(order)
    return out.sort_values(["_arm", "finetune", "n_subjects"]).drop(columns="_arm").reset_index(drop=True)


def pretraining_gain(
    results: pd.DataFrame, arm: str = "synthetic", finetune: str = "full", baseline: str = "scratch",
    metric: str = "dsc",
) -> pd.DataFrame:
    """Paired difference ``arm - baseline`` of run means, per n: mean ± sd over seeds.

    Arms share subjects and training seed for each (n, seed), so the difference per seed is a
    paired comparison. Positive = better for DSC, worse for the distances.

    Returns
    -------
    pandas.DataFrame
        Columns ``n_subjects, gain_mean, gain_sd, n_seeds, seeds_positive`` (seeds where the
        difference is > 0).
    """
    runs = results.groupby(["arm", "finetune", "n_subjects", "seed"])[metric].mean().reset_index()
    a = runs[(runs.arm == arm) & (runs.finetune == finetune)].set_index(["n_subjects", "seed"])[metric]
    b = runs[(runs.arm == baseline) & (runs.finetune == "full")].set_index(["n_subjects", "seed"])[metric]
    diff = (a - b).dropna().rename("gain").reset_index()
    out = diff.groupby("n_subjects")["gain"].agg(gain_mean="mean", gain_sd="std", n_seeds="count",
                                                  seeds_positive=lambda g: int((g > 0).sum()))
    return out.reset_index()


#: Fewer seeds than this make no finding (a difference needs its spread over at least 3 seeds).
MIN_SEEDS_FOR_FINDING = 3


def _gain_verdict(mean: float, sd: float, n_seeds: int) -> str:
    """"helps" / "hurts" only when the mean is beyond one sd over at least 3 seeds."""
    if n_seeds < MIN_SEEDS_FOR_FINDING or not np.isfinite(sd):
        return f"is not measured well enough to tell (fewer than {MIN_SEEDS_FOR_FINDING} seeds)"
    if mean - sd > 0:
        return "helps"
    if mean + sd < 0:
        return "hurts"
    return "makes no clear difference"


def gain_sentence(gain: pd.DataFrame, arm: str = "synthetic", metric: str = "DSC") -> str:
    """A conclusion computed from :func:`pretraining_gain`: the smallest and largest n, and the trend.

    A gain "helps" (or "hurts") only when its mean is more than one sd over seeds away from 0,
    with at least :data:`MIN_SEEDS_FOR_FINDING` seeds; the gain "shrinks" (or "grows") from the
    smallest to the largest n only when the change exceeds the larger of the two sds.
    """
    if gain.empty:
        return f"No paired {arm} vs scratch runs to compare."
    gain = gain.sort_values("n_subjects")
    parts = []
    for _, r in gain.iloc[[0, -1] if len(gain) > 1 else [0]].iterrows():
        sd = float(r.gain_sd) if pd.notna(r.gain_sd) else float("nan")
        sd_text = "" if np.isnan(sd) else f" ± {sd:.3f}"
        parts.append(
            f"with {int(r.n_subjects)} site-B subject{'s' if r.n_subjects > 1 else ''}, {arm} pretraining "
            f"{_gain_verdict(float(r.gain_mean), sd, int(r.n_seeds))}: {metric} {r.gain_mean:+.3f}{sd_text} "
            f"(mean ± sd over {int(r.n_seeds)} seed{'s' if r.n_seeds > 1 else ''}; better in "
            f"{int(r.seeds_positive)} of {int(r.n_seeds)})"
        )
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + "."
    if len(gain) > 1:
        first, last = gain.iloc[0], gain.iloc[-1]
        spread = np.nanmax([first.gain_sd, last.gain_sd, np.nan]) if min(first.n_seeds, last.n_seeds) >= MIN_SEEDS_FOR_FINDING else np.nan
        change = float(last.gain_mean - first.gain_mean)
        if not np.isfinite(spread):
            trend = "too few seeds to say how the gain changes with n"
        elif change < -spread:
            trend = f"the gain shrinks as site-B data grow ({change:+.3f} from n={int(first.n_subjects)} to n={int(last.n_subjects)}), as in the study"
        elif change > spread:
            trend = f"the gain grows with more site-B data ({change:+.3f}), unlike the study, where it was largest with 1 patient"
        else:
            trend = f"the gain does not change beyond the seeds' spread from n={int(first.n_subjects)} to n={int(last.n_subjects)} ({change:+.3f}, sd up to {spread:.3f})"
        text += " " + trend[0].upper() + trend[1:] + "."
    return text


def study_comparison_table(summary: pd.DataFrame, n: int = 1, finetune: str = "full") -> pd.DataFrame:
    """The study's 1-patient table beside ours (``n`` subjects, ``finetune`` variant for pretrained arms).

    The study's 95HD is EvaluateSegmentation's voxel quantile found by a randomized early-stopping
    search: the column beside it is our emulation of that tool (``hd95_tool``, seeded); the exact
    voxel quantile (``hd95_study``) is a lower bound of the tool's value; mm is our default metric.
    ``n_undefined`` (runs' test subjects with an empty prediction, whose distances are left out of
    the means) stands beside them.
    """
    rows = []
    for arm, label in (("synthetic", "pretrained on synthetic"), ("scratch", "from scratch"), ("real", "pretrained on real")):
        ft = "full" if arm == "scratch" else finetune
        hit = summary[(summary.arm == arm) & (summary.finetune == ft) & (summary.n_subjects == n)]
        study = STUDY_TL_ONE_PATIENT.get(arm, (np.nan, np.nan)) if n == 1 else (np.nan, np.nan)
        if hit.empty and arm not in STUDY_TL_ONE_PATIENT:
            continue
        ours = hit.iloc[0] if not hit.empty else None

        def fmt(col: str) -> str:
            if ours is None:
                return "-"
            sd = ours[f"{col}_sd"]
            return f"{ours[f'{col}_mean']:.3g}" + ("" if pd.isna(sd) else f" ± {sd:.2g}")

        rows.append({
            "model": f"TL, {n} patient{'s' if n > 1 else ''}, {label}",
            "study DSC": study[0], "study 95HD (voxels, tool)": study[1],
            "our DSC": fmt("dsc"), "our 95HD (voxels, tool emulation)": fmt("hd95_tool"),
            "our 95HD (voxels, exact: lower bound of the tool's value)": fmt("hd95_study"),
            "our 95HD (mm)": fmt("hd95_mm"),
            "empty predictions": "-" if ours is None else int(ours["n_undefined"]),
        })
    return pd.DataFrame(rows)


def summary_value(summary: pd.DataFrame, arm: str, n: int, finetune: str = "full", metric: str = "dsc",
                  stat: str = "mean") -> float:
    """``stat`` (``mean`` or ``sd`` over seeds) of ``metric`` for one (arm, finetune, n) cell of
    :func:`summarize_transfer` (NaN if absent)."""
    row = summary[(summary.arm == arm) & (summary.finetune == finetune) & (summary.n_subjects == n)]
    return float(row[f"{metric}_{stat}"].iloc[0]) if len(row) else float("nan")


def scratch_noise(summary: pd.DataFrame, small: int, large: int, floor: float = 0.02) -> float:
    """How far scratch DSC may fall from ``small`` to ``large`` subjects before it is "clearly worse".

    The larger of ``floor`` and the two cells' sd over seeds: with a fixed step budget and two
    seeds, the scratch curve's seed noise (measured: sd 0.03-0.06 on the course profile) exceeds
    a fixed 0.02, and a drop within that noise is no finding either way.
    """
    sds = [summary_value(summary, "scratch", n, stat="sd") for n in (small, large)]
    return max([floor, *[v for v in sds if np.isfinite(v)]])
