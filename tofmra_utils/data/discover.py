"""Finding a site's input files: every image paired with its label (and brain mask) by file-name stem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io import DataError, nifti_stem
from .dataset import Subject

__all__ = ["NIFTI_SUFFIXES", "nifti_files", "match_inputs", "input_warnings"]

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


def input_warnings(image_path: Path, spacing: Sequence[float]) -> list[str]:
    """Warnings (never errors) about an image file that preparation accepts but a user should know of.

    Parameters
    ----------
    image_path
        The NIfTI image (only its header is read).
    spacing
        Voxel size in mm along (x, y, z), as loaded.

    Returns
    -------
    One sentence per finding, with the number: voxel size unknown (no spatial unit in the
    header) or exactly 1 mm in every axis (often a placeholder of converted files: TOF-MRA is
    acquired finer), and 8-bit integer input (at most 256 grey levels: the brightest vessels
    may be clipped).
    """
    import nibabel as nib

    header = nib.load(str(image_path)).header
    found = []
    unit = header.get_xyzt_units()[0]
    if unit in (None, "unknown"):
        found.append(f"voxel size unknown (no spatial unit in the header; read as {_mm(spacing)}): "
                     "distances in mm (95HD) are only as right as this")
    elif np.allclose(spacing, 1.0):
        found.append(f"voxel size exactly {_mm(spacing)}: often a placeholder of converted files (TOF-MRA is "
                     "usually acquired finer); distances in mm (95HD) are only as right as the header")
    dtype = np.dtype(header.get_data_dtype())
    if dtype.kind in "ui" and dtype.itemsize == 1:
        found.append(f"8-bit input ({dtype.name}, at most 256 grey levels): the brightest vessels may be clipped")
    return found


def _mm(spacing: Sequence[float]) -> str:
    return " x ".join(f"{float(v):.3g}" for v in spacing) + " mm"
