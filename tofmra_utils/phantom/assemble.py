"""One synthetic TOF-MRA subject: tree, partial volume, tissue, bias and noise put together.

Acquisition
    The image mixes vessel and tissue signal by the partial-volume vessel fraction
    (:mod:`tofmra_utils.phantom.raster`); the label is ``fraction >= 0.5`` inside the brain
    mask. Then a smooth multiplicative bias field (a random smooth field plus a linear coil
    gradient, :func:`tofmra_utils.phantom.tissue.bias_field`), skull stripping (zero outside the
    mask) and Rician noise: the magnitude of the signal plus complex Gaussian noise, so the
    background outside the mask is Rayleigh noise of about ``1.25 sigma``.

Everything is drawn from one ``numpy.random.Generator`` seeded by the subject's seed (split into
independent streams for the tree, the tissue and the acquisition): the same (site, seed, shape)
gives bit-identical arrays on every run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .brain import brain_geometry
from .calibration import grow_vessel_tree
from .raster import rasterize_vessels
from .sites import blood_signal, field_of_view_mm, get_site, labelled_radius_of, site_affine, site_shape
from .tissue import bias_field, tissue_model, world_axes
from .tree import VesselTree

__all__ = ["PhantomVolume", "make_phantom"]


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
        for voxels at least 90 % filled by vessel, free of partial volume), ``brain_voxels``,
        ``n_branches``, ``murray_exponent``, ``root_radius_mm``, ``seconds``.
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
        "A" or "B" (:data:`~tofmra_utils.phantom.sites.PROTOCOLS`).
    seed
        Subject seed: the same (site, seed, volume_shape) gives identical arrays.
    volume_shape
        Site A shape (x, y, z) in voxels; site B covers the same field of view (:func:`site_shape`).

    Returns
    -------
    PhantomVolume
    """
    started = time.perf_counter()
    s = get_site(site)
    fov = field_of_view_mm(volume_shape)
    shape = site_shape(s, volume_shape)
    affine = site_affine(s, shape)
    # Separate streams for the tree, the tissue and the acquisition (bias, noise).
    tree_rng, tissue_rng, scan_rng = (np.random.default_rng(q) for q in np.random.SeedSequence(int(seed)).spawn(3))
    brain = brain_geometry(fov)
    tree = grow_vessel_tree(tree_rng, volume_shape, labelled_radius_mm=labelled_radius_of(s))

    seg = tree.segments()
    blood = blood_signal(s, seg["transit_s"])
    fraction, vessel_signal = rasterize_vessels(seg["start"], seg["end"], seg["radius"], blood, shape, affine)

    axes = world_axes(shape, affine)
    mask, tissue = tissue_model(tissue_rng, brain, fov, axes, s, float(min(s.spacing)))
    fraction *= mask
    clean = tissue + fraction * (vessel_signal - tissue)
    clean *= bias_field(scan_rng, fov, axes, s.bias_strength)
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
    """Summary numbers of one subject (see :attr:`PhantomVolume.stats`), from its (X, Y, Z) arrays."""
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

