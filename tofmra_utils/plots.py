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
    "error_rgb",
    "segmentation_errors",
    "metric_boxplots",
    "save_figure",
    "overlay_rgb",
    "patch_grid",
    "mip_pair",
    "intensity_histograms",
    "loss_curves",
    "sample_grid_timeline",
    "pipeline_diagram",
    "site_comparison",
    "transfer_curves",
]

#: Colour of vessel labels in overlays (RGB, 0..1).
VESSEL_RGB = (1.0, 0.15, 0.1)


def _finish_images(fig: Figure, axes: Sequence, title: str | None) -> Figure:
    """Image panels: no axes, the figure's title, a tight layout."""
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


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
    return _finish_images(fig, axes, title)


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


def sample_grid_timeline(grids: dict[int, str | os.PathLike[str]]) -> Figure:
    """Saved sample-grid PNGs stacked top to bottom, each titled with its generator step.

    Parameters
    ----------
    grids
        Generator step -> PNG of the fixed-noise samples at that step.
    """
    fig, axes = plt.subplots(len(grids), 1, figsize=(8, 2.4 * max(len(grids), 1)), squeeze=False)
    for ax, (step, path) in zip(axes[:, 0], grids.items()):
        ax.imshow(plt.imread(path))
        ax.set_title(f"fixed noise, generator step {step}", fontsize=9)
        ax.axis("off")
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


def site_comparison(
    volumes: dict[str, tuple[np.ndarray, np.ndarray]], spacings: dict[str, Sequence[float]] | None = None,
    title: str | None = None,
) -> Figure:
    """Make the domain shift between acquisition sites visible: one row per site.

    Columns: the axial slice with the most vessel voxels (label in red), the axial
    maximum-intensity projection, and the intensity histogram inside/outside vessels of the
    whole volume (intensities min-max scaled to [0, 1] per volume, so contrast, not
    scanner gain, is compared).

    Parameters
    ----------
    volumes
        site name -> (image (X, Y, Z), label (X, Y, Z) 0/1).
    spacings
        site name -> voxel size in mm, shown in the row title.
    """
    fig, axes = plt.subplots(len(volumes), 3, figsize=(10, 3.2 * len(volumes)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.3]})
    edges = np.linspace(0, 1, 51)
    for row, (name, (image, label)) in zip(axes, volumes.items()):
        img = np.asarray(image, dtype=np.float32)
        lab = np.asarray(label) > 0
        z = int(np.argmax(lab.sum(axis=(0, 1)))) if lab.any() else img.shape[2] // 2
        row[0].imshow(np.transpose(overlay_rgb(img[:, :, z], lab[:, :, z]), (1, 0, 2)), origin="lower")
        size = f", {' x '.join(f'{v:.2g}' for v in spacings[name])} mm" if spacings and name in spacings else ""
        row[0].set_title(f"{name}: slice z={z}{size}", fontsize=9)
        row[1].imshow(np.max(img, axis=2).T, cmap="gray", origin="lower")
        row[1].set_title(f"{name}: axial MIP", fontsize=9)
        for ax in row[:2]:
            ax.axis("off")
        lo, hi = float(img.min()), float(img.max())
        scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        for sel, what in ((lab, "vessel"), (~lab & (img > lo), "background (non-zero)")):
            if sel.any():
                row[2].hist(scaled[sel], bins=edges, density=True, histtype="step", label=what)
        row[2].set_xlabel("intensity (scaled per volume)")
        row[2].legend(fontsize="small")
        row[2].set_title(f"{name}: intensities", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


#: Line style per transfer-learning arm and colour per fine-tuning variant.
_ARM_COLOURS = {"scratch": "0.35", "synthetic": "tab:orange", "real": "tab:blue"}
_FINETUNE_STYLES = {"full": "-", "frozen_encoder": "--"}


def transfer_curves(
    summary, metrics: Sequence[str] = ("dsc", "hd95_mm"), labels: dict[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Metric vs number of site-B training subjects, mean line and ± sd band over seeds per arm.

    Rows with fine-tuning ``"none"`` (``n = 0``: site-A weights applied as they are) are drawn
    as single stars at ``n = 0``.

    Parameters
    ----------
    summary
        :func:`tofmra_utils.transfer.summarize_transfer` output (columns ``arm, finetune,
        n_subjects, <metric>_mean, <metric>_sd``); a NaN sd (one seed) draws no band.
    metrics
        One panel per metric.
    labels
        metric -> axis label.
    """
    labels = {"dsc": "DSC", "hd95_mm": "95HD (mm)", "hd95_study": "95HD (voxels, exact)",
              "hd95_tool": "95HD (voxels, tool emulation)", **(labels or {})}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for (arm, ft), grp in summary.groupby(["arm", "finetune"], sort=False):
            grp = grp.sort_values("n_subjects")
            x = grp["n_subjects"].to_numpy(dtype=float)
            mean = grp[f"{metric}_mean"].to_numpy(dtype=float)
            sd = np.nan_to_num(grp[f"{metric}_sd"].to_numpy(dtype=float))
            colour = _ARM_COLOURS.get(arm)
            if ft == "none":  # n = 0: the site-A weights as they are, one point per arm
                ax.plot(x, mean, linestyle="none", marker="*", ms=10, color=colour, label=f"{arm} (not fine-tuned)")
                continue
            ax.plot(x, mean, _FINETUNE_STYLES.get(ft, "-"), marker="o", ms=4, color=colour, label=f"{arm} ({ft})")
            ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.12, linewidth=0)
        ax.set_xlabel("site-B training subjects")
        ax.set_ylabel(labels.get(metric, metric))
        ax.set_xticks(sorted(summary["n_subjects"].unique()))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


#: Colours of the segmentation error maps: true positives, false positives, false negatives.
ERROR_RGB = {"TP": (1.0, 1.0, 1.0), "FP": (0.95, 0.15, 0.1), "FN": (0.15, 0.45, 1.0)}


def error_rgb(pred: np.ndarray, truth: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """A 2D error map: TP white, FP red, FN blue over a dimmed grey background.

    Parameters
    ----------
    pred, truth
        (H, W) binary maps (a slice, or maximum projections of 3D masks).
    background
        (H, W) intensities drawn dimmed underneath (scaled by their own min/max), or ``None``.

    Returns
    -------
    (H, W, 3) float RGB; where projections mix, errors are drawn over hits (FP on top).
    """
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    if background is None:
        rgb = np.zeros((*p.shape, 3), np.float32)
    else:
        rgb = 0.45 * overlay_rgb(background)
    for name, sel in (("TP", p & t), ("FN", ~p & t), ("FP", p & ~t)):
        rgb[sel] = ERROR_RGB[name]
    return rgb


def segmentation_errors(
    image: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str | None = None, slice_index: int | None = None,
) -> Figure:
    """Prediction vs truth of one volume: image MIP, axial error MIP, and one axial slice's errors.

    Parameters
    ----------
    image, truth, pred
        (X, Y, Z) volumes; ``truth`` and ``pred`` binary. Errors: TP white, FP red, FN blue.
    slice_index
        Axial slice for the third panel (default: the one with most truth vessel voxels).
    """
    img = np.asarray(image, dtype=np.float32)
    t, p = np.asarray(truth) > 0, np.asarray(pred) > 0
    z = slice_index if slice_index is not None else (int(np.argmax(t.sum(axis=(0, 1)))) if t.any() else img.shape[2] // 2)
    # Projected per ray: white where any voxel is a hit, then blue (missed) and red (false)
    # where such a voxel lies on the ray, so errors stay visible over hits.
    mip = np.zeros((*t.shape[:2], 3), np.float32)
    for name, sel in (("TP", p & t), ("FN", ~p & t), ("FP", p & ~t)):
        mip[sel.any(axis=2)] = ERROR_RGB[name]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.9))
    axes[0].imshow(np.max(img, axis=2).T, cmap="gray", origin="lower")
    axes[0].set_title("image MIP (axial)", fontsize=9)
    axes[1].imshow(np.transpose(mip, (1, 0, 2)), origin="lower", interpolation="nearest")
    axes[1].set_title("errors, MIP (TP white, FP red, FN blue)", fontsize=9)
    axes[2].imshow(np.transpose(error_rgb(p[:, :, z], t[:, :, z], img[:, :, z]), (1, 0, 2)), origin="lower",
                   interpolation="nearest")
    axes[2].set_title(f"errors on slice z={z}", fontsize=9)
    return _finish_images(fig, axes, title)


def metric_boxplots(
    table, metrics: Sequence[str] = ("dsc", "hd95_mm"), by: str = "model", labels: dict[str, str] | None = None,
    order: Sequence[str] | None = None, title: str | None = None,
) -> Figure:
    """Box plots of per-patient metrics, one box per group, one panel per metric, points on top.

    Parameters
    ----------
    table
        Long DataFrame with a column ``by`` and one column per metric (one row per patient and group).
    order
        Group order on the x axis (default: order of first appearance).
    """
    labels = {"dsc": "DSC", "hd95_mm": "95HD (mm)", "hd95_study": "95HD (voxels, exact)",
              "hd95_tool": "95HD (voxels, tool emulation)", **(labels or {})}
    groups = list(order) if order is not None else list(dict.fromkeys(table[by]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        data = [table.loc[table[by] == g, metric].dropna().to_numpy(dtype=float) for g in groups]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(groups) + 1), groups, rotation=20)
        for i, values in enumerate(data, start=1):
            jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.plot(i + jitter, values, "o", ms=4, alpha=0.7, color="tab:blue")
        ax.set_ylabel(labels.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def inference_choice(table, title: str | None = None) -> Figure:
    """Validation DSC and false positives of each inference candidate (the chosen one highlighted).

    Parameters
    ----------
    table
        :attr:`~tofmra_utils.unet.inference_choice.InferenceChoice.table`: one row per candidate with
        ``inference``, ``val DSC``, ``val DSC sd``, ``FP at brain edge``, ``FP inside`` and ``chosen``.
    """
    names = [str(v).replace(" window", "").replace(", ", "\n").replace(" scaling", "") for v in table["inference"]]
    x = np.arange(len(table))
    colors = ["tab:orange" if c else "tab:blue" for c in table["chosen"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sd = table["val DSC sd"].fillna(0).to_numpy(dtype=float)
    axes[0].bar(x, table["val DSC"], yerr=sd, color=colors, capsize=3)
    axes[0].set_ylabel("mean validation DSC\n(error bar: sd over U-nets)")
    axes[0].set_ylim(max(0.0, float(table["val DSC"].min() - 2 * sd.max() - 0.05)), None)
    edge, inside = table["FP at brain edge"].to_numpy(dtype=float), table["FP inside"].to_numpy(dtype=float)
    axes[1].bar(x, edge, color="tab:red", label="at the brain's edge")
    axes[1].bar(x, inside, bottom=edge, color="tab:gray", label="deeper inside")
    axes[1].set_ylabel("false-positive voxels per volume")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x, names, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("orange: chosen", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
