"""Time the metrics on a realistic, sparse vessel-like mask pair of 512 x 512 x 100 voxels.

Usage: ``python benchmarks/bench_metrics.py [--repeat 3] [--medpy] [--others]``

``--medpy`` also times medpy's ``hd95`` (the reference our values equal to 1e-6) and the whole
``tofmra evaluate`` process on the pair written as gzipped NIfTI files (reading, DSC and both
95HDs, interpreter start included) and prints the ratio. ``--others`` times DeepMind's
surface-distance (``compute_robust_hausdorff`` at 95, surface-element weighted, so its value
differs) and MONAI's ``compute_hausdorff_distance`` (percentile 95) in the same run; both come
with ``pip install -e ".[bench]"``.

The truth is a set of tortuous tubes (radius 1-3 voxels, about 1 % of the volume, spread over
the whole field of view like brain vessels, so the union bounding box is nearly the whole
volume); the prediction is the truth shifted by one voxel in places, with a few missed branches
and scattered false-positive blobs. Prints seconds per call (best of ``--repeat``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tofmra_utils.metrics import dice, evaluate_masks, hd95_mm, hd95_study

SHAPE = (512, 512, 100)
SPACING = (0.47, 0.47, 0.8)  # IXI TOF-MRA-like voxel size in mm


def _ball_offsets(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    grid = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    return grid[(grid**2).sum(1) <= radius**2 + 0.5]


def _stamp(mask: np.ndarray, centres: np.ndarray, radius: int) -> None:
    pts = (np.round(centres).astype(np.int64)[:, None, :] + _ball_offsets(radius)[None]).reshape(-1, 3)
    pts = pts[np.all((pts >= 0) & (pts < np.array(mask.shape)), axis=1)]
    mask[pts[:, 0], pts[:, 1], pts[:, 2]] = True


def vessel_like_pair(seed: int = 0, n_tubes: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A (pred, truth) pair of bool (512, 512, 100) masks, see the module docstring."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(SHAPE, bool)
    pred = np.zeros(SHAPE, bool)
    for k in range(n_tubes):
        start = rng.uniform((60, 60, 10), (450, 450, 90))
        steps = rng.normal(0, 1, (700, 3)).cumsum(0) * 0.05 + rng.normal(0, 1, 3)  # smooth, tortuous direction
        steps /= np.linalg.norm(steps, axis=1, keepdims=True)
        path = start + np.cumsum(steps * np.array([1.0, 1.0, 0.3]), axis=0)
        radius = int(rng.integers(1, 4))
        _stamp(truth, path, radius)
        if k % 10 == 9:
            continue  # a missed branch
        shift = np.array([1, 0, 0]) if k % 3 == 0 else np.zeros(3)
        _stamp(pred, path + shift, radius)
    for c in rng.uniform((0, 0, 0), SHAPE, (200, 3)):  # false-positive specks
        _stamp(pred, c[None], 1)
    return pred, truth


def _best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _evaluate_process_seconds(pred: np.ndarray, truth: np.ndarray, repeat: int) -> float:
    """Best wall time of a whole ``tofmra evaluate`` process on the pair saved as .nii.gz."""
    import nibabel as nib

    with tempfile.TemporaryDirectory() as tmp:
        affine = np.diag([*SPACING, 1.0])
        paths = {}
        for name, mask in (("pred", pred), ("truth", truth)):
            paths[name] = Path(tmp) / f"{name}.nii.gz"
            nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(paths[name]))
        cmd = [sys.executable, "-m", "tofmra_utils.cli", "evaluate", "--pred", str(paths["pred"]), "--truth", str(paths["truth"])]
        return _best_of(lambda: subprocess.run(cmd, check=True, capture_output=True), repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--medpy", action="store_true", help="also time medpy.metric.binary.hd95 and the whole evaluate process")
    ap.add_argument("--others", action="store_true", help="also time DeepMind surface-distance and MONAI (bench extra)")
    a = ap.parse_args()
    pred, truth = vessel_like_pair()
    print(f"shape {SHAPE}, truth {truth.mean():.2%} of voxels, pred {pred.mean():.2%}, dice {dice(pred, truth):.3f}")
    rows = {
        "dice": lambda: dice(pred, truth),
        "hd95_mm": lambda: hd95_mm(pred, truth, SPACING),
        "hd95_study": lambda: hd95_study(pred, truth),
        "evaluate_masks": lambda: evaluate_masks(pred, truth, SPACING),
    }
    values = {"hd95_mm": hd95_mm(pred, truth, SPACING)}
    if a.medpy:
        from medpy.metric.binary import hd95 as medpy_hd95  # GPL: benchmark/test use only

        rows["medpy hd95"] = lambda: medpy_hd95(pred, truth, SPACING)
        values["medpy hd95"] = medpy_hd95(pred, truth, SPACING)
    if a.others:
        rows.update(_other_libraries(pred, truth, values))
    seconds = {name: _best_of(fn, a.repeat) for name, fn in rows.items()}
    if a.medpy:
        seconds["tofmra evaluate (process)"] = _evaluate_process_seconds(pred, truth, a.repeat)
    for name, sec in seconds.items():
        ratio = f"   medpy hd95 / this = {seconds['medpy hd95'] / sec:5.1f}x" if "medpy hd95" in seconds else ""
        print(f"{name:28s} {sec:8.3f} s{ratio}")
    print("95HD values (mm):", {k: round(float(v), 4) for k, v in values.items()})
    print("values:", {k: round(v, 4) for k, v in evaluate_masks(pred, truth, SPACING).items()})


def _other_libraries(pred: np.ndarray, truth: np.ndarray, values: dict) -> dict:
    rows = {}
    try:
        import surface_distance as deepmind  # noqa: PLC0415

        def deepmind_hd95() -> float:
            return deepmind.compute_robust_hausdorff(deepmind.compute_surface_distances(truth, pred, SPACING), 95)

        rows["deepmind robust_hausdorff"] = deepmind_hd95
        values["deepmind robust_hausdorff"] = deepmind_hd95()
    except ImportError:
        print("surface-distance not installed (pip install -e '.[bench]'): skipped")
    try:
        import torch
        from monai.metrics import compute_hausdorff_distance

        p_t = torch.from_numpy(pred)[None, None]
        t_t = torch.from_numpy(truth)[None, None]

        def monai_hd95() -> float:
            return float(compute_hausdorff_distance(p_t, t_t, percentile=95, spacing=list(SPACING))[0, 0])

        rows["monai hausdorff p95"] = monai_hd95
        values["monai hausdorff p95"] = monai_hd95()
    except ImportError:
        print("monai not installed (pip install -e '.[bench]'): skipped")
    return rows


if __name__ == "__main__":
    main()
