"""Shared figures and the slice viewer's headless fallback."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from tofmra_utils import plots, widgets
from tofmra_utils.cli import build_parser


def test_overlay_marks_exactly_the_label_pixels():
    image = np.linspace(0, 1, 16).reshape(4, 4)
    label = np.zeros((4, 4), dtype=np.uint8)
    label[1, 2] = 1
    rgb = plots.overlay_rgb(image, label)
    assert rgb.shape == (4, 4, 3)
    changed = np.any(np.abs(rgb - plots.overlay_rgb(image)) > 1e-6, axis=-1)
    assert changed.sum() == 1 and changed[1, 2]


def test_patch_grid_shows_labels_below_when_asked():
    images = np.random.default_rng(0).uniform(-1, 1, (5, 8, 8))
    labels = (images > 0.5).astype(np.uint8)
    fig = plots.patch_grid(images, labels, ncols=3, show_labels="below")
    assert len(fig.axes) == 2 * 2 * 3  # two rows of patches, each with a label row
    assert len(plots.patch_grid(images, labels, ncols=3).axes) == 2 * 3


def test_save_figure_writes_png(tmp_path):
    path = plots.save_figure(plots.pipeline_diagram(), tmp_path / "sub" / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_slice_viewer_is_static_when_headless():
    vol = np.random.default_rng(0).random((10, 10, 8)).astype(np.float32)
    out = widgets.slice_viewer(vol, (vol > 0.9).astype(np.uint8), headless=True)
    assert isinstance(out, Figure) and len(out.axes) == 6


def test_slice_viewer_is_a_widget_in_a_live_session():
    pytest.importorskip("ipywidgets")
    vol = np.random.default_rng(0).random((10, 10, 8)).astype(np.float32)
    out = widgets.slice_viewer(vol, None, headless=False)
    assert not isinstance(out, Figure) and callable(out)  # ipywidgets.interact returns the wrapped function


def test_every_cli_command_has_help():
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse has no public accessor
    assert commands == {"run", "book", "report", "clean", "phantom", "fetch", "prepare", "generate", "segment", "evaluate",
                        "audit", "export", "sweep", "course-kit"}
