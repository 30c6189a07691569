"""Whole-volume inference: the study's slice-wise tiling, a sliding window, whole slices, files and evaluation.

The U-net sees 2D axial patches during training, so a volume is segmented slice by slice:

``mode="tiles"`` (the study)
    Per axial slice, non-overlapping ``patch_size`` tiles cover the brain mask's in-plane
    bounding box, grown to a multiple of the tile (centred on the box, shifted to stay inside
    the volume; the volume is padded only when it is smaller than that grid).
``mode="sliding"``
    Overlapping tiles (stride ``patch_size * (1 - overlap)``, evenly spread so the last tile ends
    at the box's edge) blended with a Gaussian weight (sigma = tile / 8, as in nnU-Net) so tile
    borders, where the U-net sees least context, count least.
``mode="slice"``
    One fully convolutional pass over the brain's bounding box of each slice (grown to a multiple
    of ``2**depth``): no tiles, no tile borders, every voxel sees all the context the U-net's
    receptive field holds. Possible only with ``scaling="volume"``, where a voxel's input value
    does not depend on which tile it lies in.

Two input scalings (:data:`SCALINGS`):

``scaling="per_tile"`` (this project's default)
    Each tile is normalized exactly like a training patch: min-max to [-1, 1] on its own
    (:func:`tofmra_utils.conventions.normalize_patch`), then z-scored with the training set's mean
    and standard deviation stored in the checkpoint's ``info``.
``scaling="volume"`` (the study's)
    One linear map for the whole volume (:func:`scale_volume`: the brain's intensity range to
    [-1, 1]), then the same z-score; tiles are cut from the scaled volume as they are. The study
    z-scored raw tiles with the training statistics; our U-nets train on per-patch scaled patches
    (the GANs' scale), so the volume is first brought to that [-1, 1] range, once, for all tiles.

Tiles without any brain voxel are skipped; the probability outside the brain mask is 0. Tiles
(or slices) go through the network in batches, so memory stays bounded for any volume size, and
through :class:`~tofmra_utils.unet.inference_net.InferenceUNet`: the U-net's own function,
computed with fewer memory passes (``benchmarks/bench_infer.py`` times it beside MONAI).
Which mode and scaling to use is chosen on validation volumes
(:mod:`tofmra_utils.unet.inference_choice`), never on test volumes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..conventions import normalize_patch, zscore
from ..io import DataError, check_same_geometry, load_volume, save_volume
from .inference_net import InferenceUNet
from .model import UNet, check_patch_size
from .train import load_unet

__all__ = [
    "predict_volume", "segment_file", "evaluate_subjects", "predict_subject", "tile_plan", "scale_volume",
    "brain_edge", "check_inference", "MODES", "SCALINGS", "VOLUME_PERCENTILES", "EDGE_WIDTH",
]

#: Inference modes (see the module docstring).
MODES: tuple[str, ...] = ("tiles", "sliding", "slice")
#: Input scalings (see the module docstring): per tile (this project's) or one for the volume (the study's).
SCALINGS: tuple[str, ...] = ("per_tile", "volume")
#: Percentiles of the brain's intensities that :func:`scale_volume` maps to -1 and 1. The top one
#: is below 100 so that a few hot voxels (a flow artefact, a bright sinus) do not squeeze every
#: vessel into the dark half of the range.
VOLUME_PERCENTILES: tuple[float, float] = (0.0, 99.9)
#: In-plane width (voxels) of the brain mask's rim in which false positives count as "at the brain edge".
EDGE_WIDTH = 2


def check_inference(mode: str, scaling: str) -> None:
    """Raise ``ValueError`` for an unknown mode or scaling, or whole slices without volume scaling."""
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}: choose one of {', '.join(MODES)}")
    if scaling not in SCALINGS:
        raise ValueError(f"unknown input scaling {scaling!r}: choose one of {', '.join(SCALINGS)}")
    if mode == "slice" and scaling != "volume":
        raise ValueError("mode 'slice' needs scaling 'volume': per-tile scaling depends on the tile, and a "
                         "whole-slice pass has no tiles")


def scale_volume(image: np.ndarray, brain: np.ndarray | None = None,
                 percentiles: tuple[float, float] = VOLUME_PERCENTILES) -> np.ndarray:
    """One linear map for the whole volume: the brain's intensity range to [-1, 1] (clipped).

    Parameters
    ----------
    image
        (X, Y, Z) intensities, raw scanner units.
    brain
        (X, Y, Z) brain mask; ``None``: every voxel.
    percentiles
        Brain-intensity percentiles mapped to -1 and 1 (:data:`VOLUME_PERCENTILES`).

    Returns
    -------
    (X, Y, Z) float32 in [-1, 1]; a volume without contrast in the brain maps to -1 (as
    :func:`~tofmra_utils.conventions.normalize_patch` maps a constant patch).
    """
    image = np.asarray(image, np.float32)
    values = image if brain is None else image[np.asarray(brain, bool)]
    if values.size == 0:
        return np.full(image.shape, -1.0, np.float32)
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if hi <= lo:
        return np.full(image.shape, -1.0, np.float32)
    out = (image - lo) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    return np.clip(out, -1.0, 1.0, out=out)


def brain_edge(brain: np.ndarray, width: int = EDGE_WIDTH) -> np.ndarray:
    """(X, Y, Z) bool: brain voxels within ``width`` voxels (in-plane, 4-connected steps) of the mask's border.

    The rim where a tile at the edge of the brain's bounding box holds little brain: per-tile
    min-max scaling stretches it as if it were a vessel.
    """
    from scipy import ndimage

    b = np.asarray(brain, bool)
    if width < 1 or not b.any():
        return np.zeros(b.shape, bool)
    cross = np.zeros((3, 3, 3), bool)
    cross[1, 1, 1] = cross[0, 1, 1] = cross[2, 1, 1] = cross[1, 0, 1] = cross[1, 2, 1] = True  # in-plane only
    inner = ndimage.binary_erosion(b, structure=cross, iterations=width, border_value=0)
    return b & ~inner


# ----------------------------------------------------------------------------- planning
def _axis_plan(lo: int, hi: int, dim: int, tile: int, mode: str, overlap: float) -> tuple[int, int, list[int]]:
    """Tile starts along one in-plane axis.

    Parameters
    ----------
    lo, hi
        Brain bounding box ``[lo, hi)`` along the axis.
    dim
        Volume size along the axis.

    Returns
    -------
    pad_before, pad_after, starts
        Padding of the volume along the axis and tile starts in padded coordinates.
    """
    extent = hi - lo
    if mode == "tiles":
        length = math.ceil(extent / tile) * tile
    else:
        length = max(extent, tile)
    if length > dim:  # volume smaller than the tile grid: pad symmetrically, grid covers all
        pad_before = (length - dim) // 2
        pad_after = length - dim - pad_before
        start = 0
    else:  # centre the grid on the box and keep it inside the volume
        pad_before = pad_after = 0
        start = min(max((lo + hi - length) // 2, 0), dim - length)
    if mode == "tiles":
        starts = list(range(start, start + length, tile))
    else:
        stride = max(1, int(round(tile * (1.0 - overlap))))
        n = math.ceil((length - tile) / stride) + 1
        starts = sorted({start + int(round(v)) for v in np.linspace(0, length - tile, n)})
    return pad_before, pad_after, starts


def tile_plan(
    mask: np.ndarray, patch_size: int, mode: str = "tiles", overlap: float = 0.5
) -> tuple[tuple[tuple[int, int], tuple[int, int]], list[int], list[int], list[int]]:
    """Padding and tile positions for a brain mask (X, Y, Z).

    Returns
    -------
    pads, x_starts, y_starts, z_slices
        ``pads`` = ((x_before, x_after), (y_before, y_after)); starts are in padded coordinates;
        ``z_slices`` are the slices holding brain voxels.
    """
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "slice":  # one "tile" per slice: the bounding box, grown to a multiple of patch_size
        mode = "tiles"
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    m = np.asarray(mask, bool)
    if not m.any():
        return ((0, 0), (0, 0)), [], [], []
    xs, ys, zs = (np.flatnonzero(m.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3))
    bx, ax, x_starts = _axis_plan(int(xs[0]), int(xs[-1]) + 1, m.shape[0], patch_size, mode, overlap)
    by, ay, y_starts = _axis_plan(int(ys[0]), int(ys[-1]) + 1, m.shape[1], patch_size, mode, overlap)
    return ((bx, ax), (by, ay)), x_starts, y_starts, [int(z) for z in zs]


def _gaussian_weight(tile: int, sigma_fraction: float = 0.125) -> np.ndarray:
    """(tile, tile) Gaussian centred on the tile, max 1, no zeros (every pixel keeps a weight)."""
    c = (tile - 1) / 2.0
    g = np.exp(-0.5 * ((np.arange(tile) - c) / (tile * sigma_fraction)) ** 2)
    w = np.outer(g, g)
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


# ----------------------------------------------------------------------------- prediction
#: What predicts a batch: (B, 1, H, W) float32 tensor (on the CPU) -> (B, 1, H, W) probabilities.
Net = Callable[[torch.Tensor], torch.Tensor]


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def predict_volume(
    model: UNet,
    info: dict[str, Any],
    image: np.ndarray,
    mask: np.ndarray | None,
    patch_size: int,
    mode: str = "tiles",
    overlap: float = 0.5,
    batch_size: int = 256,
    device: Any = None,
    scaling: str = "per_tile",
) -> np.ndarray:
    """Vessel probability of every voxel of a volume.

    Parameters
    ----------
    model, info
        From :func:`~tofmra_utils.unet.train.load_unet` (``info`` supplies ``norm_mean`` and
        ``norm_std``).
    image
        (X, Y, Z) intensities, raw scanner units (any range); z is the axial slice axis.
    mask
        (X, Y, Z) brain mask (0/1); ``None`` treats the whole volume as brain.
    patch_size
        Tile side in pixels; a multiple of ``2**depth`` (use the training patch size,
        ``info["patch_size"]``: the per-tile min-max scaling depends on it). Unused by ``"slice"``.
    mode
        ``"tiles"`` (the study), ``"sliding"`` (overlapping, Gaussian-blended) or ``"slice"``
        (whole slices, fully convolutional; needs ``scaling="volume"``).
    overlap
        Fraction of a tile shared by neighbours in sliding mode (ignored otherwise).
    batch_size
        Tiles per forward pass (whole slices: as many slices as hold about that many tiles' pixels).
    device
        Where to run the model (default: where its weights are). The model is moved there.
    scaling
        ``"per_tile"`` (this project's) or ``"volume"`` (the study's); see the module docstring.

    Returns
    -------
    (X, Y, Z) float32 probabilities in [0, 1], exactly 0 outside the mask.
    """
    check_inference(mode, scaling)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"expected an (X, Y, Z) volume, got shape {image.shape}")
    brain = np.ones(image.shape, bool) if mask is None else np.asarray(mask) > 0
    if brain.shape != image.shape:
        raise ValueError(f"mask shape {brain.shape} does not match image shape {image.shape}")
    if mode != "slice":
        check_patch_size(patch_size, model.depth)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model)
    model = model.to(device).eval()
    net: Net = InferenceUNet(model, device) if isinstance(model, UNet) else (lambda x: model(x.to(device)))
    return _predict(net, model.depth, info, image, brain, patch_size, mode, overlap, batch_size, scaling)


def _predict(
    net: Net, depth: int, info: dict[str, Any], image: np.ndarray, brain: np.ndarray, patch_size: int, mode: str,
    overlap: float, batch_size: int, scaling: str,
) -> np.ndarray:
    """:func:`predict_volume` after its checks: plan, scale, predict, crop."""
    mean, std = float(info["norm_mean"]), float(info["norm_std"])
    t = 2**depth if mode == "slice" else patch_size
    (pads_x, pads_y), x_starts, y_starts, z_slices = tile_plan(brain, t, mode, overlap)
    prob = np.zeros(image.shape, np.float32)
    if not z_slices:
        return prob
    if scaling == "volume":  # one map for the whole volume, before any tile is cut
        image = zscore(scale_volume(image, brain), mean, std)
    pad = (pads_x, pads_y, (0, 0))
    # Padding (only for volumes smaller than the tile grid) repeats the edge: no artificial step
    # edge for the per-tile min-max scaling to stretch.
    img = np.pad(image, pad, mode="edge")
    x0, y0 = pads_x[0], pads_y[0]
    if mode == "slice":
        out = _predict_slices(net, img, x_starts[0], x_starts[-1] + t, y_starts[0], y_starts[-1] + t, z_slices,
                              max(1, batch_size * patch_size**2))
    else:
        out = _predict_tiles(net, img, np.pad(brain, pad, mode="constant"), x_starts, y_starts, z_slices, t,
                             mode, batch_size, None if scaling == "volume" else (mean, std))
    prob = out[x0 : x0 + image.shape[0], y0 : y0 + image.shape[1], :]
    prob = np.where(brain, prob, 0.0).astype(np.float32)
    return np.clip(prob, 0.0, 1.0)


def _forward(net: Net, batch: np.ndarray) -> np.ndarray:
    """(B, H, W) float32 inputs -> (B, H, W) float32 probabilities."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).unsqueeze(1)
    return net(x)[:, 0].float().contiguous().cpu().numpy()


def _predict_tiles(
    net: Net, img: np.ndarray, brn: np.ndarray, x_starts: list[int], y_starts: list[int], z_slices: list[int],
    t: int, mode: str, batch_size: int, per_tile: tuple[float, float] | None,
) -> np.ndarray:
    """Tiled prediction of a padded volume; ``per_tile`` = (mean, std) scales each tile on its own."""
    acc = np.zeros(img.shape, np.float32)
    weight_sum = np.zeros(img.shape, np.float32)
    w = np.ones((t, t), np.float32) if mode == "tiles" else _gaussian_weight(t)
    positions = [(x, y, z) for z in z_slices for x in x_starts for y in y_starts if brn[x : x + t, y : y + t, z].any()]
    for i in range(0, len(positions), batch_size):
        batch = positions[i : i + batch_size]
        tiles = np.stack([img[x : x + t, y : y + t, z] for x, y, z in batch])
        if per_tile is not None:
            tiles = zscore(normalize_patch(tiles), *per_tile)
        for (x, y, z), p in zip(batch, _forward(net, tiles)):
            acc[x : x + t, y : y + t, z] += p * w
            weight_sum[x : x + t, y : y + t, z] += w
    covered = weight_sum > 0
    acc[covered] /= weight_sum[covered]
    return acc


def _predict_slices(
    net: Net, img: np.ndarray, x_lo: int, x_hi: int, y_lo: int, y_hi: int, z_slices: list[int],
    pixels_per_batch: int,
) -> np.ndarray:
    """Whole-slice prediction of the box ``[x_lo, x_hi) x [y_lo, y_hi)`` of every slice in ``z_slices``."""
    out = np.zeros(img.shape, np.float32)
    per_batch = max(1, pixels_per_batch // ((x_hi - x_lo) * (y_hi - y_lo)))
    for i in range(0, len(z_slices), per_batch):
        zs = z_slices[i : i + per_batch]
        box = np.moveaxis(img[x_lo:x_hi, y_lo:y_hi, zs], -1, 0)
        out[x_lo:x_hi, y_lo:y_hi, zs] = np.moveaxis(_forward(net, box), 0, -1)
    return out


# ----------------------------------------------------------------------------- files
def segment_file(
    model_path: str | os.PathLike[str],
    image_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str] | None = None,
    mode: str = "tiles",
    overlap: float = 0.5,
    threshold: float = 0.5,
    batch_size: int = 256,
    save_probability: bool = False,
    brain_mask: str = "auto",
    reorient: bool = False,
    scaling: str = "per_tile",
) -> Path:
    """Segment one NIfTI volume and write the result with the input's geometry.

    Parameters
    ----------
    model_path
        U-net checkpoint (``best.pt``) written by :func:`~tofmra_utils.unet.train.train_unet`.
    image_path
        TOF-MRA volume (``.nii`` / ``.nii.gz``), axial slices along the third axis.
    out_path
        Output NIfTI; written atomically with the image's affine and header (units, descriptions).
    mask_path
        Brain mask with the image's geometry; computed by ``brain_mask`` when not given.
    brain_mask
        Method of the computed mask (:func:`tofmra_utils.data.brainmask.brain_mask`; ``"auto"``:
        the TOF method for whole heads, the intensity threshold for skull-stripped volumes).
    reorient
        Predict on the canonical axial (RAS) orientation the training patches were cut in
        (:func:`~tofmra_utils.data.orientation.to_canonical`), then write the result back in the
        input's own voxel order and affine (``tofmra segment`` does; off by default here so a
        caller's arrays map one to one).
    mode, overlap, batch_size, scaling
        See :func:`predict_volume`.
    threshold
        Probability at or above which a voxel is vessel (study: 0.5).
    save_probability
        Write the float32 probability map instead of the uint8 0/1 mask.

    Raises
    ------
    DataError
        Unreadable image/mask/checkpoint, or a mask whose geometry differs from the image's.
    """
    import nibabel as nib

    from ..data.brainmask import brain_mask as compute_mask
    from ..data.orientation import from_canonical, to_canonical

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    check_inference(mode, scaling)
    model, info = load_unet(model_path)
    image = load_volume(image_path, "image")
    if mask_path is not None:
        mask_vol = load_volume(mask_path, "mask")
        check_same_geometry(image, mask_vol)
        mask = mask_vol.data
    else:
        mask = None
    data, affine, how = to_canonical(image.data, image.affine) if reorient else (image.data, image.affine, None)
    if mask is None:
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        mask = np.asarray(compute_mask(data, tuple(float(v) for v in spacing), brain_mask)[0]).astype(np.uint8)
    elif how is not None:
        mask = to_canonical(mask, image.affine)[0]
    prob = predict_volume(model, info, data, mask, int(info["patch_size"]), mode=mode, overlap=overlap,
                          batch_size=batch_size, scaling=scaling)
    if how is not None:
        prob = from_canonical(prob, how)
    out = prob if save_probability else (prob >= threshold).astype(np.uint8)
    header = nib.load(str(image_path)).header.copy()
    header.set_data_dtype(out.dtype)
    header.set_slope_inter(None, None)  # the source's intensity scaling must not rescale a label
    return save_volume(out_path, out, image.affine, header=header)


# ----------------------------------------------------------------------------- evaluation
def predict_subject(
    model: UNet, info: dict[str, Any], dataset: Any, subject_id: str, mode: str = "tiles", overlap: float = 0.5,
    device: Any = None, batch_size: int = 256, scaling: str = "per_tile",
) -> tuple[Any, Any, Any, np.ndarray]:
    """Image, label and mask :class:`~tofmra_utils.io.Volume` of a subject and the predicted probabilities."""
    image, label, mask = dataset.load_subject(subject_id)
    prob = predict_volume(model, info, image.data, mask.data, int(info["patch_size"]), mode=mode, overlap=overlap,
                          batch_size=batch_size, device=device, scaling=scaling)
    return image, label, mask, prob


#: Seed of the EvaluateSegmentation emulation in :func:`evaluate_subjects` (the tool seeds with the clock).
TOOL_SEED = 0


def evaluate_subjects(
    model: UNet,
    info: dict[str, Any],
    dataset: Any,
    split: str = "test",
    mode: str = "tiles",
    threshold: float = 0.5,
    device: Any = None,
    overlap: float = 0.5,
    batch_size: int = 256,
    scaling: str = "per_tile",
) -> pd.DataFrame:
    """Whole-volume DSC and 95HD of every subject of a split.

    Parameters
    ----------
    dataset
        A :class:`tofmra_utils.data.SiteDataset`.
    split
        Which subjects (``"test"`` for the study's table; ``"val"`` to choose the inference).
    mode, overlap, batch_size, scaling
        See :func:`predict_volume`.

    Returns
    -------
    DataFrame
        One row per subject: ``subject``, ``dsc``, ``hd95_mm`` (mm, medpy definition),
        ``hd95_study`` (voxels, the study's quantile over mismatching voxels computed exactly: a
        lower bound of the tool's value) and ``hd95_tool`` (voxels, the EvaluateSegmentation
        tool's randomized search replayed with seed 0,
        :func:`~tofmra_utils.metrics.hd_quantile_tool_emulation`: what stands beside the study's
        numbers); see :mod:`tofmra_utils.metrics` for empty masks (NaN distances);
        ``fp_brain_edge`` and ``fp_interior``: false-positive voxels within :data:`EDGE_WIDTH`
        voxels of the brain mask's border (:func:`brain_edge`) and deeper inside the brain (the
        prediction is 0 outside the mask).
        ``attrs["evaluated_in"]`` says where: ``"brain mask"`` for data sets whose
        ``evaluate_in_brain_mask`` is true (user data: real heads, whose labels also cover neck
        and scalp vessels; prediction and label are both cut to the brain mask, as the study's
        brain-masked data were), else ``"whole volume"`` (the phantom).
    """
    from ..metrics import evaluate_masks, hd_quantile_tool_emulation

    subjects = dataset.subjects_in(split)
    if not subjects:
        raise DataError(getattr(dataset, "root", None), f"split {split!r} has no subjects to evaluate")
    in_brain = bool(getattr(dataset, "evaluate_in_brain_mask", False))
    rows = []
    for subject in subjects:
        image, label, mask, prob = predict_subject(model, info, dataset, subject.id, mode=mode, overlap=overlap,
                                                   device=device, batch_size=batch_size, scaling=scaling)
        pred = prob >= threshold
        truth = label.data
        brain = mask.data > 0
        if in_brain:  # real heads: labelled neck and scalp vessels lie outside what the study evaluated
            truth, pred = truth * brain, pred & brain
        scores = evaluate_masks(pred, truth, image.spacing)
        false_pos = pred & ~(truth > 0)
        edge = brain_edge(brain)
        n_edge, n_brain = int(np.count_nonzero(false_pos & edge)), int(np.count_nonzero(false_pos & brain))
        rows.append({"subject": subject.id, **{k: float(scores[k]) for k in ("dsc", "hd95_mm", "hd95_study")},
                     "hd95_tool": float(hd_quantile_tool_emulation(pred, truth > 0, seed=TOOL_SEED)),
                     "fp_brain_edge": n_edge, "fp_interior": n_brain - n_edge})
    table = pd.DataFrame(rows, columns=["subject", "dsc", "hd95_mm", "hd95_study", "hd95_tool", "fp_brain_edge",
                                        "fp_interior"])
    table.attrs["evaluated_in"] = "brain mask" if in_brain else "whole volume"
    return table
