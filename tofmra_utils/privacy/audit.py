"""The privacy audit of one synthetic set: memorization, membership inference, fidelity.

:func:`audit_synthetic` is the one entry point (notebook 07, ``tofmra audit``, notebook 08's
DP-GAN): it takes the synthetic set, the real training patches the GAN learnt from (members) and
held-out real patches of subjects it never saw, embeds them in one feature space
(:mod:`.features`) and runs

* :mod:`.memorization`: copy rate (threshold calibrated on held-out patches) and the
  nearest-neighbour ratio;
* :mod:`.membership`: the black-box attack by distance to the nearest synthetic pair, its
  member-vs-member control, and (given the critic) the white-box attack with the critic's
  score, each with a bootstrap interval and at patient level;
* :mod:`.fidelity`: FD, KD, precision / recall / density / coverage against the training
  patches, for the synthetic set and for the held-out patches (the real-vs-real reference).

Sizes: at most ``max_per_set`` synthetic pairs and held-out patches are drawn (seeded); the
members attacked are as many training patches as there are held-out ones; the copy search
compares against *every* training patch so no copy is missed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import DataError
from ..patchset import PatchSet
from .features import FEATURE_SPACES, embed_flips
from .fidelity import Fidelity, fidelity
from .membership import AttackResult, attack, critic_scores, load_critic
from .memorization import Memorization, memorization
from .neighbours import nearest, torch_device

__all__ = ["AUDIT_KEYS", "AuditResult", "audit_synthetic", "check_audit_inputs"]

#: Keys of :meth:`AuditResult.as_dict`, the JSON ``tofmra audit --json`` prints.
AUDIT_KEYS: tuple[str, ...] = ("copy_rate", "nn_ratio", "mia_auc", "mia_auc_control", "fd", "kd", "precision", "recall",
                               "density", "coverage", "n_synthetic", "n_train", "n_holdout", "features")


@dataclass
class AuditResult:
    """Everything one audit measured (see the module docstring).

    Attributes
    ----------
    features
        The feature space.
    n_synthetic, n_train, n_holdout
        Synthetic pairs audited, training patches searched for copies, held-out patches used.
    memorization
        Copy rate, ratio, nearest distances and indices (into the audited subsets).
    blackbox, control, whitebox
        Membership attacks: by distance to the synthetic set; the same between two halves of
        the members split by subject; by the critic's score (``None`` without a critic).
    fidelity, reference
        Fidelity of the synthetic set and of the held-out patches against training patches.
    synthetic_index, holdout_index, member_index
        Which patches of the sets passed in were audited (indices into them); ``memorization``
        indices point into ``synthetic_index`` / the full training set / ``holdout_index``.
    seconds
        Wall time of the audit.
    """

    features: str
    n_synthetic: int
    n_train: int
    n_holdout: int
    memorization: Memorization = field(repr=False)
    blackbox: AttackResult = field(repr=False)
    control: AttackResult = field(repr=False)
    whitebox: AttackResult | None = field(repr=False)
    fidelity: Fidelity = field(repr=False)
    reference: Fidelity = field(repr=False)
    synthetic_index: np.ndarray = field(repr=False)
    holdout_index: np.ndarray = field(repr=False)
    member_index: np.ndarray = field(repr=False)
    seconds: float = 0.0

    @property
    def copy_rate(self) -> float:
        return self.memorization.copy_rate

    @property
    def mia_auc(self) -> float:
        return self.blackbox.auc

    def as_dict(self) -> dict[str, Any]:
        """The headline numbers, exactly the keys :data:`AUDIT_KEYS` (what ``tofmra audit --json`` prints)."""
        f = self.fidelity
        values = {
            "copy_rate": self.memorization.copy_rate, "nn_ratio": self.memorization.nn_ratio,
            "mia_auc": self.blackbox.auc, "mia_auc_control": self.control.auc, "fd": f.fd, "kd": f.kd,
            "precision": f.precision, "recall": f.recall, "density": f.density, "coverage": f.coverage,
            "n_synthetic": self.n_synthetic, "n_train": self.n_train, "n_holdout": self.n_holdout,
            "features": self.features,
        }
        return {k: values[k] for k in AUDIT_KEYS}

    def details(self) -> dict[str, Any]:
        """:meth:`as_dict` plus intervals, patient-level and white-box AUCs, the threshold and the reference row."""
        out = self.as_dict()
        out.update(
            copy_threshold=self.memorization.threshold,
            mia_auc_interval=list(self.blackbox.interval),
            mia_auc_control_interval=list(self.control.interval),
            mia_subject_auc=self.blackbox.subject_auc,
            mia_member_subjects=self.blackbox.n_member_subjects,
            mia_nonmember_subjects=self.blackbox.n_nonmember_subjects,
            whitebox_auc=None if self.whitebox is None else self.whitebox.auc,
            whitebox_auc_interval=None if self.whitebox is None else list(self.whitebox.interval),
            whitebox_subject_auc=None if self.whitebox is None else self.whitebox.subject_auc,
            reference_real_vs_real=self.reference.as_dict(),
            seconds=round(self.seconds, 2),
        )
        return out


def check_audit_inputs(sets: dict[str, tuple[PatchSet, Any]]) -> None:
    """Raise :class:`DataError` naming the file when a set is empty or patch sizes differ.

    ``sets`` maps a role (``synthetic``, ``train``, ``holdout``) to ``(patch set, its path or None)``.
    NaN and out-of-range values are caught when a patch set is loaded (:meth:`PatchSet.validate`).
    """
    sizes = {}
    for role, (ps, path) in sets.items():
        if len(ps) == 0:
            raise DataError(path, f"the {role} patch set is empty")
        ps.validate(path)
        sizes[role] = (ps.patch_size, path)
    first_role, (size, _) = next(iter(sizes.items()))
    for role, (other, path) in sizes.items():
        if other != size:
            raise DataError(path, f"{role} patches are {other} px but the {first_role} patches are {size} px")
    for role in ("train", "holdout"):
        if role in sets and len(sets[role][0]) < 2:
            raise DataError(sets[role][1], f"the {role} set needs at least 2 patches, has {len(sets[role][0])}")


def _draw(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size=cap, replace=False)) if n > cap else np.arange(n)


def _member_halves(subjects: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask (N,) of the first half of the members, split by subject (by patch if one subject)."""
    unique = np.unique(subjects)
    if len(unique) >= 2:
        first = rng.permutation(unique)[: len(unique) // 2]
        return np.isin(subjects, first)
    mask = np.zeros(len(subjects), bool)
    mask[rng.permutation(len(subjects))[: len(subjects) // 2]] = True
    return mask


def _embedded(ps: PatchSet, key: str, space: str, unet: Any, seed: int, flips: bool, cache: dict | None,
              device: Any) -> np.ndarray:
    if cache is not None and (key, space, flips) in cache:
        return cache[(key, space, flips)]
    emb = embed_flips(ps, space, unet=unet, seed=seed, flips=flips, device=device)
    if cache is not None:
        cache[(key, space, flips)] = emb
    return emb


def audit_synthetic(
    synthetic: PatchSet, train: PatchSet, holdout: PatchSet, features: str = "pixels",
    unet: str | os.PathLike[str] | tuple | None = None, critic: Any = None, seed: int = 0, max_per_set: int = 2000,
    flips: bool = True, n_boot: int = 200, nearest_k: int = 5, device: Any = None, cache: dict | None = None,
) -> AuditResult:
    """Audit one synthetic set against its training patches and unseen held-out patches.

    Parameters
    ----------
    synthetic
        The synthetic pairs (N_s, P, P).
    train
        The real training patches the generator learnt from (the members), with ``subject``.
    holdout
        Real patches of subjects the generator never saw (the non-members), with ``subject``.
    features
        Feature space, one of :data:`~.features.FEATURE_SPACES`.
    unet
        For ``features="unet"``: the real-trained U-net checkpoint (``unets/real/best.pt``).
    critic
        The GAN's ``checkpoint.pt`` (or a loaded critic module) for the white-box attack; ``None``
        skips it.
    seed
        Subsampling, member split, random features and bootstrap.
    max_per_set
        At most this many synthetic pairs and held-out patches are audited.
    flips
        Search copies over the four flips of each query patch.
    n_boot
        Bootstrap resamples of the AUC intervals.
    nearest_k
        k of precision / recall / density / coverage.
    device
        Where distances are computed (default CUDA when available).
    cache
        A dict shared between calls on the same real sets (e.g. one per GAN): their embeddings
        are computed once. Keys are the sets' roles, so pass a fresh dict for other real sets.

    Returns
    -------
    AuditResult
        ``as_dict()`` gives the headline numbers (:data:`AUDIT_KEYS`).
    """
    started = time.time()
    if features not in FEATURE_SPACES:
        raise ValueError(f"unknown feature space {features!r}: choose one of {', '.join(FEATURE_SPACES)}")
    check_audit_inputs({"synthetic": (synthetic, None), "train": (train, None), "holdout": (holdout, None)})
    # One stream per draw, so the real draws (and their cached embeddings) do not depend on the synthetic set.
    syn_idx = _draw(len(synthetic), max_per_set, np.random.default_rng([seed, 0]))
    hold_idx = _draw(len(holdout), max_per_set, np.random.default_rng([seed, 1]))
    member_idx = _draw(len(train), len(hold_idx), np.random.default_rng([seed, 2]))
    syn, hold, members = synthetic.select(syn_idx), holdout.select(hold_idx), train.select(member_idx)

    syn_f = embed_flips(syn, features, unet=unet, seed=seed, flips=flips, device=device)
    train_f = _embedded(train, "train", features, unet, seed, False, cache, device)[0]
    hold_f = _embedded(hold, f"holdout:{seed}:{len(hold_idx)}", features, unet, seed, flips, cache, device)
    member_f = _embedded(members, f"members:{seed}:{len(member_idx)}", features, unet, seed, flips, cache, device)

    mem = memorization(syn_f, train_f, hold_f, seed=seed, device=device)

    # Black-box: members should lie nearer to the synthetic set, so the score is minus that distance.
    member_score = -nearest(member_f, syn_f[0], device)[0]
    hold_score = -nearest(hold_f, syn_f[0], device)[0]
    blackbox = attack(member_score, members.subject, hold_score, hold.subject, n_boot, seed)
    first = _member_halves(members.subject, np.random.default_rng(seed + 1))
    control = attack(member_score[first], members.subject[first], member_score[~first], members.subject[~first],
                     n_boot, seed)

    whitebox = None
    if critic is not None:
        loaded = isinstance(critic, (str, os.PathLike, Path))
        module = load_critic(critic)[0].to(torch_device(device)) if loaded else critic
        both = PatchSet.concatenate([members, hold])
        scores = critic_scores(module, both.image, both.label, seed=seed)
        whitebox = attack(scores[: len(members)], members.subject, scores[len(members):], hold.subject, n_boot, seed)

    # Equal sizes in both rows: FD, KD and the k-NN radii all depend on the sample size.
    m = min(len(syn_idx), len(hold_idx), len(member_idx))
    pick = np.random.default_rng([seed, 3])
    real_f = member_f[0][_draw(len(member_idx), m, pick)]
    fid = fidelity(real_f, syn_f[0][_draw(len(syn_idx), m, pick)], nearest_k, device)
    ref = fidelity(real_f, hold_f[0][_draw(len(hold_idx), m, pick)], nearest_k, device)
    return AuditResult(
        features=features, n_synthetic=len(syn_idx), n_train=len(train), n_holdout=len(hold_idx), memorization=mem,
        blackbox=blackbox, control=control, whitebox=whitebox, fidelity=fid, reference=ref, synthetic_index=syn_idx,
        holdout_index=hold_idx, member_index=member_idx, seconds=time.time() - started,
    )
