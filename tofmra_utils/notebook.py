"""What every notebook does first: resolve its parameters into a :class:`NotebookContext`.

Each notebook starts with a cell tagged ``parameters``::

    profile = ""   # "" -> $TOFMRA_PROFILE, else "course"
    run_dir = ""   # "" -> $TOFMRA_RUN_DIR, else <repo>/runs/<profile>

and then calls :func:`setup_notebook`. ``tofmra run`` injects explicit values through papermill;
the test suite sets ``TOFMRA_PROFILE=smoke`` so nbval executes every notebook quickly; a student
opening the notebook in JupyterLab gets the ``course`` profile with no setup at all.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .io import read_json, write_json
from .profiles import Profile, get_profile
from .runs import RunPaths, default_run_dir
from .seeding import default_device, set_determinism

__all__ = ["NotebookContext", "setup_notebook", "is_headless", "override_profile"]

DEFAULT_PROFILE = "course"


def is_headless() -> bool:
    """True when no person is watching: papermill/nbval runs and CI (``TOFMRA_HEADLESS``, ``CI``).

    Widgets then degrade to static figures so nothing waits for a browser.
    """
    return bool(os.environ.get("TOFMRA_HEADLESS") or os.environ.get("CI"))


@dataclass
class NotebookContext:
    """Resolved settings of one notebook run.

    Attributes
    ----------
    name
        Notebook name without extension (``"01_data_preparation"``).
    profile
        The :class:`~tofmra_utils.profiles.Profile` in force.
    paths
        The run folder's :class:`~tofmra_utils.runs.RunPaths`.
    device
        ``cuda`` when available, else ``cpu``.
    headless
        Whether widgets must degrade to static figures.
    """

    name: str
    profile: Profile
    paths: RunPaths
    device: torch.device
    headless: bool
    results: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    train_seed: int | None = None

    @property
    def seed(self) -> int:
        """Seed of training (GANs, U-nets, transfer): ``tofmra run --seed`` (``TOFMRA_SEED``), else the
        profile's. The data are always prepared from the profile's seed."""
        return self.profile.seed if self.train_seed is None else self.train_seed

    def record(self, **values: Any) -> dict[str, Any]:
        """Record key results (numbers, short strings) for ``summary.json`` and the book.

        Written atomically to ``results/<notebook>.json`` on every call, so results survive a
        later failing cell.
        """
        self.results.update(values)
        write_json(self.paths.results_file(self.name), self.results)
        return dict(self.results)

    def dataset(self, site: str) -> Any:
        """The site's data set prepared by notebook 01 (a :class:`~tofmra_utils.data.SiteDataset`).

        Raises
        ------
        FileNotFoundError
            Naming the missing ``dataset.json`` and the notebook that writes it.
        """
        from .data import load_dataset

        paths = self.paths.site(site)
        if not paths.dataset_file.exists():
            raise FileNotFoundError(f"{paths.dataset_file} not found: run notebook 01_data_preparation first")
        return load_dataset(paths.root)

    def recorded(self, notebook: str) -> dict[str, Any]:
        """Key results an earlier notebook recorded (error naming the file if it has not run)."""
        return read_json(self.paths.results_file(notebook))

    def __repr__(self) -> str:  # shown when a cell ends with ctx
        return (
            f"NotebookContext(name={self.name!r}, profile={self.profile.name!r}, "
            f"run_dir='{self.paths.root}', device={self.device.type!r}, headless={self.headless})"
        )


def override_profile(profile: Profile, **overrides: Any) -> Profile:
    """A copy of ``profile`` with some settings changed, for exercises and experiments.

    Keys are dotted paths into the profile, with ``__`` standing for the dot so they can be
    keyword arguments; a ``dict`` field (the GAN variants) is entered by its key::

        p = override_profile(ctx.profile, unet__max_steps=20, gan__variants__dcgan__lr=1e-4,
                             transfer__pretrained_gan="dcgan")

    The package's profiles are not changed; nothing needs editing in ``profiles.py``.

    Raises
    ------
    KeyError
        A path that names no setting, with the settings available at that level.
    """
    import dataclasses

    def replace(obj: Any, path: list[str], value: Any, done: str) -> Any:
        key, rest = path[0], path[1:]
        if isinstance(obj, dict):
            if key not in obj:
                raise KeyError(f"{done}{key}: no such entry; choose one of {', '.join(map(str, obj))}")
            return {**obj, key: replace(obj[key], rest, value, f"{done}{key}.") if rest else value}
        names = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
        if key not in names:
            raise KeyError(f"{done}{key}: no such setting; choose one of {', '.join(names) or '(none: not a group)'}")
        new = replace(getattr(obj, key), rest, value, f"{done}{key}.") if rest else value
        return dataclasses.replace(obj, **{key: new})

    for dotted, value in overrides.items():
        profile = replace(profile, dotted.replace("__", ".").split("."), value, "")
    return profile


def setup_notebook(name: str, profile: str = "", run_dir: str = "", seed_offset: int = 0) -> NotebookContext:
    """Resolve parameters, seed everything and prepare the run folder.

    Parameters
    ----------
    name
        The notebook's name without extension.
    profile
        Profile name; ``""`` means ``$TOFMRA_PROFILE`` or ``"course"``.
    run_dir
        Run folder; ``""`` means ``$TOFMRA_RUN_DIR`` or ``<repo>/runs/<profile>``.
    seed_offset
        Added to the profile seed so notebooks draw independent random streams.
    """
    profile_name = profile or os.environ.get("TOFMRA_PROFILE") or DEFAULT_PROFILE
    prof = get_profile(profile_name)
    root = Path(run_dir or os.environ.get("TOFMRA_RUN_DIR") or default_run_dir(prof.name))
    paths = RunPaths(root).ensure()
    train_seed = int(os.environ["TOFMRA_SEED"]) if os.environ.get("TOFMRA_SEED") else None
    set_determinism((prof.seed if train_seed is None else train_seed) + seed_offset)
    headless = is_headless()
    # Keep the kernel's inline backend even headless: executed notebooks must carry their figures.
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 100, "figure.max_open_warning": 50})
    if os.environ.get("TOFMRA_THREADS"):
        torch.set_num_threads(int(os.environ["TOFMRA_THREADS"]))
    ctx = NotebookContext(name=name, profile=prof, paths=paths, device=default_device(), headless=headless,
                          train_seed=train_seed)
    return ctx
