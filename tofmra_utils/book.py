"""Build the Jupyter Book (version 1, sphinx-based, offline) from a run's executed notebooks.

The book's hand-written pages live in ``book/`` (intro, metrics, ...). :func:`build_book`
stages them together with the executed notebooks of ``runs/<profile>/notebooks`` into
``runs/<profile>/book/``, writes a table of contents listing only what exists, and runs
``jupyter-book build`` without re-executing anything (``execute_notebooks: 'off'``), so the
figures in the HTML are exactly those the pipeline produced.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .io import DataError, atomic_path
from .runs import RunPaths, repo_root

__all__ = ["build_book", "stage_book"]

#: Hand-written pages shown after the notebooks, if present in book/.
APPENDIX_PAGES = ("reproducing", "metrics")


def stage_book(run_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Path:
    """Copy the book sources and executed notebooks into ``<run>/book`` and write ``_toc.yml``.

    Returns the staging folder. Raises :class:`DataError` if the run has no executed notebook.
    """
    paths = RunPaths(Path(run_dir))
    src = Path(source) if source else repo_root() / "book"
    if not (src / "_config.yml").exists():
        raise DataError(src, "book sources not found (_config.yml missing)")
    executed = sorted(
        p for p in paths.notebooks_dir.glob("[0-9][0-9]_*.ipynb") if not p.name.endswith(".failed.ipynb")
    )
    if not executed:
        raise DataError(paths.notebooks_dir, "no executed notebooks: run `tofmra run` first")
    stage = paths.root / "book"
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(src, stage, ignore=shutil.ignore_patterns("_build", "_toc.yml", ".ipynb_checkpoints"))
    (stage / "notebooks").mkdir(exist_ok=True)
    for nb in executed:
        shutil.copy2(nb, stage / "notebooks" / nb.name)
    chapters = [{"file": f"notebooks/{nb.stem}"} for nb in executed]
    chapters += [{"file": page} for page in APPENDIX_PAGES if (stage / f"{page}.md").exists()]
    toc = {"format": "jb-book", "root": "intro", "chapters": chapters}
    with atomic_path(stage / "_toc.yml") as tmp:
        tmp.write_text(yaml.safe_dump(toc, sort_keys=False))
    return stage


def build_book(run_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Path:
    """Stage and build the book; returns the path of ``index.html``.

    Raises
    ------
    RuntimeError
        If ``jupyter-book`` fails (its output is included) or is not installed.
    """
    stage = stage_book(run_dir, source)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(stage), "--quiet"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RuntimeError("jupyter-book is not installed: pip install -e '.[book]' (the Makefile does)") from None
    index = stage / "_build" / "html" / "index.html"
    if done.returncode != 0 or not index.exists():
        raise RuntimeError(f"jupyter-book build failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return index
