"""The phantom brain: an ellipsoid in world mm, cut by the imaging slab.

Anatomy (world coordinates in mm, RAS, origin at the centre of the field of view)
    *Brain*: an ellipsoid a little longer front-to-back than side-to-side, cut by the imaging slab
    (z = the axial slice axis; the slab covers the lower-middle brain, so the lowest slices show a
    smaller cross-section like the skull base). The smooth random irregularity of its surface and
    the tissues inside are drawn by :mod:`tofmra_utils.phantom.tissue`; the vessel tree grows
    inside the ellipsoid (:mod:`tofmra_utils.phantom.growth`).

    Smaller fields of view than a full-size brain's (:data:`FULL_BRAIN_FOV_MM`) are miniature
    brains: :func:`size_factor` scales the root vessels and the blood velocity with the brain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .vectors import Vec, unit

__all__ = ["FULL_BRAIN_FOV_MM", "Brain", "brain_geometry", "size_factor", "slab_brain_volume"]

#: Side of the field of view (mm) at which the phantom brain has its full anatomical size.
FULL_BRAIN_FOV_MM = 150.0


@dataclass(frozen=True)
class Brain:
    """The brain ellipsoid (world mm) and the slab it is imaged in.

    Attributes
    ----------
    centre
        Centre (x, y, z) of the ellipsoid in mm.
    semi_axes
        Semi-axes (x, y, z) of the ellipsoid in mm.
    z_bottom, z_top
        z (mm) of the slab's bottom face (where blood flows in) and top face.
    """

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    z_bottom: float
    z_top: float

    def rho(self, p: Sequence[float], shrink: float = 1.0) -> float:
        """Normalized ellipsoid radius of a point (1 on the surface of the ellipsoid scaled by ``shrink``)."""
        c, a = self.centre, self.semi_axes
        u = (p[0] - c[0]) / a[0]
        v = (p[1] - c[1]) / a[1]
        w = (p[2] - c[2]) / a[2]
        return math.sqrt(u * u + v * v + w * w) / shrink

    def outward(self, p: Sequence[float]) -> Vec:
        """Unit outward normal direction of the ellipsoid's level set through ``p``."""
        g = [(p[i] - self.centre[i]) / self.semi_axes[i] ** 2 for i in range(3)]
        return unit(g)


def brain_geometry(fov: np.ndarray) -> Brain:
    """The brain of a field of view ``fov`` (3,) mm, centred in x and y."""
    # The slab covers the lower-middle brain: centre above the slab centre, so the bottom slices
    # cut the ellipsoid at about 0.6 of its largest cross-section (skull base), the top near its equator.
    fx, fy, fz = (float(v) for v in fov)
    return Brain(centre=(0.0, 0.0, 0.18 * fz), semi_axes=(0.38 * fx, 0.445 * fy, 0.85 * fz),
                 z_bottom=-fz / 2.0, z_top=fz / 2.0)


def size_factor(fov: np.ndarray) -> float:
    """Brain size relative to a full-size adult brain (1.0 for a 150 mm field of view ``fov`` (3,) mm)."""
    return float(np.clip(0.5 * (fov[0] + fov[1]) / FULL_BRAIN_FOV_MM, 0.15, 1.5))


def slab_brain_volume(brain: Brain) -> float:
    """Volume (mm^3) of the brain ellipsoid between the slab's bottom and top faces."""
    ax, ay, az = brain.semi_axes
    lo = max(-1.0, (brain.z_bottom - brain.centre[2]) / az)
    hi = min(1.0, (brain.z_top - brain.centre[2]) / az)
    # integral of the cross-section pi ax ay (1 - u^2) over u = z / az
    return math.pi * ax * ay * az * ((hi - hi**3 / 3.0) - (lo - lo**3 / 3.0))
