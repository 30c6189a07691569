"""Partial volume: rasterizing the vessel capsules into per-voxel vessel fractions and signal.

Acquisition (partial volume)
    Each voxel's vessel fraction is the vessel (a chain of capsules, one per centreline step)
    convolved with the voxel, the voxel's box response approximated by a Gaussian of the same
    variance (``h**2 / 12`` per axis) projected onto the plane perpendicular to the vessel, for
    which the fraction is exact: the probability that a 2D Gaussian centred ``d`` from the axis
    falls inside the radius ``r`` (a non-central chi-square CDF, tabulated once,
    :func:`_fraction_table`). Sub-voxel vessels use the exact volume of a thin tube instead
    (:func:`rasterize_vessels` explains the blend). The image mixes vessel and tissue signal by
    that fraction and the label is ``fraction >= 0.5`` inside the brain mask
    (:func:`tofmra_utils.phantom.assemble.make_phantom`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

__all__ = ["rasterize_vessels"]

#: Grid step of the fraction table in both arguments (units of the projected voxel response's sigma).
_TABLE_STEP = 0.1
#: Largest tabulated distance from the vessel axis and largest tabulated radius (sigmas).
_TABLE_A_MAX = 32.0
_TABLE_B_MAX = 24.0


@lru_cache(maxsize=1)
def _fraction_table() -> np.ndarray:
    """F[a, b] = P(|X| < b) for X ~ N((a, 0), I_2): fraction of a Gaussian-blurred disc of radius b at offset a."""
    from scipy.stats import ncx2

    a = np.arange(0.0, _TABLE_A_MAX + _TABLE_STEP / 2, _TABLE_STEP)
    b = np.arange(0.0, _TABLE_B_MAX + _TABLE_STEP / 2, _TABLE_STEP)
    table = ncx2.cdf(b[None, :] ** 2, 2, a[:, None] ** 2)
    return np.clip(np.nan_to_num(table, nan=0.0), 0.0, 1.0).astype(np.float32)


def _vessel_fraction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bilinear lookup of the fraction table at normalized distance ``a`` and radius ``b`` (both in sigmas)."""
    table = _fraction_table()
    # Beyond the table's radius the fraction depends on b - a only (the disc edge is locally straight).
    excess = np.maximum(b - _TABLE_B_MAX, 0.0)
    a = np.clip(a - excess, 0.0, _TABLE_A_MAX - 1e-6) / _TABLE_STEP
    b = np.minimum(b, _TABLE_B_MAX - 1e-6) / _TABLE_STEP
    ia = a.astype(np.int32)
    ib = b.astype(np.int32)
    fa = (a - ia).astype(np.float32)
    fb = (b - ib).astype(np.float32)
    t00 = table[ia, ib]
    t01 = table[ia, ib + 1]
    t10 = table[ia + 1, ib]
    t11 = table[ia + 1, ib + 1]
    return (t00 * (1 - fa) * (1 - fb) + t01 * (1 - fa) * fb + t10 * fa * (1 - fb) + t11 * fa * fb).astype(np.float32)


def rasterize_vessels(start: np.ndarray, end: np.ndarray, radius: np.ndarray, value: np.ndarray,
                      shape: Sequence[int], affine: np.ndarray, chunk_elements: int = 1_500_000
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Partial-volume vessel fraction of every voxel, and the vessel signal there.

    Two models of the fraction of a voxel filled by a capsule (segment ``start``-``end`` of
    radius ``radius``), blended by the radius:

    * thick vessels (``r >= 0.7 h``, ``h`` the geometric mean voxel size): the capsule blurred by
      the voxel's response, a box of side ``h_i`` per axis approximated by a Gaussian of the same
      variance ``h_i**2 / 12`` projected perpendicular to the segment; the fraction is that of an
      infinite cylinder at the voxel centre's distance (a tabulated non-central chi-square CDF).
      Accurate when the vessel edge is smooth on the voxel scale. Overlapping capsules (the
      joints of one vessel, branch points) combine by their maximum.
    * thin vessels (``r <= 0.3 h``): the exact volume fraction of a thin tube,
      ``pi r**2 * (length of the centreline inside the voxel box) / voxel volume``; it adds up
      to the vessel's volume exactly wherever the vessel runs (the Gaussian model's voxel sums
      would "bead" by +-25 % along a sub-voxel vessel). Disjoint pieces add up.

    In between, the two are mixed linearly in ``r``; the total is clipped to 1.

    Parameters
    ----------
    start, end
        (S, 3) segment end points in world mm.
    radius
        (S,) radii in mm.
    value
        (S,) signal of each segment; the voxel's vessel signal is the fraction-weighted mean.
    shape
        (X, Y, Z) output shape.
    affine
        Diagonal 4x4 voxel-to-world matrix (mm).
    chunk_elements
        Bound on (segments x box voxels) processed at once: sets the peak memory, not the result.

    Returns
    -------
    fraction
        (X, Y, Z) float32 in [0, 1].
    signal
        (X, Y, Z) float32 vessel signal (0 where no vessel reaches).
    """
    shape = tuple(int(v) for v in shape)
    h = np.diag(affine)[:3].astype(np.float64)
    origin = affine[:3, 3].astype(np.float64)
    caps = _capsules(start, end, radius, value, h, origin, shape)
    sums = _VoxelSums(shape)
    for idx, k_box in _chunks(caps.size, chunk_elements):
        near = _near_voxels(caps, idx, k_box, h, origin)
        rows, f_smooth, f_thin = _chunk_fractions(caps, idx, near, h)
        sums.add([v[near.sel] for v in near.vox], f_smooth, f_thin, caps.value[idx][rows])
    return sums.result()


@dataclass(frozen=True)
class _Capsules:
    """The S segments to rasterize, with what the voxel tests need (float64 unless noted).

    Attributes
    ----------
    start, axis
        (S, 3) segment start and ``end - start`` in world mm.
    length2
        (S,) squared segment length (mm^2), at least 1e-12.
    radius, value
        (S,) radius (mm) and signal.
    sigma
        (S,) standard deviation (mm) of the voxel response projected perpendicular to the segment.
    smooth_weight
        (S,) weight of the Gaussian model; the thin-tube model gets ``1 - smooth_weight``.
    tube_area_per_voxel
        (S,) float32 ``pi r**2 / voxel volume`` (1/mm): thin-tube fraction per mm of centreline.
    reach
        (S,) distance (mm) from the centreline beyond which a voxel gets no fraction.
    lo, hi, size
        (S, 3) int64 first and last voxel (inclusive, clipped to the volume) and size of the
        segment's bounding box; a size <= 0 on some axis: the box misses the volume.
    """

    start: np.ndarray
    axis: np.ndarray
    length2: np.ndarray
    radius: np.ndarray
    value: np.ndarray
    sigma: np.ndarray
    smooth_weight: np.ndarray
    tube_area_per_voxel: np.ndarray
    reach: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    size: np.ndarray


def _capsules(start: np.ndarray, end: np.ndarray, radius: np.ndarray, value: np.ndarray, h: np.ndarray,
              origin: np.ndarray, shape: tuple[int, ...]) -> _Capsules:
    """Per-segment geometry for voxel size ``h`` (3,) mm, world ``origin`` (3,) mm of voxel 0, volume ``shape``."""
    start = np.asarray(start, np.float64)
    end = np.asarray(end, np.float64)
    radius = np.asarray(radius, np.float64)
    value = np.asarray(value, np.float64)
    axis = end - start
    length2 = np.maximum((axis**2).sum(1), 1e-12)
    unit = axis / np.sqrt(length2)[:, None]
    var = h**2 / 12.0
    sigma = np.sqrt(np.maximum((var.sum() - (unit**2 * var).sum(1)) / 2.0, 1e-8))
    h_ref = float(np.prod(h) ** (1.0 / 3.0))
    smooth_weight = np.clip((radius / h_ref - 0.3) / 0.4, 0.0, 1.0)  # 1: Gaussian model, 0: thin-tube model
    # Every voxel the centreline crosses lies within half a voxel diagonal of it.
    reach = radius + np.maximum(3.5 * sigma, 0.5 * float(np.linalg.norm(h)))
    lo = np.floor((np.minimum(start, end) - reach[:, None] - origin) / h).astype(np.int64)
    hi = np.ceil((np.maximum(start, end) + reach[:, None] - origin) / h).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.asarray(shape) - 1)
    return _Capsules(start=start, axis=axis, length2=length2, radius=radius, value=value, sigma=sigma,
                     smooth_weight=smooth_weight,
                     tube_area_per_voxel=(np.pi * radius**2 / np.prod(h)).astype(np.float32),
                     reach=reach, lo=lo, hi=hi, size=hi - lo + 1)


def _chunks(size: np.ndarray, chunk_elements: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Groups of segment indices processed together, each with the voxel box size (3,) they share.

    ``size`` (S, 3) holds the segments' box sizes; segments whose box misses the volume are
    skipped. A group's (segments x box voxels) stays within ``chunk_elements`` (a lone segment
    may exceed it): that bounds the memory of the (n, K) arrays of :func:`_near_voxels`.
    """
    keep = np.all(size > 0, axis=1)
    order = np.flatnonzero(keep)[np.argsort(np.prod(size[keep], axis=1), kind="stable")]
    pos = 0
    while pos < len(order):
        # Sorted by box size, a group's boxes are alike, so little of the shared (largest) box is wasted.
        k_box = size[order[pos]]
        n_take = 1
        while pos + n_take < len(order):
            cand = np.maximum(k_box, size[order[pos + n_take]])
            if int(np.prod(cand)) * (n_take + 1) > chunk_elements:
                break
            k_box = cand
            n_take += 1
        yield order[pos : pos + n_take], k_box
        pos += n_take


class _Near(NamedTuple):
    """The voxels of a group's shared box around each of its segments: n segments x K box voxels.

    Attributes
    ----------
    vox
        Per axis, (n, K) int64 voxel indices.
    rel
        Per axis, (n, K) float32 voxel centre minus segment start (mm).
    ax
        Per axis, (n, 1) float32 segment vector ``end - start`` (mm).
    dist2
        (n, K) float32 squared distance (mm^2) of the voxel centre from the segment.
    sel
        (n, K) bool: the voxel is within the segment's reach and its own box.
    """

    vox: list[np.ndarray]
    rel: list[np.ndarray]
    ax: list[np.ndarray]
    dist2: np.ndarray
    sel: np.ndarray


def _near_voxels(caps: _Capsules, idx: np.ndarray, k_box: np.ndarray, h: np.ndarray, origin: np.ndarray) -> _Near:
    """The voxels of a box of size ``k_box`` (3,) at each segment ``idx`` (n,), and which of them are near it."""
    grid = np.stack(np.meshgrid(*(np.arange(k) for k in k_box), indexing="ij"), -1).reshape(-1, 3)
    vox = [caps.lo[idx, i][:, None] + grid[None, :, i] for i in range(3)]
    rel = [(origin[i] + h[i] * vox[i] - caps.start[idx, i][:, None]).astype(np.float32) for i in range(3)]
    ax = [caps.axis[idx, i].astype(np.float32)[:, None] for i in range(3)]
    t = (rel[0] * ax[0] + rel[1] * ax[1] + rel[2] * ax[2]) / caps.length2[idx].astype(np.float32)[:, None]
    np.clip(t, 0.0, 1.0, out=t)
    dist2 = (rel[0] - t * ax[0]) ** 2 + (rel[1] - t * ax[1]) ** 2 + (rel[2] - t * ax[2]) ** 2
    sel = dist2 < (caps.reach[idx] ** 2).astype(np.float32)[:, None]
    for i in range(3):
        sel &= vox[i] <= caps.hi[idx, i][:, None]  # the shared box reaches past a smaller segment's own box
    return _Near(vox=vox, rel=rel, ax=ax, dist2=dist2, sel=sel)


def _chunk_fractions(caps: _Capsules, idx: np.ndarray, near: _Near,
                     h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractions of the selected voxels of ``near`` by the two models of :func:`rasterize_vessels`.

    Returns
    -------
    rows
        (m,) int64 position in ``idx`` of each selected voxel's segment.
    f_smooth, f_thin
        (m,) float32 fractions of the Gaussian and of the thin-tube model, each times its weight.
    """
    rows = np.nonzero(near.sel)[0]
    w = caps.smooth_weight[idx][rows].astype(np.float32)
    f_smooth = w * _vessel_fraction(np.sqrt(near.dist2[near.sel]) / caps.sigma[idx][rows].astype(np.float32),
                                    (caps.radius[idx] / caps.sigma[idx]).astype(np.float32)[rows])
    f_thin = np.zeros_like(f_smooth)
    thin = w < 1.0
    if thin.any():
        length = _length_in_box([r[near.sel][thin] for r in near.rel], [a[rows[thin], 0] for a in near.ax], h)
        f_thin[thin] = (1.0 - w[thin]) * caps.tube_area_per_voxel[idx][rows[thin]] * length
    return rows, f_smooth, f_thin


class _VoxelSums:
    """Per-voxel combination of the capsules' fractions and signal over a volume of ``shape`` (X, Y, Z).

    Gaussian-model parts of overlapping capsules (the joints of one vessel, branch points)
    combine by their maximum; thin-tube parts are disjoint pieces of volume, so they add up.
    The vessel signal is the fraction-weighted mean of the segments' values.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.n_vox = int(np.prod(shape))
        self.strides = np.array([shape[1] * shape[2], shape[2], 1], np.int64)
        self.smooth_max = np.zeros(self.n_vox, np.float32)
        self.flat_parts: list[np.ndarray] = []
        self.thin_parts: list[np.ndarray] = []
        self.weight_parts: list[np.ndarray] = []
        self.fv_parts: list[np.ndarray] = []

    def add(self, vox: list[np.ndarray], f_smooth: np.ndarray, f_thin: np.ndarray, value: np.ndarray) -> None:
        """Add m contributions: per-axis voxel indices (m,), float32 fractions (m,) and float64 signal (m,)."""
        f_any = f_smooth + f_thin
        keep_f = f_any > 2e-3  # negligible fractions would only grow the lists
        flat = (vox[0] * self.strides[0] + vox[1] * self.strides[1] + vox[2])[keep_f]
        np.maximum.at(self.smooth_max, flat, f_smooth[keep_f])
        self.flat_parts.append(flat)
        self.thin_parts.append(f_thin[keep_f])
        self.weight_parts.append(f_any[keep_f])
        self.fv_parts.append(f_any[keep_f] * value[keep_f].astype(np.float32))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y, Z) float32 fraction (clipped to 1) and vessel signal (0 where no vessel reaches)."""
        n_vox = self.n_vox
        fraction = self.smooth_max.astype(np.float64)
        signal = np.zeros(n_vox, np.float32)
        if self.flat_parts:
            flat = np.concatenate(self.flat_parts)
            fraction += np.bincount(flat, weights=np.concatenate(self.thin_parts), minlength=n_vox)
            weight = np.bincount(flat, weights=np.concatenate(self.weight_parts), minlength=n_vox)
            weighted = np.bincount(flat, weights=np.concatenate(self.fv_parts), minlength=n_vox)
            hit = weight > 0
            signal[hit] = (weighted[hit] / weight[hit]).astype(np.float32)
        fraction = np.minimum(fraction, 1.0).astype(np.float32)
        return fraction.reshape(self.shape), signal.reshape(self.shape)


def _length_in_box(rel: list[np.ndarray], direction: list[np.ndarray], h: np.ndarray) -> np.ndarray:
    """Length of the segment ``start + t * direction`` (t in [0, 1]) inside each voxel box (slab clipping).

    ``rel`` holds, per axis, the voxel centres minus the segment start; ``direction`` the
    segment vector per axis (one per voxel); ``h`` the voxel size.
    """
    t_in = np.zeros_like(rel[0])
    t_out = np.ones_like(rel[0])
    for i in range(3):
        d = direction[i]
        d = np.where(np.abs(d) < 1e-9, np.float32(1e-9), d)  # parallel: the slab test below decides
        t1 = (rel[i] - h[i] / 2) / d
        t2 = (rel[i] + h[i] / 2) / d
        t_in = np.maximum(t_in, np.minimum(t1, t2))
        t_out = np.minimum(t_out, np.maximum(t1, t2))
    norm = np.sqrt(direction[0] ** 2 + direction[1] ** 2 + direction[2] ** 2)
    return np.maximum(t_out - t_in, 0.0) * norm
