"""Time whole-volume U-net inference on a 512 x 512 x 100 volume (IXI TOF-MRA size).

Usage: ``python benchmarks/bench_infer.py [--profile course] [--patch N] [--slices Z] [--repeat 1] [--threads N]``

The U-net has the profile's architecture (course: base width 16, 4 poolings) with random
weights (speed does not depend on the weights); the image is noise and the brain mask an
ellipsoid filling most of the field of view, so the tiles cover a realistic brain bounding box.
Prints seconds per volume for the study's tiling and for the blended sliding window (overlap
0.5), on the CPU and, when present, on CUDA. ``--slices`` times fewer slices for a quick look
(the time grows linearly with the number of slices holding brain).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tofmra_utils.profiles import get_profile
from tofmra_utils.unet.infer import predict_volume, tile_plan
from tofmra_utils.unet.model import UNet


def ellipsoid_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """An ellipsoid covering about 85 % of each axis: a brain-like mask."""
    grids = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    return (sum((g / 0.85) ** 2 for g in grids) <= 1.0).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="course")
    ap.add_argument("--patch", type=int, default=None, help="tile size (default: the profile's patch size)")
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--batch", type=int, default=None, help="tiles per forward pass (default: profile)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    prof = get_profile(a.profile)
    patch = a.patch or prof.data.patch_size
    batch = a.batch or prof.unet.inference_batch
    shape = (512, 512, a.slices)
    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, shape).astype(np.float32)
    mask = ellipsoid_mask(shape)
    torch.manual_seed(0)
    model = UNet(1, prof.unet.base_width, prof.unet.depth, prof.unet.dropout).eval()
    info = {"norm_mean": 0.0, "norm_std": 1.0}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"volume {shape}, brain {mask.mean():.0%} of voxels, U-net base {prof.unet.base_width} depth "
          f"{prof.unet.depth}, tile {patch} px, batch {batch}, torch threads {torch.get_num_threads()}")
    for mode in ("tiles", "sliding"):
        _, xs, ys, zs = tile_plan(mask, patch, mode, 0.5)
        print(f"  {mode}: grid {len(xs)} x {len(ys)} per slice, {len(zs)} slices")
        for dev in devices:
            model.to(dev)
            predict_volume(model, info, image[..., :2], mask[..., :2], patch, mode=mode, batch_size=batch)  # warm-up
            best = float("inf")
            for _ in range(a.repeat):
                if dev == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                prob = predict_volume(model, info, image, mask, patch, mode=mode, batch_size=batch)
                if dev == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            assert prob.shape == shape
            print(f"    {dev:5s} {best:8.2f} s per volume ({best / len(zs) * 1000:.0f} ms per slice)")


if __name__ == "__main__":
    main()
