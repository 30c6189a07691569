"""Data preparation: volumes -> validated subjects -> splits by subject -> cached 2D patch sets.

The study (Kossen et al. 2021) trained its GANs and U-nets on 2D axial patches of brain-masked
TOF-MRA volumes: per patient 1000 patches of 96x96 px, half centred on a vessel voxel, half at
random positions inside the brain, each image patch min-max scaled to [-1, 1] on its own and
the label kept 0/1. This package does the same for any folder of NIfTI volumes (the built-in
phantom or a user's data), with the sizes of a :class:`~tofmra_utils.profiles.Profile`.

A prepared site lives in one folder (``RunPaths.site(...).root``)::

    preparation.json        the preparation's resumable-unit record (settings, input files, status)
    dataset.json            subjects (absolute file paths), splits, seed, profile, sizes, cache key
    patches/train.npz       PatchSet of the training subjects (site B: the fine-tuning pool)
    patches/val.npz         PatchSet of the validation subjects
    computed_masks/<id>.nii.gz   brain masks computed when none were given (method: ``brain_mask`` in dataset.json)
    images/ labels/ masks/  the phantom's volumes (only when the phantom made them)

Test subjects get no patches: they are evaluated on whole volumes (:meth:`SiteDataset.load_subject`;
user data, i.e. real heads, inside the brain mask: :attr:`SiteDataset.evaluate_in_brain_mask`).
Every volume is read in the canonical axial orientation (:mod:`~tofmra_utils.data.orientation`):
patch centres are voxel indices of that orientation, a no-op for volumes stored in RAS order.

Patch geometry
--------------
A patch of side ``P`` centred on voxel ``(x, y, z)`` covers ``x - P//2 .. x - P//2 + P - 1`` and
likewise in y, in axial slice ``z``; its centre pixel ``[P//2, P//2]`` is the voxel itself.
Patches reaching past the volume border are padded in-plane: the image by repeating its edge
voxels (``np.pad(mode="edge")``, as the U-net's whole-volume inference does, so the per-patch
min-max scaling never sees an artificial step edge) and the label with 0 (no vessel outside
the field of view). Patches are cut from the unmasked image, again as inference sees it.

Caching and failure
-------------------
A prepared site is a :class:`~tofmra_utils.resumable.ResumableUnit` whose record is
``preparation.json``: its settings are every setting that changes the patches plus the input
files' paths, sizes and modification times, and their fingerprint is also ``dataset.json``'s
cache key. A second call with the same inputs and settings returns at once; other inputs or
settings re-prepare, with the unit's one-line message naming the folder and what changed. All
inputs are validated before anything is written; the patch files and masks are written
atomically, and ``dataset.json`` last, so a failed preparation leaves no ``dataset.json`` or
patch file of its own behind.

Modules
-------
=========================================== ==================================================
:mod:`~tofmra_utils.data.sampling`          brain mask, cutting and sampling patches (arrays only)
:mod:`~tofmra_utils.data.dataset`           :class:`Subject`, :class:`SiteDataset`, :func:`load_dataset`, the one subject loader
:mod:`~tofmra_utils.data.discover`          pairing images with labels (and masks) by file-name stem
:mod:`~tofmra_utils.data.prepare`           splits, the cache key, :func:`prepare_dataset` step by step
:mod:`~tofmra_utils.data.phantom_site`      the phantom's sites and :func:`prepare_site` (notebook 01)
:mod:`~tofmra_utils.data.brainmask`         brain masks of whole heads (``--brain-mask auto|tof|threshold|none``)
:mod:`~tofmra_utils.data.orientation`       any orientation to one canonical axial (RAS) voxel order and back
=========================================== ==================================================
"""

from .dataset import PATCH_SPLITS, SPLITS, SiteDataset, Subject, load_dataset
from .phantom_site import phantom_seed, prepare_phantom_site, prepare_site
from .prepare import prepare_dataset, split_subjects
from .sampling import compute_brain_mask, cut_patches, extract_patches

__all__ = [
    "Subject",
    "SiteDataset",
    "load_dataset",
    "prepare_dataset",
    "prepare_phantom_site",
    "prepare_site",
    "phantom_seed",
    "extract_patches",
    "cut_patches",
    "split_subjects",
    "compute_brain_mask",
    "SPLITS",
    "PATCH_SPLITS",
]
