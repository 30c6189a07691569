"""The vessel tree as data: branches (centreline polylines of constant radius) and blood transit times.

A :class:`VesselTree` is grown by :func:`tofmra_utils.phantom.calibration.grow_vessel_tree`: three
roots (carotid- and basilar-like) whose Murray trees are joined by the communicating arteries
of the circle of Willis. The rasterization (:mod:`tofmra_utils.phantom.raster`) sees it as a
chain of capsules, one per centreline step (:meth:`VesselTree.segments`).

Transit time (the time-of-flight part of the signal)
    Along the tree the blood saturates with the time it has spent in the slab:
    ``t`` = path length / velocity, accumulated from the inflow face, with the mean velocity
    following from Murray's law (flow ~ ``r**g``, so velocity ~ ``r**(g - 2)``: thin vessels
    are slow). :func:`annotate_transit` fills :attr:`Branch.transit_s`;
    :func:`tofmra_utils.phantom.sites.blood_signal` turns it into signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Branch", "VesselTree", "annotate_transit"]


@dataclass
class Branch:
    """One vessel between two branch points: a centreline polyline of constant radius.

    Attributes
    ----------
    points
        (K, 3) centreline points in world mm, K >= 2.
    radius
        Lumen radius in mm.
    parent
        Index of the parent branch in :attr:`VesselTree.branches`, -1 for a root.
    children
        Indices of the two child branches (empty for a terminal branch).
    transit_s
        (K,) time (s) the blood has spent in the slab when it reaches each point.
    name
        Anatomical name of the named branches ("ICA_L", "MCA_R", "BA", "PCom_L", ...), else "".
    joins
        For a communicating artery of the circle of Willis (``parent == -1``, not part of the
        Murray tree): the two branches whose points it connects; ``None`` otherwise.
    """

    points: np.ndarray
    radius: float
    parent: int
    children: list[int] = field(default_factory=list)
    transit_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    name: str = ""
    joins: tuple[int, int] | None = None

    @property
    def length_mm(self) -> float:
        """Length (mm) of the centreline polyline."""
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())


@dataclass
class VesselTree:
    """An arterial tree: branches, the Murray exponent that split them, and the signal model.

    Attributes
    ----------
    branches
        All branches; roots have ``parent == -1``.
    murray_exponent
        ``g`` of Murray's law ``r_parent**g = sum(r_child**g)`` at every bifurcation.
    root_velocity_mm_s
        Mean blood velocity in a root of radius ``root_radius_mm``; elsewhere ``v ~ r**(g - 2)``.
    root_radius_mm
        Radius of the carotid-like roots.
    inflow_z_mm
        z of the slab's bottom face, where the blood enters fresh.
    """

    branches: list[Branch]
    murray_exponent: float
    root_velocity_mm_s: float
    root_radius_mm: float
    inflow_z_mm: float

    @property
    def roots(self) -> list[int]:
        """Indices of the root arteries (entering the slab from below)."""
        return [i for i, b in enumerate(self.branches) if b.parent < 0 and b.joins is None]

    @property
    def communicating(self) -> list[int]:
        """Indices of the communicating arteries joining the root trees (circle of Willis)."""
        return [i for i, b in enumerate(self.branches) if b.joins is not None]

    def bifurcations(self) -> list[tuple[int, list[int]]]:
        """(parent index, child indices) of every branch point."""
        return [(i, list(b.children)) for i, b in enumerate(self.branches) if b.children]

    def segments(self) -> dict[str, np.ndarray]:
        """All centreline steps as capsules.

        Returns
        -------
        dict with ``start`` (S, 3) and ``end`` (S, 3) mm, ``radius`` (S,) mm, ``transit_s`` (S,)
        at the step's midpoint, ``branch`` (S,) branch index.
        """
        starts, ends, radii, transit, owner = [], [], [], [], []
        for i, b in enumerate(self.branches):
            n = len(b.points) - 1
            starts.append(b.points[:-1])
            ends.append(b.points[1:])
            radii.append(np.full(n, b.radius))
            transit.append(0.5 * (b.transit_s[:-1] + b.transit_s[1:]))
            owner.append(np.full(n, i))
        return {
            "start": np.concatenate(starts),
            "end": np.concatenate(ends),
            "radius": np.concatenate(radii),
            "transit_s": np.concatenate(transit),
            "branch": np.concatenate(owner),
        }

    def vessel_volume_mm3(self, min_radius: float = 0.0) -> float:
        """Sum of ``pi r**2 L`` (mm^3) over branches with ``r >= min_radius`` mm (overlaps counted twice)."""
        return float(sum(math.pi * b.radius**2 * b.length_mm for b in self.branches if b.radius >= min_radius))


def annotate_transit(tree: VesselTree) -> None:
    """Set every branch's ``transit_s`` (K,): blood transit time (s) from the slab's inflow face to each point."""
    g = tree.murray_exponent
    for b in tree.branches:  # parents are always created before their children
        if b.joins is not None:
            continue  # communicating arteries: after the tree, below
        velocity = tree.root_velocity_mm_s * (b.radius / tree.root_radius_mm) ** (g - 2.0)
        steps = np.linalg.norm(np.diff(b.points, axis=0), axis=1)
        if b.parent < 0:
            # Only the part inside the slab counts: the root starts a little below the inflow face.
            mid_z = 0.5 * (b.points[1:, 2] + b.points[:-1, 2])
            steps = np.where(mid_z > tree.inflow_z_mm, steps, 0.0)
            t0 = 0.0
        else:
            t0 = float(tree.branches[b.parent].transit_s[-1])
        b.transit_s = t0 + np.concatenate([[0.0], np.cumsum(steps / velocity)])
    for b in tree.branches:
        if b.joins is None:
            continue
        # Blood enters from both ends: the transit time runs linearly between those of the joined points.
        ends = []
        for end, joined in zip((b.points[0], b.points[-1]), b.joins):
            other = tree.branches[joined]
            ends.append(float(other.transit_s[np.argmin(np.linalg.norm(other.points - end, axis=1))]))
        b.transit_s = np.linspace(ends[0], ends[1], len(b.points))
