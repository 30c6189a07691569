"""The study's central experiment (notebook 05): U-nets trained on real vs synthetic patches.

Every U-net gets the same budget (the same number of optimizer steps, batch size, learning
rate and seed) and the same model selection (Dice on the *real* validation patches); only the
training patches differ. All are evaluated on the real test volumes with whole-volume
inference. Synthetic-only training is the privacy test: a U-net that never saw a patient's
patch is only useful if the GAN's image/label pairs carry what real pairs carry.

Functions here keep the notebook short: load the training sets with errors that name the
notebook to run, train them all, evaluate, summarize in the study's format, explain the ranking.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..conventions import dice
from ..io import DataError
from ..patchset import PatchSet
from ..profiles import GAN_NAMES, Profile
from ..study import STUDY_GAN_ORDER, STUDY_RESULTS
from ..runs import RunPaths
from .infer import evaluate_subjects
from .train import default_val_every, load_unet, plan_steps, predict_patches, train_unet

__all__ = [
    "GAN_NOTEBOOKS",
    "MODEL_LABELS",
    "TrainedUnet",
    "load_synthetic_sets",
    "train_models",
    "evaluate_models",
    "inference_comparison",
    "summary_table",
    "ranking_sentence",
    "gan_costs",
    "training_set_diagnostics",
    "AGREEMENT",
    "gap_diagnosis",
    "record_and_check",
]

#: The notebook that writes each GAN's synthetic set.
GAN_NOTEBOOKS: dict[str, str] = {"dcgan": "02_dcgan", "wgan_gp": "03_wgan_gp", "wgan_gp_sn": "04_wgan_gp_sn"}
#: Display names in tables and figures.
MODEL_LABELS: dict[str, str] = {"real": "real", "dcgan": "DCGAN", "wgan_gp": "WGAN-GP", "wgan_gp_sn": "WGAN-GP-SN"}


@dataclass
class TrainedUnet:
    """One trained U-net of the experiment."""

    name: str
    checkpoint: Path
    history: pd.DataFrame
    best_val_dice: float | None
    seconds: float
    n_train: int


def load_synthetic_sets(paths: RunPaths, names: Sequence[str] = GAN_NAMES) -> dict[str, PatchSet]:
    """Each GAN's synthetic patch set; a missing one names the notebook that writes it."""
    sets = {}
    for name in names:
        f = paths.synthetic_file(name)
        if not f.exists():
            nb = GAN_NOTEBOOKS.get(name, "02-04")
            raise DataError(f, f"synthetic patches of {name} not found: run notebook {nb} first")
        sets[name] = PatchSet.load(f)
    return sets


def train_models(
    train_sets: Mapping[str, PatchSet], val: PatchSet, profile: Profile, paths: RunPaths, seed: int,
    device: Any = None, steps: int | None = None, progress: bool = True,
) -> dict[str, TrainedUnet]:
    """Train one U-net per training set with the same budget; resumes/reuses finished runs.

    Parameters
    ----------
    train_sets
        name -> patches (``"real"`` and the GAN names); U-net ``name`` goes to ``paths.unet_dir(name)``.
    val
        Real validation patches: the same model selection for every U-net.
    steps
        Optimizer steps for every U-net (default: what the profile gives the *real* set,
        ``epochs`` passes capped at ``max_steps``), so a larger synthetic set gets no more updates.
    """
    cfg = profile.unet
    reference = train_sets["real"] if "real" in train_sets else next(iter(train_sets.values()))
    if steps is None:
        steps = plan_steps(len(reference), cfg, cfg.batch_size, None)
    # The same validation steps for every U-net (curves line up; selection sees the same points).
    val_every = default_val_every(steps, math.ceil(len(reference) / cfg.batch_size))
    out = {}
    for name, patches in train_sets.items():
        result = train_unet(patches, val, cfg, paths.unet_dir(name), seed=seed, device=device, max_steps=steps,
                            progress=progress, val_every=val_every)
        out[name] = TrainedUnet(name, result.checkpoint, result.history, result.best_val_dice, result.seconds,
                                len(patches))
    return out


def evaluate_models(
    models: Mapping[str, TrainedUnet | Path], dataset: Any, split: str = "test", mode: str = "tiles",
    threshold: float = 0.5, device: Any = None, scaling: str = "per_tile",
) -> pd.DataFrame:
    """Whole-volume metrics of every model on every subject of ``split`` (long table).

    Returns
    -------
    DataFrame with columns ``model`` and those of :func:`~tofmra_utils.unet.infer.evaluate_subjects`
    (``subject, dsc, hd95_mm, hd95_study, hd95_tool, fp_brain_edge, fp_interior``), then ``eval_seconds``;
    ``attrs["evaluated_in"]`` is ``"brain mask"`` (user data: prediction and label cut to the
    brain mask, as the study's brain-masked data were) or ``"whole volume"`` (the phantom).
    """
    tables = []
    for name, m in models.items():
        ckpt = m.checkpoint if isinstance(m, TrainedUnet) else Path(m)
        model, info = load_unet(ckpt, device=device)
        t0 = time.perf_counter()
        table = evaluate_subjects(model, info, dataset, split=split, mode=mode, threshold=threshold, device=device,
                                  scaling=scaling)
        table.insert(0, "model", name)
        table["eval_seconds"] = (time.perf_counter() - t0) / max(len(table), 1)
        tables.append(table)
    merged = pd.concat(tables, ignore_index=True)
    merged.attrs["evaluated_in"] = tables[0].attrs.get("evaluated_in", "whole volume") if tables else "whole volume"
    return merged


def _mean_sd(values: pd.Series, digits: int) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if v.size == 0:
        return "n/a"
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {sd:.{digits}f}"


def summary_table(per_patient: pd.DataFrame, models: Mapping[str, TrainedUnet] | None = None) -> pd.DataFrame:
    """The study's table: one row per model, mean ± sd over test patients, study numbers beside.

    Columns: ``model`` (key: ``real``, ``dcgan``, ...), ``label`` (display name), ``trained on
    (patches)``, ``DSC``, ``95HD (mm)`` (standard, medpy
    definition), ``95HD (voxels, tool emulation)`` (the EvaluateSegmentation search replayed with a
    fixed seed: the column beside the study's numbers), ``95HD (voxels, exact: lower bound of the
    tool's value)``, ``study DSC``, ``study 95HD (tool units)``, the
    numeric means ``dsc_mean``, ``hd95_mm_mean``, ``hd95_study_mean``, ``dsc_sd`` (sample sd over
    the test patients), ``empty predictions`` ("k of n": patients left out of the 95HD means because
    the prediction was empty) and the undefined-distance count ``hd95_nan``.
    """
    rows = []
    for name, grp in per_patient.groupby("model", sort=False):
        study = STUDY_RESULTS.get(name, {})
        rows.append({
            "model": name,
            "label": MODEL_LABELS.get(name, name),
            "trained on (patches)": models[name].n_train if models and name in models else np.nan,
            "DSC": _mean_sd(grp["dsc"], 3),
            "95HD (mm)": _mean_sd(grp["hd95_mm"], 2),
            "95HD (voxels, tool emulation)": _mean_sd(grp["hd95_tool"], 2) if "hd95_tool" in grp else "n/a",
            "95HD (voxels, exact: lower bound of the tool's value)": _mean_sd(grp["hd95_study"], 2),
            # Empty predictions have no distance and drop out of the 95HD means: their count stands beside them.
            "empty predictions": f"{int(grp['hd95_mm'].isna().sum())} of {len(grp)}",
            "study DSC": study.get("dsc", np.nan),
            "study 95HD (tool units)": study.get("hd95", np.nan),
            "dsc_mean": float(grp["dsc"].mean()),
            "dsc_sd": float(grp["dsc"].std()) if len(grp) > 1 else np.nan,
            "hd95_mm_mean": float(grp["hd95_mm"].mean()),
            "hd95_study_mean": float(grp["hd95_study"].mean()),
            "hd95_tool_mean": float(grp["hd95_tool"].mean()) if "hd95_tool" in grp else np.nan,
            "hd95_nan": int(grp["hd95_mm"].isna().sum()),
            "n_patients": int(len(grp)),
        })
    return pd.DataFrame(rows)


def inference_comparison(
    main: tuple[str, pd.DataFrame, pd.DataFrame], other: tuple[str, pd.DataFrame, pd.DataFrame],
    models: Sequence[str],
) -> pd.DataFrame:
    """The same U-nets scored with two inferences, side by side (notebook 05's "study's inference beside").

    Parameters
    ----------
    main, other
        ``(name, per_patient, summary)`` of each inference: its words (e.g. ``"sliding window,
        per-tile scaling"``), the long table of :func:`evaluate_models` (with ``fp_brain_edge`` and
        ``fp_interior``) and its :func:`summary_table`.
    models
        Model keys in the order of the rows.

    Returns
    -------
    One row per model (display label): ``DSC (<name>)`` and ``95HD mm (<name>)`` of both
    inferences (mean ± sd over the test patients), then ``FP voxels per volume (<name>)`` of both
    (false-positive voxels per test volume, mean over the patients, rounded).
    """
    (main_name, main_pp, main_sum), (alt_name, alt_pp, alt_sum) = main, other
    fp = {name: pp.groupby("model")[["fp_brain_edge", "fp_interior"]].mean().sum(axis=1)
          for name, pp in ((main_name, main_pp), (alt_name, alt_pp))}
    both = pd.DataFrame({f"DSC ({main_name})": main_sum.set_index("model")["DSC"],
                         f"DSC ({alt_name})": alt_sum.set_index("model")["DSC"],
                         f"95HD mm ({main_name})": main_sum.set_index("model")["95HD (mm)"],
                         f"95HD mm ({alt_name})": alt_sum.set_index("model")["95HD (mm)"],
                         **{f"FP voxels per volume ({k})": v.round(0) for k, v in fp.items()}})
    both = both.reindex(list(models))
    both.index = [MODEL_LABELS.get(k, k) for k in both.index]
    return both


def gan_costs(ctx: Any, names: Sequence[str] = GAN_NAMES) -> pd.DataFrame:
    """Each GAN's training cost and generation settings as notebooks 02-04 recorded them.

    Returns
    -------
    DataFrame indexed by GAN key with ``GAN steps``, ``GAN train (s)``, ``generated from``
    (weights and step) and ``label threshold``; a GAN whose notebook recorded nothing is left out.
    """
    rows = {}
    for name in names:
        try:
            r = ctx.recorded(GAN_NOTEBOOKS[name])
        except DataError:
            continue
        rows[name] = {
            "GAN steps": r.get("generator_steps"),
            "GAN train (s)": r.get("train_seconds"),
            "generated from": f"{r.get('generated_from', 'final')} weights, step {r.get('generated_step', r.get('generator_steps'))}",
            "label threshold": _threshold_text(r),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _threshold_text(recorded: Mapping[str, Any]) -> str:
    """``"0.164 (match_real, 1.5x real fraction)"``, ``"0.800 (fixed)"``, or ``"-"`` when not recorded."""
    threshold = recorded.get("threshold")
    if not isinstance(threshold, (int, float)):
        return "-"
    rule = recorded.get("threshold_rule", "fixed")
    scale = recorded.get("label_fraction_scale")
    detail = f", {scale:g}x real fraction" if rule == "match_real" and scale else ""
    return f"{threshold:.3f} ({rule}{detail})"


def ranking_sentence(summary: pd.DataFrame) -> str:
    """A sentence stating the ranking by mean DSC and how far the best GAN is from real data."""
    ranked = summary.sort_values("dsc_mean", ascending=False)
    order = ", ".join(f"{r.label} ({r.dsc_mean:.3f})" for r in ranked.itertuples())
    text = f"Ranking by mean test DSC: {order}."
    real = summary[summary["model"] == "real"]
    gans = ranked[ranked["model"] != "real"]
    if len(real) and len(gans):
        best = gans.iloc[0]
        gap = float(real["dsc_mean"].iloc[0] - best["dsc_mean"])
        text += (f" The best synthetic-data U-net ({best['label']}) is {abs(gap):.3f} DSC "
                 f"{'below' if gap >= 0 else 'above'} the real-data U-net (study: WGAN-GP-SN 0.04 below real).")
        study_order = list(STUDY_GAN_ORDER)
        ours = [m for m in gans["model"] if m in study_order]
        same = ours == [m for m in study_order if m in ours]
        text += (" The GAN order matches the study's (WGAN-GP-SN > WGAN-GP > DCGAN)" if same else
                 " The GAN order differs from the study's (WGAN-GP-SN > WGAN-GP > DCGAN)")
        text += (", but this run trained each GAN and U-net with one seed: a GAN order is a finding only where it "
                 "holds beyond the spread over at least 3 seeds (`make seeds` repeats notebooks 00-05 with two more "
                 "training seeds and prints which order the seeds support).")
    return text


#: Column of :func:`training_set_diagnostics`: Dice between a set's labels and what the real-trained
#: U-net segments in its images.
AGREEMENT = "agreement with a real-trained segmenter (Dice)"


def training_set_diagnostics(
    sets: Mapping[str, PatchSet], reference_checkpoint: Path, device: Any = None, max_patches: int = 2000, seed: int = 0,
) -> pd.DataFrame:
    """Why a synthetic set trains a worse U-net: label statistics and image/label agreement.

    Per set: number of patches, vessel fraction of the labels, mean image intensity inside vs
    outside the labels (contrast the label promises), and :data:`AGREEMENT`, the Dice between
    the set's labels and what the reference U-net (trained on real patches) segments in the
    set's images. Low agreement on synthetic pairs means the GAN's label channel does not match
    its image channel the way real labels match real images -- a U-net trained on such pairs
    learns the mismatch. The agreement is a property of the pairs *and* of the reference
    segmenter; it is not a Dice against any truth.

    Pass the real **validation** patches as the ``"real"`` set: the reference U-net was trained
    (and selected) on the real training patches, so its agreement with them is in-sample and
    flatters the real row; on validation patches it is measured out of sample, as for the
    synthetic sets.
    """
    model, info = load_unet(reference_checkpoint, device=device)
    rng = np.random.default_rng(seed)
    rows = []
    for name, ps in sets.items():
        idx = np.sort(rng.choice(len(ps), min(len(ps), max_patches), replace=False))
        sub = ps.select(idx)
        lab = sub.label > 0
        pred = predict_patches(model, sub.image, info["norm_mean"], info["norm_std"], device=device) >= 0.5
        inside = float(sub.image[lab].mean()) if lab.any() else np.nan
        outside = float(sub.image[~lab].mean()) if (~lab).any() else np.nan
        rows.append({
            "set": name,
            "label": MODEL_LABELS.get(name, name),
            "patches": len(ps),
            "vessel fraction": round(float(lab.mean()), 4),
            "patches without vessel": round(float((~lab.any(axis=(1, 2))).mean()), 3),
            "intensity inside label": round(inside, 3),
            "intensity outside label": round(outside, 3),
            AGREEMENT: round(dice(pred, lab), 3),
        })
    return pd.DataFrame(rows)


#: Below this DSC gap the best synthetic U-net counts as close to the real one (the study's gap: 0.04).
CLOSE_GAP = 0.05


def gap_diagnosis(summary: pd.DataFrame, diagnostics: pd.DataFrame) -> str:
    """Say, from this run's numbers, why the best synthetic-data U-net trails the real-data one.

    Three causes are checked for the best GAN, each against the real pairs as reference:

    * *image/label disagreement* (GAN quality): the real-trained U-net's Dice with the set's
      labels is more than 0.1 below its Dice with the real labels;
    * *vessel fraction off* (label threshold, mode collapse): the labels' vessel fraction is
      outside 0.8-1.25x the real one;
    * *weaker vessel contrast* (image quality): the mean intensity inside minus outside the
      labels is below 0.8x the real one.

    Parameters
    ----------
    summary
        :func:`summary_table` output (``model`` keys, ``dsc_mean``).
    diagnostics
        :func:`training_set_diagnostics` output (``set`` keys), with a ``real`` row.

    Returns
    -------
    str: one or two sentences.
    """
    by_model = summary.set_index("model")["dsc_mean"]
    gans = by_model.drop("real", errors="ignore").sort_values(ascending=False)
    if "real" not in by_model or gans.empty:
        return "No real-vs-synthetic comparison in this run."
    best_key = str(gans.index[0])
    best = MODEL_LABELS.get(best_key, best_key)
    gap = float(by_model["real"] - gans.iloc[0])
    if gap < 0:
        return (f"The best synthetic-data U-net ({best}) scores {-gap:.3f} DSC above the real-data U-net: no gap "
                f"to explain (after very short training, as in the smoke profile, such an order is noise).")
    if gap < CLOSE_GAP:
        return (f"The best synthetic-data U-net ({best}) is within {CLOSE_GAP} DSC of the real-data U-net "
                f"(gap {gap:.3f}): its pairs carry what the real pairs carry, as in the study.")
    d = diagnostics.set_index("set")
    real, syn = d.loc["real"], d.loc[best_key]
    agree_key = AGREEMENT
    causes = []
    agree_drop = float(real[agree_key] - syn[agree_key])
    if agree_drop > 0.1:
        causes.append(f"its labels disagree with its images (the real-trained U-net matches them at "
                      f"{syn[agree_key]:.2f}, real validation labels at {real[agree_key]:.2f}): GAN quality, the pairs are inconsistent")
    fraction_ratio = float(syn["vessel fraction"] / real["vessel fraction"]) if real["vessel fraction"] > 0 else math.nan
    if not 0.8 <= fraction_ratio <= 1.25:
        causes.append(f"its labels mark {fraction_ratio:.2f}x the real vessel fraction "
                      f"({syn['vessel fraction']:.3f} vs {real['vessel fraction']:.3f}): the label threshold "
                      f"(study: 0.8) or a collapsed generator shifts how much is vessel")
    contrast = float(syn["intensity inside label"] - syn["intensity outside label"])
    real_contrast = float(real["intensity inside label"] - real["intensity outside label"])
    if real_contrast > 0 and contrast < 0.8 * real_contrast:
        causes.append(f"its labelled pixels stand out less from the rest ({contrast:.2f} vs {real_contrast:.2f} "
                      f"in [-1, 1] units): the generator draws fainter vessels")
    head = f"The best synthetic-data U-net ({best}) trails the real-data U-net by {gap:.3f} DSC."
    if not causes:
        return head + (" Its labels, vessel fraction and contrast look like the real pairs', so the gap lies in "
                       "what the checks here do not see (vessel shapes, variety); try a longer GAN training.")
    return head + " In its training pairs, " + "; ".join(causes) + "."


def record_and_check(
    ctx: Any, models: Mapping[str, TrainedUnet], per_patient: pd.DataFrame, summary: pd.DataFrame, steps: int,
    n_test: int, eval_mode: str, ranking: str, diagnosis: str, compared: tuple[str, pd.DataFrame] | None = None,
    eval_scaling: str = "per_tile", choice: Any = None,
) -> dict[str, Any]:
    """Record notebook 05's key results for ``summary.json`` and check the experiment did what it claims.

    Records, per model key: ``dsc_<key>``, ``dsc_sd_<key>`` (sd over test patients),
    ``hd95_mm_<key>``, ``hd95_study_<key>``, ``train_seconds_<key>``, ``best_val_dice_<key>``
    (and ``dsc_<key>_<compared>`` for the ``compared`` inference, named ``<mode>`` or
    ``<mode>_<scaling>``), the inference used (``eval_mode``, ``eval_scaling``) and, when it was
    chosen on validation volumes (``choice``, an
    :class:`~tofmra_utils.unet.inference_choice.InferenceChoice`), ``inference_chosen_on`` and the
    validation DSC and brain-edge false positives of every candidate (``inference_candidates``).
    Checks (``AssertionError``):
    the four U-nets exist with the same budget and were scored on every test patient, DSC in
    [0, 1], a distance is undefined only for an empty prediction, and beyond ``smoke`` no U-net
    predicts an empty volume and the real-data U-net really segments vessels (DSC > 0.5).
    """
    by_model = summary.set_index("model")
    values = {f"{metric}_{key}": round(float(by_model.loc[key, column]), digits)
              for metric, column, digits in (("dsc", "dsc_mean", 4), ("dsc_sd", "dsc_sd", 4),
                                             ("hd95_mm", "hd95_mm_mean", 3), ("hd95_study", "hd95_study_mean", 3),
                                             ("hd95_tool", "hd95_tool_mean", 3))
              for key in models}
    costs = gan_costs(ctx)
    recorded = ctx.record(
        steps=int(steps), eval_mode=eval_mode, eval_scaling=eval_scaling, n_test=int(n_test), ranking=ranking,
        gap_diagnosis=diagnosis, **values,
        inference_chosen_on="validation volumes" if choice is not None else "notebook parameters",
        **{f"gan_steps_{k}": int(v) for k, v in costs.get("GAN steps", pd.Series(dtype=float)).dropna().items()},
        **{f"gan_train_seconds_{k}": float(v) for k, v in costs.get("GAN train (s)", pd.Series(dtype=float)).dropna().items()},
        **{f"train_seconds_{k}": round(m.seconds, 1) for k, m in models.items()},
        **{f"best_val_dice_{k}": round(float(m.best_val_dice), 4) for k, m in models.items()},
    )
    if choice is not None:
        recorded = ctx.record(inference_candidates={
            f"{r['mode']}_{r['scaling']}": {"val_dsc": round(float(r["val DSC"]), 4),
                                            "fp_brain_edge": round(float(r["FP at brain edge"]), 1),
                                            "fp_inside": round(float(r["FP inside"]), 1)}
            for _, r in choice.table.iterrows()})
    if compared is not None:
        mode, other = compared
        alt = other.set_index("model")
        recorded = ctx.record(compare_mode=mode, **{f"dsc_{k}_{mode}": round(float(alt.loc[k, "dsc_mean"]), 4) for k in models})
    assert set(models) == {"real", *GAN_NAMES}
    assert all(len(m.history) == steps for m in models.values()), "every U-net must get the same budget"
    counts = per_patient.groupby("model")["subject"].nunique()
    assert len(counts) == 4 and (counts == n_test).all(), counts
    assert per_patient["dsc"].between(0, 1).all()
    undefined = per_patient["hd95_mm"].isna() | per_patient["hd95_study"].isna()
    assert (per_patient.loc[undefined, "dsc"] == 0).all(), "a distance may be undefined only for an empty prediction"
    assert np.isfinite(per_patient.loc[~undefined, ["hd95_mm", "hd95_study"]].to_numpy()).all()
    if ctx.profile.name != "smoke":  # an empty prediction is a failed training run, not a result
        empty = per_patient[undefined]
        assert empty.empty, "empty predictions: " + ", ".join(f"{r.model} on {r.subject}" for r in empty.itertuples())
    min_real_dsc = 0.5 if ctx.profile.name != "smoke" else 0.0
    assert by_model.loc["real", "dsc_mean"] > min_real_dsc, by_model.loc["real", "dsc_mean"]
    return recorded
