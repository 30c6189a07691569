"""Growing the arterial tree: Murray radii and angles, tortuous centrelines, the circle of Willis.

Vessel tree
    Three root arteries enter the slab from below like the two internal carotids and the
    basilar artery. Each carotid splits into a middle- and an anterior-cerebral-like branch, the
    basilar into two posterior-cerebral-like branches, and from there every branch bifurcates
    recursively until its children would be thinner than ``r_min``
    (:data:`tofmra_utils.phantom.calibration.R_MIN_MM`, sub-voxel). Radii obey Murray's law
    ``r_parent**g = r_child1**g + r_child2**g`` with a per-subject exponent ``g`` in [2.5, 3.0]
    and a random asymmetry; branching angles follow the optimum of Murray's minimum-work model
    (the thinner child leaves at the larger angle). Branches are tortuous: the direction of a
    growing branch turns with a smoothly varying random curvature (an Ornstein-Uhlenbeck process
    along the arc length), thin vessels more than thick ones, and it is steered away from the
    brain surface. Finally posterior and anterior communicating arteries join the three root
    trees like the circle of Willis.

The per-subject parameters (Murray exponent, root radius, tortuosity, branch lengths) are drawn
and calibrated by :func:`tofmra_utils.phantom.calibration.grow_vessel_tree`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .brain import Brain
from .tree import Branch
from .vectors import Vec, dot, perpendicular, unit

__all__ = ["GrowthParams", "TreeGrower"]


class _Normals:
    """Standard normals drawn in blocks from a Generator (per-draw calls dominate the growth loop)."""

    def __init__(self, rng: np.random.Generator, block: int = 8192) -> None:
        self._rng = rng
        self._block = block
        self._buf: list[float] = []
        self._i = 0

    def take(self, n: int) -> list[float]:
        """The next ``n`` normals of the stream (a fresh block is drawn when the current one runs short)."""
        if self._i + n > len(self._buf):
            self._buf = self._rng.standard_normal(self._block).tolist()
            self._i = 0
        out = self._buf[self._i : self._i + n]
        self._i += n
        return out


@dataclass(frozen=True)
class GrowthParams:
    """The rules of one tree's growth (fixed per subject; only ``length_per_radius`` is calibrated).

    Attributes
    ----------
    murray_exponent
        ``g`` of Murray's law at every bifurcation.
    length_per_radius
        Branch length ~ ``length_per_radius * sqrt(radius * root_radius)`` (mm per mm, see
        :meth:`TreeGrower.branch_length`).
    tortuosity
        Curvature amplitude (1/mm) ~ ``tortuosity / radius`` (radius in mm).
    root_radius
        Radius (mm) of the carotid-like roots.
    r_min
        Thinnest radius (mm) grown: a bifurcation whose thinner child would be thinner ends the branch.
    heading_pull
        Turn rate (1/mm) back towards a branch's heading.
    """

    murray_exponent: float
    length_per_radius: float
    tortuosity: float
    root_radius: float
    r_min: float
    heading_pull: float = 0.08


class TreeGrower:
    """Recursive random branching with Murray radii, Murray angles and smooth curvature noise.

    Every branch has a *heading* (where it is going: the anatomical direction of a named branch,
    the initial direction of a side branch, inherited along a trunk). Its direction wanders
    around the heading with a smoothly varying random curvature, so vessels are wavy and
    tortuous yet still travel somewhere instead of curling up in random-walk loops.
    """

    def __init__(self, rng: np.random.Generator, brain: Brain, params: GrowthParams) -> None:
        self.rng = rng
        self.normal = _Normals(rng)
        self.brain = brain
        self.p = params
        self.branches: list[Branch] = []
        self._end_direction: Vec = (0.0, 0.0, 1.0)

    # ---------------------------------------------------------------- one branch
    def grow_branch(self, start: Sequence[float], direction: Sequence[float], heading: Sequence[float],
                    radius: float, length: float, parent: int, name: str = "", root: bool = False) -> tuple[int, bool]:
        """Grow one tortuous branch and append it to :attr:`branches`.

        A branch that reaches the brain surface ends there (its children turn along the
        surface); one that leaves the slab through the top face is cut and does not split.

        Parameters
        ----------
        start
            First centreline point (3,) in world mm.
        direction, heading
            Initial direction and the direction the branch tends to (3,), any length.
        radius, length
            Radius and planned centreline length in mm (a branch that ends early is shorter).
        parent
            Index of the parent branch, -1 for a root.
        name
            Anatomical name, "" for an unnamed branch.
        root
            A root artery: it enters through the slab's bottom face, so that face does not stop it.

        Returns
        -------
        index
            The new branch's index; its direction at the end is left in ``self._end_direction``.
        complete
            Whether it may split at its end (False when the top face cut it).
        """
        pts, end_direction, complete = self._centreline(start, direction, heading, radius, length, root)
        index = len(self.branches)
        self.branches.append(Branch(points=np.asarray(pts, dtype=np.float64), radius=float(radius), parent=parent,
                                    name=name))
        if parent >= 0:
            self.branches[parent].children.append(index)
        self._end_direction = end_direction
        return index, complete

    def _centreline(self, start: Sequence[float], direction: Sequence[float], heading: Sequence[float],
                    radius: float, length: float, root: bool) -> tuple[list[Vec], Vec, bool]:
        """Trace a branch's centreline: its points (mm, at least two), end direction and completeness.

        The curvature vector ``w`` (1/mm, perpendicular to the direction) is an Ornstein-Uhlenbeck
        process along the arc length, plus the steering of :meth:`_steering`.
        """
        brain = self.brain
        ds = min(max(0.8 * radius + 0.4, 0.6), 1.6)  # centreline step (mm): fine for thin, coarse for thick vessels
        n_steps = max(2, int(math.ceil(length / ds)))
        ds = length / n_steps
        corr_len = 1.5 + 3.0 * radius  # curvature stays correlated over one or two vessel diameters
        kappa = self.p.tortuosity * 0.45 / max(radius, 0.45)  # thin vessels wiggle, thick ones curve gently
        decay = math.exp(-ds / corr_len)
        kick = kappa * math.sqrt(1.0 - decay * decay)
        d = unit(direction)
        heading = unit(heading)
        w = perpendicular(d, self.normal.take(3))
        w = (w[0] * kappa, w[1] * kappa, w[2] * kappa)
        p = tuple(float(v) for v in start)
        pts = [p]
        complete = True
        for _ in range(n_steps):
            xi = perpendicular(d, self.normal.take(3))
            w = (decay * w[0] + kick * xi[0], decay * w[1] + kick * xi[1], decay * w[2] + kick * xi[2])
            steer = self._steering(p, d, heading, root)
            d = unit((d[0] + ds * (w[0] + steer[0]), d[1] + ds * (w[1] + steer[1]), d[2] + ds * (w[2] + steer[2])))
            w = perpendicular(d, w)
            q = (p[0] + ds * d[0], p[1] + ds * d[1], p[2] + ds * d[2])
            if q[2] > brain.z_top + 2.0 * radius:  # left the slab at the top: the vessel goes on unseen
                pts.append(q)
                complete = False
                break
            leaves_brain = brain.rho(q, 0.94) > 1.0
            if leaves_brain or (not root and q[2] < brain.z_bottom + radius):
                # The branch ends here and its children turn along the surface.
                n = brain.outward(p) if leaves_brain else (0.0, 0.0, -1.0)
                k = dot(d, n)
                if k > 0:
                    d = unit((d[0] - 1.2 * k * n[0], d[1] - 1.2 * k * n[1], d[2] - 1.2 * k * n[2]))
                break
            p = q
            pts.append(p)
        if len(pts) < 2:
            pts.append((p[0] + 0.5 * ds * d[0], p[1] + 0.5 * ds * d[1], p[2] + 0.5 * ds * d[2]))
        return pts, d, complete

    def _steering(self, p: Sequence[float], d: Sequence[float], heading: Sequence[float], root: bool) -> Vec:
        """Turn rate (1/mm) at ``p`` (mm) moving along ``d``: back to the heading, away from the brain
        surface and (except for a root, which enters through it) the slab faces."""
        k = self.p.heading_pull
        sx, sy, sz = k * heading[0], k * heading[1], k * heading[2]
        rho = self.brain.rho(p, 0.94)
        if rho > 0.8:
            n = self.brain.outward(p)
            if dot(n, d) > -0.3:
                gain = 0.6 * (rho - 0.8) / 0.2
                sx, sy, sz = sx - gain * n[0], sy - gain * n[1], sz - gain * n[2]
        if not root:
            z_rel = p[2] - self.brain.z_bottom
            if z_rel < 4.0 and d[2] < 0.3:
                sz += 0.4 * (4.0 - z_rel) / 4.0
            z_top = self.brain.z_top - p[2]
            if z_top < 6.0 and d[2] > -0.3:  # most vessels stay in the slab (the top face cuts some)
                sz -= 0.25 * (6.0 - z_top) / 6.0
        return sx, sy, sz

    # ---------------------------------------------------------------- splitting
    def murray_split(self, radius: float, asymmetry: float) -> tuple[float, float]:
        """Children radii (r1 >= r2 = asymmetry * r1) with ``r1**g + r2**g = radius**g``."""
        g = self.p.murray_exponent
        r1 = radius * (1.0 + asymmetry**g) ** (-1.0 / g)
        return r1, asymmetry * r1

    @staticmethod
    def murray_angles(r0: float, r1: float, r2: float) -> tuple[float, float]:
        """Optimal branching angles (rad) of the two children (Murray 1926 minimum-work model)."""
        c1 = (r0**4 + r1**4 - r2**4) / (2.0 * r0**2 * r1**2)
        c2 = (r0**4 + r2**4 - r1**4) / (2.0 * r0**2 * r2**2)
        return math.acos(max(-1.0, min(1.0, c1))), math.acos(max(-1.0, min(1.0, c2)))

    def branch_length(self, radius: float) -> float:
        """Length (mm) to the next branch point: ~ sqrt(radius), so thick trunks give off side branches often."""
        jitter = float(self.rng.uniform(0.6, 1.4))
        return max(0.8, self.p.length_per_radius * math.sqrt(radius * self.p.root_radius) * jitter)

    def child_directions(self, d: Sequence[float], r0: float, r1: float, r2: float) -> tuple[Vec, Vec]:
        """Directions of the two children: in a random plane through ``d``, on opposite sides."""
        th1, th2 = self.murray_angles(r0, r1, r2)
        th1 += 0.15 * self.normal.take(1)[0]
        th2 += 0.2 * self.normal.take(1)[0]
        n = unit(perpendicular(d, self.normal.take(3)))
        c1, s1, c2, s2 = math.cos(th1), math.sin(th1), math.cos(th2), math.sin(th2)
        dir1 = unit((c1 * d[0] + s1 * n[0], c1 * d[1] + s1 * n[1], c1 * d[2] + s1 * n[2]))
        dir2 = unit((c2 * d[0] - s2 * n[0], c2 * d[1] - s2 * n[1], c2 * d[2] - s2 * n[2]))
        return dir1, dir2

    def grow_subtree(self, index: int, end_direction: Sequence[float], heading: Sequence[float]) -> None:
        """Bifurcate recursively from the end of branch ``index`` (breadth-first, explicit queue)."""
        queue: list[tuple[int, Vec, Vec]] = [(index, unit(end_direction), unit(heading))]
        head = 0
        while head < len(queue):
            i, d, hd = queue[head]
            head += 1
            parent = self.branches[i]
            asym = 0.2 + 0.8 * float(self.rng.beta(1.3, 2.0))  # mostly a trunk and a thinner side branch
            r1, r2 = self.murray_split(parent.radius, asym)
            if r2 < self.p.r_min:
                continue  # children would be thinner than the thinnest vessel grown: a terminal branch
            dir1, dir2 = self.child_directions(d, parent.radius, r1, r2)
            start = parent.points[-1]
            # The trunk keeps (most of) its heading; a side branch heads where it set off to.
            head1 = unit((hd[0] + 0.5 * dir1[0], hd[1] + 0.5 * dir1[1], hd[2] + 0.5 * dir1[2]))
            head2 = dir2
            if self.brain.rho(start, 0.94) > 0.85:  # at the surface: children head along it, not into it
                n = self.brain.outward(start)
                head1, head2 = (unit((v[0] - (dot(v, n) + 0.3) * n[0], v[1] - (dot(v, n) + 0.3) * n[1],
                                       v[2] - (dot(v, n) + 0.3) * n[2])) for v in (head1, head2))
            for r, dr, hr in ((r1, dir1, head1), (r2, dir2, head2)):
                child, complete = self.grow_branch(start, dr, hr, r, self.branch_length(r), parent=i)
                if complete:
                    queue.append((child, self._end_direction, hr))

    # ---------------------------------------------------------------- anatomy
    def grow(self) -> list[Branch]:
        """Carotid- and basilar-like roots, their named first branches, then recursive trees."""
        b = self.brain
        ax, ay, _ = b.semi_axes
        height = b.z_top - b.z_bottom
        r_ica = self.p.root_radius
        r_ba = r_ica * 0.85

        def jitter(value: float) -> float:
            return value * float(self.rng.uniform(0.85, 1.15))

        # (name, entry x, entry y, radius, (larger child, heading), (smaller child, heading), asymmetry)
        roots = [
            ("ICA_L", -0.28 * ax, 0.12 * ay, r_ica, ("MCA_L", (-1.0, 0.1, 0.1)), ("ACA_L", (0.3, 1.0, 0.3)), 0.75),
            ("ICA_R", 0.28 * ax, 0.12 * ay, r_ica, ("MCA_R", (1.0, 0.1, 0.1)), ("ACA_R", (-0.3, 1.0, 0.3)), 0.75),
            ("BA", 0.0, -0.22 * ay, r_ba, ("PCA_L", (-0.75, -0.65, 0.1)), ("PCA_R", (0.75, -0.65, 0.1)), 0.95),
        ]
        up = (0.0, 0.1, 1.0)
        named: dict[str, int] = {}
        for name, x, y, r, (n1, h1), (n2, h2), asym in roots:
            start = (jitter(x), jitter(y), b.z_bottom - 2.0)
            length = max(4.0, jitter(0.32 * height + 2.0))
            root, _ = self.grow_branch(start, up, up, r, length, parent=-1, name=name, root=True)
            named[name] = root
            end = self._end_direction
            r1, r2 = self.murray_split(r, min(1.0, asym * float(self.rng.uniform(0.9, 1.1))))
            for child_name, rc, hc in ((n1, r1, h1), (n2, r2, h2)):
                heading = unit(hc)
                direction = unit((heading[0] + 0.3 * end[0], heading[1] + 0.3 * end[1], heading[2] + 0.3 * end[2]))
                child, complete = self.grow_branch(self.branches[root].points[-1], direction, heading, rc,
                                                   self.branch_length(rc) * 1.5, parent=root, name=child_name)
                named[child_name] = child
                if complete:
                    self.grow_subtree(child, self._end_direction, heading)
        self.circle_of_willis(named)
        return self.branches

    def circle_of_willis(self, named: dict[str, int]) -> None:
        """Join the three root trees like the circle of Willis: posterior and anterior communicating arteries."""
        r_ica = self.p.root_radius
        links = [("PCom_L", "ICA_L", 1.0, "PCA_L", 0.25, 0.4), ("PCom_R", "ICA_R", 1.0, "PCA_R", 0.25, 0.4),
                 ("ACom", "ACA_L", 0.3, "ACA_R", 0.3, 0.35)]
        for name, a, at_a, b, at_b, rel_radius in links:
            pa = self._point_along(named[a], at_a)
            pb = self._point_along(named[b], at_b)
            chord = pb - pa
            dist = float(np.linalg.norm(chord))
            if dist < 1e-6:
                continue
            # A gently curved (quadratic Bezier) vessel, sagging a little towards the skull base.
            bend = np.asarray(perpendicular(unit(chord), self.normal.take(3))) * 0.15 * dist
            control = 0.5 * (pa + pb) + bend - np.array([0.0, 0.0, 0.1 * dist])
            t = np.linspace(0.0, 1.0, max(3, int(math.ceil(dist / 0.7)) + 1))[:, None]
            pts = (1 - t) ** 2 * pa + 2 * (1 - t) * t * control + t**2 * pb
            self.branches.append(Branch(points=pts, radius=rel_radius * r_ica, parent=-1, name=name,
                                        joins=(named[a], named[b])))

    def _point_along(self, index: int, where: float) -> np.ndarray:
        pts = self.branches[index].points
        return pts[int(round(where * (len(pts) - 1)))].copy()
