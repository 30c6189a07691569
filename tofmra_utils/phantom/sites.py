"""Acquisition protocols of the phantom: voxel grids, subject seeds and the time-of-flight blood signal.

Sites
    :data:`PROTOCOLS` holds two acquisitions. Site A (fine voxels 0.6 x 0.6 x 0.9 mm, high
    contrast, low noise, mild bias) plays the study's PEGASUS data; site B (0.8 x 0.8 x 1.2 mm,
    lower contrast, larger flip angle so blood saturates faster, more noise, stronger bias,
    another intensity scale and grey/white contrast) is the second data set of the
    transfer-learning experiment. ``volume_shape`` is always site A's shape; site B covers the
    same field of view in mm at its own spacing, so its shape is smaller (:func:`site_shape`).
    World coordinates are in mm, RAS, with the origin at the centre of the field of view
    (:func:`site_affine`).

Signal (time of flight)
    Stationary tissue is saturated by the repeated RF pulses; blood flowing in from below the
    slab is fresh and bright (``Site.vessel_contrast``, 3-4x white matter). Along the tree the
    blood saturates with the time ``t`` it has spent in the slab (see
    :func:`tofmra_utils.phantom.tree.annotate_transit`). The longitudinal magnetization of
    blood decays towards its steady state by ``cos(flip) * exp(-TR / T1)`` per repetition, i.e.
    with a time constant ``tau = -TR / ln(cos(flip) exp(-TR/T1_blood))``, so
    ``S(t) = S_sat + (S_fresh - S_sat) exp(-t / tau)`` (:func:`blood_signal`): vessels fade with
    slower flow and with depth into the slab.

Label threshold
    The label is ``vessel fraction >= 0.5``, so a vessel thinner than about a third of the voxel
    size is mostly unlabelled; :func:`labelled_radius_of` gives that radius per site.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "T1_BLOOD_MS",
    "Site",
    "PROTOCOLS",
    "get_site",
    "check_shape",
    "field_of_view_mm",
    "site_shape",
    "site_affine",
    "subject_id",
    "subject_seed",
    "labelled_radius_of",
    "blood_signal",
]

#: Longitudinal relaxation time of arterial blood at 3 T (ms).
T1_BLOOD_MS = 1650.0


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


#: The two phantom acquisition protocols, by site name: A (fine, clean; the GAN/U-net site) and
#: B (coarser, noisier; the transfer site). Their order fixes the site code in :func:`subject_seed`.
PROTOCOLS: dict[str, Site] = {
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


def get_site(site: str | Site) -> Site:
    """The protocol of ``site`` (a :class:`Site` is returned as it is).

    Raises
    ------
    ValueError
        For a name that is not in :data:`PROTOCOLS`.
    """
    if isinstance(site, Site):
        return site
    try:
        return PROTOCOLS[site]
    except KeyError:
        raise ValueError(f"unknown phantom site {site!r}: choose one of {', '.join(PROTOCOLS)}") from None


def check_shape(volume_shape: Sequence[int]) -> tuple[int, int, int]:
    """``volume_shape`` as three ints.

    Raises
    ------
    ValueError
        Unless it is three sizes of at least 8 voxels.
    """
    shape = tuple(int(v) for v in volume_shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"volume_shape must be three sizes >= 8 voxels, got {tuple(volume_shape)}")
    return shape  # type: ignore[return-value]


def field_of_view_mm(volume_shape: Sequence[int]) -> np.ndarray:
    """Field of view (3,) in mm of a site-A volume of ``volume_shape`` voxels (x, y, z); both sites share it."""
    return np.asarray(check_shape(volume_shape), float) * np.asarray(PROTOCOLS["A"].spacing)


def site_shape(site: str | Site, volume_shape: Sequence[int]) -> tuple[int, int, int]:
    """Voxel shape of ``site`` covering the field of view of a site-A volume of ``volume_shape``."""
    s = get_site(site)
    fov = field_of_view_mm(volume_shape)
    return tuple(max(8, int(round(f / h))) for f, h in zip(fov, s.spacing))  # type: ignore[return-value]


def site_affine(site: str | Site, shape: Sequence[int]) -> np.ndarray:
    """4x4 RAS voxel-to-world affine (mm): diagonal spacing, world origin at the centre of the volume."""
    s = get_site(site)
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
    site_code = list(PROTOCOLS).index(get_site(site).name)
    return int(np.random.SeedSequence([int(seed), site_code, int(index)]).generate_state(1, np.uint64)[0] >> 1)


def labelled_radius_of(site: str | Site) -> float:
    """Radius (mm) at which a vessel running along z through a voxel of ``site`` fills half of it.

    A thin tube fills ``pi r**2 h_z / (h_x h_y h_z)`` of the voxel it runs through, 0.5 at
    ``r = sqrt(h_x h_y / (2 pi))`` (0.24 mm at site A, 0.32 mm at site B); thinner vessels are
    mostly unlabelled (:func:`tofmra_utils.phantom.raster.rasterize_vessels`).
    """
    h = get_site(site).spacing
    return float(math.sqrt(h[0] * h[1] / (2.0 * math.pi)))


def blood_signal(site: str | Site, transit_s: np.ndarray) -> np.ndarray:
    """TOF signal of blood (relative to white matter) after ``transit_s`` seconds in the slab.

    ``S(t) = S_sat + (S_fresh - S_sat) exp(-t / tau)`` with ``S_fresh = site.vessel_contrast``,
    ``S_sat = site.saturated_blood`` and ``tau = site.saturation_time_s``.

    Parameters
    ----------
    site
        "A", "B" or a :class:`Site`.
    transit_s
        Transit times (s), any shape.

    Returns
    -------
    numpy.ndarray
        float64 signal of the same shape as ``transit_s``.
    """
    s = get_site(site)
    t = np.asarray(transit_s, dtype=np.float64)
    return s.saturated_blood + (s.vessel_contrast - s.saturated_blood) * np.exp(-t / s.saturation_time_s)
