"""Time whole-volume U-net inference on 512 x 512 slices (IXI TOF-MRA size), beside MONAI.

Usage: ``python benchmarks/bench_infer.py [--profile course] [--patch N] [--slices Z] [--repeat 1]
[--threads N] [--batch N] [--overlap 0.5] [--checkpoint best.pt] [--whole-head] [--no-monai] [--size 512]``

The U-net has the profile's architecture (course: base width 16, 4 poolings) with random
weights (speed does not depend on the weights; ``--checkpoint`` loads trained ones instead); the
image is noise and the brain mask an ellipsoid filling most of the field of view, so the tiles
cover a realistic brain bounding box. Prints slices per second for every inference of
:mod:`tofmra_utils.unet.infer`: the study's tiles, the blended sliding window (``--overlap``)
and whole slices, each with the scaling it allows, on the CPU and, when present, on CUDA.

With MONAI installed (the ``bench`` extra), MONAI's ``sliding_window_inference`` runs in the same
process on the same model, the same tile size, overlap and Gaussian blending (sigma = tile / 8)
and the same brain bounding box of every slice, with the same input scaling done inside its
predictor; the ratio ``ours / MONAI`` is printed for equal work (the median over repeats in which the two
alternate), and for whole slices (which need
no overlapping tiles at all) against MONAI's sliding window, with how far the probabilities differ.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from tofmra_utils.conventions import zscore
from tofmra_utils.profiles import get_profile
from tofmra_utils.unet.infer import predict_volume, scale_volume, tile_plan
from tofmra_utils.unet.model import UNet
from tofmra_utils.unet.train import load_unet


def ellipsoid_mask(shape: tuple[int, int, int], z_extent: float = 0.85) -> np.ndarray:
    """An ellipsoid covering about 85 % of the in-plane axes: a brain-like mask.

    ``z_extent`` is the half-axis along z in units of the half-field; above 1 every slice holds a
    full-size brain section (a few slices from the middle of a head).
    """
    grids = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    return (sum((g / e) ** 2 for g, e in zip(grids, (0.85, 0.85, z_extent))) <= 1.0).astype(np.uint8)


def best_time(fn: Callable[[], np.ndarray], repeat: int, cuda: bool) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def monai_sliding(model: torch.nn.Module, image: np.ndarray, mask: np.ndarray, tile: int, overlap: float, batch: int,
                  mean: float, std: float, scaling: str, device: str) -> np.ndarray:
    """MONAI's sliding window over the brain bounding box of every slice, same scaling as ours, 0 outside the brain."""
    from monai.inferers import sliding_window_inference

    xs, ys = (np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2)))
    zs = np.flatnonzero(mask.any(axis=(0, 1)))
    x0, x1, y0, y1 = int(xs[0]), int(xs[-1]) + 1, int(ys[0]), int(ys[-1]) + 1
    source = zscore(scale_volume(image, mask), mean, std) if scaling == "volume" else image
    box = torch.from_numpy(np.ascontiguousarray(np.moveaxis(source[x0:x1, y0:y1, zs], -1, 0)))[:, None].to(device)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        if scaling == "per_tile":  # the training patches' rule: min-max to [-1, 1] per tile, then z-score
            lo = x.amin(dim=(-2, -1), keepdim=True)
            span = x.amax(dim=(-2, -1), keepdim=True) - lo
            x = torch.where(span > 0, 2 * (x - lo) / span.clamp_min(1e-12) - 1, torch.full_like(x, -1.0))
            x = (x - mean) / std
        return model(x)

    with torch.inference_mode():
        prob = sliding_window_inference(box, (tile, tile), batch, predictor, overlap=overlap, mode="gaussian",
                                        sigma_scale=0.125, padding_mode="replicate")
    out = np.zeros(image.shape, np.float32)
    out[x0:x1, y0:y1, zs] = np.moveaxis(prob[:, 0].float().cpu().numpy(), 0, -1)
    return np.where(mask > 0, out, 0.0).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="course")
    ap.add_argument("--patch", type=int, default=None, help="tile size (default: the profile's patch size)")
    ap.add_argument("--slices", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--batch", type=int, default=None, help="tiles per forward pass (default: profile)")
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--checkpoint", default=None, help="a trained U-net (best.pt) instead of random weights")
    ap.add_argument("--whole-head", action="store_true",
                    help="an ellipsoid over the slices too (slices near the ends hold little brain)")
    ap.add_argument("--no-monai", action="store_true", help="skip MONAI even when it is installed")
    ap.add_argument("--size", type=int, default=512, help="in-plane size of the slices (IXI: 512)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    prof = get_profile(a.profile)
    if a.checkpoint:
        model, info = load_unet(a.checkpoint, device="cpu")
        patch = a.patch or int(info["patch_size"])
    else:
        torch.manual_seed(0)
        model = UNet(1, prof.unet.base_width, prof.unet.depth, prof.unet.dropout)
        info = {"norm_mean": 0.0, "norm_std": 1.0}
        patch = a.patch or prof.data.patch_size
    model.eval()
    batch = a.batch or prof.unet.inference_batch
    shape = (a.size, a.size, a.slices)
    rng = np.random.default_rng(0)
    image = rng.gamma(4.0, 25.0, shape).astype(np.float32)
    mask = ellipsoid_mask(shape, 0.85 if a.whole_head else 4.0)
    have_monai = False
    if not a.no_monai:
        try:
            import monai  # noqa: F401

            have_monai = True
        except ImportError:
            print("MONAI is not installed (pip install -e '.[bench]'): ours only")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"volume {shape}, brain {mask.mean():.0%} of voxels, U-net base {model.base_width} depth {model.depth} "
          f"({'trained: ' + a.checkpoint if a.checkpoint else 'random weights'}), tile {patch} px, overlap "
          f"{a.overlap}, batch {batch}, torch threads {torch.get_num_threads()}, best of {a.repeat}")
    mean, std = float(info["norm_mean"]), float(info["norm_std"])
    runs = [("tiles", "per_tile"), ("sliding", "per_tile"), ("tiles", "volume"), ("sliding", "volume"), ("slice", "volume")]
    for dev in devices:
        model.to(dev)
        cuda = dev == "cuda"
        print(f"  {dev}")
        ours: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
        for mode, scaling in runs:
            predict_volume(model, info, image[..., :1], mask[..., :1], patch, mode=mode, batch_size=batch,
                           overlap=a.overlap, scaling=scaling)  # warm-up
            t, prob = best_time(lambda: predict_volume(model, info, image, mask, patch, mode=mode, overlap=a.overlap,
                                                       batch_size=batch, scaling=scaling), a.repeat, cuda)
            ours[(mode, scaling)] = (t, prob)
            _, xs, ys, zs = tile_plan(mask, patch, mode if mode != "slice" else "tiles", a.overlap)
            grid = "one pass per slice" if mode == "slice" else f"grid {len(xs)} x {len(ys)}"
            print(f"    ours  {mode:7s} {scaling:8s} {len(zs) / t:6.2f} slices/s  ({t:6.2f} s; {grid})")
        if not have_monai:
            continue
        n = int(mask.any(axis=(0, 1)).sum())
        for scaling in ("per_tile", "volume"):
            monai_sliding(model, image[..., :1], mask[..., :1], patch, a.overlap, batch, mean, std, scaling, dev)
            # Ours and MONAI's alternate, one after the other in each repeat, so a slow spell of a
            # shared machine hits both; the ratio is the median over the repeats' ratios.
            pairs = []
            for _ in range(a.repeat):
                mine_t, mine = best_time(lambda: predict_volume(model, info, image, mask, patch, mode="sliding",
                                                                overlap=a.overlap, batch_size=batch, scaling=scaling),
                                         1, cuda)
                t, prob = best_time(lambda: monai_sliding(model, image, mask, patch, a.overlap, batch, mean, std,
                                                          scaling, dev), 1, cuda)
                pairs.append((mine_t, t))
            ratios = sorted(t / m for m, t in pairs)
            t = min(p[1] for p in pairs)
            diff = float(np.abs(mine - prob)[mask > 0].mean())
            print(f"    MONAI sliding {scaling:8s} {n / t:6.2f} slices/s  ({t:6.2f} s): ours sliding is "
                  f"{float(np.median(ratios)):.2f}x MONAI at equal overlap (median of {len(ratios)} alternating "
                  f"pairs, {ratios[0]:.2f}-{ratios[-1]:.2f}; mean |p ours - p MONAI| {diff:.1e}: the tile positions "
                  "differ a little)")
            if scaling == "volume":
                slice_t, whole = ours[("slice", "volume")]
                differ = float(np.mean((whole >= 0.5) != (mine >= 0.5), where=mask > 0))
                print(f"    whole slices (volume scaling) are {t / slice_t:.2f}x MONAI's sliding window; "
                      f"{differ:.2%} of brain voxels get another 0/1 label than our sliding window at threshold 0.5")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
