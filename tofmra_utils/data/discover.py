"""Finding a site's input files: every image paired with its label (and brain mask) by file-name stem."""

from __future__ import annotations

from pathlib import Path

from ..io import DataError, nifti_stem
from .dataset import Subject

__all__ = ["NIFTI_SUFFIXES", "nifti_files", "match_inputs"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


def nifti_files(folder: Path, what: str) -> dict[str, Path]:
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


def match_inputs(images_dir: Path, labels_dir: Path, masks_dir: Path | None) -> list[Subject]:
    """Pair every image with its label (and mask) by file-name stem.

    Parameters
    ----------
    images_dir, labels_dir
        Folders of ``<id>.nii.gz`` / ``<id>.nii`` volumes; every image needs a label.
    masks_dir
        Folder of brain masks, one per image; ``None``: no masks (preparation computes them).

    Returns
    -------
    One :class:`~tofmra_utils.data.dataset.Subject` per image, in file-name order, with absolute paths.

    Raises
    ------
    DataError
        Naming the folder or image: folder missing, no image, duplicate stems, a missing label or mask.
    """
    images = nifti_files(images_dir, "images")
    if not images:
        raise DataError(images_dir, "no NIfTI volumes (*.nii, *.nii.gz) in the images folder")
    labels = nifti_files(labels_dir, "labels")
    masks = nifti_files(masks_dir, "masks") if masks_dir is not None else {}
    subjects = []
    for sid, image in images.items():
        if sid not in labels:
            raise DataError(image, f"no label for this image: expected {sid}.nii.gz or {sid}.nii in {labels_dir}")
        if masks_dir is not None and sid not in masks:
            raise DataError(image, f"no brain mask for this image: expected {sid}.nii.gz or {sid}.nii in {masks_dir}")
        subjects.append(Subject(id=sid, image=image, label=labels[sid], mask=masks.get(sid)))
    return subjects
