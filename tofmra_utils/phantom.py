"""Synthetic TOF-MRA volumes with exact vessel labels (the built-in data of the project).

The study (Kossen et al. 2021) used patient TOF-MRA data that cannot be shared. This module makes
stand-ins that behave like it where the pipeline cares: bright, branching, tortuous vessels of
many calibres on a darker textured brain, partial volume at vessel borders, noise and bias, a
label that is exact by construction, and two acquisition "sites" for transfer learning. The
physics choices follow ``REFERENCE.md`` ("TOF-MRA physics for a realistic phantom"):

Anatomy (world coordinates in mm, RAS, origin at the centre of the field of view)
    *Brain*: an ellipsoid a little longer front-to-back than side-to-side, cut by the imaging slab
    (z = the axial slice axis; the slab covers the lower-middle brain, so the lowest slices show a
    smaller cross-section like the skull base), with a smooth random irregularity of its surface.
    Inside: white matter, a folded grey-matter cortex (a level set of a smooth random field
    gives worm-like sulci filled with dark CSF), a thin CSF rim and two dark lateral ventricles,
    plus a fine multiplicative tissue texture.

    *Vessel tree*: three root arteries enter the slab from below like the two internal carotids
    and the basilar artery. Each carotid splits into a middle- and an anterior-cerebral-like
    branch, the basilar into two posterior-cerebral-like branches, and from there every branch
    bifurcates recursively until its children would be thinner than ``R_MIN_MM`` (sub-voxel).
    Radii obey Murray's law ``r_parent**g = r_child1**g + r_child2**g`` with a per-subject
    exponent ``g`` in [2.5, 3.0] and a random asymmetry; branching angles follow the optimum of
    Murray's minimum-work model (the thinner child leaves at the larger angle). Branches are
    tortuous: the direction of a growing branch turns with a smoothly varying random curvature
    (an Ornstein-Uhlenbeck process along the arc length), thin vessels more than thick ones,
    and it is steered away from the brain surface. Root radii are about 2.4 mm for a full-size
    brain (the ``paper`` shape); smaller fields of view are miniature brains whose root radii
    shrink with the square root of the size (course: about 1.7 mm, smoke about 1.2 mm), so the
    vessel volume stays at 1-3 % of the brain as in real TOF-MRA. The branch lengths are
    calibrated per subject so the labelled vessels fill a random target fraction of the brain.

Signal (time of flight)
    Stationary tissue is saturated by the repeated RF pulses; blood flowing in from below the
    slab is fresh and bright (``Site.vessel_contrast``, 3-4x white matter). Along the tree the
    blood saturates with the time it has spent in the slab: ``t`` = path length / velocity,
    accumulated from the inflow face, with the mean velocity following from Murray's law
    (flow ~ r**g, so velocity ~ r**(g - 2): thin vessels are slow). The longitudinal
    magnetization of blood decays towards its steady state by ``cos(flip) * exp(-TR / T1)`` per
    repetition, i.e. with a time constant ``tau = -TR / ln(cos(flip) exp(-TR/T1_blood))``, so
    ``S(t) = S_sat + (S_fresh - S_sat) exp(-t / tau)``: vessels fade with slower flow and with
    depth into the slab.

Acquisition
    Partial volume: each voxel's vessel fraction is the vessel (a chain of capsules, one per
    centreline step) convolved with the voxel, the voxel's box response approximated by a
    Gaussian of the same variance (``h**2 / 12`` per axis) projected onto the plane
    perpendicular to the vessel, for which the fraction is exact: the probability that a 2D
    Gaussian centred ``d`` from the axis falls inside the radius ``r`` (a non-central chi-square
    CDF, tabulated once). The image mixes vessel and tissue signal by that fraction; the label
    is ``fraction >= 0.5`` inside the brain mask. Then a smooth multiplicative bias field
    (a random smooth field plus a linear coil gradient), skull stripping (zero outside the
    mask) and Rician noise: the magnitude of the signal plus complex Gaussian noise, so the
    background outside the mask is Rayleigh noise of about ``1.25 sigma``.

Sites
    :data:`SITES` holds two acquisitions. Site A (fine voxels 0.6 x 0.6 x 0.9 mm, high contrast,
    low noise, mild bias) plays the study's PEGASUS data; site B (0.8 x 0.8 x 1.2 mm, lower
    contrast, larger flip angle so blood saturates faster, more noise, stronger bias, another
    intensity scale and grey/white contrast) is the second data set of the transfer-learning
    experiment. ``volume_shape`` is always site A's shape; site B covers the same field of view
    in mm at its own spacing, so its shape is smaller (:func:`site_shape`).

Everything is drawn from one ``numpy.random.Generator`` seeded by the subject's seed: the same
(site, seed, shape) gives bit-identical arrays on every run.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .io import save_volume

__all__ = [
    "PHANTOM_VERSION",
    "Site",
    "SITES",
    "Branch",
    "VesselTree",
    "PhantomVolume",
    "site_shape",
    "site_affine",
    "subject_seed",
    "subject_id",
    "grow_vessel_tree",
    "labelled_radius_of",
    "rasterize_vessels",
    "blood_signal",
    "make_phantom",
    "write_phantom_dataset",
]

#: Bumped whenever the generated volumes change; the data preparation's cache stamp reads it.
PHANTOM_VERSION = "1"

#: Thinnest vessel radius grown (mm): well below half a voxel of either site (sub-voxel vessels).
R_MIN_MM = 0.12
#: Longitudinal relaxation time of arterial blood at 3 T (ms).
T1_BLOOD_MS = 1650.0
#: Mean blood velocity in the root arteries of a full-size brain (mm/s; ICA about 30-40 cm/s).
ROOT_VELOCITY_MM_S = 350.0
#: Regrowths of a tree while calibrating its branch lengths to the target vessel volume.
CALIBRATION_ROUNDS = 5
#: Volumes of at least this many voxels are written by a process pool (see write_phantom_dataset).
PARALLEL_MIN_VOXELS = 1_000_000
#: Side of the field of view (mm) at which the phantom brain has its full anatomical size.
FULL_BRAIN_FOV_MM = 150.0


# ============================================================================ sites
@dataclass(frozen=True)
class Site:
    """One acquisition protocol (scanner/site).

    Attributes
    ----------
    name
        "A" or "B".
    spacing
        Voxel size (x, y, z) in mm; z is the slice (axial) direction.
    vessel_contrast
        Signal of fresh, fully unsaturated inflowing blood relative to white matter (3-4x in TOF-MRA).
    saturated_blood
        Signal of fully saturated (slow, long-resident) blood relative to white matter.
    tr_ms, flip_deg
        Repetition time and flip angle: set how fast blood saturates in the slab.
    noise_sigma
        Standard deviation of each of the two Gaussian noise channels, relative to white matter.
    bias_strength
        Amplitude of the log of the multiplicative bias field (0.2 is about +-20 %).
    gm_wm_ratio, csf_wm_ratio
        Grey matter and CSF signal relative to white matter.
    intensity_scale
        Arbitrary scanner units of white matter.
    """

    name: str
    spacing: tuple[float, float, float]
    vessel_contrast: float
    saturated_blood: float
    tr_ms: float
    flip_deg: float
    noise_sigma: float
    bias_strength: float
    gm_wm_ratio: float
    csf_wm_ratio: float
    intensity_scale: float

    @property
    def saturation_time_s(self) -> float:
        """Time constant (s) of blood saturation: ``-TR / ln(cos(flip) exp(-TR / T1_blood))``."""
        per_pulse = math.cos(math.radians(self.flip_deg)) * math.exp(-self.tr_ms / T1_BLOOD_MS)
        return -self.tr_ms / 1000.0 / math.log(per_pulse)


#: The two phantom sites: A (fine, clean; the GAN/U-net site) and B (coarser, noisier; transfer site).
SITES: dict[str, Site] = {
    "A": Site(
        name="A",
        spacing=(0.6, 0.6, 0.9),
        vessel_contrast=4.0,
        saturated_blood=2.0,
        tr_ms=22.0,
        flip_deg=18.0,
        noise_sigma=0.05,
        bias_strength=0.12,
        gm_wm_ratio=0.80,
        csf_wm_ratio=0.25,
        intensity_scale=100.0,
    ),
    "B": Site(
        name="B",
        spacing=(0.8, 0.8, 1.2),
        vessel_contrast=3.4,
        saturated_blood=1.7,
        tr_ms=25.0,
        flip_deg=25.0,
        noise_sigma=0.09,
        bias_strength=0.28,
        gm_wm_ratio=0.87,
        csf_wm_ratio=0.35,
        intensity_scale=160.0,
    ),
}


def _get_site(site: str | Site) -> Site:
    if isinstance(site, Site):
        return site
    try:
        return SITES[site]
    except KeyError:
        raise ValueError(f"unknown phantom site {site!r}: choose one of {', '.join(SITES)}") from None


def _check_shape(volume_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in volume_shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"volume_shape must be three sizes >= 8 voxels, got {tuple(volume_shape)}")
    return shape  # type: ignore[return-value]


def field_of_view_mm(volume_shape: Sequence[int]) -> np.ndarray:
    """Field of view (x, y, z) in mm of a site-A volume of ``volume_shape`` voxels (shared by both sites)."""
    return np.asarray(_check_shape(volume_shape), float) * np.asarray(SITES["A"].spacing)


def site_shape(site: str | Site, volume_shape: Sequence[int]) -> tuple[int, int, int]:
    """Voxel shape of ``site`` covering the field of view of a site-A volume of ``volume_shape``."""
    s = _get_site(site)
    fov = field_of_view_mm(volume_shape)
    return tuple(max(8, int(round(f / h))) for f, h in zip(fov, s.spacing))  # type: ignore[return-value]


def site_affine(site: str | Site, shape: Sequence[int]) -> np.ndarray:
    """4x4 RAS voxel-to-world affine: diagonal spacing, world origin at the centre of the volume."""
    s = _get_site(site)
    aff = np.eye(4)
    for i in range(3):
        aff[i, i] = s.spacing[i]
        aff[i, 3] = -(shape[i] - 1) / 2.0 * s.spacing[i]
    return aff


def subject_id(site: str, index: int) -> str:
    """Subject id of the ``index``-th phantom of a site: ``"A-000"``."""
    return f"{site}-{index:03d}"


def subject_seed(seed: int, site: str, index: int) -> int:
    """Seed of one subject, derived from (data-set seed, site, index) with ``numpy.random.SeedSequence``."""
    site_code = list(SITES).index(_get_site(site).name)
    return int(np.random.SeedSequence([int(seed), site_code, int(index)]).generate_state(1, np.uint64)[0] >> 1)


# ============================================================================ vessel tree
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
        """Sum of ``pi r**2 L`` over branches with ``r >= min_radius`` (overlaps counted twice)."""
        return float(sum(math.pi * b.radius**2 * b.length_mm for b in self.branches if b.radius >= min_radius))


@dataclass(frozen=True)
class _Brain:
    """The brain ellipsoid (world mm) and the slab it is imaged in."""

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

    def outward(self, p: Sequence[float]) -> tuple[float, float, float]:
        """Unit outward normal direction of the ellipsoid's level set through ``p``."""
        g = [(p[i] - self.centre[i]) / self.semi_axes[i] ** 2 for i in range(3)]
        return _unit(g)


def _brain_geometry(fov: np.ndarray) -> _Brain:
    # The slab covers the lower-middle brain: centre above the slab centre, so the bottom slices
    # cut the ellipsoid at about 0.6 of its largest cross-section (skull base), the top near its equator.
    fx, fy, fz = (float(v) for v in fov)
    return _Brain(centre=(0.0, 0.0, 0.18 * fz), semi_axes=(0.38 * fx, 0.445 * fy, 0.85 * fz),
                  z_bottom=-fz / 2.0, z_top=fz / 2.0)


def _unit(v: Sequence[float]) -> tuple[float, float, float]:
    n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    if n < 1e-12:
        return (0.0, 0.0, 1.0)
    return (v[0] / n, v[1] / n, v[2] / n)


def _cross(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


class _Normals:
    """Standard normals drawn in blocks from a Generator (per-draw calls dominate the growth loop)."""

    def __init__(self, rng: np.random.Generator, block: int = 8192) -> None:
        self._rng = rng
        self._block = block
        self._buf: list[float] = []
        self._i = 0

    def take(self, n: int) -> list[float]:
        if self._i + n > len(self._buf):
            self._buf = self._rng.standard_normal(self._block).tolist()
            self._i = 0
        out = self._buf[self._i : self._i + n]
        self._i += n
        return out


def _perpendicular(d: Sequence[float], v: Sequence[float]) -> tuple[float, float, float]:
    """Component of ``v`` perpendicular to the unit vector ``d``."""
    k = _dot(v, d)
    return (v[0] - k * d[0], v[1] - k * d[1], v[2] - k * d[2])


@dataclass(frozen=True)
class _GrowthParams:
    murray_exponent: float
    length_per_radius: float  # branch length ~ this * sqrt(radius * root radius) (mm / mm)
    tortuosity: float  # curvature amplitude ~ tortuosity / radius (1/mm)
    root_radius: float
    r_min: float
    outward_drift: float = 0.0  # turn rate (1/mm) towards the brain surface
    heading_pull: float = 0.08  # turn rate (1/mm) back towards a branch's heading


class _TreeGrower:
    """Recursive random branching with Murray radii, Murray angles and smooth curvature noise.

    Every branch has a *heading* (where it is going: the anatomical direction of a named branch,
    the initial direction of a side branch, inherited along a trunk). Its direction wanders
    around the heading with a smoothly varying random curvature, so vessels are wavy and
    tortuous yet still travel somewhere instead of curling up in random-walk loops.
    """

    def __init__(self, rng: np.random.Generator, brain: _Brain, params: _GrowthParams) -> None:
        self.rng = rng
        self.normal = _Normals(rng)
        self.brain = brain
        self.p = params
        self.branches: list[Branch] = []
        self._end_direction: tuple[float, float, float] = (0.0, 0.0, 1.0)

    # ---------------------------------------------------------------- one branch
    def grow_branch(self, start: Sequence[float], direction: Sequence[float], heading: Sequence[float],
                    radius: float, length: float, parent: int, name: str = "", root: bool = False) -> tuple[int, bool]:
        """Grow one tortuous branch; returns its index and whether it may split at its end.

        A branch that reaches the brain surface ends there (its children turn along the
        surface); one that leaves the slab through the top face is cut and does not split.
        """
        brain = self.brain
        ds = min(max(0.8 * radius + 0.4, 0.6), 1.6)  # centreline step (mm): fine for thin, coarse for thick vessels
        n_steps = max(2, int(math.ceil(length / ds)))
        ds = length / n_steps
        corr_len = 1.5 + 3.0 * radius  # curvature stays correlated over one or two vessel diameters
        kappa = self.p.tortuosity * 0.45 / max(radius, 0.45)  # thin vessels wiggle, thick ones curve gently
        decay = math.exp(-ds / corr_len)
        kick = kappa * math.sqrt(1.0 - decay * decay)
        d = _unit(direction)
        heading = _unit(heading)
        w = _perpendicular(d, self.normal.take(3))
        w = (w[0] * kappa, w[1] * kappa, w[2] * kappa)
        p = tuple(float(v) for v in start)
        pts = [p]
        complete = True
        for _ in range(n_steps):
            xi = _perpendicular(d, self.normal.take(3))
            w = (decay * w[0] + kick * xi[0], decay * w[1] + kick * xi[1], decay * w[2] + kick * xi[2])
            steer = self._steering(p, d, heading, root)
            d = _unit((d[0] + ds * (w[0] + steer[0]), d[1] + ds * (w[1] + steer[1]), d[2] + ds * (w[2] + steer[2])))
            w = _perpendicular(d, w)
            q = (p[0] + ds * d[0], p[1] + ds * d[1], p[2] + ds * d[2])
            if q[2] > brain.z_top + 2.0 * radius:  # left the slab at the top: the vessel goes on unseen
                pts.append(q)
                complete = False
                break
            leaves_brain = brain.rho(q, 0.94) > 1.0
            if leaves_brain or (not root and q[2] < brain.z_bottom + radius):
                # The branch ends here and its children turn along the surface.
                n = brain.outward(p) if leaves_brain else (0.0, 0.0, -1.0)
                k = _dot(d, n)
                if k > 0:
                    d = _unit((d[0] - 1.2 * k * n[0], d[1] - 1.2 * k * n[1], d[2] - 1.2 * k * n[2]))
                break
            p = q
            pts.append(p)
        if len(pts) < 2:
            pts.append((p[0] + 0.5 * ds * d[0], p[1] + 0.5 * ds * d[1], p[2] + 0.5 * ds * d[2]))
        index = len(self.branches)
        self.branches.append(Branch(points=np.asarray(pts, dtype=np.float64), radius=float(radius), parent=parent,
                                    name=name))
        if parent >= 0:
            self.branches[parent].children.append(index)
        self._end_direction = d
        return index, complete

    def _steering(self, p: Sequence[float], d: Sequence[float], heading: Sequence[float],
                  root: bool) -> tuple[float, float, float]:
        """Turn rate (1/mm): back to the heading, away from the brain surface and the slab faces."""
        k = self.p.heading_pull
        sx, sy, sz = k * heading[0], k * heading[1], k * heading[2]
        rho = self.brain.rho(p, 0.94)
        if rho > 0.8:
            n = self.brain.outward(p)
            if _dot(n, d) > -0.3:
                gain = 0.6 * (rho - 0.8) / 0.2
                sx, sy, sz = sx - gain * n[0], sy - gain * n[1], sz - gain * n[2]
        if not root:
            z_rel = p[2] - self.brain.z_bottom
            if z_rel < 4.0 and d[2] < 0.3:
                sz += 0.4 * (4.0 - z_rel) / 4.0
            z_top = self.brain.z_top - p[2]
            if z_top < 6.0 and d[2] > -0.3:  # most vessels stay in the slab (the top face cuts some)
                sz -= 0.25 * (6.0 - z_top) / 6.0
            # Arteries run from the base of the brain out to the cortex: a weak centrifugal drift
            # spreads the tree over the brain instead of bunching it around the roots.
            c = self.brain.centre
            a = self.brain.semi_axes
            o = ((p[0] - c[0]) / a[0], (p[1] - c[1]) / a[1], 0.5 * (p[2] - c[2]) / a[2])
            norm = max(math.sqrt(_dot(o, o)), 0.3)
            k = self.p.outward_drift / norm
            sx, sy, sz = sx + k * o[0], sy + k * o[1], sz + k * o[2]
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

    def child_directions(self, d: Sequence[float], r0: float, r1: float, r2: float
                         ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """Directions of the two children: in a random plane through ``d``, on opposite sides."""
        th1, th2 = self.murray_angles(r0, r1, r2)
        th1 += 0.15 * self.normal.take(1)[0]
        th2 += 0.2 * self.normal.take(1)[0]
        n = _unit(_perpendicular(d, self.normal.take(3)))
        c1, s1, c2, s2 = math.cos(th1), math.sin(th1), math.cos(th2), math.sin(th2)
        dir1 = _unit((c1 * d[0] + s1 * n[0], c1 * d[1] + s1 * n[1], c1 * d[2] + s1 * n[2]))
        dir2 = _unit((c2 * d[0] - s2 * n[0], c2 * d[1] - s2 * n[1], c2 * d[2] - s2 * n[2]))
        return dir1, dir2

    def grow_subtree(self, index: int, end_direction: Sequence[float], heading: Sequence[float]) -> None:
        """Bifurcate recursively from the end of branch ``index`` (breadth-first, explicit queue)."""
        Vec = tuple[float, float, float]
        queue: list[tuple[int, Vec, Vec]] = [(index, _unit(end_direction), _unit(heading))]
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
            head1 = _unit((hd[0] + 0.5 * dir1[0], hd[1] + 0.5 * dir1[1], hd[2] + 0.5 * dir1[2]))
            head2 = dir2
            if self.brain.rho(start, 0.94) > 0.85:  # at the surface: children head along it, not into it
                n = self.brain.outward(start)
                head1, head2 = (_unit((v[0] - (_dot(v, n) + 0.3) * n[0], v[1] - (_dot(v, n) + 0.3) * n[1],
                                       v[2] - (_dot(v, n) + 0.3) * n[2])) for v in (head1, head2))
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
                heading = _unit(hc)
                direction = _unit((heading[0] + 0.3 * end[0], heading[1] + 0.3 * end[1], heading[2] + 0.3 * end[2]))
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
            bend = np.asarray(_perpendicular(_unit(chord), self.normal.take(3))) * 0.15 * dist
            control = 0.5 * (pa + pb) + bend - np.array([0.0, 0.0, 0.1 * dist])
            t = np.linspace(0.0, 1.0, max(3, int(math.ceil(dist / 0.7)) + 1))[:, None]
            pts = (1 - t) ** 2 * pa + 2 * (1 - t) * t * control + t**2 * pb
            self.branches.append(Branch(points=pts, radius=rel_radius * r_ica, parent=-1, name=name,
                                        joins=(named[a], named[b])))

    def _point_along(self, index: int, where: float) -> np.ndarray:
        pts = self.branches[index].points
        return pts[int(round(where * (len(pts) - 1)))].copy()


def _annotate_transit(tree: VesselTree) -> None:
    """Blood transit time (s) from the slab's inflow face to every centreline point."""
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


def _size_factor(fov: np.ndarray) -> float:
    """Brain size relative to a full-size adult brain (1.0 for a 150 mm field of view)."""
    return float(np.clip(0.5 * (fov[0] + fov[1]) / FULL_BRAIN_FOV_MM, 0.15, 1.5))


def grow_vessel_tree(rng: np.random.Generator, volume_shape: Sequence[int], target_fraction: float | None = None,
                     labelled_radius_mm: float | None = None) -> VesselTree:
    """Grow one subject's arterial tree in world mm for the field of view of a site-A ``volume_shape``.

    Branch lengths are calibrated (up to three regrowths with the same random stream) so the
    vessels thicker than ``labelled_radius_mm`` fill ``target_fraction`` of the brain volume.
    Partial volume and overlaps leave about three quarters of that volume labelled, so the
    default target, drawn in [2.2 %, 2.8 %], gives labels of about 1.7-2.5 % of the brain.

    Parameters
    ----------
    rng
        Source of all randomness.
    volume_shape
        Site A shape (x, y, z) in voxels; sets the field of view.
    target_fraction
        Fraction of the brain volume to fill with vessels thicker than ``labelled_radius_mm``.
    labelled_radius_mm
        Radius below which a vessel hardly reaches the label's 0.5 voxel fraction (about a third
        of the voxel size, see :func:`labelled_radius`); default: site A's.
    """
    fov = field_of_view_mm(volume_shape)
    brain = _brain_geometry(fov)
    size = _size_factor(fov)
    g = float(rng.uniform(2.5, 3.0))
    # At least 0.9 mm (1.5 site-A voxels), so tiny test volumes still hold a tree of a few generations.
    root_radius = max(2.4 * size, 0.9) * float(rng.uniform(0.92, 1.08))
    tortuosity = float(rng.uniform(0.22, 0.32))
    target = float(rng.uniform(0.022, 0.028)) if target_fraction is None else float(target_fraction)
    slab_brain_mm3 = _slab_brain_volume(brain)
    labelled_radius = labelled_radius_mm if labelled_radius_mm is not None else labelled_radius_of(SITES["A"])
    growth_state = rng.bit_generator.state
    length_per_radius = 9.0
    best: tuple[float, VesselTree] | None = None
    for _ in range(CALIBRATION_ROUNDS):
        rng.bit_generator.state = growth_state  # the same random stream: only the lengths change
        params = _GrowthParams(murray_exponent=g, length_per_radius=length_per_radius, tortuosity=tortuosity,
                               root_radius=root_radius, r_min=R_MIN_MM)
        branches = _TreeGrower(rng, brain, params).grow()
        tree = VesselTree(branches=branches, murray_exponent=g, root_velocity_mm_s=ROOT_VELOCITY_MM_S * size,
                          root_radius_mm=root_radius, inflow_z_mm=brain.z_bottom)
        reached = max(tree.vessel_volume_mm3(labelled_radius) / slab_brain_mm3, 1e-6)
        miss = abs(math.log(reached / target))
        if best is None or miss < best[0]:
            best = (miss, tree)
        if miss < 0.1:
            break
        # Longer branches leave the brain more often, so the volume grows less than linearly.
        length_per_radius *= float(np.clip(target / reached, 0.5, 2.5))
    assert best is not None
    tree = best[1]
    _annotate_transit(tree)
    return tree


def labelled_radius_of(site: str | Site) -> float:
    """Radius (mm) at which a vessel running along z through a voxel of ``site`` fills half of it.

    A thin tube fills ``pi r**2 h_z / (h_x h_y h_z)`` of the voxel it runs through, 0.5 at
    ``r = sqrt(h_x h_y / (2 pi))`` (0.24 mm at site A, 0.32 mm at site B); thinner vessels are
    mostly unlabelled (:func:`rasterize_vessels`).
    """
    h = _get_site(site).spacing
    return float(math.sqrt(h[0] * h[1] / (2.0 * math.pi)))


def _slab_brain_volume(brain: _Brain) -> float:
    """Volume (mm^3) of the brain ellipsoid between the slab's bottom and top faces."""
    ax, ay, az = brain.semi_axes
    lo = max(-1.0, (brain.z_bottom - brain.centre[2]) / az)
    hi = min(1.0, (brain.z_top - brain.centre[2]) / az)
    # integral of the cross-section pi ax ay (1 - u^2) over u = z / az
    return math.pi * ax * ay * az * ((hi - hi**3 / 3.0) - (lo - lo**3 / 3.0))


# ============================================================================ rasterization
_TABLE_STEP = 0.1
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
        Diagonal 4x4 voxel-to-world matrix.

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
    size = hi - lo + 1
    keep = np.all(size > 0, axis=1)
    order = np.flatnonzero(keep)[np.argsort(np.prod(size[keep], axis=1), kind="stable")]

    n_vox = int(np.prod(shape))
    smooth_max = np.zeros(n_vox, np.float32)
    flat_parts, thin_parts, weight_parts, fv_parts = [], [], [], []
    strides = np.array([shape[1] * shape[2], shape[2], 1], np.int64)
    tube_area_per_voxel = (np.pi * radius**2 / np.prod(h)).astype(np.float32)
    pos = 0
    while pos < len(order):
        # Segments sorted by box size; one chunk shares the largest box of its members.
        k_box = size[order[pos]]
        n_take = 1
        while pos + n_take < len(order):
            cand = np.maximum(k_box, size[order[pos + n_take]])
            if int(np.prod(cand)) * (n_take + 1) > chunk_elements:
                break
            k_box = cand
            n_take += 1
        idx = order[pos : pos + n_take]
        pos += n_take
        grid = np.stack(np.meshgrid(*(np.arange(k) for k in k_box), indexing="ij"), -1).reshape(-1, 3)
        # Per axis: voxel index, offset of the voxel centre from the segment start ((n, K) arrays).
        vox = [lo[idx, i][:, None] + grid[None, :, i] for i in range(3)]
        rel = [(origin[i] + h[i] * vox[i] - start[idx, i][:, None]).astype(np.float32) for i in range(3)]
        ax = [axis[idx, i].astype(np.float32)[:, None] for i in range(3)]
        t = (rel[0] * ax[0] + rel[1] * ax[1] + rel[2] * ax[2]) / length2[idx].astype(np.float32)[:, None]
        np.clip(t, 0.0, 1.0, out=t)
        dist2 = (rel[0] - t * ax[0]) ** 2 + (rel[1] - t * ax[1]) ** 2 + (rel[2] - t * ax[2]) ** 2
        sel = dist2 < (reach[idx] ** 2).astype(np.float32)[:, None]
        for i in range(3):
            sel &= vox[i] <= hi[idx, i][:, None]
        rows = np.nonzero(sel)[0]
        w = smooth_weight[idx][rows].astype(np.float32)
        f_smooth = w * _vessel_fraction(np.sqrt(dist2[sel]) / sigma[idx][rows].astype(np.float32),
                                        (radius[idx] / sigma[idx]).astype(np.float32)[rows])
        f_thin = np.zeros_like(f_smooth)
        thin = w < 1.0
        if thin.any():
            length = _length_in_box([r[sel][thin] for r in rel], [a[rows[thin], 0] for a in ax], h)
            f_thin[thin] = (1.0 - w[thin]) * tube_area_per_voxel[idx][rows[thin]] * length
        f_any = f_smooth + f_thin
        keep_f = f_any > 2e-3
        flat = (vox[0][sel] * strides[0] + vox[1][sel] * strides[1] + vox[2][sel])[keep_f]
        np.maximum.at(smooth_max, flat, f_smooth[keep_f])
        flat_parts.append(flat)
        thin_parts.append(f_thin[keep_f])
        weight_parts.append(f_any[keep_f])
        fv_parts.append(f_any[keep_f] * value[idx][rows[keep_f]].astype(np.float32))
    fraction = smooth_max.astype(np.float64)
    signal = np.zeros(n_vox, np.float32)
    if flat_parts:
        flat = np.concatenate(flat_parts)
        fraction += np.bincount(flat, weights=np.concatenate(thin_parts), minlength=n_vox)
        weight = np.bincount(flat, weights=np.concatenate(weight_parts), minlength=n_vox)
        weighted = np.bincount(flat, weights=np.concatenate(fv_parts), minlength=n_vox)
        hit = weight > 0
        signal[hit] = (weighted[hit] / weight[hit]).astype(np.float32)
    fraction = np.minimum(fraction, 1.0).astype(np.float32)
    return fraction.reshape(shape), signal.reshape(shape)


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


# ============================================================================ tissue
def _world_axes(shape: Sequence[int], affine: np.ndarray) -> list[np.ndarray]:
    return [affine[i, 3] + affine[i, i] * np.arange(shape[i]) for i in range(3)]


def _smooth_field(rng: np.random.Generator, fov: np.ndarray, axes: list[np.ndarray], corr_mm: float) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field in world mm, sampled on the grid ``axes``.

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
    return 0.5 + 0.5 * np.tanh(0.5 * x)  # the logistic function, without overflow


def _tissue_model(rng: np.random.Generator, brain: _Brain, fov: np.ndarray, axes: list[np.ndarray], site: Site,
                  voxel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Brain mask and stationary-tissue signal (relative to white matter) on one site's grid."""
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


def _bias_field(rng: np.random.Generator, fov: np.ndarray, axes: list[np.ndarray], strength: float) -> np.ndarray:
    """Smooth multiplicative bias: exp(strength * (smooth field + linear coil gradient)), mean about 1."""
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    ramp = (direction[0] * x / fov[0] + direction[1] * y / fov[1] + direction[2] * z / fov[2]) * 1.5
    smooth = _smooth_field(rng, fov, axes, 0.35 * float(np.mean(fov[:2])))
    return np.exp(strength * (0.7 * smooth + ramp)).astype(np.float32)


# ============================================================================ the phantom
def blood_signal(site: str | Site, transit_s: np.ndarray) -> np.ndarray:
    """TOF signal of blood (relative to white matter) after ``transit_s`` seconds in the slab.

    ``S(t) = S_sat + (S_fresh - S_sat) exp(-t / tau)`` with ``S_fresh = site.vessel_contrast``,
    ``S_sat = site.saturated_blood`` and ``tau = site.saturation_time_s``.
    """
    s = _get_site(site)
    t = np.asarray(transit_s, dtype=np.float64)
    return s.saturated_blood + (s.vessel_contrast - s.saturated_blood) * np.exp(-t / s.saturation_time_s)


@dataclass
class PhantomVolume:
    """One synthetic TOF-MRA subject.

    Attributes
    ----------
    image
        (X, Y, Z) float32 magnitude image (scanner units, Rician noise, zero-signal background).
    label
        (X, Y, Z) uint8, 1 where the vessel fills at least half of the voxel (inside the mask).
    mask
        (X, Y, Z) uint8 brain mask (the skull-stripped region).
    affine
        4x4 RAS voxel-to-world matrix (diagonal spacing, centred origin).
    spacing
        Voxel size (x, y, z) in mm.
    site
        "A" or "B".
    seed
        The subject's seed.
    tree
        The vessel tree the label was rasterized from (world mm).
    fraction
        (X, Y, Z) float32 partial-volume vessel fraction (the label's source).
    stats
        ``vessel_fraction`` (label voxels / brain voxels), ``contrast_ratio`` (mean image in the
        label / mean image in brain tissue away from vessels), ``core_contrast_ratio`` (the same
        for voxels at least 90 % filled by vessel, free of partial volume), ``n_branches``,
        ``murray_exponent``, ``root_radius_mm``, ``seconds``.
    """

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    site: str
    seed: int
    tree: VesselTree
    fraction: np.ndarray
    stats: dict[str, float]


def make_phantom(site: str, seed: int, volume_shape: tuple[int, int, int]) -> PhantomVolume:
    """Make one synthetic TOF-MRA subject.

    Parameters
    ----------
    site
        "A" or "B" (:data:`SITES`).
    seed
        Subject seed: the same (site, seed, volume_shape) gives identical arrays.
    volume_shape
        Site A shape (x, y, z) in voxels; site B covers the same field of view (:func:`site_shape`).

    Returns
    -------
    PhantomVolume
    """
    started = time.perf_counter()
    s = _get_site(site)
    fov = field_of_view_mm(volume_shape)
    shape = site_shape(s, volume_shape)
    affine = site_affine(s, shape)
    # Separate streams for the tree, the tissue and the acquisition (bias, noise).
    tree_rng, tissue_rng, scan_rng = (np.random.default_rng(q) for q in np.random.SeedSequence(int(seed)).spawn(3))
    brain = _brain_geometry(fov)
    tree = grow_vessel_tree(tree_rng, volume_shape, labelled_radius_mm=labelled_radius_of(s))

    seg = tree.segments()
    blood = blood_signal(s, seg["transit_s"])
    fraction, vessel_signal = rasterize_vessels(seg["start"], seg["end"], seg["radius"], blood, shape, affine)

    axes = _world_axes(shape, affine)
    mask, tissue = _tissue_model(tissue_rng, brain, fov, axes, s, float(min(s.spacing)))
    fraction *= mask
    clean = tissue + fraction * (vessel_signal - tissue)
    clean *= _bias_field(scan_rng, fov, axes, s.bias_strength)
    clean *= mask  # skull stripped: no signal outside the brain
    sigma = s.noise_sigma
    real = clean + sigma * scan_rng.standard_normal(shape, dtype=np.float32)
    imag = sigma * scan_rng.standard_normal(shape, dtype=np.float32)
    image = (np.sqrt(real * real + imag * imag) * s.intensity_scale).astype(np.float32)
    label = ((fraction >= 0.5) & (mask > 0)).astype(np.uint8)

    stats = _phantom_stats(image, label, mask, fraction, tree)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return PhantomVolume(image=image, label=label, mask=mask, affine=affine, spacing=tuple(s.spacing), site=s.name,
                         seed=int(seed), tree=tree, fraction=fraction, stats=stats)


def _phantom_stats(image: np.ndarray, label: np.ndarray, mask: np.ndarray, fraction: np.ndarray,
                   tree: VesselTree) -> dict[str, float]:
    brain = mask > 0
    vessel = label > 0
    tissue = brain & (fraction < 0.02)
    core = vessel & (fraction >= 0.9)
    tissue_mean = float(image[tissue].mean())
    n_brain = int(brain.sum())
    return {
        "vessel_fraction": float(vessel.sum() / max(n_brain, 1)),
        "contrast_ratio": float(image[vessel].mean() / tissue_mean) if vessel.any() else 0.0,
        "core_contrast_ratio": float(image[core].mean() / tissue_mean) if core.any() else 0.0,
        "brain_voxels": float(n_brain),
        "n_branches": float(len(tree.branches)),
        "murray_exponent": float(tree.murray_exponent),
        "root_radius_mm": float(tree.root_radius_mm),
    }


# ============================================================================ writing a data set
def _subject_files(out_dir: Path, sid: str) -> tuple[Path, Path, Path]:
    name = f"{sid}.nii.gz"
    return out_dir / "images" / name, out_dir / "labels" / name, out_dir / "masks" / name


def _write_subject(job: tuple[str, str, int, tuple[int, int, int], str]) -> str:
    """Make and write one subject (a process-pool task). Returns the subject id."""
    out_dir, site, seed, volume_shape, sid = job
    image_path, label_path, mask_path = _subject_files(Path(out_dir), sid)
    ph = make_phantom(site, seed, volume_shape)
    # Label and mask first, image last: the image's presence is what a reader looks for first.
    save_volume(label_path, ph.label, ph.affine)
    save_volume(mask_path, ph.mask, ph.affine)
    save_volume(image_path, ph.image, ph.affine)
    return sid


def write_phantom_dataset(out_dir: str | os.PathLike[str], site: str, n_subjects: int, seed: int,
                          volume_shape: tuple[int, int, int], workers: int | None = None) -> list[Path]:
    """Write ``n_subjects`` phantom subjects of ``site`` as gzipped NIfTI.

    Files: ``out_dir/images/<id>.nii.gz`` (float32), ``out_dir/labels/<id>.nii.gz`` and
    ``out_dir/masks/<id>.nii.gz`` (uint8 0/1), ids ``"A-000"``, ``"A-001"``, ... Each subject's
    seed is :func:`subject_seed` (seed, site, index), so subject ``k`` is the same whatever
    ``n_subjects`` is. Subjects whose three files exist already are skipped (a rerun is instant);
    every file is written atomically.

    Parameters
    ----------
    out_dir
        Output folder (created).
    site
        "A" or "B".
    n_subjects
        Number of subjects (>= 1).
    seed
        Data-set seed.
    volume_shape
        Site A shape (x, y, z).
    workers
        Processes. ``None``: ``min(2, os.cpu_count())`` for at least four missing subjects of at
        least a million voxels (the paper shape), else 1 (a course volume takes about a second,
        so a pool gains little on a loaded 2-core machine). Subjects are seeded independently,
        so the files are identical whatever the number of workers.

    Returns
    -------
    list of Path
        The image files in id order.
    """
    s = _get_site(site)
    if int(n_subjects) < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    shape = _check_shape(volume_shape)
    out = Path(out_dir)
    ids = [subject_id(s.name, i) for i in range(int(n_subjects))]
    jobs = [
        (str(out), s.name, subject_seed(seed, s.name, i), shape, sid)
        for i, sid in enumerate(ids)
        if not all(p.exists() for p in _subject_files(out, sid))
    ]
    if workers is None:
        big = int(np.prod(shape)) >= PARALLEL_MIN_VOXELS and len(jobs) >= 4
        workers = min(2, os.cpu_count() or 1) if big else 1
    workers = max(1, min(int(workers), len(jobs)))
    if workers > 1:
        # forkserver: workers start clean, not as forks of a parent that may hold torch's threads.
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            list(pool.map(_write_subject, jobs))
    else:
        for job in jobs:
            _write_subject(job)
    return [_subject_files(out, sid)[0] for sid in ids]

