"""One canonical axial orientation for volumes of any orientation, and the way back.

Patches are 2D axial slices (the third voxel axis), so a volume stored sagittally, in LPS
(DICOM) order or with an oblique affine must be brought to one orientation before patches are
cut. :func:`to_canonical` reorders and flips the voxel axes (no resampling, no interpolation)
so that they point as close as the affine allows to Right, Anterior and Superior (nibabel's
"closest canonical" RAS): axial slices then run along the third axis, from the feet up.
:func:`from_canonical` undoes it exactly, so a prediction made on the canonical array is
written back in the input's own voxel order and geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Reorientation", "reorientation", "to_canonical", "from_canonical", "axis_codes"]


@dataclass(frozen=True)
class Reorientation:
    """How a volume's voxel axes map to the canonical (RAS) ones.

    Attributes
    ----------
    ornt
        (3, 2) nibabel orientation transform: row i = (target axis, +1/-1 flip) of input axis i.
    input_shape
        (X, Y, Z) voxel shape of the input.
    input_affine
        4x4 voxel-to-world matrix of the input (mm).
    canonical_affine
        4x4 voxel-to-world matrix of the reoriented array; it maps every voxel to the same
        world position as before.
    """

    ornt: np.ndarray
    input_shape: tuple[int, int, int]
    input_affine: np.ndarray
    canonical_affine: np.ndarray

    @property
    def is_identity(self) -> bool:
        """True when the input already is in the canonical orientation (nothing moves)."""
        return bool(np.array_equal(self.ornt, [[0, 1], [1, 1], [2, 1]]))


def axis_codes(affine: np.ndarray) -> str:
    """The closest anatomical direction of each voxel axis, e.g. ``"RAS"``, ``"LPS"``, ``"ASL"``."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def reorientation(affine: np.ndarray, shape: tuple[int, ...]) -> Reorientation:
    """The :class:`Reorientation` of a volume with ``affine`` (4x4) and voxel ``shape`` (X, Y, Z)."""
    import nibabel as nib
    from nibabel import orientations as nio

    affine = np.asarray(affine, dtype=np.float64)
    ornt = nio.io_orientation(affine)
    to_ras = nio.ornt_transform(ornt, nio.axcodes2ornt("RAS"))
    canonical_affine = affine @ nio.inv_ornt_aff(to_ras, tuple(int(s) for s in shape[:3]))
    del nib
    return Reorientation(ornt=to_ras, input_shape=tuple(int(s) for s in shape[:3]), input_affine=affine,
                         canonical_affine=canonical_affine)


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, Reorientation]:
    """Reorder and flip ``data``'s (X, Y, Z) axes to the closest RAS orientation.

    Returns
    -------
    data, affine, how
        The reoriented array (a view when possible; same dtype and values), its 4x4 affine and
        the :class:`Reorientation` that :func:`from_canonical` undoes. A volume already in RAS
        order comes back unchanged (the same array object).
    """
    from nibabel import orientations as nio

    how = reorientation(affine, data.shape)
    if how.is_identity:
        return data, how.canonical_affine, how
    return nio.apply_orientation(data, how.ornt), how.canonical_affine, how


def from_canonical(data: np.ndarray, how: Reorientation) -> np.ndarray:
    """Bring an array in the canonical orientation back to the input's voxel order (exact inverse)."""
    from nibabel import orientations as nio

    if how.is_identity:
        return data
    back = nio.apply_orientation(data, nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.io_orientation(how.input_affine)))
    if back.shape != how.input_shape:
        raise ValueError(f"array of shape {back.shape} after reorientation, expected {how.input_shape}")
    return np.ascontiguousarray(back)
