"""Where a run's artifacts live: ``runs/<profile>/`` and its fixed layout.

Notebooks and commands never build these paths by hand; they ask a :class:`RunPaths`.

::

    runs/<profile>/
        data/site_A/            prepared data set of site A (see tofmra_utils.data)
            dataset.json        subjects, their files, the split and the cache key
            preparation.json    the preparation's resumable-unit record (settings, input files)
            phantom.json        the phantom's record (when the phantom made the volumes)
            images/ labels/ masks/   phantom NIfTI volumes (when the phantom made them)
            patches/train.npz val.npz
        data/site_B/            the same for the transfer-learning site
        gans/<name>/            checkpoints, losses.csv, sample grids of one GAN
        synthetic/<name>/       patches.npz + datasheet.json made by that GAN
        unets/<name>/           U-net checkpoints and training log ("real", "dcgan", ...)
        transfer/               transfer-learning runs and results
        results/                <notebook>.json key results, *.csv tables (table_file), *.png figures (figure_file)
        exercises/<name>/       what a notebook's exercise writes (exercise_dir), apart from the study's files
        notebooks/              executed notebooks (tofmra run)
        book/                   the staged and built Jupyter Book (book_dir)
        summary.json            per-notebook status, time and key results
        .tofmra-run.lock        present while a `tofmra run` writes here (lock_file)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunPaths", "SitePaths", "repo_root", "repo_commit", "default_run_dir"]


def repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The repository root (the folder holding ``pyproject.toml``) above ``start`` or the cwd.

    Falls back to the current directory when the package runs outside the repository.
    """
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").exists() and (candidate / "tofmra_utils").is_dir():
            return candidate
    return Path.cwd().resolve()


def repo_commit() -> str | None:
    """The repository's commit (short hash, ``+`` when tracked files have changes), or ``None`` outside git."""
    import subprocess

    root = str(repo_root())
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def default_run_dir(profile: str) -> Path:
    """``<repo>/runs/<profile>``."""
    return repo_root() / "runs" / profile


def _plain_name(name: str, what: str, suffix: str | None = None) -> str:
    """``name`` if it is a plain file or folder name (with ``suffix`` when given); ValueError otherwise.

    Run-folder paths are built here only, so a name must not smuggle in a folder part
    (``"../x.png"``, ``"sub/x.png"``) or an absolute path that would escape the layout.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} name must be a non-empty string, got {name!r}")
    # Both separators are refused: a backslash separates folders on Windows.
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"{what} name must be a plain name without a folder part, got {name!r}")
    if suffix is not None and (not name.endswith(suffix) or name == suffix):
        raise ValueError(f"{what} name must end in {suffix!r} (e.g. 'loss{suffix}'), got {name!r}")
    return name


@dataclass(frozen=True)
class SitePaths:
    """Files of one acquisition site's prepared data set."""

    root: Path

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def masks(self) -> Path:
        return self.root / "masks"

    @property
    def dataset_file(self) -> Path:
        return self.root / "dataset.json"

    @property
    def patches_dir(self) -> Path:
        return self.root / "patches"

    def patch_file(self, split: str) -> Path:
        """``patches/<split>.npz`` (split: ``train`` or ``val``)."""
        return self.patches_dir / f"{split}.npz"


@dataclass(frozen=True)
class RunPaths:
    """The layout of one run folder (see module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    def site(self, site: str) -> SitePaths:
        """Data of site ``"A"`` or ``"B"``."""
        return SitePaths(self.root / "data" / f"site_{site}")

    def gan_dir(self, name: str) -> Path:
        return self.root / "gans" / name

    def synthetic_dir(self, name: str) -> Path:
        return self.root / "synthetic" / name

    def synthetic_file(self, name: str) -> Path:
        return self.synthetic_dir(name) / "patches.npz"

    def datasheet_file(self, name: str) -> Path:
        """The datasheet of GAN ``name``'s synthetic set."""
        return self.synthetic_dir(name) / "datasheet.json"

    def unet_dir(self, name: str) -> Path:
        return self.root / "unets" / name

    @property
    def transfer_dir(self) -> Path:
        return self.root / "transfer"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    def results_file(self, notebook: str) -> Path:
        """Key results a notebook records (``results/<notebook>.json``)."""
        return self.results_dir / f"{notebook}.json"

    def figure_file(self, name: str) -> Path:
        """A figure a notebook saves: ``results/<name>``.

        Parameters
        ----------
        name
            A plain PNG file name such as ``"dcgan_losses.png"``: no folder part, ending in
            ``.png`` (:func:`~tofmra_utils.plots.save_figure` writes PNG).

        Raises
        ------
        ValueError
            ``name`` has a folder part, is empty, or does not end in ``.png``.
        """
        return self.results_dir / _plain_name(name, "figure file", ".png")

    def table_file(self, name: str) -> Path:
        """A table a notebook saves: ``results/<name>``.

        Parameters
        ----------
        name
            A plain CSV file name such as ``"unet_synthetic_vs_real.csv"``: no folder part,
            ending in ``.csv``.

        Raises
        ------
        ValueError
            ``name`` has a folder part, is empty, or does not end in ``.csv``.
        """
        return self.results_dir / _plain_name(name, "table file", ".csv")

    def exercise_dir(self, name: str) -> Path:
        """Folder of a notebook exercise's outputs: ``exercises/<name>/`` (e.g. ``exercises/random_only``).

        Exercises write beside, never into, the folders the study's notebooks read, so trying
        one does not invalidate a cached step.

        Raises
        ------
        ValueError
            ``name`` is empty or has a folder part.
        """
        return self.root / "exercises" / _plain_name(name, "exercise")

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def book_dir(self) -> Path:
        """The staged Jupyter Book (``tofmra book``): sources, executed notebooks, ``_build/html``."""
        return self.root / "book"

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    @property
    def lock_file(self) -> Path:
        """``.tofmra-run.lock``: held by the ``tofmra run`` writing into this folder (pid, host, start, command)."""
        return self.root / ".tofmra-run.lock"

    def ensure(self) -> RunPaths:
        """Create the top-level folders."""
        for p in (self.root, self.results_dir):
            p.mkdir(parents=True, exist_ok=True)
        return self
