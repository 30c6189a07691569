"""Brain masks of whole-head TOF-MRA volumes: a TOF-specific classical method (scipy only).

Public TOF-MRA sets and a user's own scans are whole heads (scalp, skull, orbits, neck,
background noise); the study worked on brain-masked volumes. :func:`tof_brain_mask` finds the
intracranial space from the image alone:

1. work at about 2 mm (:data:`WORKING_SPACING_MM`) on a lightly smoothed copy;
2. tissue = above the Otsu threshold of the whole volume (background noise and the skull are
   dark in TOF-MRA, brain, scalp and fat bright);
3. an erosion by ``erosion_mm`` cuts the thin bridges between brain and scalp through the dark
   skull; the largest eroded component is the brain, grown back inside the tissue;
4. a closing by ``closing_mm`` and hole filling (per axial slice and in 3D) take in sulci,
   ventricles and the dark basal cisterns;
5. vessel rescue: bright voxels (above the 99.5th percentile inside the brain) within
   ``vessel_reach_mm`` of the brain and connected to it join the mask, so the internal carotids
   and the Circle of Willis at the skull base stay in, scalp vessels beyond the skull do not;
6. a final dilation by ``margin_mm`` keeps the cortex surface and its vessels.

:func:`brain_mask` dispatches on a method name (``"tof"``, ``"threshold"``: the older
intensity-threshold mask of :func:`~tofmra_utils.data.sampling.compute_brain_mask`, which
suits skull-stripped volumes and the phantom). ``"auto"`` picks ``"threshold"`` for volumes
without scalp (the TOF mask would remove next to nothing of the threshold mask) and ``"tof"``
for whole heads; ``"none"`` takes the whole volume. Measured on a real ICBM head in ``benchmarks/bench_brainmask.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .sampling import compute_brain_mask

__all__ = ["BRAIN_MASK_METHODS", "brain_mask", "tof_brain_mask", "otsu_threshold"]

#: Method names accepted by :func:`brain_mask` (``"auto"`` is resolved by :func:`brain_mask`).
BRAIN_MASK_METHODS: tuple[str, ...] = ("auto", "tof", "threshold", "none")
#: Voxel size (mm) the TOF method works at: fine enough for a 1-2 mm skull gap, coarse enough to be fast.
WORKING_SPACING_MM = 2.0
#: ``"auto"``: share of the threshold mask the TOF mask keeps above which the volume has no scalp to remove.
STRIPPED_KEPT_SHARE = 0.9


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (any shape): the cut maximising the between-class variance."""
    values = np.asarray(values, dtype=np.float64).ravel()
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)
    w1 = w0[-1] - w0
    s0 = np.cumsum(counts * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    return float(centres[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


def _ball(radius_vox: Sequence[float]) -> np.ndarray:
    """Ellipsoid structuring element with semi-axes ``radius_vox`` (voxels per axis)."""
    r = [max(float(v), 1e-6) for v in radius_vox]
    grids = np.ogrid[tuple(slice(-int(np.floor(v)), int(np.floor(v)) + 1) for v in r)]
    return sum((g / v) ** 2 for g, v in zip(grids, r)) <= 1.0 + 1e-9


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask.astype(bool)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == 1 + int(np.argmax(sizes))


def _fill_holes_axial(mask: np.ndarray) -> np.ndarray:
    out = np.empty_like(mask)
    for z in range(mask.shape[2]):
        out[:, :, z] = ndimage.binary_fill_holes(mask[:, :, z])
    return ndimage.binary_fill_holes(out)


def _padded(op, mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """A morphological op on ``mask`` padded by the element's size (a closing must not stick to the border)."""
    pad = [(s // 2 + 1, s // 2 + 1) for s in structure.shape]
    out = op(np.pad(mask, pad), structure=structure)
    return out[tuple(slice(p, -p) for p, _ in pad)]


def tof_brain_mask(
    image: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    erosion_mm: float = 6.0,
    closing_mm: float = 8.0,
    vessel_reach_mm: float = 6.0,
    margin_mm: float = 2.0,
) -> np.ndarray:
    """Brain (intracranial) mask of a whole-head TOF-MRA volume.

    Parameters
    ----------
    image
        (X, Y, Z) intensities of any dtype; a head with scalp, skull and background.
    spacing
        Voxel size in mm along (x, y, z).
    erosion_mm
        Radius of the erosion that separates brain from scalp (larger than the thickest
        brain-scalp bridge through the skull, smaller than the brain's narrowest part).
    closing_mm
        Radius of the closing that takes in sulci and the basal cisterns.
    vessel_reach_mm
        How far outside the brain bright vessel voxels connected to it are taken in.
    margin_mm
        Final dilation (cortex surface vessels).

    Returns
    -------
    (X, Y, Z) uint8 mask, 1 inside. All zero only for an image without contrast.
    """
    image = np.asarray(image, dtype=np.float32)
    spacing = np.asarray([float(s) if s and np.isfinite(s) and s > 0 else 1.0 for s in spacing], dtype=np.float64)
    if float(image.max()) <= float(image.min()):
        return np.zeros(image.shape, dtype=np.uint8)
    zoom = np.minimum(1.0, spacing / WORKING_SPACING_MM)
    small = ndimage.zoom(image, zoom, order=1) if np.any(zoom < 1) else image.copy()
    work = spacing / zoom
    small = ndimage.gaussian_filter(small, 0.7)
    tissue = small > otsu_threshold(small)
    erosion = _ball(erosion_mm / work)
    # Tissue cut by the field of view (TOF-MRA slabs rarely cover the whole head) must not erode away from the border.
    core = _largest_component(ndimage.binary_erosion(tissue, structure=erosion, border_value=1))
    if not core.any():
        return np.zeros(image.shape, dtype=np.uint8)
    brain = ndimage.binary_dilation(core, structure=erosion) & tissue
    brain = _fill_holes_axial(_padded(ndimage.binary_closing, brain, _ball(closing_mm / work)))
    if vessel_reach_mm > 0:
        bright = small > np.percentile(small[brain], 99.5)
        reach = ndimage.distance_transform_edt(~brain, sampling=work) <= vessel_reach_mm
        joined = _largest_component(brain | (bright & reach))
        brain = _fill_holes_axial(brain | joined)
    if margin_mm > 0:
        brain = ndimage.binary_dilation(brain, structure=_ball(margin_mm / work))
    if small.shape != image.shape:
        factors = np.asarray(image.shape) / np.asarray(small.shape)
        brain = ndimage.zoom(brain.astype(np.float32), factors, order=1) > 0.5
        brain = _crop_or_pad(brain, image.shape)
    return brain.astype(np.uint8)


def _crop_or_pad(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` cut or zero-padded to ``shape`` (zoom may round a size by one voxel)."""
    out = np.zeros(shape, dtype=mask.dtype)
    common = tuple(slice(0, min(a, b)) for a, b in zip(mask.shape, shape))
    out[common] = mask[common]
    return out


def brain_mask(image: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0), method: str = "auto") -> tuple[np.ndarray, str]:
    """Brain mask by ``method`` (one of :data:`BRAIN_MASK_METHODS`).

    ``"auto"`` computes both the intensity-threshold mask and the TOF mask: when the TOF method
    removes less than :data:`STRIPPED_KEPT_SHARE` of the threshold mask, the volume holds no
    scalp (it is skull-stripped, or brain-only like the phantom) and the threshold mask is
    kept (also when the TOF mask is empty: a field of view too small for its erosion); otherwise
    it is a whole head and the TOF mask is used.

    Returns
    -------
    mask, method
        (X, Y, Z) uint8 mask and the method actually used (``"auto"`` resolved).
    """
    if method not in BRAIN_MASK_METHODS:
        raise ValueError(f"unknown brain-mask method {method!r}: choose one of {', '.join(BRAIN_MASK_METHODS)}")
    if method == "none":
        return np.ones(np.shape(image), dtype=np.uint8), method
    if method == "threshold":
        return compute_brain_mask(image), method
    tof = tof_brain_mask(image, spacing)
    if method == "tof":
        return tof, method
    threshold = compute_brain_mask(image) > 0
    kept = float((threshold & (tof > 0)).sum() / max(1, threshold.sum()))
    # An empty TOF mask (a field of view smaller than the erosion) says nothing about a scalp.
    if kept >= STRIPPED_KEPT_SHARE or not tof.any():
        return threshold.astype(np.uint8), "threshold"
    return tof, "tof"
