"""The phantom's sites and notebook 01's entry point: volumes written once, then prepared (both cached)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..io import DataError
from ..profiles import Profile
from ..resumable import ResumableUnit
from ..runs import RunPaths, SitePaths
from .dataset import SITES, SiteDataset
from .discover import NIFTI_SUFFIXES
from .prepare import prepare_dataset

__all__ = ["phantom_seed", "prepare_phantom_site", "prepare_site"]


def phantom_seed(profile_seed: int, site: str) -> int:
    """Seed of a site's phantom volumes, derived from the profile seed (sites differ)."""
    return int(profile_seed) * 10 + 1 + SITES.index(site)


def _phantom_stamp(profile: Profile, site: str) -> dict[str, Any]:
    """What decides a site's phantom volumes: a different stamp regenerates them."""
    from .. import phantom

    n = profile.data.site_a_subjects if site == "A" else profile.data.site_b_subjects
    return {
        "kind": "phantom",
        "site": site,
        "n_subjects": n,
        "seed": phantom_seed(profile.seed, site),
        "volume_shape": list(profile.data.volume_shape),
        "phantom_version": phantom.PHANTOM_VERSION,
    }


def _phantom_unit(site_paths: SitePaths, stamp: dict[str, Any]) -> ResumableUnit:
    """The site's phantom volumes as a resumable unit: ``phantom.json`` records the stamp and the files.

    Another stamp (profile, seed, size, phantom version) replaces the volumes, saying what
    changed; the image, label and mask folders of a phantom site are the phantom's own.
    """
    return ResumableUnit(site_paths.root, stamp, state_name=None, history_name=None, record_name="phantom.json",
                         owned=[p.name for p in (site_paths.images, site_paths.labels, site_paths.masks)])


def _phantom_volumes_present(unit: ResumableUnit) -> bool:
    """Whether the unit finished with this stamp and every file it lists is still there."""
    files = (unit.result() or {}).get("files", [])
    return bool(files) and all((unit.folder / rel).exists() for rel in files)


def prepare_phantom_site(paths: RunPaths, profile: Profile, site: str, progress: bool = False) -> SiteDataset:
    """Write a site's phantom volumes (if not there yet) and prepare them (cached both ways).

    Volumes go to ``paths.site(site).images | labels | masks``; site A gets
    ``profile.data.site_a_subjects`` subjects, site B ``profile.data.site_b_subjects``, with the
    seed :func:`phantom_seed` (profile seed, site). ``phantom.json`` records what was written, so
    a rerun with the same profile skips the generation and, through :func:`~tofmra_utils.data.prepare.prepare_dataset`'s
    cache, the patch sampling too.
    """
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}")
    sp = paths.site(site)
    stamp = _phantom_stamp(profile, site)
    unit = _phantom_unit(sp, stamp)
    if not _phantom_volumes_present(unit):
        from ..phantom import write_phantom_dataset

        unit.open(fresh=unit.is_done())  # done but files missing: start over quietly
        t0 = time.perf_counter()
        written = write_phantom_dataset(sp.root, site=site, n_subjects=stamp["n_subjects"], seed=stamp["seed"],
                                        volume_shape=tuple(profile.data.volume_shape))
        files = sorted(
            str(p.relative_to(sp.root)) for folder in (sp.images, sp.labels, sp.masks) if folder.is_dir()
            for p in folder.iterdir() if p.name.endswith(NIFTI_SUFFIXES)
        )
        unit.finish({"files": files, "n_written": len(written), "seconds": round(time.perf_counter() - t0, 3)})
    masks = sp.masks if sp.masks.is_dir() and any(sp.masks.iterdir()) else None
    source = dict(stamp)
    source["seconds"] = unit.result().get("seconds")
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
        into ``paths.site(site).root`` by :func:`~tofmra_utils.data.prepare.prepare_dataset`.
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
