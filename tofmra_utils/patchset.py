"""The patch-set file format every stage reads and writes.

One ``.npz`` file holds N 2D patches:

========== ================ =========================================================
key        shape / dtype     meaning
========== ================ =========================================================
image      (N, H, W) f32     image channel, min-max scaled to [-1, 1] per patch
label      (N, H, W) u8      vessel label, 0/1
subject    (N,) str          source subject id (``"synthetic"`` for GAN output)
kind       (N,) u8           0 random brain position, 1 vessel-centred, 2 synthetic
centre     (N, 3) i32        (x, y, z) voxel of the patch centre, -1 for synthetic
meta       () str            JSON with provenance (profile, seed, source, ...)
========== ================ =========================================================

Real patches (notebook 01) and synthetic patches (notebooks 02-04) share this format, so the
U-net trainer cannot tell them apart except through ``kind`` and ``meta``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io import DataError, atomic_path

__all__ = ["PatchSet", "KIND_RANDOM", "KIND_VESSEL", "KIND_SYNTHETIC"]

KIND_RANDOM = 0
KIND_VESSEL = 1
KIND_SYNTHETIC = 2


@dataclass
class PatchSet:
    """N image/label patch pairs (see the module docstring for the layout)."""

    image: np.ndarray
    label: np.ndarray
    subject: np.ndarray
    kind: np.ndarray
    centre: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        self.label = np.asarray(self.label, dtype=np.uint8)
        self.subject = np.asarray(self.subject, dtype=str)
        self.kind = np.asarray(self.kind, dtype=np.uint8)
        self.centre = np.asarray(self.centre, dtype=np.int32).reshape(-1, 3)
        self.validate()

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @property
    def patch_size(self) -> int:
        return int(self.image.shape[-1])

    def validate(self, path: str | os.PathLike[str] | None = None) -> None:
        """Raise :class:`DataError` if shapes, dtypes or value ranges are inconsistent."""
        n = self.image.shape[0] if self.image.ndim == 3 else -1
        if self.image.ndim != 3 or self.image.shape[1] != self.image.shape[2]:
            raise DataError(path, f"image must be (N, H, H), got {self.image.shape}")
        if self.label.shape != self.image.shape:
            raise DataError(path, f"label shape {self.label.shape} != image shape {self.image.shape}")
        for name in ("subject", "kind"):
            if getattr(self, name).shape != (n,):
                raise DataError(path, f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        if self.centre.shape != (n, 3):
            raise DataError(path, f"centre must have shape ({n}, 3), got {self.centre.shape}")
        if n and not np.all(np.isfinite(self.image)):
            raise DataError(path, "image patches contain NaN/inf")
        if n and (self.image.min() < -1.0 - 1e-5 or self.image.max() > 1.0 + 1e-5):
            raise DataError(path, f"image values must lie in [-1, 1], found [{self.image.min():g}, {self.image.max():g}]")
        if n and self.label.max() > 1:
            raise DataError(path, "label patches must be 0/1")

    # ------------------------------------------------------------------ construction
    @classmethod
    def synthetic(cls, image: np.ndarray, label: np.ndarray, meta: dict[str, Any] | None = None) -> PatchSet:
        """Wrap GAN output: no subject, no position."""
        n = len(image)
        return cls(
            image=image,
            label=label,
            subject=np.full(n, "synthetic"),
            kind=np.full(n, KIND_SYNTHETIC),
            centre=np.full((n, 3), -1),
            meta=dict(meta or {}),
        )

    @classmethod
    def concatenate(cls, sets: list[PatchSet], meta: dict[str, Any] | None = None) -> PatchSet:
        """Stack several patch sets (same patch size) into one."""
        if not sets:
            raise ValueError("nothing to concatenate")
        return cls(
            image=np.concatenate([s.image for s in sets]),
            label=np.concatenate([s.label for s in sets]),
            subject=np.concatenate([s.subject for s in sets]),
            kind=np.concatenate([s.kind for s in sets]),
            centre=np.concatenate([s.centre for s in sets]),
            meta=dict(meta or sets[0].meta),
        )

    def select(self, index: np.ndarray) -> PatchSet:
        """Subset by integer index or boolean mask."""
        return PatchSet(
            image=self.image[index],
            label=self.label[index],
            subject=self.subject[index],
            kind=self.kind[index],
            centre=self.centre[index],
            meta=dict(self.meta),
        )

    def for_subjects(self, subjects: list[str] | tuple[str, ...]) -> PatchSet:
        """The patches of the given subjects only (for transfer-learning draws)."""
        return self.select(np.isin(self.subject, np.asarray(list(subjects), dtype=str)))

    def at_most_per_subject(self, k: int) -> PatchSet:
        """At most ``k`` patches of each subject, evenly spaced in stored order (deterministic).

        Evenly spaced rather than the first ``k``: a subject's patches are stored by kind
        (vessel-centred, then random), so a prefix would hold one kind only. Subjects with
        ``k`` patches or fewer keep them all; the order of the kept patches is unchanged.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        keep = np.zeros(len(self), dtype=bool)
        for subject in np.unique(self.subject):
            rows = np.flatnonzero(self.subject == subject)
            keep[rows[np.linspace(0, len(rows) - 1, min(k, len(rows))).round().astype(int)]] = True
        return self.select(keep)

    # ------------------------------------------------------------------ statistics
    def vessel_fraction(self) -> float:
        """Fraction of label pixels that are vessel."""
        return float(self.label.mean()) if len(self) else 0.0

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as ``.npz`` atomically."""
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    image=self.image,
                    label=self.label,
                    subject=self.subject,
                    kind=self.kind,
                    centre=self.centre,
                    meta=np.asarray(json.dumps(self.meta, default=str)),
                )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchSet:
        """Read a file written by :meth:`save`, raising :class:`DataError` naming the file."""
        path = Path(path)
        if not path.exists():
            raise DataError(path, "patch set not found (run the notebook or command that makes it first)")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"image", "label", "subject", "kind", "centre", "meta"} - set(z.files)
                if missing:
                    raise DataError(path, f"not a patch set: missing {', '.join(sorted(missing))}")
                arrays = {k: z[k] for k in ("image", "label", "subject", "kind", "centre")}
                meta = json.loads(str(z["meta"]))
        except DataError:
            raise
        except Exception as err:
            raise DataError(path, f"unreadable patch set ({type(err).__name__}: {err})") from None
        ps = cls.__new__(cls)
        ps.image, ps.label = arrays["image"], arrays["label"]
        ps.subject, ps.kind, ps.centre = arrays["subject"], arrays["kind"], arrays["centre"]
        ps.meta = meta
        ps.validate(path)
        return ps
