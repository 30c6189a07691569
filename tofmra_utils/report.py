"""Tables generated from a run's ``summary.json``: the README's results, and two runs side by side.

No number in the README is typed by hand: ``tofmra report --run runs/course --readme README.md``
rewrites the block between ``<!-- results:begin -->`` and ``<!-- results:end -->`` from the run
and names the run, its profile, thread count and the commit it came from. ``--compare`` puts a
second run beside the first and says, per headline number, whether the two differ by less than
the number's own reported spread (what reproducibility across machines and thread counts means
here; see the README).

Plain Python (no torch, no pandas), so the command is instant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import DataError, atomic_path, read_json
from .runs import repo_commit
from .study import STUDY_RESULTS, STUDY_TL_ONE_PATIENT

__all__ = ["Headline", "headlines", "notebook_times", "results_markdown", "comparison_markdown", "update_readme", "load_summary",
           "seed_spread", "seed_spread_markdown"]

GAN_LABELS = {"dcgan": "DCGAN", "wgan_gp": "WGAN-GP", "wgan_gp_sn": "WGAN-GP-SN"}


@dataclass(frozen=True)
class Headline:
    """One headline number of a run: its value, its spread and what the spread is over."""

    quantity: str
    value: float | None
    spread: float | None
    over: str
    study: float | None = None


def load_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``<run_dir>/summary.json`` (a :class:`DataError` naming the file if it is missing)."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        raise DataError(path, "no run summary: run `tofmra run` first")
    return read_json(path)


def _results(summary: dict[str, Any], notebook: str) -> dict[str, Any]:
    return summary.get("notebooks", {}).get(notebook, {}).get("results", {}) or {}


def headlines(summary: dict[str, Any]) -> list[Headline]:
    """The study's headline quantities as this run measured them (missing notebooks give none)."""
    out: list[Headline] = []
    unet = _results(summary, "05_unet_synthetic_vs_real")
    n_test = unet.get("n_test")
    over_patients = f"sd over {n_test} test patients" if n_test else "sd over test patients"
    for key, label in (("real", "real patches"), *((k, f"{v} synthetic patches") for k, v in GAN_LABELS.items())):
        if f"dsc_{key}" in unet:
            out.append(Headline(f"U-net trained on {label}: test DSC", unet[f"dsc_{key}"], unet.get(f"dsc_sd_{key}"),
                                over_patients, STUDY_RESULTS.get(key, {}).get("dsc")))
    tl = _results(summary, "06_transfer_learning")
    if tl:
        seeds = tl.get("n_seeds")
        over_seeds = "sd over seeds" if seeds is None else f"sd over {seeds} seeds"
        for size in ("small", "large"):
            n = tl.get(f"n_{size}")
            for arm, label in (("scratch", "from scratch"), ("synthetic", "pretrained on synthetic data")):
                key = f"{arm}_dsc_{size}"
                if key in tl:
                    study = STUDY_TL_ONE_PATIENT[arm][0] if n == 1 else None
                    out.append(Headline(f"site B, {n} subject{'s' if n != 1 else ''}, {label}: test DSC", tl[key],
                                        tl.get(f"{key}_sd"), over_seeds, study))
        for size in ("small", "large"):
            n = tl.get(f"n_{size}")
            if tl.get(f"synthetic_gain_dsc_{size}") is not None:
                out.append(Headline(f"site B, {n} subject{'s' if n != 1 else ''}: gain of synthetic pretraining (DSC)",
                                    tl[f"synthetic_gain_dsc_{size}"], tl.get(f"synthetic_gain_dsc_{size}_sd"), over_seeds))
    audit = _results(summary, "07_privacy_audit")
    space = audit.get("primary_features", "pixels")
    for key, label in GAN_LABELS.items():
        if f"copy_rate_{key}" in audit:
            out.append(Headline(f"{label} synthetic set: copy rate (privacy audit, {space})", audit[f"copy_rate_{key}"],
                                None, ""))
        if f"mia_auc_{key}" in audit:
            out.append(Headline(f"{label} synthetic set: membership-inference AUC (black-box; 0.5 = no leak)",
                                audit[f"mia_auc_{key}"], None, ""))
    return out


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _provenance(summary: dict[str, Any], commit: str | None) -> str:
    minutes = summary.get("total_seconds")
    took = f", {minutes / 60:.1f} min for the notebooks" if isinstance(minutes, (int, float)) else ""
    failed = f" (status {summary.get('status')}: {summary.get('failed')})" if summary.get("status") != "ok" else ""
    return (f"profile `{summary.get('profile', '?')}`{failed}, {summary.get('machine', '?')}, torch threads: "
            f"{summary.get('threads', '?')}{took}, finished {summary.get('finished', '?')}, "
            f"commit {commit or summary.get('commit') or repo_commit()}")


def results_markdown(summary: dict[str, Any], commit: str | None = None) -> str:
    """The headline table of one run (value ± spread, the study beside it), with its provenance."""
    lines = ["| | this run | spread | the study (journal) |", "|---|---|---|---|"]
    for h in headlines(summary):
        spread = "-" if h.spread is None else f"± {h.spread:.3f} ({h.over})"
        lines.append(f"| {h.quantity} | {_fmt(h.value)} | {spread} | {_fmt(h.study, 2)} |")
    unet = _results(summary, "05_unet_synthetic_vs_real")
    if unet.get("eval_mode"):
        how = ("chosen on the validation volumes" if unet.get("inference_chosen_on") == "validation volumes"
               else "set by the notebook's parameters")
        lines.append(f"\nNotebook 05's whole-volume inference: `{unet['eval_mode']}` tiling, "
                     f"`{unet.get('eval_scaling', 'per_tile')}` scaling, {how}.")
    return ("\n".join(lines) + f"\n\nWall time per notebook: {notebook_times(summary)}."
            + f"\n\n*Generated by `tofmra report` from {_provenance(summary, commit)}.*")


def notebook_times(summary: dict[str, Any]) -> str:
    """``"00 6 s · 01 43 s · ..."``: each notebook's wall time in the run."""
    return " · ".join(f"{name[:2]} {entry['seconds']:.0f} s" for name, entry in summary.get("notebooks", {}).items()
                      if isinstance(entry.get("seconds"), (int, float)))


def comparison_markdown(a: dict[str, Any], b: dict[str, Any], labels: tuple[str, str] = ("run A", "run B")) -> str:
    """Two runs side by side: per headline, both values, their difference and whether it is within the spread.

    The spread used is the larger of the two runs' reported spreads for that number.
    """
    first, second = {h.quantity: h for h in headlines(a)}, {h.quantity: h for h in headlines(b)}
    lines = [f"| | {labels[0]} | {labels[1]} | difference | spread | within the spread |", "|---|---|---|---|---|---|"]
    for quantity, h in first.items():
        other = second.get(quantity)
        if other is None or h.value is None or other.value is None:
            continue
        diff = other.value - h.value
        spreads = [s for s in (h.spread, other.spread) if s is not None]
        spread = max(spreads) if spreads else None
        within = "-" if spread is None else ("yes" if abs(diff) < spread else "no")
        lines.append(f"| {quantity} | {_fmt(h.value)} | {_fmt(other.value)} | {diff:+.3f} | {_fmt(spread)} | {within} |")
    times = [f"{labels[0]}: {_provenance(a, None)}", f"{labels[1]}: {_provenance(b, None)}"]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {t}" for t in times)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return mean, sd


def seed_spread(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Notebook 05's DSCs over runs that differ only in their training seed (``tofmra run --seed``).

    Returns
    -------
    dict with ``seeds`` (each run's seed), ``dsc`` (model key -> per-seed DSCs), ``mean`` and ``sd``
    (over seeds, sample sd), ``ratio`` (per seed: best synthetic DSC / real DSC) with its
    ``ratio_mean``/``ratio_sd``, and ``order``: the GANs by mean DSC with, for each neighbouring
    pair, whether the seeds support the order (the means differ by more than the two sds together).

    Raises
    ------
    ValueError
        With fewer than 2 runs, runs of different profiles, repeated seeds, or a run without
        notebook 05's results.
    """
    if len(summaries) < 2:
        raise ValueError("a seed spread needs at least 2 runs (3 for a finding)")
    profiles = {s.get("profile") for s in summaries}
    if len(profiles) != 1:
        raise ValueError(f"the runs come from different profiles: {sorted(map(str, profiles))}")
    seeds = [s.get("seed") for s in summaries]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the runs repeat a seed: {seeds}")
    keys = ("real", *GAN_LABELS)
    dsc: dict[str, list[float]] = {k: [] for k in keys}
    for s in summaries:
        unet = _results(s, "05_unet_synthetic_vs_real")
        missing = [k for k in keys if f"dsc_{k}" not in unet]
        if missing:
            raise ValueError(f"run with seed {s.get('seed')} has no notebook-05 DSC for {', '.join(missing)}")
        for k in keys:
            dsc[k].append(float(unet[f"dsc_{k}"]))
    stats = {k: _mean_sd(v) for k, v in dsc.items()}
    ratio = [max(dsc[g][i] for g in GAN_LABELS) / dsc["real"][i] for i in range(len(summaries))]
    ratio_mean, ratio_sd = _mean_sd(ratio)
    ranked = sorted(GAN_LABELS, key=lambda g: -stats[g][0])
    order = [(a, b, stats[a][0] - stats[b][0] > stats[a][1] + stats[b][1]) for a, b in zip(ranked, ranked[1:])]
    return {"seeds": seeds, "profile": profiles.pop(), "dsc": dsc, "mean": {k: v[0] for k, v in stats.items()},
            "sd": {k: v[1] for k, v in stats.items()}, "ratio": ratio, "ratio_mean": ratio_mean, "ratio_sd": ratio_sd,
            "order": order}


def seed_spread_markdown(summaries: list[dict[str, Any]], labels: list[str] | None = None) -> str:
    """:func:`seed_spread` as a table (per-seed DSCs, mean ± sd over seeds) and a sentence on the GAN order."""
    spread = seed_spread(summaries)
    labels = labels or [f"seed {s}" for s in spread["seeds"]]
    names = {"real": "real", **GAN_LABELS}
    lines = ["| U-net trained on | " + " | ".join(labels) + " | mean ± sd over seeds | study |",
             "|---|" + "---|" * len(labels) + "---|---|"]
    for k, values in spread["dsc"].items():
        study = STUDY_RESULTS.get(k, {}).get("dsc")
        lines.append(f"| {names[k]} | " + " | ".join(f"{v:.3f}" for v in values)
                     + f" | {spread['mean'][k]:.3f} ± {spread['sd'][k]:.3f} | {_fmt(study, 2)} |")
    lines.append("| best synthetic / real | " + " | ".join(f"{r:.3f}" for r in spread["ratio"])
                 + f" | {spread['ratio_mean']:.3f} ± {spread['ratio_sd']:.3f} | 0.96 |")
    parts = []
    for a, b, supported in spread["order"]:
        sign = ">" if supported else "≈"
        parts.append(f"{GAN_LABELS[a]} {sign} {GAN_LABELS[b]}")
    n = len(labels)
    sentence = (f"GAN order by mean test DSC over {n} seeds: " + ", ".join(parts) + " ('>' where the means differ by "
                "more than their two seed sds together, '≈' where the seeds do not support an order)."
                + (" Fewer than 3 seeds: no finding." if n < 3 else ""))
    return "\n".join(lines) + "\n\n" + sentence


def readme_markers(block: str) -> tuple[str, str]:
    """The two HTML comments that enclose a generated block of the README."""
    return f"<!-- {block}:begin -->", f"<!-- {block}:end -->"


#: The results block's markers (``tofmra report --readme``).
BEGIN, END = readme_markers("results")


def update_readme(readme: str | os.PathLike[str], table: str, block: str = "results") -> Path:
    """Replace the README's block between ``<!-- <block>:begin -->`` and ``<!-- <block>:end -->`` with
    ``table`` (atomically). ``block``: ``"results"`` (``tofmra report``) or ``"dryrun"`` (``tofmra run
    --dry-run``)."""
    begin, end = readme_markers(block)
    path = Path(readme)
    text = path.read_text()
    if begin not in text or end not in text:
        raise DataError(path, f"no {block} block: add the lines {begin} and {end} where the table goes")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(f"{head}{begin}\n{table}\n{end}{tail}")
    return path
