"""Patch maths: the brain mask, cutting 2D axial patches, sampling a subject's training patches.

Pure functions of arrays (no files, no sites): the centre convention and the border padding are
described in :mod:`tofmra_utils.data` under *Patch geometry*.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..conventions import normalize_patch
from ..patchset import KIND_RANDOM, KIND_VESSEL, PatchSet

__all__ = ["compute_brain_mask", "cut_patches", "extract_patches", "empty_patchset"]


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
    # The opening cuts thin bridges (noise, skull remnants) to the brain before the largest component is kept.
    tissue = ndimage.binary_opening(tissue, structure=ndimage.generate_binary_structure(3, 1))
    labels, n = ndimage.label(tissue)
    if n == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    largest = 1 + int(np.argmax(ndimage.sum(tissue, labels, index=np.arange(1, n + 1))))
    return ndimage.binary_fill_holes(labels == largest).astype(np.uint8)


def cut_patches(volume: np.ndarray, centres: np.ndarray, patch_size: int, pad_mode: str = "edge") -> np.ndarray:
    """Cut 2D axial patches around voxel centres.

    Parameters
    ----------
    volume
        (X, Y, Z) array.
    centres
        (N, 3) integer voxel coordinates (x, y, z) inside the volume.
    patch_size
        Side P of the square patches in pixels.
    pad_mode
        How the volume is extended past its in-plane border: ``"edge"`` (repeat the border
        voxels; for images) or ``"zero"`` (for labels).

    Returns
    -------
    (N, P, P) array of the volume's dtype; ``out[i, P//2, P//2] == volume[tuple(centres[i])]``.
    """
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 3)
    half = patch_size // 2
    pad = ((half, patch_size - half), (half, patch_size - half), (0, 0))
    padded = np.pad(volume, pad, mode="edge") if pad_mode == "edge" else np.pad(volume, pad, mode="constant")
    offsets = np.arange(patch_size)
    # In padded coordinates the patch of centre x starts at x (the pad shifted it by P//2).
    xs = centres[:, 0, None, None] + offsets[None, :, None]
    ys = centres[:, 1, None, None] + offsets[None, None, :]
    zs = centres[:, 2, None, None]
    return padded[xs, ys, zs]


def extract_patches(
    image: np.ndarray,
    label: np.ndarray,
    mask: np.ndarray,
    n_patches: int,
    patch_size: int,
    vessel_fraction: float,
    rng: np.random.Generator,
    subject: str = "",
) -> PatchSet:
    """Sample one subject's training patches the study's way.

    ``round(n_patches * vessel_fraction)`` patches are centred on label voxels drawn uniformly
    (with replacement), the rest on brain-mask voxels drawn uniformly. Images are min-max scaled
    per patch to [-1, 1] (:func:`~tofmra_utils.conventions.normalize_patch`); labels stay 0/1.
    See :mod:`tofmra_utils.data` for the centre convention and border padding.

    Parameters
    ----------
    image, label, mask
        (X, Y, Z) intensities, 0/1 vessel label, 0/1 brain mask.
    n_patches
        Number of patches N.
    patch_size
        Side P in pixels.
    vessel_fraction
        Fraction of vessel-centred patches, in [0, 1].
    rng
        Random generator (one per subject keeps subjects independent of each other's order).
    subject
        Subject id stored with every patch.

    Returns
    -------
    PatchSet of N patches (vessel-centred first, ``kind`` 1, then random, ``kind`` 0).
    """
    if not 0.0 <= vessel_fraction <= 1.0:
        raise ValueError(f"vessel_fraction must lie in [0, 1], got {vessel_fraction}")
    n_vessel = int(round(n_patches * vessel_fraction))
    n_random = n_patches - n_vessel
    vessel_voxels = np.flatnonzero(np.asarray(label).ravel())
    brain_voxels = np.flatnonzero(np.asarray(mask).ravel())
    if n_vessel and not vessel_voxels.size:
        raise ValueError(f"subject {subject!r}: no vessel voxel to centre patches on")
    if n_random and not brain_voxels.size:
        raise ValueError(f"subject {subject!r}: empty brain mask")
    flat = np.concatenate(
        [
            vessel_voxels[rng.integers(0, vessel_voxels.size, n_vessel)] if n_vessel else np.zeros(0, np.int64),
            brain_voxels[rng.integers(0, brain_voxels.size, n_random)] if n_random else np.zeros(0, np.int64),
        ]
    )
    centres = np.stack(np.unravel_index(flat, np.shape(image)), axis=1).astype(np.int32)
    return PatchSet(
        image=normalize_patch(cut_patches(np.asarray(image, np.float32), centres, patch_size, "edge")),
        label=cut_patches(np.asarray(label, np.uint8), centres, patch_size, "zero"),
        subject=np.full(n_patches, subject),
        kind=np.concatenate([np.full(n_vessel, KIND_VESSEL), np.full(n_random, KIND_RANDOM)]).astype(np.uint8),
        centre=centres,
    )


def empty_patchset(patch_size: int, meta: dict[str, Any]) -> PatchSet:
    """A PatchSet of no patches of side ``patch_size`` px (a split without subjects, e.g. site B's val)."""
    return PatchSet(
        image=np.zeros((0, patch_size, patch_size), np.float32),
        label=np.zeros((0, patch_size, patch_size), np.uint8),
        subject=np.zeros(0, str),
        kind=np.zeros(0, np.uint8),
        centre=np.zeros((0, 3), np.int32),
        meta=meta,
    )
