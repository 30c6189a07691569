"""What must never drift between the pipeline's stages, written once.

Every stage that touches these conventions calls this module, so that a training patch, a
generated pair and an inference tile can never disagree about them:

* **The GAN's label channel.** A vessel label (0/1) enters a GAN as -1/1 (:func:`encode_label`);
  a generated label channel in [-1, 1] is mapped back to [0, 1] and binarized at a threshold
  (:func:`decode_label`; the study used 0.8).
* **Per-patch min-max scaling.** Every image patch the networks see, real training patch or
  inference tile, is scaled on its own to [-1, 1] (:func:`normalize_patch`).
* **The U-net's z-score.** U-net inputs are z-scored with the mean and standard deviation of all
  training pixels (:func:`normalization_stats`, :func:`zscore`); the two numbers travel in the
  checkpoint.
* **Dice** of two binary masks (:func:`dice`): model selection, metrics and diagnostics.
* **The file hash** (:func:`file_hash`): checkpoints, data sheets, downloads.

NumPy only (no torch import), so the command-line tools that need no network stay fast.
"""

from __future__ import annotations

import hashlib
import os
from typing import TypeVar

import numpy as np

__all__ = [
    "encode_label",
    "decode_label",
    "normalize_patch",
    "normalization_stats",
    "zscore",
    "dice",
    "file_hash",
]

#: A NumPy array or a torch tensor: the label helpers use only arithmetic both support.
ArrayLike = TypeVar("ArrayLike")


def encode_label(label: ArrayLike) -> ArrayLike:
    """Vessel label 0/1 -> the GAN's label channel -1/1 (``2 * label - 1``), same type and shape."""
    return label * 2.0 - 1.0


def decode_label(channel: ArrayLike, threshold: float) -> ArrayLike:
    """GAN label channel in [-1, 1] -> vessel mask: ``(channel + 1) / 2 > threshold`` (bool).

    Parameters
    ----------
    channel
        Generated label channel, any shape, NumPy array or torch tensor.
    threshold
        In [0, 1] on the [0, 1] scale (study: 0.8).
    """
    return (channel + 1.0) / 2.0 > threshold


def normalize_patch(x: np.ndarray) -> np.ndarray:
    """Min-max scale each patch to [-1, 1] over its last two axes.

    Parameters
    ----------
    x
        (..., H, W) patches, any dtype.

    Returns
    -------
    float32 array of the same shape. A constant patch (no contrast to scale) maps to -1, the
    value of the darkest pixel, rather than dividing by zero.
    """
    x = np.asarray(x, dtype=np.float32)
    lo = x.min(axis=(-2, -1), keepdims=True)
    span = x.max(axis=(-2, -1), keepdims=True) - lo
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, 2.0 * (x - lo) / safe - 1.0, -1.0).astype(np.float32)


def normalization_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of all training pixels (float64 sums; std floored at 1e-6)."""
    x = np.asarray(images, dtype=np.float64)
    return float(x.mean()), max(float(x.std()), 1e-6)


def zscore(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(images - mean) / std`` as float32, any shape."""
    return ((np.asarray(images, np.float32) - mean) / std).astype(np.float32)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice similarity coefficient ``2 |P & T| / (|P| + |T|)``.

    Parameters
    ----------
    pred, truth
        Binary masks (bool or 0/1) of the same shape.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both masks are empty (nothing to find, nothing found).

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    p, t = np.asarray(pred).astype(bool, copy=False), np.asarray(truth).astype(bool, copy=False)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & t)) / total


def file_hash(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest (``"sha256"``, ``"md5"``, any ``hashlib`` name) of a file, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.new(algorithm, usedforsecurity=False)).hexdigest()
