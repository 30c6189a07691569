"""Notebook 07's tables, figures and recorded results, built from :class:`~.audit.AuditResult` objects."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..patchset import PatchSet
from .audit import AuditResult
from .features import FLIPS

__all__ = ["audit_table", "fidelity_table", "closest_pairs_figure", "roc_figure", "verdict_sentence",
           "record_and_check"]

_FLIP_NAMES = {0: "", 1: ", flipped l-r", 2: ", flipped u-d", 3: ", rotated 180°"}


def audit_table(audits: Mapping[tuple[str, str], AuditResult]) -> pd.DataFrame:
    """One row per (GAN, feature space): copy rate, NN ratio, attacks with intervals, patient level, white-box."""
    rows = []
    for (gan, space), r in audits.items():
        rows.append({
            "GAN": gan, "features": space, "copy rate": r.copy_rate, "NN ratio": r.memorization.nn_ratio,
            "attack AUC": r.blackbox.auc, "attack 95% CI": f"{r.blackbox.interval[0]:.2f}-{r.blackbox.interval[1]:.2f}",
            "control AUC": r.control.auc, "patient AUC": r.blackbox.subject_auc,
            "white-box AUC": np.nan if r.whitebox is None else r.whitebox.auc,
            "white-box patient AUC": np.nan if r.whitebox is None else r.whitebox.subject_auc,
            "synthetic": r.n_synthetic, "train": r.n_train, "held-out": r.n_holdout,
        })
    return pd.DataFrame(rows)


def fidelity_table(audits: Mapping[tuple[str, str], AuditResult]) -> pd.DataFrame:
    """FD, KD, precision, recall, density, coverage per (set, feature space), with the real-vs-real reference row."""
    rows, reference_done = [], set()
    for (gan, space), r in audits.items():
        if space not in reference_done:
            rows.append({"set": "real held-out (reference)", "features": space, **r.reference.as_dict()})
            reference_done.add(space)
        rows.append({"set": gan, "features": space, **r.fidelity.as_dict()})
    table = pd.DataFrame(rows).rename(columns={"n_real": "n (train)", "n_fake": "n (set)"})
    return table.sort_values(["features"], kind="stable").reset_index(drop=True)


def closest_pairs_figure(synthetic: PatchSet, train: PatchSet, result: AuditResult, n: int = 6,
                         title: str | None = None) -> Figure:
    """The ``n`` synthetic pairs closest to a training patch (top) above that training patch (bottom).

    Each synthetic pair is shown in the flip that matched (named in its title); distances are in
    the audit's feature space; ``*`` marks a distance below the copy threshold (a copy).
    """
    import matplotlib.pyplot as plt

    from ..plots import overlay_rgb

    pairs = result.memorization.closest_pairs(n)
    fig, axes = plt.subplots(2, len(pairs), figsize=(1.6 * len(pairs), 3.6), squeeze=False)
    for col, (s, t, flip, dist) in enumerate(pairs):
        src = result.synthetic_index[s]
        rows, cols = FLIPS[flip]
        # The synthetic pair matched the training patch after this flip: show it the same way.
        img, lab = synthetic.image[src], synthetic.label[src]
        img = img[::-1] if rows else img
        lab = lab[::-1] if rows else lab
        img, lab = (img[:, ::-1], lab[:, ::-1]) if cols else (img, lab)
        axes[0, col].imshow(overlay_rgb(img, lab), interpolation="nearest")
        axes[0, col].set_title(f"d = {dist:.3g}{'*' if dist < result.memorization.threshold else ''}"
                               f"{_FLIP_NAMES[flip]}", fontsize=7)
        axes[1, col].imshow(overlay_rgb(train.image[t], train.label[t]), interpolation="nearest")
        axes[1, col].set_title("nearest training", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title or f"closest pairs ({result.features}); copy threshold {result.memorization.threshold:.3g} "
                 "(* below it)", fontsize=9)
    fig.tight_layout()
    return fig


def roc_figure(audits: Mapping[str, AuditResult], title: str | None = None) -> Figure:
    """ROC curves per GAN: black-box attack, its member-vs-member control, white-box attack."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(audits), figsize=(3.3 * len(audits), 3.3), squeeze=False)
    for ax, (gan, r) in zip(axes[0], audits.items()):
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
        ax.plot(r.blackbox.fpr, r.blackbox.tpr, label=f"black-box {r.blackbox.auc:.2f}")
        ax.plot(r.control.fpr, r.control.tpr, ls="--", label=f"control {r.control.auc:.2f}")
        if r.whitebox is not None:
            ax.plot(r.whitebox.fpr, r.whitebox.tpr, label=f"white-box (critic) {r.whitebox.auc:.2f}")
        ax.set(title=gan, xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title or "membership inference (AUC in the legend)", fontsize=10)
    fig.tight_layout()
    return fig


def verdict_sentence(audits: Mapping[str, AuditResult], max_copy_rate: float) -> str:
    """One computed sentence per GAN: flagged or not, and whether the attack beats its control."""
    parts = []
    for gan, r in audits.items():
        lo, hi = r.blackbox.interval
        beats = lo > 0.5 and abs(r.blackbox.auc - 0.5) > abs(r.control.auc - 0.5)
        parts.append(
            f"{gan}: copy rate {r.copy_rate:.1%} ({'above' if r.copy_rate > max_copy_rate else 'within'} the export "
            f"limit {max_copy_rate:.0%}), black-box AUC {r.blackbox.auc:.2f} [{lo:.2f}, {hi:.2f}] vs control "
            f"{r.control.auc:.2f}: {'membership leaks' if beats else 'no evidence of membership leakage'}"
            + ("" if r.whitebox is None else f"; the critic's AUC is {r.whitebox.auc:.2f}")
        )
    return "; ".join(parts) + "."


def record_and_check(ctx: Any, audits: Mapping[tuple[str, str], AuditResult], primary: str, seconds: float,
                     max_copy_rate: float, verdict: str) -> dict[str, Any]:
    """Record notebook 07's key results and check the audit did what it claims.

    Records ``copy_rate_<gan>``, ``mia_auc_<gan>``, ``mia_auc_control_<gan>``, ``whitebox_auc_<gan>``,
    ``fd_<gan>`` (primary feature space), the same prefixed by the space for the others, and the time.
    Checks (``AssertionError``): every GAN audited in every space, rates and AUCs in [0, 1],
    finite fidelity numbers, and sizes as planned.
    """
    values: dict[str, Any] = {"audit_seconds": round(seconds, 1), "primary_features": primary,
                              "max_copy_rate": max_copy_rate, "verdict": verdict}
    for (gan, space), r in audits.items():
        prefix = "" if space == primary else f"{space}_"
        values.update({
            f"{prefix}copy_rate_{gan}": round(r.copy_rate, 4), f"{prefix}nn_ratio_{gan}": round(r.memorization.nn_ratio, 4),
            f"{prefix}mia_auc_{gan}": round(r.blackbox.auc, 4), f"{prefix}mia_auc_control_{gan}": round(r.control.auc, 4),
            f"{prefix}mia_subject_auc_{gan}": round(r.blackbox.subject_auc, 4),
            f"{prefix}fd_{gan}": round(r.fidelity.fd, 4), f"{prefix}precision_{gan}": round(r.fidelity.precision, 4),
            f"{prefix}recall_{gan}": round(r.fidelity.recall, 4),
        })
        if r.whitebox is not None:
            values[f"{prefix}whitebox_auc_{gan}"] = round(r.whitebox.auc, 4)
    recorded = ctx.record(**values)
    gans = {g for g, _ in audits}
    spaces = {s for _, s in audits}
    assert primary in spaces and len(audits) == len(gans) * len(spaces), "every GAN in every feature space"
    for r in audits.values():
        assert 0.0 <= r.copy_rate <= 1.0
        for a in (r.blackbox, r.control) + (() if r.whitebox is None else (r.whitebox,)):
            assert 0.0 <= a.auc <= 1.0 and 0.0 <= a.interval[0] <= a.interval[1] <= 1.0
        for f in (r.fidelity, r.reference):
            assert np.isfinite([f.fd, f.kd, f.precision, f.recall, f.density, f.coverage]).all()
        assert r.n_synthetic > 0 and r.n_holdout > 0 and r.n_train > 0
    return recorded
