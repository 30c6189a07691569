"""Writing a phantom data set: one gzipped NIfTI image, label and mask per subject.

Each subject's seed derives from (data-set seed, site, index)
(:func:`tofmra_utils.phantom.sites.subject_seed`), so a subject is the same whatever the number
of subjects or worker processes; subjects already on disk are skipped.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..io import save_volume
from .assemble import make_phantom
from .sites import check_shape, get_site, subject_id, subject_seed

__all__ = ["PARALLEL_MIN_VOXELS", "write_phantom_dataset"]

#: Volumes of at least this many voxels are written by a process pool (see write_phantom_dataset).
PARALLEL_MIN_VOXELS = 1_000_000


def _subject_files(out_dir: Path, sid: str) -> tuple[Path, Path, Path]:
    """Image, label and mask file of subject ``sid`` under ``out_dir``."""
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
    s = get_site(site)
    if int(n_subjects) < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    shape = check_shape(volume_shape)
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
