"""Figures the notebooks share. Every function returns the matplotlib Figure.

Figures are small (dpi set by :func:`tofmra_utils.setup_notebook`) so executed notebooks stay
light enough to commit to a book build.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .io import atomic_path

__all__ = [
    "save_figure",
    "overlay_rgb",
    "patch_grid",
    "mip_pair",
    "intensity_histograms",
    "loss_curves",
    "pipeline_diagram",
]

#: Colour of vessel labels in overlays (RGB, 0..1).
VESSEL_RGB = (1.0, 0.15, 0.1)


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save ``fig`` as PNG atomically; returns the path."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def overlay_rgb(image: np.ndarray, label: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
    """Grey image (any range) with the label drawn on top in red.

    Parameters
    ----------
    image
        (H, W) intensities; scaled to [0, 1] by its own min/max.
    label
        (H, W) 0/1 mask or ``None``.

    Returns
    -------
    (H, W, 3) float RGB array.
    """
    img = np.asarray(image, dtype=np.float32)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    rgb = np.repeat(img[..., None], 3, axis=-1)
    if label is not None:
        m = np.asarray(label) > 0
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(VESSEL_RGB)
    return rgb


def patch_grid(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    ncols: int = 8,
    title: str | None = None,
    show_labels: str = "overlay",
) -> Figure:
    """A grid of patches.

    Parameters
    ----------
    images
        (N, H, W) patches (any range; each is scaled on its own).
    labels
        (N, H, W) 0/1 labels or ``None``.
    show_labels
        ``"overlay"`` draws labels in red on the images; ``"below"`` shows each label under its
        image (two rows per row of patches), which makes image/label agreement easy to judge.
    """
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    below = labels is not None and show_labels == "below"
    rows = nrows * (2 if below else 1)
    fig, axes = plt.subplots(rows, ncols, figsize=(1.3 * ncols, 1.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, ncols)
        if below:
            axes[2 * r, c].imshow(overlay_rgb(images[i]), interpolation="nearest")
            axes[2 * r + 1, c].imshow(labels[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            lab = None if labels is None else labels[i]
            axes[r, c].imshow(overlay_rgb(images[i], lab), interpolation="nearest")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def mip_pair(image: np.ndarray, label: np.ndarray, axis: int = 2, title: str | None = None) -> Figure:
    """Maximum-intensity projections of an image volume and its label side by side.

    Parameters
    ----------
    image, label
        (X, Y, Z) volumes.
    axis
        Projection axis: 2 = axial (the classic TOF-MRA view from above), 1 = coronal, 0 = sagittal.
    """
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    axes[0].imshow(np.max(image, axis=axis).T, cmap="gray", origin="lower")
    axes[0].set_title("image MIP")
    axes[1].imshow(np.max(label, axis=axis).T, cmap="gray", origin="lower", vmin=0, vmax=1)
    axes[1].set_title("label MIP")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def intensity_histograms(
    sets: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 50, title: str | None = None
) -> Figure:
    """Intensity histograms inside and outside vessels, one line per data set.

    Parameters
    ----------
    sets
        name -> (images, labels) with images in [-1, 1] and labels 0/1, any matching shape.
    """
    fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharex=True)
    edges = np.linspace(-1, 1, bins + 1)
    for name, (img, lab) in sets.items():
        lab = np.asarray(lab) > 0
        for ax, sel, where in ((axes[0], lab, "inside vessels"), (axes[1], ~lab, "outside vessels")):
            vals = np.asarray(img)[sel]
            if vals.size:
                ax.hist(vals, bins=edges, density=True, histtype="step", label=name)
            ax.set_title(where)
    axes[0].set_xlabel("intensity")
    axes[1].set_xlabel("intensity")
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def loss_curves(steps: Sequence[float], curves: dict[str, Sequence[float]], title: str | None = None, smooth: int = 1) -> Figure:
    """Training curves (one line per named series) against the step count.

    ``smooth`` > 1 draws a running mean over that many points (raw curve faint behind it).
    """
    fig, ax = plt.subplots(figsize=(6, 3))
    x = np.asarray(steps, dtype=float)
    for name, ys in curves.items():
        y = np.asarray(ys, dtype=float)
        if smooth > 1 and len(y) > smooth:
            kernel = np.ones(smooth) / smooth
            line = ax.plot(x, y, alpha=0.25)[0]
            ax.plot(x[smooth - 1 :], np.convolve(y, kernel, mode="valid"), color=line.get_color(), label=name)
        else:
            ax.plot(x, y, label=name)
    ax.set_xlabel("step")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def pipeline_diagram() -> Figure:
    """The study's pipeline as a flow chart, each box labelled with the notebook that does it."""
    steps = [
        ("01", "TOF-MRA volumes\n(phantom or NIfTI)", "#d9e8f5"),
        ("01", "2D patches\nimage + label", "#d9e8f5"),
        ("02-04", "three GANs:\nDCGAN, WGAN-GP,\nWGAN-GP-SN", "#f8e0c8"),
        ("02-04", "synthetic\nimage + label pairs", "#f8e0c8"),
        ("05", "U-net trained on\nreal vs synthetic", "#dcefd8"),
        ("05", "test volumes:\nDSC, 95HD", "#dcefd8"),
        ("06", "transfer learning\nto site B", "#eadcf2"),
    ]
    fig, ax = plt.subplots(figsize=(11, 2.3))
    ax.set_xlim(0, len(steps))
    ax.set_ylim(0, 1)
    ax.axis("off")
    for i, (nb, text, colour) in enumerate(steps):
        ax.add_patch(plt.Rectangle((i + 0.06, 0.22), 0.88, 0.56, facecolor=colour, edgecolor="0.3"))
        ax.text(i + 0.5, 0.5, text, ha="center", va="center", fontsize=8.5)
        ax.text(i + 0.5, 0.08, f"notebook {nb}", ha="center", va="center", fontsize=8, color="0.35")
        if i + 1 < len(steps):
            ax.annotate("", xy=(i + 1.06, 0.5), xytext=(i + 0.94, 0.5), arrowprops={"arrowstyle": "->", "color": "0.3"})
    ax.annotate("", xy=(4.5, 0.8), xytext=(1.5, 0.8), arrowprops={"arrowstyle": "->", "color": "0.55", "ls": "--", "connectionstyle": "arc3,rad=-0.25"})
    ax.text(3.0, 0.99, "real patches: the baseline U-net", ha="center", fontsize=8, color="0.4")
    fig.tight_layout()
    return fig
