"""Synthetic TOF-MRA volumes with exact vessel labels (the built-in data of the project).

The study (Kossen et al. 2021) used patient TOF-MRA data that cannot be shared. This package makes
stand-ins that behave like it where the pipeline cares: bright, branching, tortuous vessels of
many calibres on a darker textured brain, partial volume at vessel borders, noise and bias, a
label that is exact by construction, and two acquisition "sites" for transfer learning. The
physics choices follow ``REFERENCE.md`` ("TOF-MRA physics for a realistic phantom"); each
module's docstring explains its part:

:mod:`~tofmra_utils.phantom.sites`
    The two acquisition protocols (:data:`PROTOCOLS`: voxel size, contrast, flip angle, noise,
    bias), their voxel grids in a shared field of view, subject ids and seeds, and the
    time-of-flight blood signal (fresh inflowing blood is bright, it saturates with its time in
    the slab).
:mod:`~tofmra_utils.phantom.brain`
    The brain ellipsoid (world mm, RAS, origin at the centre of the field of view) cut by the
    imaging slab.
:mod:`~tofmra_utils.phantom.tree`, :mod:`~tofmra_utils.phantom.growth`, :mod:`~tofmra_utils.phantom.calibration`
    The arterial tree: carotid- and basilar-like roots entering from below, recursive Murray
    bifurcations down to sub-voxel vessels, tortuous centrelines, the circle of Willis, blood
    transit times, and branch lengths calibrated so the labelled vessels fill 1-3 % of the brain.
:mod:`~tofmra_utils.phantom.raster`
    Partial volume: the exact fraction of every voxel that the vessel capsules fill.
:mod:`~tofmra_utils.phantom.tissue`
    Brain mask, white and grey matter, sulci, CSF, ventricles, texture and the bias field.
:mod:`~tofmra_utils.phantom.assemble`
    One subject (:func:`make_phantom`): vessel and tissue signal mixed by the fraction, bias,
    skull stripping, Rician noise, the label ``fraction >= 0.5``.
:mod:`~tofmra_utils.phantom.write`
    A data set of gzipped NIfTI files (:func:`write_phantom_dataset`).

Everything is drawn from one ``numpy.random.Generator`` seeded by the subject's seed: the same
(site, seed, shape) gives bit-identical arrays on every run.
"""

from __future__ import annotations

from .assemble import PhantomVolume, make_phantom
from .brain import FULL_BRAIN_FOV_MM
from .calibration import CALIBRATION_ROUNDS, R_MIN_MM, ROOT_VELOCITY_MM_S, grow_vessel_tree
from .raster import rasterize_vessels
from .sites import (
    PROTOCOLS,
    T1_BLOOD_MS,
    Site,
    blood_signal,
    field_of_view_mm,
    labelled_radius_of,
    site_affine,
    site_shape,
    subject_id,
    subject_seed,
)
from .tree import Branch, VesselTree
from .write import PARALLEL_MIN_VOXELS, write_phantom_dataset

__all__ = [
    "PHANTOM_VERSION",
    "R_MIN_MM",
    "T1_BLOOD_MS",
    "ROOT_VELOCITY_MM_S",
    "CALIBRATION_ROUNDS",
    "PARALLEL_MIN_VOXELS",
    "FULL_BRAIN_FOV_MM",
    "Site",
    "PROTOCOLS",
    "Branch",
    "VesselTree",
    "PhantomVolume",
    "field_of_view_mm",
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
