"""Data preparation: volumes -> validated subjects -> splits by subject -> cached 2D patch sets.

The study (Kossen et al. 2021) trained its GANs and U-nets on 2D axial patches of brain-masked
TOF-MRA volumes: per patient 1000 patches of 96x96 px, half centred on a vessel voxel, half at
random positions inside the brain, each image patch min-max scaled to [-1, 1] on its own and
the label kept 0/1. This module does the same for any folder of NIfTI volumes (the built-in
phantom or a user's data), with the sizes of a :class:`~tofmra_utils.profiles.Profile`.

A prepared site lives in one folder (``RunPaths.site(...).root``)::

    dataset.json            subjects (absolute file paths), splits, seed, profile, sizes, cache key
    patches/train.npz       PatchSet of the training subjects (site B: the fine-tuning pool)
    patches/val.npz         PatchSet of the validation subjects (site B: empty)
    computed_masks/<id>.nii.gz   brain masks computed when none were given
    images/ labels/ masks/  the phantom's volumes (only when the phantom made them)

Test subjects get no patches: they are evaluated on whole volumes (:meth:`SiteDataset.load_subject`).

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
``dataset.json`` stores a cache key: a hash of the input files' paths, sizes and modification
times plus every setting that changes the patches. A second call with the same inputs and
settings returns at once. All inputs are validated before anything is written; the patch files
and masks are written atomically, and ``dataset.json`` last, so a failed preparation leaves no
``dataset.json`` or patch file of its own behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .io import DataError, Volume, check_same_geometry, load_volume, nifti_stem, read_json, save_volume, write_json
from .patchset import KIND_RANDOM, KIND_VESSEL, PatchSet
from .profiles import DataConfig, Profile, get_profile
from .runs import RunPaths, SitePaths

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
    "normalize_patch",
    "compute_brain_mask",
    "SPLITS",
    "PATCH_SPLITS",
]

#: Splits of every prepared site, by subject.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Splits that get patch files (test subjects are evaluated on whole volumes).
PATCH_SPLITS: tuple[str, ...] = ("train", "val")
#: Bumped whenever the preparation changes what it writes (invalidates every cache).
FORMAT_VERSION = 1
SITES: tuple[str, ...] = ("A", "B")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
COMPUTED_MASKS = "computed_masks"


# ============================================================================ scaling and masks
def normalize_patch(x: np.ndarray) -> np.ndarray:
    """Min-max scale each patch to [-1, 1] over its last two axes.

    Parameters
    ----------
    x
        (..., H, W) patches, any dtype.

    Returns
    -------
    float32 array of the same shape. A constant patch (no contrast to scale) maps to -1, the
    value of the darkest pixel, rather than dividing by zero.
    """
    x = np.asarray(x, dtype=np.float32)
    lo = x.min(axis=(-2, -1), keepdims=True)
    span = x.max(axis=(-2, -1), keepdims=True) - lo
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, 2.0 * (x - lo) / safe - 1.0, -1.0).astype(np.float32)


def compute_brain_mask(image: np.ndarray, threshold_fraction: float = 0.1) -> np.ndarray:
    """Brain mask of a skull-stripped or head volume: threshold, largest component, holes filled.

    Parameters
    ----------
    image
        (X, Y, Z) intensities.
    threshold_fraction
        Voxels above this fraction of the 99th-percentile intensity count as tissue.

    Returns
    -------
    (X, Y, Z) uint8 mask, 1 inside the brain. All zero only for an all-zero image.
    """
    image = np.asarray(image, dtype=np.float32)
    high = float(np.percentile(image, 99))
    if high <= 0:
        return np.zeros(image.shape, dtype=np.uint8)
    tissue = image > threshold_fraction * high
    # The opening cuts thin bridges (noise, skull remnants) to the brain before the largest component is kept.
    tissue = ndimage.binary_opening(tissue, structure=ndimage.generate_binary_structure(3, 1))
    labels, n = ndimage.label(tissue)
    if n == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    largest = 1 + int(np.argmax(ndimage.sum(tissue, labels, index=np.arange(1, n + 1))))
    return ndimage.binary_fill_holes(labels == largest).astype(np.uint8)


# ============================================================================ patches
def cut_patches(volume: np.ndarray, centres: np.ndarray, patch_size: int, pad_mode: str = "edge") -> np.ndarray:
    """Cut 2D axial patches around voxel centres.

    Parameters
    ----------
    volume
        (X, Y, Z) array.
    centres
        (N, 3) integer voxel coordinates (x, y, z) inside the volume.
    patch_size
        Side P of the square patches in pixels.
    pad_mode
        How the volume is extended past its in-plane border: ``"edge"`` (repeat the border
        voxels; for images) or ``"zero"`` (for labels).

    Returns
    -------
    (N, P, P) array of the volume's dtype; ``out[i, P//2, P//2] == volume[tuple(centres[i])]``.
    """
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 3)
    half = patch_size // 2
    pad = ((half, patch_size - half), (half, patch_size - half), (0, 0))
    padded = np.pad(volume, pad, mode="edge") if pad_mode == "edge" else np.pad(volume, pad, mode="constant")
    offsets = np.arange(patch_size)
    # In padded coordinates the patch of centre x starts at x (the pad shifted it by P//2).
    xs = centres[:, 0, None, None] + offsets[None, :, None]
    ys = centres[:, 1, None, None] + offsets[None, None, :]
    zs = centres[:, 2, None, None]
    return padded[xs, ys, zs]


def extract_patches(
    image: np.ndarray,
    label: np.ndarray,
    mask: np.ndarray,
    n_patches: int,
    patch_size: int,
    vessel_fraction: float,
    rng: np.random.Generator,
    subject: str = "",
) -> PatchSet:
    """Sample one subject's training patches the study's way.

    ``round(n_patches * vessel_fraction)`` patches are centred on label voxels drawn uniformly
    (with replacement), the rest on brain-mask voxels drawn uniformly. Images are min-max scaled
    per patch to [-1, 1] (:func:`normalize_patch`); labels stay 0/1. See the module docstring for
    the centre convention and border padding.

    Parameters
    ----------
    image, label, mask
        (X, Y, Z) intensities, 0/1 vessel label, 0/1 brain mask.
    n_patches
        Number of patches N.
    patch_size
        Side P in pixels.
    vessel_fraction
        Fraction of vessel-centred patches, in [0, 1].
    rng
        Random generator (one per subject keeps subjects independent of each other's order).
    subject
        Subject id stored with every patch.

    Returns
    -------
    PatchSet of N patches (vessel-centred first, ``kind`` 1, then random, ``kind`` 0).
    """
    if not 0.0 <= vessel_fraction <= 1.0:
        raise ValueError(f"vessel_fraction must lie in [0, 1], got {vessel_fraction}")
    n_vessel = int(round(n_patches * vessel_fraction))
    n_random = n_patches - n_vessel
    vessel_voxels = np.flatnonzero(np.asarray(label).ravel())
    brain_voxels = np.flatnonzero(np.asarray(mask).ravel())
    if n_vessel and not vessel_voxels.size:
        raise ValueError(f"subject {subject!r}: no vessel voxel to centre patches on")
    if n_random and not brain_voxels.size:
        raise ValueError(f"subject {subject!r}: empty brain mask")
    flat = np.concatenate(
        [
            vessel_voxels[rng.integers(0, vessel_voxels.size, n_vessel)] if n_vessel else np.zeros(0, np.int64),
            brain_voxels[rng.integers(0, brain_voxels.size, n_random)] if n_random else np.zeros(0, np.int64),
        ]
    )
    centres = np.stack(np.unravel_index(flat, np.shape(image)), axis=1).astype(np.int32)
    return PatchSet(
        image=normalize_patch(cut_patches(np.asarray(image, np.float32), centres, patch_size, "edge")),
        label=cut_patches(np.asarray(label, np.uint8), centres, patch_size, "zero"),
        subject=np.full(n_patches, subject),
        kind=np.concatenate([np.full(n_vessel, KIND_VESSEL), np.full(n_random, KIND_RANDOM)]).astype(np.uint8),
        centre=centres,
    )


def _empty_patchset(patch_size: int, meta: dict[str, Any]) -> PatchSet:
    return PatchSet(
        image=np.zeros((0, patch_size, patch_size), np.float32),
        label=np.zeros((0, patch_size, patch_size), np.uint8),
        subject=np.zeros(0, str),
        kind=np.zeros(0, np.uint8),
        centre=np.zeros((0, 3), np.int32),
        meta=meta,
    )


def _subject_rng(seed: int, site: str, subject_id: str) -> np.random.Generator:
    """One generator per subject: its patches do not depend on which other subjects exist."""
    return np.random.default_rng([int(seed), SITES.index(site), zlib.crc32(subject_id.encode())])


# ============================================================================ the data set
@dataclass(frozen=True)
class Subject:
    """One subject's files (absolute paths). ``mask`` is ``None`` only for hand-built subjects."""

    id: str
    image: Path
    label: Path | None
    mask: Path | None


class SiteDataset:
    """A prepared site: its subjects, the split by subject, and the cached patch sets.

    Attributes
    ----------
    root
        The site folder holding ``dataset.json``.
    site
        ``"A"`` (GAN / U-net site) or ``"B"`` (transfer-learning site).
    subjects
        Subject id -> :class:`Subject`.
    splits
        ``"train"``, ``"val"``, ``"test"`` -> subject ids (disjoint). Site B: ``"val"`` is empty
        and ``"train"`` is the fine-tuning pool.
    seed
        Seed of the split and the patch sampling.
    info
        Everything else ``dataset.json`` records (profile, settings, sizes, per-subject facts).
    from_cache
        Whether the last :func:`prepare_dataset` call found a matching cache.
    """

    def __init__(
        self,
        root: Path,
        site: str,
        subjects: dict[str, Subject],
        splits: dict[str, list[str]],
        seed: int,
        info: dict[str, Any] | None = None,
        from_cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.site = site
        self.subjects = subjects
        self.splits = splits
        self.seed = seed
        self.info = dict(info or {})
        self.from_cache = from_cache

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return f"SiteDataset(site={self.site!r}, root='{self.root}', subjects: {sizes})"

    @property
    def profile(self) -> str:
        """Name of the profile the data set was prepared with."""
        return str(self.info.get("profile", ""))

    @property
    def patch_size(self) -> int:
        return int(self.info["settings"]["patch_size"])

    def subjects_in(self, split: str) -> list[Subject]:
        """The subjects of ``split`` (``"train"``, ``"val"`` or ``"test"``), in stored order."""
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}: choose one of {', '.join(self.splits)}")
        return [self.subjects[s] for s in self.splits[split]]

    def split_of(self, subject_id: str) -> str:
        """The split a subject belongs to."""
        for split, ids in self.splits.items():
            if subject_id in ids:
                return split
        raise KeyError(f"subject {subject_id!r} is not part of site {self.site}")

    def patch_file(self, split: str) -> Path:
        if split not in PATCH_SPLITS:
            raise DataError(self.root, f"split {split!r} has no patch set (test subjects are evaluated on whole volumes)")
        return self.root / self.info["patch_files"][split]

    def patches(self, split: str) -> PatchSet:
        """The patch set of ``"train"`` or ``"val"`` (site B: ``"train"`` is the pool; ``"val"`` is empty)."""
        return PatchSet.load(self.patch_file(split))

    def load_subject(self, subject_id: str) -> tuple[Volume, Volume, Volume]:
        """Image, label and brain mask of a subject (validated, same geometry)."""
        if subject_id not in self.subjects:
            raise KeyError(f"subject {subject_id!r} is not part of site {self.site}")
        s = self.subjects[subject_id]
        image = load_volume(s.image, "image")
        if s.label is None:
            raise DataError(s.image, "this subject has no label")
        label = load_volume(s.label, "label")
        check_same_geometry(image, label)
        if s.mask is not None:
            mask = load_volume(s.mask, "mask")
            check_same_geometry(image, mask)
        else:
            mask = Volume(compute_brain_mask(image.data), image.affine, None)
        return image, label, mask

    def subject_info(self, subject_id: str) -> dict[str, Any]:
        """What preparation recorded about a subject: shape, spacing, vessel fraction, n_patches."""
        return dict(self.info["subject_info"][subject_id])

    def split_table(self):
        """One row per subject: subject, split, n_patches, vessel_fraction (of brain voxels), shape, spacing (mm)."""
        import pandas as pd

        rows = []
        for split in SPLITS:
            for sid in self.splits.get(split, []):
                si = self.info["subject_info"][sid]
                rows.append(
                    {
                        "subject": sid,
                        "split": split,
                        "n_patches": int(si["n_patches"]),
                        "vessel_fraction": float(si["vessel_fraction"]),
                        "shape": tuple(si["shape"]),
                        "spacing": tuple(round(v, 3) for v in si["spacing"]),
                    }
                )
        return pd.DataFrame(rows, columns=["subject", "split", "n_patches", "vessel_fraction", "shape", "spacing"])

    def describe(self) -> str:
        """A short human summary."""
        info, st = self.info, self.info["settings"]
        sizes = info["sizes"]
        fractions = [si["vessel_fraction"] for si in info["subject_info"].values()]
        spacings = np.array([si["spacing"] for si in info["subject_info"].values()])
        shapes = {tuple(si["shape"]) for si in info["subject_info"].values()}
        source = info.get("source", {}).get("kind", "user data")
        split_names = ("pool", "val", "test") if self.site == "B" else SPLITS
        lines = [
            f"site {self.site} ({source}, profile {info.get('profile')}, seed {self.seed}): {len(self.subjects)} subjects: "
            + " / ".join(f"{n} {len(self.splits[s])}" for n, s in zip(split_names, SPLITS)),
            f"  patches: {sizes['patches']['train']} train + {sizes['patches']['val']} val, "
            f"{st['patch_size']}x{st['patch_size']} px, {st['patches_per_subject']} per subject, "
            f"{100 * st['vessel_patch_fraction']:.0f}% vessel-centred",
            f"  volumes: {' / '.join('x'.join(map(str, s)) for s in sorted(shapes))} voxels, spacing "
            f"{' x '.join(f'{v:.2f}' for v in np.median(spacings, axis=0))} mm (median); vessel fraction of brain "
            f"{100 * float(np.mean(fractions)):.2f}% (mean; {100 * min(fractions):.2f}-{100 * max(fractions):.2f}%)",
            f"  {'read from cache' if self.from_cache else 'prepared in %.1f s' % float(info.get('seconds', 'nan'))}: {self.root}",
        ]
        phantom_seconds = info.get("source", {}).get("seconds")
        if source == "phantom" and phantom_seconds is not None and not self.from_cache:
            lines[-1] += f" (phantom volumes written in {float(phantom_seconds):.1f} s before)"
        return "\n".join(lines)


def load_dataset(root: str | os.PathLike[str]) -> SiteDataset:
    """Open a prepared site folder (its ``dataset.json``).

    Raises
    ------
    DataError
        ``dataset.json`` missing (run notebook 01 / ``tofmra prepare`` first) or malformed.
    """
    root = Path(root)
    file = root / "dataset.json"
    if not file.exists():
        raise DataError(file, "not found: prepare the data first (notebook 01_data_preparation or `tofmra prepare`)")
    info = read_json(file)
    try:
        subjects = {
            sid: Subject(
                id=sid,
                image=Path(s["image"]),
                label=None if s["label"] is None else Path(s["label"]),
                mask=None if s["mask"] is None else Path(s["mask"]),
            )
            for sid, s in info["subjects"].items()
        }
        splits = {k: list(info["splits"][k]) for k in SPLITS}
        site, seed = str(info["site"]), int(info["seed"])
        _ = info["patch_files"], info["settings"], info["subject_info"], info["sizes"]
    except (KeyError, TypeError) as err:
        raise DataError(file, f"malformed dataset file (missing {err})") from None
    return SiteDataset(root=root, site=site, subjects=subjects, splits=splits, seed=seed, info=info)


# ============================================================================ splits
def split_subjects(ids: Iterable[str], n_val: int, n_test: int, seed: int) -> dict[str, list[str]]:
    """Split subject ids by a seeded shuffle: first ``n_test`` test, next ``n_val`` val, rest train.

    Each list is returned sorted; a subject is in exactly one split. At least one training
    subject must remain (the caller checks and names the folder).
    """
    ids = sorted(ids)
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def _split_sizes(profile: Profile, site: str) -> tuple[int, int]:
    """(n_val, n_test) of a site: site A from the profile; site B has no val, its test is site_b_n_test."""
    if site == "A":
        return profile.data.n_val, profile.data.n_test
    return 0, profile.data.site_b_n_test


# ============================================================================ input discovery
def _nifti_files(folder: Path, what: str) -> dict[str, Path]:
    """Subject id -> file for every NIfTI volume in ``folder`` (DataError on a missing folder or duplicates)."""
    if not folder.is_dir():
        raise DataError(folder, f"{what} folder not found")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or not p.name.endswith(NIFTI_SUFFIXES):
            continue
        sid = nifti_stem(p)
        if sid in found:
            raise DataError(p, f"two {what} files for subject {sid!r} ({found[sid].name} and {p.name})")
        found[sid] = p.resolve()
    return found


def _match_inputs(images_dir: Path, labels_dir: Path, masks_dir: Path | None) -> list[Subject]:
    """Pair every image with its label (and mask) by file-name stem."""
    images = _nifti_files(images_dir, "images")
    if not images:
        raise DataError(images_dir, "no NIfTI volumes (*.nii, *.nii.gz) in the images folder")
    labels = _nifti_files(labels_dir, "labels")
    masks = _nifti_files(masks_dir, "masks") if masks_dir is not None else {}
    subjects = []
    for sid, image in images.items():
        if sid not in labels:
            raise DataError(image, f"no label for this image: expected {sid}.nii.gz or {sid}.nii in {labels_dir}")
        if masks_dir is not None and sid not in masks:
            raise DataError(image, f"no brain mask for this image: expected {sid}.nii.gz or {sid}.nii in {masks_dir}")
        subjects.append(Subject(id=sid, image=image, label=labels[sid], mask=masks.get(sid)))
    return subjects


def _file_fingerprint(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _settings(profile: Profile, site: str, seed: int) -> dict[str, Any]:
    n_val, n_test = _split_sizes(profile, site)
    d = profile.data
    return {
        "format_version": FORMAT_VERSION,
        "profile": profile.name,
        "site": site,
        "seed": int(seed),
        "n_val": n_val,
        "n_test": n_test,
        "patch_size": d.patch_size,
        "patches_per_subject": d.patches_per_subject,
        "vessel_patch_fraction": d.vessel_patch_fraction,
        "image_padding": "edge",
        "label_padding": "zero",
    }


def _cache_key(subjects: list[Subject], settings: dict[str, Any]) -> str:
    files = [[s.id] + [_file_fingerprint(p) for p in (s.image, s.label, s.mask) if p is not None] for s in subjects]
    blob = json.dumps({"files": files, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _cached(out_dir: Path, key: str) -> SiteDataset | None:
    """The prepared data set in ``out_dir`` if its cache key matches and all its files exist."""
    file = out_dir / "dataset.json"
    if not file.exists():
        return None
    try:
        ds = load_dataset(out_dir)
    except DataError:
        return None
    if ds.info.get("cache_key") != key:
        return None
    needed = [ds.patch_file(s) for s in PATCH_SPLITS] + [p for s in ds.subjects.values() for p in (s.image, s.label, s.mask) if p]
    if not all(p.exists() for p in needed):
        return None
    ds.from_cache = True
    return ds


# ============================================================================ preparation
def _validate_subject(subject: Subject) -> tuple[Volume, Volume, Volume, bool]:
    """Load and check one subject's volumes; returns image, label, mask and whether the mask was computed."""
    image = load_volume(subject.image, "image")
    assert subject.label is not None
    label = load_volume(subject.label, "label")
    check_same_geometry(image, label)
    if subject.mask is not None:
        mask = load_volume(subject.mask, "mask")
        check_same_geometry(image, mask)
        return image, label, mask, False
    computed = compute_brain_mask(image.data)
    if not computed.any():
        raise DataError(subject.image, "the computed brain mask is empty (no tissue above the intensity threshold); provide masks")
    return image, label, Volume(computed, image.affine, None), True


def _process_subject(
    subject: Subject, split: str, data: DataConfig, seed: int, site: str, staging: Path
) -> tuple[dict[str, Any], PatchSet | None, Path | None]:
    """Validate one subject, sample its patches (train/val only), stage a computed mask.

    Returns what ``dataset.json`` records about the subject, its patches (``None`` for test
    subjects) and the staged mask file (``None`` when a mask was given).
    """
    image, label, mask, computed = _validate_subject(subject)
    patches = None
    if split in PATCH_SPLITS:
        patches = extract_patches(image.data, label.data, mask.data, data.patches_per_subject, data.patch_size,
                                  data.vessel_patch_fraction, _subject_rng(seed, site, subject.id), subject=subject.id)
    mask_file = None
    if computed:
        mask_file = save_volume(staging / f"{subject.id}.nii.gz", mask.data.astype(np.uint8), mask.affine)
    brain = mask.data > 0
    info = {
        "split": split,
        "shape": list(image.shape),
        "spacing": [round(v, 6) for v in image.spacing],
        "brain_voxels": int(brain.sum()),
        "vessel_voxels": int(label.data.sum()),
        "vessel_fraction": float(label.data[brain].sum() / max(1, brain.sum())),
        "mask_computed": computed,
        "n_patches": 0 if patches is None else len(patches),
    }
    return info, patches, mask_file


def prepare_dataset(
    images_dir: str | os.PathLike[str],
    labels_dir: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    profile: Profile | str,
    masks_dir: str | os.PathLike[str] | None = None,
    site: str = "A",
    seed: int | None = None,
    force: bool = False,
    *,
    source: dict[str, Any] | None = None,
    progress: bool = False,
) -> SiteDataset:
    """Turn a folder of NIfTI volumes into a prepared site (cached).

    Parameters
    ----------
    images_dir
        Folder of TOF-MRA volumes ``<id>.nii.gz`` / ``<id>.nii`` (3D, axial slices along the third axis).
    labels_dir
        Folder of 0/1 vessel labels with the same file-name stems and geometry. ``None``: the
        ``labels`` folder beside ``images_dir``.
    out_dir
        Where ``dataset.json``, ``patches/`` and computed masks go (created).
    profile
        Profile (or its name) giving patch size, patches per subject, vessel fraction and split sizes.
    masks_dir
        Optional folder of 0/1 brain masks (same stems); computed with :func:`compute_brain_mask` when not given.
    site
        ``"A"``: train/val/test with ``profile.data.n_val`` / ``n_test``. ``"B"``: test =
        ``site_b_n_test`` subjects, no val, the rest is the fine-tuning pool (``"train"``).
    seed
        Seed of the split and of the patch sampling (default: the profile's seed).
    force
        Rebuild even when ``dataset.json`` has a matching cache key.
    source
        Provenance stored in ``dataset.json`` (the phantom passes its settings).
    progress
        Show a progress bar over subjects.

    Returns
    -------
    SiteDataset (``from_cache`` says whether it was read from the cache).

    Raises
    ------
    DataError
        Any bad input, naming the file and the problem: missing/unreadable/truncated NIfTI, not
        3D, NaN/inf voxels, non-binary or empty label, empty mask, shape or affine mismatch,
        image without label (or mask), too few subjects for the splits.
    UnknownProfileError
        ``profile`` is an unknown name.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    prof = get_profile(profile) if isinstance(profile, str) else profile
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}")
    images_path = Path(images_dir).resolve()
    labels_path = Path(labels_dir).resolve() if labels_dir is not None else images_path.parent / "labels"
    masks_path = Path(masks_dir).resolve() if masks_dir is not None else None
    out = Path(out_dir).resolve()
    seed = prof.seed if seed is None else int(seed)

    subjects = _match_inputs(images_path, labels_path, masks_path)
    settings = _settings(prof, site, seed)
    key = _cache_key(subjects, settings)
    if not force:
        cached = _cached(out, key)
        if cached is not None:
            return cached

    n_val, n_test = settings["n_val"], settings["n_test"]
    if len(subjects) < n_val + n_test + 1:
        raise DataError(
            images_path,
            f"too few subjects for the splits: found {len(subjects)}, site {site} with profile {prof.name!r} needs at "
            f"least {n_val + n_test + 1} ({n_test} test + {n_val} val + at least 1 train)",
        )
    splits = split_subjects([s.id for s in subjects], n_val, n_test, seed)
    split_of = {sid: split for split, ids in splits.items() for sid in ids}

    # Validate and sample every subject before anything final is written. Computed masks wait in
    # a hidden staging folder (not in memory: real volumes are large) that a failure removes.
    d = prof.data
    per_split: dict[str, list[PatchSet]] = {s: [] for s in PATCH_SPLITS}
    staging = out / f".{COMPUTED_MASKS}.partial-{os.getpid()}"
    staged: dict[str, Path] = {}
    subject_info: dict[str, dict[str, Any]] = {}
    try:
        for subject in tqdm(subjects, desc=f"site {site}", unit="subject", disable=not progress):
            split = split_of[subject.id]
            info_s, patches, mask_file = _process_subject(subject, split, d, seed, site, staging)
            subject_info[subject.id] = info_s
            if patches is not None:
                per_split[split].append(patches)
            if mask_file is not None:
                staged[subject.id] = mask_file
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    meta = {"site": site, "profile": prof.name, "seed": seed, "source": str(images_path), "cache_key": key}
    patch_sets = {
        split: PatchSet.concatenate(sets, meta={**meta, "split": split}) if sets else _empty_patchset(d.patch_size, {**meta, "split": split})
        for split, sets in per_split.items()
    }
    # Everything is valid: write. dataset.json goes first out of the way (a stale one must not
    # describe new patch files if we crash half-way) and comes back last.
    (out / "dataset.json").unlink(missing_ok=True)
    final_subjects = []
    for subject in subjects:
        if subject.id in staged:
            mask_file = out / COMPUTED_MASKS / staged[subject.id].name
            mask_file.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged[subject.id], mask_file)
            subject = Subject(subject.id, subject.image, subject.label, mask_file)
        final_subjects.append(subject)
    shutil.rmtree(staging, ignore_errors=True)
    patch_files = {}
    for split, ps in patch_sets.items():
        target = out / "patches" / f"{split}.npz"
        ps.save(target)
        patch_files[split] = str(target.relative_to(out))

    info = {
        "format_version": FORMAT_VERSION,
        "site": site,
        "profile": prof.name,
        "seed": seed,
        "cache_key": key,
        "source": dict(source or {"kind": "user data"}),
        "inputs": {"images": str(images_path), "labels": str(labels_path), "masks": None if masks_path is None else str(masks_path)},
        "settings": settings,
        "subjects": {s.id: {"image": str(s.image), "label": str(s.label), "mask": None if s.mask is None else str(s.mask)} for s in final_subjects},
        "splits": splits,
        "patch_files": patch_files,
        "sizes": {
            "subjects": {k: len(v) for k, v in splits.items()},
            "patches": {k: len(v) for k, v in patch_sets.items()},
        },
        "subject_info": subject_info,
        "seconds": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(out / "dataset.json", info)
    return load_dataset(out)


# ============================================================================ the phantom
def phantom_seed(profile_seed: int, site: str) -> int:
    """Seed of a site's phantom volumes, derived from the profile seed (sites differ)."""
    return int(profile_seed) * 10 + 1 + SITES.index(site)


def _phantom_stamp(profile: Profile, site: str) -> dict[str, Any]:
    from . import phantom

    n = profile.data.site_a_subjects if site == "A" else profile.data.site_b_subjects
    return {
        "kind": "phantom",
        "site": site,
        "n_subjects": n,
        "seed": phantom_seed(profile.seed, site),
        "volume_shape": list(profile.data.volume_shape),
        "phantom_version": phantom.PHANTOM_VERSION,
    }


def _phantom_volumes_present(site_paths: SitePaths, stamp: dict[str, Any]) -> bool:
    file = site_paths.root / "phantom.json"
    if not file.exists():
        return False
    try:
        recorded = read_json(file)
    except DataError:
        return False
    if recorded.get("stamp") != stamp:
        return False
    return all((site_paths.root / rel).exists() for rel in recorded.get("files", [])) and bool(recorded.get("files"))


def _clear_volumes(folder: Path) -> None:
    """Remove NIfTI files of an outdated phantom (only those; the folder is the run's own)."""
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and p.name.endswith(NIFTI_SUFFIXES):
                p.unlink()


def prepare_phantom_site(paths: RunPaths, profile: Profile, site: str, progress: bool = False) -> SiteDataset:
    """Write a site's phantom volumes (if not there yet) and prepare them (cached both ways).

    Volumes go to ``paths.site(site).images | labels | masks``; site A gets
    ``profile.data.site_a_subjects`` subjects, site B ``profile.data.site_b_subjects``, with the
    seed :func:`phantom_seed` (profile seed, site). ``phantom.json`` records what was written, so
    a rerun with the same profile skips the generation and, through :func:`prepare_dataset`'s
    cache, the patch sampling too.
    """
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}")
    sp = paths.site(site)
    stamp = _phantom_stamp(profile, site)
    if not _phantom_volumes_present(sp, stamp):
        from .phantom import write_phantom_dataset

        (sp.root / "phantom.json").unlink(missing_ok=True)
        for folder in (sp.images, sp.labels, sp.masks):
            _clear_volumes(folder)
        t0 = time.perf_counter()
        written = write_phantom_dataset(sp.root, site=site, n_subjects=stamp["n_subjects"], seed=stamp["seed"],
                                        volume_shape=tuple(profile.data.volume_shape))
        files = sorted(
            str(p.relative_to(sp.root)) for folder in (sp.images, sp.labels, sp.masks) if folder.is_dir()
            for p in folder.iterdir() if p.name.endswith(NIFTI_SUFFIXES)
        )
        write_json(sp.root / "phantom.json", {"stamp": stamp, "files": files, "n_written": len(written),
                                              "seconds": round(time.perf_counter() - t0, 3)})
    masks = sp.masks if sp.masks.is_dir() and any(sp.masks.iterdir()) else None
    source = dict(stamp)
    phantom_info = read_json(sp.root / "phantom.json")
    source["seconds"] = phantom_info.get("seconds")
    return prepare_dataset(sp.images, sp.labels, sp.root, profile, masks_dir=masks, site=site, seed=profile.seed,
                           source=source, progress=progress)


def prepare_site(
    paths: RunPaths,
    profile: Profile,
    site: str,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> SiteDataset:
    """What notebook 01 does per site: the phantom, or the user's folder of volumes when given.

    Parameters
    ----------
    data_dir
        ``None`` or ``""``: the built-in phantom (:func:`prepare_phantom_site`). Otherwise a folder
        with ``images/``, ``labels/`` and optionally ``masks/`` (computed when absent), prepared
        into ``paths.site(site).root`` by :func:`prepare_dataset`.
    """
    if not data_dir:
        return prepare_phantom_site(paths, profile, site, progress=progress)
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(root, "data folder not found (expected images/, labels/ and optionally masks/ inside)")
    masks = root / "masks"
    return prepare_dataset(root / "images", root / "labels", paths.site(site).root, profile,
                           masks_dir=masks if masks.is_dir() else None, site=site, progress=progress,
                           source={"kind": "user data", "folder": str(root.resolve())})
