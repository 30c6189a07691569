"""Interactive viewers for JupyterLab that degrade to static figures when headless.

Under papermill, nbval or CI (see :func:`tofmra_utils.notebook.is_headless`) no widget is
created, so executed notebooks never wait for a browser and the book shows a picture.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .notebook import is_headless
from .plots import overlay_rgb

__all__ = ["slice_montage", "slice_viewer"]


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
    if headless is None:
        headless = is_headless()
    if not headless:
        try:
            import ipywidgets as w
        except ImportError:  # pragma: no cover - ipywidgets is a dependency
            headless = True
    if headless:
        return slice_montage(image, label, title=title)

    def show(z: int, overlay: bool) -> None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        lab = label[:, :, z].T if (label is not None and overlay) else None
        ax.imshow(overlay_rgb(image[:, :, z].T, lab), origin="lower", interpolation="nearest")
        ax.set_title(f"{title + ': ' if title else ''}axial slice z={z}")
        ax.axis("off")
        plt.show()

    return w.interact(
        show,
        z=w.IntSlider(value=image.shape[2] // 2, min=0, max=image.shape[2] - 1, description="slice"),
        overlay=w.Checkbox(value=label is not None, description="label"),
    )
