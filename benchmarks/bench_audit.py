"""Time notebook 07's privacy audits at a profile's sizes on random patches.

Usage: ``python benchmarks/bench_audit.py [--profile course] [--threads 1] [--features pixels,unet,random]``

Builds a training set (``n_train x patches_per_subject`` patches), a held-out set (``n_val``
subjects) and three synthetic sets (``n_synthetic`` pairs) of random patches at the profile's
patch size, and a U-net of the profile's width for the ``unet`` space, then runs the audit the
way notebook 07 does (every GAN in every feature space, the real embeddings cached per space,
``privacy.max_per_set`` and ``privacy.bootstrap`` from the profile). The white-box attack is left
out (it needs a trained critic; it costs one critic pass over the attacked patches). Prints wall
and CPU seconds per audit and in total: the CPU seconds of one thread are what a lightly loaded
machine's wall time comes close to.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch

from tofmra_utils.patchset import PatchSet
from tofmra_utils.privacy import audit_synthetic
from tofmra_utils.profiles import GAN_NAMES, get_profile
from tofmra_utils.unet.model import UNet


def random_set(n: int, n_subjects: int, size: int, prefix: str, rng: np.random.Generator) -> PatchSet:
    """``n`` random image/label patches of side ``size`` spread over ``n_subjects`` subjects."""
    image = rng.uniform(-1, 1, (n, size, size)).astype(np.float32)
    label = (rng.random((n, size, size)) < 0.03).astype(np.uint8)
    subject = np.array([f"{prefix}{i % max(1, n_subjects)}" for i in range(n)])
    return PatchSet(image, label, subject, np.zeros(n), np.zeros((n, 3)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="course")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--features", default=None, help="comma-separated spaces (default: the profile's)")
    a = parser.parse_args(argv)
    torch.set_num_threads(a.threads)
    p = get_profile(a.profile)
    spaces = a.features.split(",") if a.features else list(p.privacy.feature_spaces)
    rng = np.random.default_rng(0)
    size, per = p.data.patch_size, p.data.patches_per_subject
    train = random_set(p.data.n_train * per, p.data.n_train, size, "T", rng)
    holdout = random_set(p.data.n_val * per, p.data.n_val, size, "H", rng)
    synthetic = {g: random_set(p.gan.n_synthetic, 1, size, "S", rng) for g in GAN_NAMES}
    unet = (UNet(1, p.unet.base_width, p.unet.depth, 0.0).eval(), {"norm_mean": 0.0, "norm_std": 1.0})
    print(f"profile {p.name}: train {len(train)}, held-out {len(holdout)}, synthetic {p.gan.n_synthetic} x "
          f"{len(GAN_NAMES)}, {size} px, max_per_set {p.privacy.max_per_set}, torch threads {a.threads}")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for space in spaces:
        cache: dict = {}
        for gan, syn in synthetic.items():
            wall, cpu = time.perf_counter(), time.process_time()
            audit_synthetic(syn, train, holdout, features=space, unet=unet, seed=0, max_per_set=p.privacy.max_per_set,
                            n_boot=p.privacy.bootstrap, nearest_k=p.privacy.nearest_k, device="cpu", cache=cache)
            print(f"{space:7s} {gan:11s} wall {time.perf_counter() - wall:6.1f} s   cpu {time.process_time() - cpu:6.1f} s",
                  flush=True)
    print(f"total   {len(spaces) * len(synthetic)} audits: wall {time.perf_counter() - wall0:.1f} s, "
          f"cpu {time.process_time() - cpu0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
