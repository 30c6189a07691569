"""Choosing how to segment whole volumes (tiling mode, input scaling) on validation volumes.

The inference mode and the input scaling are settings of the experiment like any other: chosen
on the validation subjects' volumes, never on the test volumes the tables report. Every candidate
of :data:`INFERENCE_CANDIDATES` segments the validation volumes with every U-net given; the one
with the best mean DSC (over U-nets and volumes) wins, ties going to the earlier candidate.

The same pass counts where the false positives lie (``fp_brain_edge`` and ``fp_interior`` of
:func:`~tofmra_utils.unet.infer.evaluate_subjects`), so a claim like "per-tile scaling adds false
positives at the brain's edge" is measured, not asserted (:func:`edge_false_positive_sentence`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..io import DataError
from .experiment import evaluate_models
from .infer import EDGE_WIDTH, brain_edge, check_inference

__all__ = [
    "INFERENCE_CANDIDATES", "STUDY_INFERENCE", "InferenceChoice", "inference_label", "candidates_for",
    "evaluate_inference_candidates", "choose_inference", "edge_false_positive_sentence", "select_inference",
]

#: (mode, scaling) pairs tried on the validation volumes, in order of preference on a tie.
INFERENCE_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("sliding", "per_tile"), ("tiles", "per_tile"), ("sliding", "volume"), ("tiles", "volume"), ("slice", "volume"),
)
#: The study's inference: non-overlapping tiles of the volume z-scored as a whole.
STUDY_INFERENCE: tuple[str, str] = ("tiles", "volume")

_MODE_WORDS = {"tiles": "tiles", "sliding": "sliding window", "slice": "whole slices"}
_SCALING_WORDS = {"per_tile": "per-tile scaling", "volume": "volume scaling"}


def inference_label(mode: str, scaling: str) -> str:
    """Words for a (mode, scaling) pair, e.g. ``"sliding window, per-tile scaling"``."""
    return f"{_MODE_WORDS[mode]}, {_SCALING_WORDS[scaling]}"


def candidates_for(mode: str = "auto", scaling: str = "auto") -> list[tuple[str, str]]:
    """The candidates consistent with a fixed ``mode`` and/or ``scaling`` (``"auto"``: any).

    Raises
    ------
    ValueError
        An unknown value, or a fixed pair that is not a valid inference (whole slices need volume
        scaling).
    """
    if mode != "auto" and scaling != "auto":
        check_inference(mode, scaling)
        return [(mode, scaling)]
    for value, allowed, what in ((mode, {m for m, _ in INFERENCE_CANDIDATES}, "mode"),
                                 (scaling, {s for _, s in INFERENCE_CANDIDATES}, "scaling")):
        if value != "auto" and value not in allowed:
            raise ValueError(f"unknown inference {what} {value!r}: choose 'auto' or one of {', '.join(sorted(allowed))}")
    return [(m, s) for m, s in INFERENCE_CANDIDATES if mode in ("auto", m) and scaling in ("auto", s)]


class InferenceChoice(NamedTuple):
    """The chosen inference and the evidence.

    ``table`` has one row per candidate: ``mode``, ``scaling``, ``inference`` (words), ``val DSC``
    (mean over U-nets and validation volumes), ``val DSC sd`` (sd over U-nets of their means),
    ``val 95HD (mm)``, ``FP at brain edge`` and ``FP inside`` (false-positive voxels per volume,
    mean over U-nets), ``FP share at edge`` (fraction of false positives in the brain's rim),
    ``seconds per volume`` and ``chosen``. ``attrs``: ``edge_share_of_brain`` (the rim's share of
    the brain's voxels: the share of false positives expected there by chance), ``split``,
    ``models`` and ``n_volumes``.
    """

    mode: str
    scaling: str
    table: pd.DataFrame

    @property
    def label(self) -> str:
        return inference_label(self.mode, self.scaling)


def evaluate_inference_candidates(
    models: Mapping[str, Any], dataset: Any, split: str = "val", candidates: Sequence[tuple[str, str]] | None = None,
    threshold: float = 0.5, device: Any = None,
) -> pd.DataFrame:
    """Every candidate x model x volume of ``split``: a long table of scores and false-positive counts.

    Parameters
    ----------
    models
        Name -> :class:`~tofmra_utils.unet.experiment.TrainedUnet` or checkpoint path.
    dataset
        A :class:`~tofmra_utils.data.SiteDataset` with subjects in ``split``.
    split
        ``"val"``: the choice must never see the test volumes.

    Returns
    -------
    DataFrame with ``mode, scaling`` and the columns of
    :func:`~tofmra_utils.unet.experiment.evaluate_models` (``eval_seconds``: per volume).
    """
    if split == "test":
        raise ValueError("the inference is chosen on validation volumes, never on the test volumes")
    if not dataset.subjects_in(split):
        raise DataError(getattr(dataset, "root", None), f"split {split!r} has no subjects to choose the inference on")
    candidates = list(candidates or INFERENCE_CANDIDATES)
    for mode, scaling in candidates:
        check_inference(mode, scaling)
    tables = []
    for mode, scaling in candidates:
        table = evaluate_models(models, dataset, split, mode=mode, threshold=threshold, device=device, scaling=scaling)
        table.insert(0, "scaling", scaling)
        table.insert(0, "mode", mode)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def _edge_share_of_brain(dataset: Any, split: str) -> float:
    edge = brain = 0
    for subject in dataset.subjects_in(split):
        mask = dataset.load_subject(subject.id)[2].data > 0
        edge += int(np.count_nonzero(brain_edge(mask)))
        brain += int(np.count_nonzero(mask))
    return edge / brain if brain else float("nan")


def choose_inference(scores: pd.DataFrame, dataset: Any = None, split: str = "val") -> InferenceChoice:
    """The candidate with the best mean validation DSC (ties: the earlier candidate).

    Parameters
    ----------
    scores
        From :func:`evaluate_inference_candidates`.
    dataset, split
        Where the scores came from; used only for the brain rim's share of the brain voxels.
    """
    order = {c: i for i, c in enumerate(INFERENCE_CANDIDATES)}
    rows = []
    for (mode, scaling), grp in scores.groupby(["mode", "scaling"], sort=False):
        per_model = grp.groupby("model")["dsc"].mean()
        fp = grp["fp_brain_edge"] + grp["fp_interior"]
        rows.append({
            "mode": mode, "scaling": scaling, "inference": inference_label(mode, scaling),
            "val DSC": float(grp["dsc"].mean()),
            "val DSC sd": float(per_model.std()) if len(per_model) > 1 else np.nan,
            "val 95HD (mm)": float(grp["hd95_mm"].mean()),
            "FP at brain edge": float(grp["fp_brain_edge"].mean()),
            "FP inside": float(grp["fp_interior"].mean()),
            "FP share at edge": float(grp["fp_brain_edge"].sum() / fp.sum()) if fp.sum() else np.nan,
            "seconds per volume": float(grp["eval_seconds"].mean()),
            "_order": order.get((mode, scaling), len(order)),
        })
    table = pd.DataFrame(rows).sort_values("_order", kind="stable").reset_index(drop=True)
    best = int(table["val DSC"].round(4).idxmax())  # first maximum = the earlier candidate on a tie
    table["chosen"] = table.index == best
    table = table.drop(columns="_order")
    table.attrs.update(split=split, models=sorted(scores["model"].unique()),
                       n_volumes=int(scores["subject"].nunique()),
                       edge_share_of_brain=_edge_share_of_brain(dataset, split) if dataset is not None else np.nan)
    chosen = table.loc[best]
    return InferenceChoice(str(chosen["mode"]), str(chosen["scaling"]), table)


def edge_false_positive_sentence(table: pd.DataFrame, mode: str = "tiles") -> str:
    """Does per-tile scaling add false positives at the brain's edge? Answered from ``table``'s counts.

    Compares ``mode`` with per-tile scaling against the same ``mode`` with volume scaling (same
    tiles, only the scaling differs). Per-tile scaling "adds false positives at the brain's edge"
    only when it has more than 1.5 times the volume scaling's false-positive voxels in the rim and
    its share of false positives in the rim exceeds the rim's share of the brain.
    """
    by = table.set_index(["mode", "scaling"])
    if (mode, "per_tile") not in by.index or (mode, "volume") not in by.index:
        return f"The brain-edge check needs `{mode}` with both scalings among the candidates."
    tile, vol = by.loc[(mode, "per_tile")], by.loc[(mode, "volume")]
    rim = table.attrs.get("edge_share_of_brain", np.nan)
    rim_text = "" if not np.isfinite(rim) else f", a rim that holds {rim:.1%} of the brain's voxels"
    words = _MODE_WORDS[mode]
    text = (f"With {words} and per-tile scaling, the U-nets put {tile['FP at brain edge']:.0f} false-positive voxels "
            f"per validation volume in the brain's outer {EDGE_WIDTH}-voxel rim ({tile['FP share at edge']:.0%} of "
            f"their false positives{rim_text}); with the same {words} and volume scaling, "
            f"{vol['FP at brain edge']:.0f} ({vol['FP share at edge']:.0%}).")
    share_ok = np.isfinite(tile["FP share at edge"]) and (not np.isfinite(rim) or tile["FP share at edge"] > rim)
    if tile["FP at brain edge"] > 1.5 * vol["FP at brain edge"] and share_ok:
        return text + " So per-tile scaling does add false positives at the brain's edge on these data."
    return text + " These counts do not show that per-tile scaling adds false positives at the brain's edge."


def select_inference(
    models: Mapping[str, Any], dataset: Any, mode: str = "auto", scaling: str = "auto", threshold: float = 0.5,
    device: Any = None, split: str = "val",
) -> tuple[str, str, InferenceChoice | None, str]:
    """Notebook 05's inference: fixed by its parameters, or chosen on the validation volumes.

    Parameters
    ----------
    mode, scaling
        A fixed value or ``"auto"`` (every candidate consistent with the other one is tried).

    Returns
    -------
    mode, scaling, choice, how
        The inference to use, the :class:`InferenceChoice` (``None`` when nothing was chosen) and a
        sentence saying how it was decided.
    """
    candidates = candidates_for(mode, scaling)
    if len(candidates) == 1:
        m, s = candidates[0]
        return m, s, None, f"Inference fixed by the notebook's parameters: {inference_label(m, s)}."
    if not dataset.subjects_in(split):
        m, s = candidates[0]
        return m, s, None, (f"No validation volumes to choose the inference on: using the first candidate, "
                            f"{inference_label(m, s)}.")
    choice = choose_inference(
        evaluate_inference_candidates(models, dataset, split, candidates, threshold=threshold, device=device),
        dataset, split)
    row = choice.table[choice.table["chosen"]].iloc[0]
    how = (f"Chosen on {choice.table.attrs['n_volumes']} validation volume"
           f"{'s' if choice.table.attrs['n_volumes'] != 1 else ''} with {len(models)} U-net"
           f"{'s' if len(models) != 1 else ''}: {choice.label} (mean validation DSC {row['val DSC']:.3f}, "
           f"the best of {len(choice.table)} candidates).")
    return choice.mode, choice.scaling, choice, how
