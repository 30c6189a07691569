"""Interactive viewers for JupyterLab that degrade to static figures when headless.

Under papermill, nbval or CI (see :func:`tofmra_utils.notebook.is_headless`) no widget is
created, so executed notebooks never wait for a browser and the book shows a picture.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .notebook import is_headless
from .plots import error_rgb, overlay_rgb, patch_grid, sample_grid_timeline

__all__ = ["show", "slice_montage", "slice_viewer", "LiveViewer", "label_threshold_viewer", "label_threshold_montage",
           "sample_grid_scrubber", "threshold_error_viewer", "threshold_error_montage"]


class LiveViewer:
    """An ipywidgets viewer that shows itself once when it is a cell's value.

    ``ipywidgets.interact`` returns the wrapped function, so a cell ending with a viewer also
    printed ``<function ...>`` under the widget. This wraps ``ipywidgets.interactive`` instead:
    displaying the viewer displays the widget and nothing else; calling it draws one frame.
    """

    def __init__(self, widget: Any, draw: Callable[..., None]) -> None:
        self.widget = widget
        self._draw = draw

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self._draw(*args, **kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return f"LiveViewer({self._draw.__name__})"


def show(viewer: Any) -> None:
    """Show a viewer of this module once: a static figure through matplotlib, a widget through IPython.

    A notebook cell ending in ``show(viewer(...))`` shows exactly one figure headless (papermill,
    nbval, the book) and one widget in JupyterLab.
    """
    if isinstance(viewer, Figure):
        plt.show()
        return
    from IPython.display import display

    display(viewer)


def _live(headless: bool | None) -> Any:
    """The ``ipywidgets`` module when a person is watching, else ``None`` (static figures)."""
    if headless if headless is not None else is_headless():
        return None
    try:
        import ipywidgets
    except ImportError:  # pragma: no cover - ipywidgets is a dependency
        return None
    return ipywidgets


def slice_montage(image: np.ndarray, label: np.ndarray | None = None, n: int = 6, title: str | None = None) -> Figure:
    """Static stand-in for :func:`slice_viewer`: ``n`` evenly spaced axial slices.

    Parameters
    ----------
    image, label
        (X, Y, Z) volumes; slices are taken along z.
    """
    z = np.linspace(0, image.shape[2] - 1, n + 2)[1:-1].round().astype(int)
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.2))
    for ax, k in zip(np.atleast_1d(axes), z):
        lab = None if label is None else label[:, :, k].T
        ax.imshow(overlay_rgb(image[:, :, k].T, lab), origin="lower", interpolation="nearest")
        ax.set_title(f"z={k}", fontsize="small")
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def slice_viewer(image: np.ndarray, label: np.ndarray | None = None, title: str | None = None, headless: bool | None = None):
    """Axial slice viewer with a slider and a label-overlay toggle.

    In JupyterLab this returns an ``ipywidgets`` interactive widget; headless (or when ipywidgets
    is unavailable) it draws :func:`slice_montage` and returns that figure instead.
    """
    w = _live(headless)
    if w is None:
        return slice_montage(image, label, title=title)

    def show(z: int, overlay: bool) -> None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        lab = label[:, :, z].T if (label is not None and overlay) else None
        ax.imshow(overlay_rgb(image[:, :, z].T, lab), origin="lower", interpolation="nearest")
        ax.set_title(f"{title + ': ' if title else ''}axial slice z={z}")
        ax.axis("off")
        plt.show()

    return LiveViewer(w.interactive(
        show,
        z=w.IntSlider(value=image.shape[2] // 2, min=0, max=image.shape[2] - 1, description="slice"),
        overlay=w.Checkbox(value=label is not None, description="label"),
    ), show)


def _labels_at(label_channel: np.ndarray, threshold: float) -> np.ndarray:
    """Binary labels from a generator's raw label channel in [-1, 1], by the package's one rule."""
    from .conventions import decode_label

    return np.asarray(decode_label(np.asarray(label_channel, dtype=np.float32), threshold)).astype(np.uint8)


def label_threshold_montage(
    images: np.ndarray, label_channel: np.ndarray, real_fraction: float, thresholds: tuple[float, ...] = (0.2, 0.5, 0.8),
    n: int = 8,
) -> Figure:
    """Static stand-in for :func:`label_threshold_viewer`: the same pairs at a few thresholds, one row each.

    Parameters
    ----------
    images
        (N, P, P) generated images in [-1, 1].
    label_channel
        (N, P, P) the generator's raw label channel in [-1, 1].
    real_fraction
        Vessel fraction of the real training labels, for the titles.
    """
    n = min(n, len(images))
    fig, axes = plt.subplots(len(thresholds), n, figsize=(1.3 * n, 1.45 * len(thresholds)), squeeze=False)
    for row, t in zip(axes, thresholds):
        labels = _labels_at(label_channel, t)
        for ax, img, lab in zip(row, images[:n], labels[:n]):
            ax.imshow(overlay_rgb(img, lab), interpolation="nearest")
            ax.axis("off")
        row[0].set_title(f"threshold {t:.2f}: vessel fraction {labels.mean():.4f} (real {real_fraction:.4f})",
                         fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def label_threshold_viewer(
    images: np.ndarray, label_channel: np.ndarray, real_fraction: float, threshold: float = 0.8,
    headless: bool | None = None,
) -> Any:
    """A slider over the label threshold of generated pairs; headless, :func:`label_threshold_montage`.

    Parameters
    ----------
    images, label_channel
        (N, P, P) generated images and the raw label channel, both in [-1, 1].
    real_fraction
        Vessel fraction of the real training labels (shown beside the synthetic one).
    threshold
        Where the slider starts (the study: 0.8).
    """
    w = _live(headless)
    if w is None:
        return label_threshold_montage(images, label_channel, real_fraction)

    def show(threshold: float) -> None:
        labels = _labels_at(label_channel, threshold)
        patch_grid(images, labels, ncols=8, title=f"label threshold {threshold:.2f}: vessel fraction "
                                                  f"{labels.mean():.4f} (real {real_fraction:.4f})")
        plt.show()

    return LiveViewer(w.interactive(show, threshold=w.FloatSlider(value=threshold, min=0.05, max=0.95, step=0.05,
                                                                  description="threshold")), show)


def sample_grid_scrubber(grids: Mapping[int, str | PathLike[str]], headless: bool | None = None) -> Any:
    """A slider through the fixed-noise sample grids saved during GAN training.

    Headless it returns :func:`~tofmra_utils.plots.sample_grid_timeline` of the first, middle
    and last grids.

    Parameters
    ----------
    grids
        Generator step -> PNG of the samples at that step, in step order.
    """
    steps = list(grids)
    if not steps:
        raise ValueError("no sample grids: the GAN has not saved any yet")
    w = _live(headless)
    if w is None:
        shown = sorted({steps[0], steps[len(steps) // 2], steps[-1]})
        return sample_grid_timeline({k: grids[k] for k in shown})

    def show(index: int) -> None:
        fig, ax = plt.subplots(figsize=(8, 2.6))
        ax.imshow(plt.imread(grids[steps[index]]))
        ax.set_title(f"fixed noise, generator step {steps[index]}", fontsize=9)
        ax.axis("off")
        plt.show()

    return LiveViewer(w.interactive(show, index=w.IntSlider(value=len(steps) - 1, min=0, max=len(steps) - 1,
                                                            description="snapshot")), show)


def threshold_error_montage(
    image: np.ndarray, truth: np.ndarray, prob: np.ndarray, thresholds: tuple[float, ...] = (0.3, 0.5, 0.7),
) -> Figure:
    """Static stand-in for :func:`threshold_error_viewer`: error MIPs at a few probability thresholds.

    Parameters
    ----------
    image, truth, prob
        (X, Y, Z) image, binary truth and vessel probability. Errors: TP white, FP red, FN blue.
    """
    from .metrics import dice

    t = np.asarray(truth) > 0
    background = np.max(np.asarray(image, dtype=np.float32), axis=2)
    fig, axes = plt.subplots(1, len(thresholds), figsize=(3.6 * len(thresholds), 3.7), squeeze=False)
    for ax, thr in zip(axes[0], thresholds):
        pred = np.asarray(prob) >= thr
        rgb = error_rgb(pred.any(axis=2), t.any(axis=2), background)
        ax.imshow(np.transpose(rgb, (1, 0, 2)), origin="lower", interpolation="nearest")
        ax.set_title(f"threshold {thr:.2f}: DSC {dice(pred, t):.3f}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def threshold_error_viewer(
    image: np.ndarray, truth: np.ndarray, prob: np.ndarray, threshold: float = 0.5, headless: bool | None = None,
) -> Any:
    """A slider over the probability threshold of a U-net's error map; headless, :func:`threshold_error_montage`."""
    from .metrics import dice
    from .plots import segmentation_errors

    w = _live(headless)
    if w is None:
        lo, hi = max(threshold - 0.2, 0.05), min(threshold + 0.2, 0.95)
        return threshold_error_montage(image, truth, prob, (lo, threshold, hi))

    def show(threshold: float) -> None:
        pred = np.asarray(prob) >= threshold
        segmentation_errors(image, truth, pred, title=f"threshold {threshold:.2f}: DSC {dice(pred, np.asarray(truth) > 0):.3f}")
        plt.show()

    return LiveViewer(w.interactive(show, threshold=w.FloatSlider(value=threshold, min=0.05, max=0.95, step=0.05,
                                                                  description="threshold")), show)
