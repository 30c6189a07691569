"""Stationary tissue on one site's voxel grid: brain mask, grey and white matter, CSF, texture, bias.

Anatomy (inside the brain ellipsoid of :mod:`tofmra_utils.phantom.brain`)
    The brain's surface has a smooth random irregularity. Inside: white matter, a folded
    grey-matter cortex (a level set of a smooth random field gives worm-like sulci filled with
    dark CSF), a thin CSF rim and two dark lateral ventricles, plus a fine multiplicative tissue
    texture. The signal is relative to white matter, with the site's grey/white and CSF/white
    ratios (:class:`tofmra_utils.phantom.sites.Site`): stationary tissue is saturated by the
    repeated RF pulses, so it is darker than the inflowing blood.

Bias
    A smooth multiplicative bias field: a random smooth field plus a linear coil gradient
    (:func:`bias_field`).

All fields are drawn in world mm (:func:`_smooth_field`), so both sites' grids sample the same
anatomy of a subject.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .brain import Brain
from .sites import Site

__all__ = ["world_axes", "tissue_model", "bias_field"]


def world_axes(shape: Sequence[int], affine: np.ndarray) -> list[np.ndarray]:
    """World coordinates (mm) of the voxel centres along each axis: (X,), (Y,), (Z,) for a diagonal ``affine``."""
    return [affine[i, 3] + affine[i, i] * np.arange(shape[i]) for i in range(3)]


def _smooth_field(rng: np.random.Generator, fov: np.ndarray, axes: list[np.ndarray], corr_mm: float) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field in world mm, sampled on the grid ``axes``: (X, Y, Z) float32.

    A sum of Gaussian bumps (width ``corr_mm``) with random amplitudes on a regular grid of
    centres that covers the field of view: separable, so it costs three small matrix products,
    and it is the same anatomy whatever the voxel grid.
    """
    node = corr_mm / 1.5
    weights = []
    for i in range(3):
        half = fov[i] / 2.0 + 2.0 * corr_mm
        centres = np.arange(-half, half + node / 2, node)
        weights.append(np.exp(-0.5 * ((axes[i][:, None] - centres[None, :]) / corr_mm) ** 2).astype(np.float32))
    coeff = rng.standard_normal(tuple(w.shape[1] for w in weights)).astype(np.float32)
    out = np.einsum("xi,ijk->xjk", weights[0], coeff)
    out = np.einsum("yj,xjk->xyk", weights[1], out)
    out = np.einsum("zk,xyk->xyz", weights[2], out)
    # Normalize by the field's theoretical standard deviation (sum of squared kernel weights at the centre).
    std = float(np.sqrt(np.prod([(np.exp(-0.5 * (np.arange(-50, 51) * node / corr_mm) ** 2) ** 2).sum()
                                 for _ in range(3)])))
    return out / std


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function ``1 / (1 + exp(-x))``, elementwise: a soft step for the tissue-class edges."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)  # the logistic function, without overflow


def tissue_model(rng: np.random.Generator, brain: Brain, fov: np.ndarray, axes: list[np.ndarray], site: Site,
                 voxel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Brain mask and stationary-tissue signal (relative to white matter) on one site's grid.

    Parameters
    ----------
    rng
        The subject's tissue stream.
    brain
        The brain ellipsoid (world mm).
    fov
        (3,) field of view in mm (the smooth fields cover it).
    axes
        World coordinates (mm) of the grid, from :func:`world_axes`.
    site
        Grey/white and CSF/white signal ratios.
    voxel_mm
        Smallest voxel side (mm): the width of the tissue-class edges.

    Returns
    -------
    mask
        (X, Y, Z) uint8 brain mask.
    signal
        (X, Y, Z) float32 tissue signal relative to white matter, 0 outside the mask.
    """
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    ax, ay, az = brain.semi_axes
    u = (x - brain.centre[0]) / ax
    v = (y - brain.centre[1]) / ay
    w = (z - brain.centre[2]) / az
    rho = np.sqrt(u**2 + v**2 + w**2).astype(np.float32)
    size = 0.5 * (ax + ay)
    surface = 1.0 + 0.035 * _smooth_field(rng, fov, axes, 0.25 * size)  # irregular brain outline
    depth = (surface - rho) * size  # approximate depth below the brain surface (mm)
    mask = depth > 0
    soft = voxel_mm * 0.6  # edge width of the tissue classes: about one voxel
    # Cortex: a grey rim whose thickness follows a smooth field; sulci are thin sheets around the
    # zero level set of another field, reaching from the surface into the cortex.
    thick = 0.09 * size * (1.0 + 0.35 * _smooth_field(rng, fov, axes, 0.12 * size))
    grey = _sigmoid((thick - depth) / soft)
    sulcus_field = _smooth_field(rng, fov, axes, 0.07 * size)
    sulci = _sigmoid((0.22 - np.abs(sulcus_field)) / 0.07) * _sigmoid((1.3 * thick - depth) / soft)
    csf_rim = _sigmoid((0.012 * size - depth) / soft)
    # Lateral ventricles: two elongated ellipsoids either side of the midline.
    ventricles = np.zeros_like(rho)
    for side in (-1.0, 1.0):
        vu = (x - side * 0.13 * ax) / (0.08 * ax)
        vv = (y - 0.05 * ay) / (0.38 * ay)
        vw = (z - (brain.centre[2] + 0.05 * az)) / (0.18 * az)
        r = np.sqrt(vu**2 + vv**2 + vw**2)
        ventricles = np.maximum(ventricles, _sigmoid((1.0 - r) * 6.0))
    csf = np.maximum(np.maximum(sulci, csf_rim), ventricles)
    signal = 1.0 + (site.gm_wm_ratio - 1.0) * grey
    signal = signal + (site.csf_wm_ratio - signal) * csf
    texture = 1.0 + 0.03 * _smooth_field(rng, fov, axes, 2.0) + 0.04 * _smooth_field(rng, fov, axes, 0.2 * size)
    return mask.astype(np.uint8), (signal * texture * mask).astype(np.float32)


def bias_field(rng: np.random.Generator, fov: np.ndarray, axes: list[np.ndarray], strength: float) -> np.ndarray:
    """Smooth multiplicative bias (X, Y, Z) float32: ``exp(strength * (smooth field + coil gradient))``, mean about 1.

    ``fov`` (3,) mm and ``axes`` (world mm, from :func:`world_axes`) as for :func:`tissue_model`;
    ``strength`` is the site's ``bias_strength``.
    """
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    ramp = (direction[0] * x / fov[0] + direction[1] * y / fov[1] + direction[2] * z / fov[2]) * 1.5
    smooth = _smooth_field(rng, fov, axes, 0.35 * float(np.mean(fov[:2])))
    return np.exp(strength * (0.7 * smooth + ramp)).astype(np.float32)
