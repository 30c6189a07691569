"""The prepared site: :class:`Subject`, :class:`SiteDataset` and its ``dataset.json`` on disk.

The folder layout and what ``dataset.json`` records are described in :mod:`tofmra_utils.data`;
:func:`~tofmra_utils.data.prepare.prepare_dataset` writes the folder, :func:`load_dataset`
opens it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import DataError, Volume, check_same_geometry, load_volume, read_json
from ..patchset import PatchSet
from .orientation import to_canonical

__all__ = [
    "Subject",
    "SiteDataset",
    "load_dataset",
    "load_subject_volumes",
    "SPLITS",
    "PATCH_SPLITS",
    "SITES",
    "FORMAT_VERSION",
    "COMPUTED_MASKS",
]

#: Splits of every prepared site, by subject.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Splits that get patch files (test subjects are evaluated on whole volumes).
PATCH_SPLITS: tuple[str, ...] = ("train", "val")
#: Bumped whenever the preparation changes what it writes (invalidates every cache).
FORMAT_VERSION = 1
#: The study's two sites: A (GANs and U-nets), B (transfer learning). The index seeds per-site randomness.
SITES: tuple[str, ...] = ("A", "B")
#: Folder of a site, beside ``dataset.json``, for the brain masks computed when none were given.
COMPUTED_MASKS = "computed_masks"


@dataclass(frozen=True)
class Subject:
    """One subject's files (absolute paths). ``mask`` is ``None`` only for hand-built subjects."""

    id: str
    image: Path
    label: Path | None
    mask: Path | None


def load_subject_volumes(subject: Subject, mask_method: str = "threshold") -> tuple[Volume, Volume, Volume, str | None]:
    """Load and check one subject's volumes: the one loader of preparation and evaluation.

    Parameters
    ----------
    subject
        The subject's files; ``label`` must be set.
    mask_method
        How a missing mask is computed (:func:`~tofmra_utils.data.brainmask.brain_mask`:
        ``"auto"``, ``"tof"``, ``"threshold"``); a given mask always wins.

    Returns
    -------
    image, label, mask, computed
        (X, Y, Z) volumes with one geometry (float32 image, 0/1 uint8 label and mask) and, when
        the subject has no mask, the method that computed it (``"auto"`` resolved; ``None`` for
        a given mask; the computed mask may be empty, preparation refuses that). The volumes are in the canonical axial (closest RAS) voxel
        order of :func:`~tofmra_utils.data.orientation.to_canonical`, their affine adjusted so
        every voxel keeps its world position; a volume already in that order is unchanged.

    Raises
    ------
    DataError
        Naming the file: unreadable or invalid volume (:func:`~tofmra_utils.io.load_volume`), no
        label, label or mask geometry differing from the image's.
    """
    from .brainmask import brain_mask

    image = load_volume(subject.image, "image")
    if subject.label is None:
        raise DataError(subject.image, "this subject has no label")
    label = load_volume(subject.label, "label")
    check_same_geometry(image, label)
    mask = None
    if subject.mask is not None:
        mask = load_volume(subject.mask, "mask")
        check_same_geometry(image, mask)
    image, label = _canonical(image), _canonical(label)
    if mask is not None:
        return image, label, _canonical(mask), None
    # Computed on the canonical volume: the TOF method fills holes slice by slice along the axial axis.
    data, used = brain_mask(image.data, image.spacing, mask_method)
    return image, label, Volume(data, image.affine, None), used


def _canonical(volume: Volume) -> Volume:
    """``volume`` in the canonical axial orientation (the same object when it already is)."""
    data, affine, how = to_canonical(volume.data, volume.affine)
    if how.is_identity:
        return volume
    return Volume(np.ascontiguousarray(data), affine, volume.path)


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
        ``"train"``, ``"val"``, ``"test"`` -> subject ids (disjoint). Site B: ``"train"`` is the
        fine-tuning pool and ``"val"`` (``profile.data.site_b_n_val`` subjects) chooses the
        fine-tuned weights.
    seed
        Seed of the split and the patch sampling.
    info
        Everything else ``dataset.json`` records (profile, settings, sizes, per-subject facts).
    from_cache
        Whether the last :func:`~tofmra_utils.data.prepare.prepare_dataset` call found a matching cache.
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
    def evaluate_in_brain_mask(self) -> bool:
        """Whether whole-volume evaluation counts only voxels inside the brain mask.

        True for user data (real heads: their labels also cover neck and scalp vessels that
        the study's brain-masked data never held); False for the phantom, whose labels lie
        inside its brain and whose results stay as they were.
        """
        return self.info.get("source", {}).get("kind", "user data") != "phantom"

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
        """The patch set of ``"train"`` or ``"val"`` (site B: ``"train"`` is the pool; ``"val"`` selects fine-tuned weights)."""
        return PatchSet.load(self.patch_file(split))

    def load_subject(self, subject_id: str) -> tuple[Volume, Volume, Volume]:
        """Image, label and brain mask of a subject (validated, same geometry; see :func:`load_subject_volumes`)."""
        if subject_id not in self.subjects:
            raise KeyError(f"subject {subject_id!r} is not part of site {self.site}")
        image, label, mask, _ = load_subject_volumes(self.subjects[subject_id])
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
        computed = sorted({si["mask_method"] for si in info["subject_info"].values() if si.get("mask_computed") and "mask_method" in si})
        if computed:
            shares = [si["mask_fraction"] for si in info["subject_info"].values() if "mask_fraction" in si]
            lines.insert(-1, f"  brain masks computed ({', '.join(computed)}): {100 * min(shares):.0f}-{100 * max(shares):.0f}% of the volume")
        reoriented = {si["orientation"] for si in info["subject_info"].values() if "orientation" in si}
        if reoriented:
            lines.insert(-1, f"  reoriented to canonical axial (RAS): {', '.join(sorted(reoriented))}")
        by_warning: dict[str, list[str]] = {}
        for sid, si in info["subject_info"].items():
            for warning in si.get("warnings", []):
                by_warning.setdefault(warning, []).append(sid)
        for warning, ids in by_warning.items():
            who = ", ".join(ids) if len(ids) <= 3 else f"{len(ids)} subjects ({', '.join(ids[:2])}, ...)"
            lines.insert(-1, f"  warning: {warning} [{who}]")
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
