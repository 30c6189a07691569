"""Membership inference: can someone holding the synthetic set tell who was in the training set?

Black-box attack (GAN-Leaks, Chen et al. 2020; LOGAN, Hayes et al. 2019): score each real
candidate by minus its distance to the nearest synthetic pair; a generator that memorized its
training patches puts synthetic pairs closer to members than to non-members. Members are
training patches, non-members held-out patches (subjects the GAN never saw), in equal numbers.
The attack's AUC is 0.5 when it cannot tell them apart.

Control: the same attack between two halves of the *members*, split by subject. Both halves
were trained on, so any AUC away from 0.5 there comes from subjects differing from each other,
not from membership; an attack AUC no further from 0.5 than the control's is no evidence of
leakage (the lesson of recent brain-MRI attacks, whose "members" and "non-members" differed by
more than membership).

White-box attack (LOGAN): score each candidate with the trained critic / discriminator. The
critic saw every training patch many times; if its score separates members from non-members,
whoever holds the critic can tell who was in the training set, which is why the critic is never
shared (``tofmra export`` never copies it).

Patient level: privacy concerns patients, not patches, so the patch scores are also averaged
per subject and the AUC is taken over subjects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = ["AttackResult", "auc", "roc_points", "bootstrap_auc", "subject_auc", "attack", "critic_scores",
           "load_critic"]


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """Area under the ROC curve of scores where members should score higher (ties count half).

    The Mann-Whitney form: the probability that a random member outscores a random non-member.
    """
    m, n = len(member_scores), len(nonmember_scores)
    if m == 0 or n == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([member_scores, nonmember_scores]))
    return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))


def roc_points(member_scores: np.ndarray, nonmember_scores: np.ndarray, max_points: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (false-positive rate, true-positive rate), both (K,) from (0, 0) to (1, 1)."""
    scores = np.concatenate([member_scores, nonmember_scores])
    is_member = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    order = np.argsort(-scores, kind="stable")
    tpr = np.concatenate([[0.0], np.cumsum(is_member[order]) / max(1, len(member_scores))])
    fpr = np.concatenate([[0.0], np.cumsum(1 - is_member[order]) / max(1, len(nonmember_scores))])
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def bootstrap_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray, n_boot: int = 200, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`auc`, members and non-members resampled separately."""
    if n_boot < 1 or len(member_scores) == 0 or len(nonmember_scores) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = [auc(rng.choice(member_scores, len(member_scores)), rng.choice(nonmember_scores, len(nonmember_scores)))
              for _ in range(n_boot)]
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def subject_auc(member_scores: np.ndarray, member_subjects: np.ndarray, nonmember_scores: np.ndarray,
                nonmember_subjects: np.ndarray) -> tuple[float, int, int]:
    """AUC over subjects of the mean patch score per subject: (auc, member subjects, non-member subjects)."""
    def per_subject(scores: np.ndarray, subjects: np.ndarray) -> np.ndarray:
        return np.array([scores[subjects == s].mean() for s in np.unique(subjects)])

    ms, ns = per_subject(member_scores, member_subjects), per_subject(nonmember_scores, nonmember_subjects)
    return auc(ms, ns), len(ms), len(ns)


@dataclass
class AttackResult:
    """One membership-inference attack: members should score higher.

    Attributes
    ----------
    auc, interval
        Patch-level AUC and its bootstrap interval (lower, upper).
    subject_auc, n_member_subjects, n_nonmember_subjects
        AUC of the per-subject mean score, over subjects.
    fpr, tpr
        The ROC curve (for plots).
    member_scores, nonmember_scores
        The scores themselves.
    """

    auc: float
    interval: tuple[float, float]
    subject_auc: float
    n_member_subjects: int
    n_nonmember_subjects: int
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    member_scores: np.ndarray = field(repr=False)
    nonmember_scores: np.ndarray = field(repr=False)


def attack(member_scores: np.ndarray, member_subjects: np.ndarray, nonmember_scores: np.ndarray,
           nonmember_subjects: np.ndarray, n_boot: int = 200, seed: int = 0) -> AttackResult:
    """AUC, bootstrap interval, subject-level AUC and ROC of one attack's scores."""
    s_auc, n_m, n_n = subject_auc(member_scores, member_subjects, nonmember_scores, nonmember_subjects)
    fpr, tpr = roc_points(member_scores, nonmember_scores)
    return AttackResult(
        auc=auc(member_scores, nonmember_scores), interval=bootstrap_auc(member_scores, nonmember_scores, n_boot, seed),
        subject_auc=s_auc, n_member_subjects=n_m, n_nonmember_subjects=n_n, fpr=fpr, tpr=tpr,
        member_scores=np.asarray(member_scores), nonmember_scores=np.asarray(nonmember_scores),
    )


def load_critic(checkpoint: Any) -> tuple[Any, str]:
    """The trained critic / discriminator of a GAN ``checkpoint.pt`` (eval mode, CPU) and its GAN name.

    Rebuilt from the profile named in the checkpoint; loaded with ``weights_only=True``.

    Raises
    ------
    DataError
        Missing or unreadable file, no critic weights, or weights that do not fit the profile's critic.
    """
    from pathlib import Path

    from ..checkpoint import load_checkpoint, strip_module_prefix
    from ..gan.models import build_critic
    from ..io import DataError
    from ..profiles import PROFILES

    path = Path(checkpoint)
    state = load_checkpoint(path)
    if "critic" not in state or state.get("gan") is None:
        raise DataError(path, "not a GAN checkpoint with critic weights")
    profile = PROFILES.get(str(state.get("profile")))
    if profile is None:
        raise DataError(path, f"checkpoint names an unknown profile {state.get('profile')!r}")
    try:
        critic = build_critic(str(state["gan"]), profile)
        critic.load_state_dict(strip_module_prefix(state["critic"]))
    except (ValueError, RuntimeError) as err:
        raise DataError(path, f"critic weights do not fit the {profile.name} profile's critic ({err})") from None
    return critic.eval(), str(state["gan"])


def critic_scores(critic: Any, image: np.ndarray, label: np.ndarray, batch_size: int = 256, seed: int = 0) -> np.ndarray:
    """Critic scores (N,) of image/label pairs ((N, P, P) each), as the GAN's critic saw them.

    Batches are drawn in a random order: the DCGAN discriminator's minibatch features compare
    each input with the rest of its batch, so members and non-members must share batches.
    """
    import torch

    x = torch.stack([torch.from_numpy(np.ascontiguousarray(image, np.float32)),
                     torch.from_numpy(label.astype(np.float32) * 2.0 - 1.0)], dim=1)
    order = np.random.default_rng(seed).permutation(len(x))
    out = np.empty(len(x), np.float64)
    device = next(critic.parameters()).device
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = critic(x[idx].to(device)).double().cpu().numpy()
    return out
