"""Three-vector arithmetic on plain tuples of floats, for the vessel-growth loop.

The growth loop (:mod:`tofmra_utils.phantom.growth`) advances one centreline step at a time;
on 3-vectors numpy's per-call overhead would cost far more than the arithmetic, so the loop
works on tuples of Python floats with these helpers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Vec", "unit", "dot", "perpendicular"]

#: A 3-vector (x, y, z), in mm or dimensionless.
Vec = tuple[float, float, float]


def unit(v: Sequence[float]) -> Vec:
    """``v`` scaled to length 1; +z for a (near) zero vector."""
    n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    if n < 1e-12:
        return (0.0, 0.0, 1.0)
    return (v[0] / n, v[1] / n, v[2] / n)


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    """Scalar product of two 3-vectors."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def perpendicular(d: Sequence[float], v: Sequence[float]) -> Vec:
    """Component of ``v`` perpendicular to the unit vector ``d``."""
    k = dot(v, d)
    return (v[0] - k * d[0], v[1] - k * d[1], v[2] - k * d[2])
