"""Preparation: volumes -> validated subjects -> splits by subject -> cached patch sets -> ``dataset.json``.

:func:`prepare_dataset` runs these steps, each a function below:

1. discover the inputs (:func:`~tofmra_utils.data.discover.match_inputs`) and return the cached
   site when the preparation unit finished with these settings and input files
   (:func:`_preparation_unit`, :func:`_cached`);
2. split the subjects (:func:`_split_site`, :func:`split_subjects`);
3. validate every subject and sample its patches (:func:`_sample_subjects`), writing nothing final;
4. open the unit (:func:`_open_unit`, the resumable-unit policy: a stored data set made with
   other settings or inputs is removed, saying what changed), write computed masks and patch
   files (:func:`_write_site`), then ``dataset.json``, then mark the unit done.

The cache is a :class:`~tofmra_utils.resumable.ResumableUnit` like every trainer's: its record
``preparation.json`` beside ``dataset.json`` holds the settings (:func:`_settings`) and the input
files' paths, sizes and modification times (:func:`_volume_files`); their fingerprint is also
stored in ``dataset.json`` as ``cache_key``.
"""

from __future__ import annotations

import os
import shutil
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..io import DataError, Volume, save_volume, write_json
from ..patchset import PatchSet
from ..profiles import DataConfig, Profile, get_profile
from ..resumable import ResumableUnit
from .dataset import (
    COMPUTED_MASKS,
    FORMAT_VERSION,
    PATCH_SPLITS,
    SITES,
    SiteDataset,
    Subject,
    load_dataset,
    load_subject_volumes,
)
from .brainmask import BRAIN_MASK_METHODS
from .discover import input_warnings, match_inputs
from .orientation import axis_codes, from_canonical, reorientation
from .sampling import empty_patchset, extract_patches

__all__ = ["prepare_dataset", "split_subjects"]


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
    """(n_val, n_test) of a site: site A's ``n_val``/``n_test``, site B's ``site_b_n_val``/``site_b_n_test``."""
    if site == "A":
        return profile.data.n_val, profile.data.n_test
    return profile.data.site_b_n_val, profile.data.site_b_n_test


def _split_site(subjects: list[Subject], settings: dict[str, Any], images_path: Path) -> dict[str, list[str]]:
    """The split of a site's subjects by :func:`_settings`; DataError naming ``images_path`` when too few."""
    n_val, n_test, site, profile = settings["n_val"], settings["n_test"], settings["site"], settings["profile"]
    if len(subjects) < n_val + n_test + 1:
        raise DataError(
            images_path,
            f"too few subjects for the splits: found {len(subjects)}, site {site} with profile {profile!r} needs at "
            f"least {n_val + n_test + 1} ({n_test} test + {n_val} val + at least 1 train)",
        )
    return split_subjects([s.id for s in subjects], n_val, n_test, settings["seed"])


# ============================================================================ the cache
#: The preparation unit's record, beside ``dataset.json`` (``run.json`` would read as a training run;
#: a phantom site's folder also holds the phantom unit's ``phantom.json``).
PREPARATION_RECORD = "preparation.json"


def _file_fingerprint(path: Path) -> dict[str, Any]:
    """Path, size in bytes and mtime in ns: what the cache sees of a file (hashing real volumes would take long).

    A dict, not a list, so a changed file is named key by key in the restart message
    (``volumes.sub-00.label.mtime_ns ... -> ...``).
    """
    st = path.stat()
    return {"path": str(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _volume_files(subjects: list[Subject]) -> dict[str, dict[str, dict[str, Any]]]:
    """Subject id -> ``image``/``label``/``mask`` -> :func:`_file_fingerprint` (a computed mask has no entry)."""
    return {
        s.id: {role: _file_fingerprint(p) for role, p in (("image", s.image), ("label", s.label), ("mask", s.mask)) if p is not None}
        for s in subjects
    }


def _settings(profile: Profile, site: str, seed: int, brain_mask: str | None = None) -> dict[str, Any]:
    """Every setting that changes what a preparation writes (recorded in ``dataset.json`` and the unit's record).

    ``brain_mask`` (the method of computed masks) is a setting only when masks are computed:
    with given masks (the phantom's) the settings, and so the cache key, stay as they were.
    """
    n_val, n_test = _split_sizes(profile, site)
    d = profile.data
    extra = {} if brain_mask is None else {"brain_mask": brain_mask}
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
        **extra,
    }


def _preparation_unit(out_dir: Path, subjects: list[Subject], settings: dict[str, Any]) -> ResumableUnit:
    """The prepared site in ``out_dir`` as a resumable unit (record :data:`PREPARATION_RECORD`).

    Its settings are ``settings`` plus ``volumes`` (:func:`_volume_files`), so other settings or a
    touched, added or removed input file restart it with the one resumable-unit message. (The
    message lists changes by sorted key, at most four: ``volumes`` sorts after every setting, so
    a changed setting is named before the files it made the phantom rewrite.)
    It owns what a preparation writes: ``dataset.json``, ``patches/`` and the computed masks,
    never the input volumes (a phantom site's ``images/``, ``labels/``, ``masks/`` belong to the
    phantom's unit).
    """
    return ResumableUnit(out_dir, {**settings, "volumes": _volume_files(subjects)}, state_name=None,
                         history_name=None, record_name=PREPARATION_RECORD,
                         owned=["dataset.json", "patches", COMPUTED_MASKS])


def _cached(unit: ResumableUnit) -> SiteDataset | None:
    """The prepared data set in the unit's folder if the unit is done with its settings and all its files exist."""
    if not unit.is_done():
        return None
    try:
        ds = load_dataset(unit.folder)
    except DataError:
        return None
    needed = [ds.patch_file(s) for s in PATCH_SPLITS] + [p for s in ds.subjects.values() for p in (s.image, s.label, s.mask) if p]
    if not all(p.exists() for p in needed):
        return None
    ds.from_cache = True
    return ds


def _open_unit(unit: ResumableUnit, force: bool) -> None:
    """Make the folder the unit's before writing: the resumable-unit policy, and one addition.

    Other settings or inputs: the stored data set goes, with the one message naming what
    changed (:meth:`~tofmra_utils.resumable.ResumableUnit.open`). A ``dataset.json`` without a
    record (a folder prepared before the record existed) is not trusted either, with the
    message :meth:`~tofmra_utils.resumable.ResumableUnit.open` gives a trainer's unrecorded
    files. ``force`` or a done unit whose files are gone starts over quietly, as the phantom's
    unit does.
    """
    if not force and unit.record() is None and (unit.folder / "dataset.json").exists():
        unit.reset("no record of the settings that made the stored files")
    unit.open(fresh=force or unit.is_done())


# ============================================================================ one subject
def _input_geometry(path: Path) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The 4x4 affine and (X, Y, Z) shape of a NIfTI file as stored (before reorientation); reads the header only."""
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.affine, dtype=np.float64), tuple(int(v) for v in img.shape[:3])  # type: ignore[return-value]


def _subject_rng(seed: int, site: str, subject_id: str) -> np.random.Generator:
    """One generator per subject: its patches do not depend on which other subjects exist."""
    return np.random.default_rng([int(seed), SITES.index(site), zlib.crc32(subject_id.encode())])


def _validate_subject(subject: Subject, mask_method: str = "threshold") -> tuple[Volume, Volume, Volume, str | None]:
    """Load and check one subject's volumes; returns image, label, mask and the method of a computed mask (else None)."""
    image, label, mask, computed = load_subject_volumes(subject, mask_method)
    # Only preparation refuses an empty computed mask: it has no brain voxel to centre random patches on.
    if computed and not mask.data.any():
        raise DataError(subject.image, "the computed brain mask is empty (no tissue above the intensity threshold); provide masks")
    return image, label, mask, computed


def _process_subject(
    subject: Subject, split: str, data: DataConfig, seed: int, site: str, staging: Path, mask_method: str = "threshold"
) -> tuple[dict[str, Any], PatchSet | None, Path | None]:
    """Validate one subject, sample its patches (train/val only), stage a computed mask.

    Returns what ``dataset.json`` records about the subject, its patches (``None`` for test
    subjects) and the staged mask file (``None`` when a mask was given).
    """
    t0 = time.perf_counter()
    image, label, mask, computed = _validate_subject(subject, mask_method)
    load_seconds = time.perf_counter() - t0
    patches = None
    if split in PATCH_SPLITS:
        patches = extract_patches(image.data, label.data, mask.data, data.patches_per_subject, data.patch_size,
                                  data.vessel_patch_fraction, _subject_rng(seed, site, subject.id), subject=subject.id)
    mask_file = None
    if computed is not None:
        # Written in the input's own voxel order and affine, so it pairs with the image file like a given mask.
        how = reorientation(*_input_geometry(subject.image))
        mask_file = save_volume(staging / f"{subject.id}.nii.gz", from_canonical(mask.data.astype(np.uint8), how), how.input_affine)
    brain = mask.data > 0
    info = {
        "split": split,
        "shape": list(image.shape),
        "spacing": [round(v, 6) for v in image.spacing],
        "brain_voxels": int(brain.sum()),
        "vessel_voxels": int(label.data.sum()),
        "vessel_fraction": float(label.data[brain].sum() / max(1, brain.sum())),
        "mask_computed": computed is not None,
        "n_patches": 0 if patches is None else len(patches),
    }
    if computed is not None:
        info["mask_method"] = computed
        info["mask_fraction"] = round(float(brain.mean()), 6)
        info["load_and_mask_seconds"] = round(load_seconds, 3)
    checks = input_warnings(subject.image, image.spacing)
    if checks:
        info["warnings"] = checks
    orientation = axis_codes(_input_geometry(subject.image)[0])
    if orientation != "RAS":
        info["orientation"] = f"{orientation} -> RAS"
    return info, patches, mask_file


# ============================================================================ the steps of prepare_dataset
def _sample_subjects(
    subjects: list[Subject],
    splits: dict[str, list[str]],
    data: DataConfig,
    seed: int,
    site: str,
    staging: Path,
    progress: bool,
    mask_method: str = "threshold",
) -> tuple[dict[str, dict[str, Any]], dict[str, list[PatchSet]], dict[str, Path]]:
    """Validate and sample every subject before anything final is written.

    Returns
    -------
    subject_info
        Subject id -> what ``dataset.json`` records about it (:func:`_process_subject`).
    per_split
        ``"train"``, ``"val"`` -> the subjects' patch sets, in subject order.
    staged
        Subject id -> its computed mask, staged in ``staging``.
    """
    from tqdm.auto import tqdm

    split_of = {sid: split for split, ids in splits.items() for sid in ids}
    per_split: dict[str, list[PatchSet]] = {s: [] for s in PATCH_SPLITS}
    staged: dict[str, Path] = {}
    subject_info: dict[str, dict[str, Any]] = {}
    # Computed masks wait in a hidden staging folder (not in memory: real volumes are large) that a
    # failure removes, so a bad subject leaves nothing of this preparation behind.
    try:
        for subject in tqdm(subjects, desc=f"site {site}", unit="subject", disable=not progress):
            split = split_of[subject.id]
            info_s, patches, mask_file = _process_subject(subject, split, data, seed, site, staging, mask_method)
            subject_info[subject.id] = info_s
            if patches is not None:
                per_split[split].append(patches)
            if mask_file is not None:
                staged[subject.id] = mask_file
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return subject_info, per_split, staged


def _patch_sets(per_split: dict[str, list[PatchSet]], meta: dict[str, Any], patch_size: int) -> dict[str, PatchSet]:
    """One PatchSet per patch split, ``meta`` plus the split's name; an empty one for a split without subjects."""
    return {
        split: PatchSet.concatenate(sets, meta={**meta, "split": split}) if sets else empty_patchset(patch_size, {**meta, "split": split})
        for split, sets in per_split.items()
    }


def _write_site(
    out: Path, subjects: list[Subject], staged: dict[str, Path], staging: Path, patch_sets: dict[str, PatchSet]
) -> tuple[list[Subject], dict[str, str]]:
    """Move the staged masks into place and save the patch files; ``dataset.json`` is left to the caller.

    Returns the subjects with their computed masks' final paths and split -> patch file
    (relative to ``out``).
    """
    # dataset.json goes first out of the way (a stale one must not describe new patch files if we
    # crash half-way) and comes back last.
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
    return final_subjects, patch_files


# ============================================================================ prepare_dataset
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
    brain_mask: str = "auto",
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
        Optional folder of 0/1 brain masks (same stems); computed with
        :func:`~tofmra_utils.data.sampling.compute_brain_mask` when not given.
    site
        ``"A"``: train/val/test with ``profile.data.n_val`` / ``n_test``. ``"B"``: test =
        ``site_b_n_test`` subjects, val = ``site_b_n_val`` (the transfer sweep's model
        selection), the rest is the fine-tuning pool (``"train"``).
    seed
        Seed of the split and of the patch sampling (default: the profile's seed).
    force
        Rebuild even when the stored data set was prepared with these settings and inputs.
    source
        Provenance stored in ``dataset.json`` (the phantom passes its settings).
    progress
        Show a progress bar over subjects.
    brain_mask
        How masks are computed when ``masks_dir`` is not given (given masks always win): one of
        :data:`~tofmra_utils.data.brainmask.BRAIN_MASK_METHODS`. ``"auto"``: the TOF-specific
        :func:`~tofmra_utils.data.brainmask.tof_brain_mask` for whole heads, the intensity
        threshold for volumes already brain-masked; ``"none"``: the whole volume. Recorded in
        ``dataset.json`` (``brain_mask``, and per subject ``mask_method``).

    Returns
    -------
    SiteDataset (``from_cache`` says whether it was read from the cache).

    Notes
    -----
    The cache is a :class:`~tofmra_utils.resumable.ResumableUnit` (record ``preparation.json``,
    see the module docstring). With other settings or input files the stored data set is removed
    once every subject of the new one is validated and sampled, with one line on standard error
    naming the folder and what changed, e.g. ``<out>: settings changed since the stored run
    (patches_per_subject 20 -> 10); starting afresh``. A preparation that fails leaves the
    folder as it was.

    Raises
    ------
    DataError
        Any bad input, naming the file and the problem: missing/unreadable/truncated NIfTI, not
        3D, NaN/inf voxels, non-binary or empty label, empty mask, shape or affine mismatch,
        image without label (or mask), too few subjects for the splits.
    UnknownProfileError
        ``profile`` is an unknown name.
    """
    started = time.perf_counter()
    prof = get_profile(profile) if isinstance(profile, str) else profile
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}")
    images_path = Path(images_dir).resolve()
    labels_path = Path(labels_dir).resolve() if labels_dir is not None else images_path.parent / "labels"
    masks_path = Path(masks_dir).resolve() if masks_dir is not None else None
    out = Path(out_dir).resolve()
    seed = prof.seed if seed is None else int(seed)
    if brain_mask not in BRAIN_MASK_METHODS:
        raise ValueError(f"brain_mask must be one of {', '.join(BRAIN_MASK_METHODS)}, got {brain_mask!r}")

    subjects = match_inputs(images_path, labels_path, masks_path)
    settings = _settings(prof, site, seed, None if masks_path is not None else brain_mask)
    unit = _preparation_unit(out, subjects, settings)
    key = unit.fingerprint
    if not force:
        cached = _cached(unit)
        if cached is not None:
            return cached

    splits = _split_site(subjects, settings, images_path)
    staging = out / f".{COMPUTED_MASKS}.partial-{os.getpid()}"
    subject_info, per_split, staged = _sample_subjects(subjects, splits, prof.data, seed, site, staging, progress,
                                                      brain_mask)
    # The unit opens only now, with every subject valid: a preparation that fails on a bad
    # subject leaves the folder as it was (a stored data set and its record included).
    _open_unit(unit, force)
    meta = {"site": site, "profile": prof.name, "seed": seed, "source": str(images_path), "cache_key": key}
    patch_sets = _patch_sets(per_split, meta, prof.data.patch_size)
    # Only now, with every subject valid, is anything final written.
    final_subjects, patch_files = _write_site(out, subjects, staged, staging, patch_sets)
    info = {
        "format_version": FORMAT_VERSION,
        "site": site,
        "profile": prof.name,
        "seed": seed,
        "cache_key": key,
        "source": dict(source or {"kind": "user data"}),
        "inputs": {"images": str(images_path), "labels": str(labels_path), "masks": None if masks_path is None else str(masks_path)},
        "brain_mask": "given" if masks_path is not None else brain_mask,
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
    # Done last: a crash before this line leaves the unit "running", which the next call redoes.
    unit.finish({"sizes": info["sizes"], "seconds": info["seconds"]})
    return load_dataset(out)
