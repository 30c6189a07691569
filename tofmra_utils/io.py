"""File input/output: atomic writes, validated NIfTI volumes, JSON.

Every writer in the package goes through :func:`atomic_path` so a crash or bad input never
leaves a half-written file behind: data is written to a temporary file in the target folder
and renamed over the target only once it is complete (``os.replace`` is atomic on POSIX).

Every reader of user data raises :class:`DataError` whose message starts with the file's path
and names the problem.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "DataError",
    "Volume",
    "atomic_path",
    "write_json",
    "read_json",
    "load_volume",
    "save_volume",
    "check_same_geometry",
    "nifti_stem",
]

VolumeKind = Literal["image", "label", "mask", "segmentation"]


class DataError(ValueError):
    """Bad input data. The message names the file and the problem."""

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


@dataclass
class Volume:
    """A 3D volume with its geometry.

    Attributes
    ----------
    data
        Voxel array of shape (X, Y, Z); z is the axial slice axis. float32 for images,
        uint8 (0/1) for labels and masks.
    affine
        4x4 voxel-to-world (RAS, mm) matrix.
    path
        Where it was read from (``None`` for volumes made in memory).
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (x, y, z), from the affine's column norms."""
        s = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(s[0]), float(s[1]), float(s[2]))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.data.shape)  # type: ignore[return-value]


def nifti_stem(path: str | os.PathLike[str]) -> str:
    """File name without ``.nii`` / ``.nii.gz``: the subject id of a volume file."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On an exception the temporary file is removed and ``target`` is left untouched.

    Parameters
    ----------
    target
        Final file path. Its folder is created if missing.
    suffix
        Suffix of the temporary file (some writers choose the format from it, e.g. ``.nii.gz``).
        Defaults to the target's full suffix.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".partial{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON, atomically. Returns the path.

    NaN and infinities (an undefined metric, a statistic of an empty set) become ``null``:
    Python's ``json`` would write the non-standard ``NaN`` that other JSON readers reject.
    """
    path = Path(path)
    text = json.dumps(_finite_or_none(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return path


def _finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float (Python or numpy scalar) replaced by ``None``."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        return _finite_or_none(obj.tolist())
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, raising :class:`DataError` naming the file if it is missing or broken."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err})") from None


def load_volume(path: str | os.PathLike[str], kind: VolumeKind = "image") -> Volume:
    """Load and validate a 3D NIfTI volume.

    Parameters
    ----------
    path
        ``.nii`` or ``.nii.gz`` file.
    kind
        ``"image"``: float32, all voxels finite. ``"label"`` / ``"mask"`` / ``"segmentation"``:
        values must be 0 or 1 (returned as uint8); a label must contain at least one vessel voxel,
        a mask at least one brain voxel; a segmentation (a prediction) may be empty.

    Raises
    ------
    DataError
        Missing, unreadable or truncated file; not 3D; NaN/inf voxels; non-binary label or mask;
        empty label or mask. The message starts with the path.
    """
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    try:
        img = nib.load(str(path))
        raw = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises many types for broken files
        raise DataError(path, f"unreadable or truncated NIfTI ({type(err).__name__}: {err})") from None
    if raw.ndim != 3:
        raise DataError(path, f"expected a 3D volume, got {raw.ndim}D with shape {tuple(raw.shape)}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(path, "invalid (singular or non-finite) affine")
    if kind != "image" and np.issubdtype(raw.dtype, np.integer):
        data = raw  # integers are finite; a float copy of a 512 x 512 x 100 mask costs ~0.3 s
    else:
        data = np.asarray(raw, dtype=np.float32)
        if not np.all(np.isfinite(data)):
            n_bad = int((~np.isfinite(data)).sum())
            raise DataError(path, f"{n_bad} NaN/inf voxels")
    if kind in ("label", "mask", "segmentation"):
        if not ((data == 0) | (data == 1)).all():  # np.unique (a sort) only for the error message
            values = np.unique(data)
            shown = ", ".join(f"{v:g}" for v in values[:6])
            raise DataError(path, f"{kind} must be binary (0/1), found values {shown}{'...' if len(values) > 6 else ''}")
        data = data.astype(np.uint8, copy=False)
        if kind != "segmentation" and not data.any():  # a prediction may legally find nothing
            what = "no vessel voxel" if kind == "label" else "empty brain mask"
            raise DataError(path, f"{kind} has {what}")
    return Volume(data=data, affine=affine, path=path)


def save_volume(path: str | os.PathLike[str], data: np.ndarray, affine: np.ndarray, header: Any = None) -> Path:
    """Write a 3D volume as NIfTI (``.nii`` or ``.nii.gz``), atomically.

    The affine is stored as both qform and sform so every reader sees the same geometry; when
    ``header`` (a nibabel header of the source) is given, its units and descriptions are kept.
    """
    import nibabel as nib

    path = Path(path)
    data = np.asarray(data)
    if data.ndim != 3:
        raise DataError(path, f"refusing to write a {data.ndim}D array as a 3D volume")
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64), header=hdr)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
    return path


def check_same_geometry(a: Volume, b: Volume, atol: float = 1e-4) -> None:
    """Raise :class:`DataError` (naming ``b``'s file) unless ``a`` and ``b`` share shape and affine."""
    if a.shape != b.shape:
        raise DataError(b.path, f"shape {b.shape} does not match {a.path}'s shape {a.shape}")
    if not np.allclose(a.affine, b.affine, atol=atol):
        raise DataError(b.path, f"affine does not match {a.path}'s affine")
