"""Real versus synthetic: simple statistics a student can read.

None of these is a full measure of GAN quality (the follow-up studies use FID and
precision/recall); together they answer the questions that matter for training a segmenter:

``vessel_fraction``
    Fraction of label pixels that are vessel. Too low: the generator forgot labels;
    too high: labels bleed over the patch.
``patches_with_vessel``
    Fraction of patches with at least one vessel pixel (about half the real patches are
    vessel-centred).
``mean_inside``, ``mean_outside``, ``inside_outside_ratio``
    Mean intensity (mapped to [0, 1]) of labelled and unlabelled pixels, and their ratio.
    TOF-MRA vessels are bright, so real data has a ratio well above 1; a synthetic ratio near 1
    means labels do not sit on vessels.
``label_on_bright``
    Fraction of label pixels brighter than the 90th percentile of their own patch: do labels sit
    on the bright structures of *their* image?
``image_std``
    Spread of intensities (a generator that produces flat or saturated images changes it).
``pair_distance``
    Root-mean-square difference between two random patches of the set; far below the real
    value means the samples look alike (mode collapse).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..patchset import PatchSet

__all__ = ["pair_statistics", "compare_sets", "STATISTICS"]

#: Statistics returned by :func:`pair_statistics`, in table order.
STATISTICS = (
    "n",
    "vessel_fraction",
    "patches_with_vessel",
    "mean_inside",
    "mean_outside",
    "inside_outside_ratio",
    "label_on_bright",
    "image_std",
    "pair_distance",
)


def pair_statistics(
    image: np.ndarray, label: np.ndarray, bright_percentile: float = 90.0, seed: int = 0, max_pairs: int = 2000
) -> dict[str, float]:
    """Statistics of one set of image/label patches (see the module docstring).

    Parameters
    ----------
    image
        (N, H, W) intensities in [-1, 1].
    label
        (N, H, W) 0/1 labels.
    bright_percentile
        Per-patch intensity percentile above which a pixel counts as bright.
    seed, max_pairs
        Random pairs for ``pair_distance``.

    Returns
    -------
    dict with the keys of :data:`STATISTICS` (floats; NaN where undefined, e.g. no vessel pixel).
    """
    image = np.asarray(image, dtype=np.float32)
    lab = np.asarray(label) > 0
    if image.ndim != 3 or image.shape != lab.shape:
        raise ValueError(f"image {image.shape} and label {lab.shape} must both be (N, H, W)")
    n = len(image)
    unit = (image + 1.0) / 2.0  # [0, 1]
    inside = float(unit[lab].mean()) if lab.any() else float("nan")
    outside = float(unit[~lab].mean()) if (~lab).any() else float("nan")
    bright = unit > np.percentile(unit, bright_percentile, axis=(1, 2), keepdims=True)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, size=(2, max_pairs)) if n > 1 else (np.zeros(1, int), np.zeros(1, int))
    keep = a != b
    diffs = unit[a[keep]] - unit[b[keep]]
    return {
        "n": float(n),
        "vessel_fraction": float(lab.mean()),
        "patches_with_vessel": float(lab.any(axis=(1, 2)).mean()),
        "mean_inside": inside,
        "mean_outside": outside,
        "inside_outside_ratio": inside / outside if outside > 0 else float("nan"),
        "label_on_bright": float(bright[lab].mean()) if lab.any() else float("nan"),
        "image_std": float(unit.std()),
        "pair_distance": float(np.sqrt((diffs**2).mean())) if diffs.size else float("nan"),
    }


def compare_sets(sets: dict[str, PatchSet | tuple[np.ndarray, np.ndarray]], **kwargs: float) -> pd.DataFrame:
    """One column per named set (e.g. ``{"real": train, "wgan_gp": synthetic}``), one row per statistic.

    Extra keyword arguments go to :func:`pair_statistics`.
    """
    columns = {}
    for name, data in sets.items():
        image, label = (data.image, data.label) if isinstance(data, PatchSet) else data
        columns[name] = pair_statistics(image, label, **kwargs)
    return pd.DataFrame(columns).loc[list(STATISTICS)]
