"""Patch preparation (issue 4). This module so far holds the two pieces that inference shares
with training: per-patch intensity scaling and the brain mask. Patch extraction, subject splits
and cached data sets (``SiteDataset``, ``prepare_dataset``) are not written yet.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["normalize_patch", "compute_brain_mask"]


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


def compute_brain_mask(image: np.ndarray, threshold_fraction: float = 0.1) -> np.ndarray:
    """Brain mask of a skull-stripped or head volume: threshold, largest component, holes filled.

    Parameters
    ----------
    image
        (X, Y, Z) intensities.
    threshold_fraction
        Voxels above this fraction of the 99th-percentile intensity count as tissue.

    Returns
    -------
    (X, Y, Z) uint8 mask, 1 inside the brain. All zero only for an all-zero image.
    """
    image = np.asarray(image, dtype=np.float32)
    high = float(np.percentile(image, 99))
    if high <= 0:
        return np.zeros(image.shape, dtype=np.uint8)
    tissue = image > threshold_fraction * high
    tissue = ndimage.binary_opening(tissue, structure=ndimage.generate_binary_structure(3, 1))
    labels, n = ndimage.label(tissue)
    if n == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    largest = 1 + int(np.argmax(ndimage.sum(tissue, labels, index=np.arange(1, n + 1))))
    return ndimage.binary_fill_holes(labels == largest).astype(np.uint8)
