"""Memorization: is a synthetic pair a copy of a training patch?

For every synthetic pair, its nearest real *training* patch and its nearest real *held-out*
patch (subjects the GAN never saw), in a feature space, the smallest distance over the flips of
the synthetic pair (a copy returned flipped is still a copy).

Copy threshold, calibrated on real data (Dar et al. 2023 call such pairs copies; the rule here
is the issue's): the 1st percentile of the distances from held-out patches to their nearest
training patch. An unseen real patch is that close to a training patch 1 % of the time, so a
generator that does not copy has a copy rate near 1 %; one that copies has one near 100 %.

Nearest-neighbour ratio (in the spirit of ADS-GAN's identifiability, Yoon et al. 2020): the
median distance from the synthetic pairs to a training subset the size of the held-out set,
divided by their median distance to the held-out set. The sets have equal size because the
nearest distance shrinks as a reference set grows. About 1: the synthetic pairs are no closer
to the patients they were learnt from than to strangers; well below 1: they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .neighbours import nearest

__all__ = ["Memorization", "CALIBRATION_PERCENTILE", "memorization"]

#: Percentile of the held-out-to-training nearest distances below which a pair counts as a copy.
CALIBRATION_PERCENTILE = 1.0


@dataclass
class Memorization:
    """Nearest-neighbour evidence of memorization in one feature space.

    Attributes
    ----------
    threshold
        Copy threshold (feature units): :data:`CALIBRATION_PERCENTILE` of ``calibration``.
    copy_rate
        Share of synthetic pairs nearer to a training patch than ``threshold``.
    nn_ratio
        median ``d_train_matched`` / median ``d_holdout`` (see the module docstring).
    d_train, nn_train, nn_flip
        (Ns,) distance to the nearest training patch (all of them), its index in the training
        set, and the flip of the synthetic pair that reaches it (:data:`~.features.FLIPS`).
    d_train_matched
        (Ns,) distance to the nearest patch of a training subset as large as the held-out set.
    d_holdout, nn_holdout
        (Ns,) distance to and index of the nearest held-out patch.
    calibration
        (Nh,) distance from each held-out patch to its nearest training patch.
    """

    threshold: float
    copy_rate: float
    nn_ratio: float
    d_train: np.ndarray
    nn_train: np.ndarray
    nn_flip: np.ndarray
    d_train_matched: np.ndarray
    d_holdout: np.ndarray
    nn_holdout: np.ndarray
    calibration: np.ndarray

    def closest_pairs(self, n: int = 8) -> list[tuple[int, int, int, float]]:
        """The ``n`` synthetic pairs closest to a training patch: (synthetic, training, flip, distance)."""
        order = np.argsort(self.d_train, kind="stable")[:n]
        return [(int(i), int(self.nn_train[i]), int(self.nn_flip[i]), float(self.d_train[i])) for i in order]


def memorization(synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray, seed: int = 0,
                 device: Any = None) -> Memorization:
    """Copy rate and nearest-neighbour ratio of synthetic features against real ones.

    Parameters
    ----------
    synthetic
        (T, Ns, F) features of the synthetic pairs under T flips (T = 1: no flips).
    train
        (Nt, F) features of the real training patches (unflipped; all of them, so a copy of any
        one is found).
    holdout
        (T, Nh, F) features of the held-out patches under the same T flips (the calibration's
        queries are treated like the synthetic ones).
    seed
        Draw of the training subset of the ratio.
    """
    if synthetic.ndim == 2:
        synthetic = synthetic[None]
    if holdout.ndim == 2:
        holdout = holdout[None]
    d_train, nn_train, nn_flip = nearest(synthetic, train, device)
    calibration, _, _ = nearest(holdout, train, device)
    threshold = float(np.percentile(calibration, CALIBRATION_PERCENTILE))
    d_holdout, nn_holdout, _ = nearest(synthetic, holdout[0], device)
    rng = np.random.default_rng(seed)
    matched = rng.choice(len(train), size=min(len(train), holdout.shape[1]), replace=False)
    d_matched, _, _ = nearest(synthetic, train[matched], device)
    median_holdout = float(np.median(d_holdout))
    ratio = float(np.median(d_matched) / median_holdout) if median_holdout > 0 else float("nan")
    return Memorization(
        threshold=threshold, copy_rate=float(np.mean(d_train < threshold)), nn_ratio=ratio, d_train=d_train,
        nn_train=nn_train, nn_flip=nn_flip, d_train_matched=d_matched, d_holdout=d_holdout, nn_holdout=nn_holdout,
        calibration=calibration,
    )
