"""How long a U-net trained from scratch sits on the soft-Dice plateau, per weight initialization.

Usage: ``python benchmarks/bench_unet_init.py [--profile course] [--site B] [--seeds 6] [--steps 100]
[--lr 5e-4] [--run-dir DIR]``

Trains the profile's U-net from scratch on the site's training patches (the transfer sweep's
scratch arm, all pool subjects) with negative soft Dice and Adam, once per seed and per
initialization in :data:`tofmra_utils.unet.model.WEIGHT_INITS`, and prints per run:

* ``escape step``: the first step at which the 5-step running mean of the batch's soft Dice
  exceeds 0.2 (the constant-prediction plateau sits near the vessel fraction, about 0.05);
  ``never`` if it did not happen within ``--steps``;
* the soft Dice of the last 10 steps.

The phantom comes from ``--run-dir`` (default ``runs/<profile>``) when notebook 01 has prepared
it there, else it is made in a temporary folder. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tofmra_utils.data import load_dataset, prepare_phantom_site
from tofmra_utils.profiles import get_profile
from tofmra_utils.runs import RunPaths, default_run_dir
from tofmra_utils.unet.model import WEIGHT_INITS, UNet
from tofmra_utils.conventions import normalization_stats, zscore
from tofmra_utils.unet.step import unet_step

PLATEAU_EXIT = 0.2


def escape_step(dice: np.ndarray, window: int = 5) -> int | None:
    """First step (1-based, at the end of the window) whose running-mean Dice exceeds the plateau."""
    if len(dice) < window:
        return None
    smooth = np.convolve(dice, np.ones(window) / window, "valid")
    above = np.flatnonzero(smooth > PLATEAU_EXIT)
    return int(above[0]) + window if len(above) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="course")
    ap.add_argument("--site", default="B")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--run-dir", default=None)
    a = ap.parse_args()
    profile = get_profile(a.profile)
    run_dir = Path(a.run_dir) if a.run_dir else default_run_dir(profile.name)
    site_root = RunPaths(run_dir).site(a.site).root
    if (site_root / "dataset.json").exists():
        dataset = load_dataset(site_root)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="tofmra-bench-init-"))
        print(f"no prepared site {a.site} under {run_dir}: making the {profile.name} phantom in {tmp}")
        dataset = prepare_phantom_site(RunPaths(tmp).ensure(), profile, a.site)
    patches = dataset.patches("train")
    mean, std = normalization_stats(patches.image)
    x = torch.from_numpy(zscore(patches.image, mean, std)).unsqueeze(1)
    y = torch.from_numpy(patches.label.astype(np.float32)).unsqueeze(1)
    cfg = profile.unet
    print(f"profile {profile.name}, site {a.site}: {len(patches)} patches of {patches.patch_size} px, vessel fraction "
          f"{float(patches.label.mean()):.4f}; U-net width {cfg.base_width}, depth {cfg.depth}; Adam lr {a.lr}, "
          f"batch {cfg.batch_size}, {a.steps} steps; torch threads {torch.get_num_threads()}")
    print(f"{'init':8s} {'seed':>4s} {'escape step':>11s} {'Dice, last 10':>13s} {'s':>6s}")
    for scheme in WEIGHT_INITS:
        escapes = []
        for seed in range(a.seeds):
            torch.manual_seed(seed)
            model = UNet(1, cfg.base_width, cfg.depth, cfg.dropout, weight_init=scheme)
            opt = torch.optim.Adam(model.parameters(), lr=a.lr)
            order = torch.Generator().manual_seed(seed)
            dice = []
            started = time.perf_counter()
            for _ in range(a.steps):
                idx = torch.randint(0, len(x), (cfg.batch_size,), generator=order)
                dice.append(-unet_step(model, opt, x[idx], y[idx]))
            esc = escape_step(np.asarray(dice))
            escapes.append(esc)
            print(f"{scheme:8s} {seed:4d} {esc if esc is not None else 'never':>11} {np.mean(dice[-10:]):13.3f} "
                  f"{time.perf_counter() - started:6.1f}", flush=True)
        done = [e for e in escapes if e is not None]
        print(f"{scheme:8s} escaped in {len(done)} of {len(escapes)} seeds; median escape step "
              f"{np.median(done) if done else float('nan'):.0f}")


if __name__ == "__main__":
    main()
