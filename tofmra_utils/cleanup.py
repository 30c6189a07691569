"""What a run folder weighs, and ``tofmra clean``: free the bulky files, keep what a reader needs.

A course run leaves hundreds of megabytes: prepared patches and phantom volumes (``data/``),
GAN checkpoints and snapshots, synthetic sets, U-net checkpoints. A reader of the results needs
none of them: the figures and tables (``results/``), the executed notebooks, the book,
``summary.json`` and the small logs (``losses.csv``, ``history.csv``, ``run.json``, datasheets)
stay. What goes, by kind:

``checkpoints``  ``*.pt`` (GAN, snapshot and U-net weights and training states)
``data``         ``*.npz``, ``*.nii``, ``*.nii.gz`` (patch caches, synthetic sets, volumes)

``keep`` spares a kind. A later ``tofmra run`` on a cleaned folder recomputes what it misses.
Plain Python (no torch), so the command is instant.
"""

from __future__ import annotations

import os
from pathlib import Path

from .io import DataError

__all__ = ["KINDS", "folder_bytes", "removable_files", "clean_run", "human_bytes"]

#: File kinds :func:`clean_run` removes, by name suffix.
KINDS: dict[str, tuple[str, ...]] = {"checkpoints": (".pt",), "data": (".npz", ".nii", ".nii.gz")}


def folder_bytes(root: str | os.PathLike[str]) -> int:
    """Total size in bytes of the files under ``root`` (links not followed)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KB"`` (powers of 1024, one decimal)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def removable_files(root: str | os.PathLike[str], keep: tuple[str, ...] = ()) -> list[Path]:
    """Files :func:`clean_run` would remove, sorted (``keep``: kinds of :data:`KINDS` to spare)."""
    unknown = [k for k in keep if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown kind(s) to keep {unknown}: choose from {', '.join(KINDS)}")
    suffixes = tuple(s for kind, ends in KINDS.items() if kind not in keep for s in ends)
    out = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.endswith(suffixes):
                out.append(Path(dirpath) / name)
    return sorted(out)


def clean_run(root: str | os.PathLike[str], keep: tuple[str, ...] = (), dry_run: bool = False) -> tuple[int, int]:
    """Remove the checkpoints and data of a run folder; return (bytes freed, bytes left).

    Raises
    ------
    DataError
        If ``root`` is not a run folder (no ``summary.json``) or a live ``tofmra run`` holds it.
    """
    from .runlock import RunLockedError, run_lock
    from .runs import RunPaths

    paths = RunPaths(Path(root))
    if not paths.summary_file.exists():
        raise DataError(paths.summary_file, "not a run folder (no summary.json): nothing cleaned")
    try:
        with run_lock(paths, command="tofmra clean"):  # no run may write while files go
            freed = 0
            for path in removable_files(paths.root, keep):
                size = path.stat().st_size
                if not dry_run:
                    path.unlink()
                freed += size
            return freed, folder_bytes(paths.root) - (freed if dry_run else 0)
    except RunLockedError as err:
        raise DataError(paths.root, f"clean it once that run has ended ({err})") from None
