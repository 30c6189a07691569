"""The book's worked example of the 95HD variants, computed when the book is built.

``book/metrics.md`` compares the medpy-style 95HD in mm, the study's exact voxel quantile, the
replay of the EvaluateSegmentation tool's randomized search and the maximum distance on one pair
of masks. The numbers come from :func:`worked_example` at build time, never typed by hand.

The pair is vessel-like: tortuous tubes of radius 1-2 voxels spread over the field of view, the
prediction the truth shifted by one voxel in places, with a missed branch and scattered
false-positive specks (the errors a vessel U-net makes). It is small so that the tool's search,
a Python loop over mismatching voxels, takes a few seconds.
"""

from __future__ import annotations

import numpy as np

from .metrics import dice, hd95_mm, hd95_study, hd_quantile_tool_emulation, hd_quantile_voxels

__all__ = ["EXAMPLE_SHAPE", "EXAMPLE_SPACING", "vessel_like_pair", "worked_example", "worked_example_markdown"]

#: Shape (voxels) and spacing (mm, IXI-like) of the worked example.
EXAMPLE_SHAPE = (96, 96, 32)
EXAMPLE_SPACING = (0.47, 0.47, 0.8)


def _stamp(mask: np.ndarray, centres: np.ndarray, radius: int) -> None:
    r = np.arange(-radius, radius + 1)
    offsets = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    offsets = offsets[(offsets**2).sum(1) <= radius**2 + 0.5]
    pts = (np.round(centres).astype(np.int64)[:, None, :] + offsets[None]).reshape(-1, 3)
    pts = pts[np.all((pts >= 0) & (pts < np.array(mask.shape)), axis=1)]
    mask[pts[:, 0], pts[:, 1], pts[:, 2]] = True


def vessel_like_pair(seed: int = 0, n_tubes: int = 10, n_specks: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A (prediction, truth) pair of bool masks of :data:`EXAMPLE_SHAPE` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    shape = np.array(EXAMPLE_SHAPE)
    truth, pred = np.zeros(EXAMPLE_SHAPE, bool), np.zeros(EXAMPLE_SHAPE, bool)
    for k in range(n_tubes):
        start = rng.uniform(0.15 * shape, 0.85 * shape)
        steps = rng.normal(0, 1, (150, 3)).cumsum(0) * 0.05 + rng.normal(0, 1, 3)
        steps /= np.linalg.norm(steps, axis=1, keepdims=True)
        path = start + np.cumsum(steps * np.array([1.0, 1.0, 0.3]), axis=0)
        radius = int(rng.integers(1, 3))
        _stamp(truth, path, radius)
        if k == n_tubes - 1:
            continue  # a missed branch
        _stamp(pred, path + (np.array([1, 0, 0]) if k % 3 == 0 else 0), radius)
    for centre in rng.uniform(0, shape, (n_specks, 3)):
        _stamp(pred, centre[None], 1)
    return pred, truth


def worked_example(seed: int = 0, tool_seeds: tuple[int, ...] = (0, 1)) -> dict[str, float | list[float]]:
    """DSC and every 95HD variant on :func:`vessel_like_pair`.

    Returns
    -------
    dict
        ``dsc``; ``hd95_mm`` (mm); ``hd95_study``, ``hd95_tool`` (one value per tool seed) and
        ``hd_max`` in voxels.
    """
    pred, truth = vessel_like_pair(seed)
    return {
        "dsc": dice(pred, truth),
        "hd95_mm": hd95_mm(pred, truth, EXAMPLE_SPACING),
        "hd95_study": hd95_study(pred, truth),
        "hd95_tool": [hd_quantile_tool_emulation(pred, truth, seed=s) for s in tool_seeds],
        "hd_max": hd_quantile_voxels(pred, truth, quantile=1.0),
    }


def worked_example_markdown(seed: int = 0) -> str:
    """The worked example as the markdown table of ``book/metrics.md``."""
    ex = worked_example(seed)
    shape = " x ".join(str(n) for n in EXAMPLE_SHAPE)
    spacing = " x ".join(f"{s:g}" for s in EXAMPLE_SPACING)
    tool = ", ".join(f"{v:.1f}" for v in ex["hd95_tool"])  # type: ignore[union-attr]
    return "\n".join([
        f"A vessel-like pair of {shape} voxels of {spacing} mm (`tofmra_utils.metrics_example`, computed when",
        f"this book was built), DSC {ex['dsc']:.3f}:",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| `hd95_mm` (medpy definition) | {ex['hd95_mm']:.2f} mm |",
        f"| `hd95_study` (exact mismatch-voxel quantile) | {ex['hd95_study']:.1f} voxels |",
        f"| tool emulation, two seeds | {tool} voxels |",
        f"| Hausdorff distance (maximum) | {ex['hd_max']:.1f} voxels |",
    ])
