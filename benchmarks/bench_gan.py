"""Generator steps per second, seconds per step and peak memory of each GAN under a profile.

    python benchmarks/bench_gan.py --profile course --gan wgan_gp_sn --steps 20
    python benchmarks/bench_gan.py --profile paper --gan wgan_gp --steps 10 --device cuda
    python benchmarks/bench_gan.py --profile course --changes     # the cost of each training aid

``--changes`` times each GAN as the study runs it (the profile's sizes with every aid off) and
then with one change at a time (EMA of the weights, DiffAugment, nearest-neighbour upsampling,
a kernel-4 critic, the profile's own settings), so the price of each aid per generator step is
a printed number, not a guess.

A generator step is :func:`tofmra_utils.gan.step.gan_step`, what ``train_gan`` calls per step:
``n_critic`` critic steps (real batch + detached fake batch, gradient penalty for the WGANs) and
one generator step, at the profile's batch size, on random data of the profile's patch size. Prints one line per GAN: seconds per step
(median over the timed steps, after warm-up), the implied time for the profile's full schedule
on ``--n-train`` patches, and peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the
process's peak resident set size, which includes the Python runtime).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import torch

import dataclasses

from tofmra_utils.gan.augment import AugmentedCritic
from tofmra_utils.gan.ema import GeneratorEma
from tofmra_utils.gan.losses import loss_for
from tofmra_utils.gan.models import build_gan
from tofmra_utils.gan.step import gan_step
from tofmra_utils.gan.train import total_generator_steps
from tofmra_utils.profiles import GAN_NAMES, Profile, get_profile


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(profile: Profile, name: str, steps: int, warmup: int, device: torch.device, n_train: int) -> dict:
    torch.manual_seed(0)
    settings = profile.gan.variants[name]
    generator, critic = (m.to(device) for m in build_gan(name, profile))
    loss = loss_for(name, settings)
    betas = (float(settings.betas[0]), float(settings.betas[1]))
    opt_g = torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=betas)
    opt_d = torch.optim.Adam(critic.parameters(), lr=settings.lr, betas=betas)
    b, p = settings.batch_size, profile.data.patch_size
    real = torch.rand(b, 2, p, p, device=device) * 2 - 1
    rng = torch.Generator(device=device).manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    judge = AugmentedCritic(critic, profile.gan.diffaug, torch.Generator().manual_seed(1)) if profile.gan.diffaug else critic
    ema = GeneratorEma(generator, profile.gan.ema_decay) if profile.gan.ema_decay else None

    def one_step() -> None:
        gan_step(generator, judge, opt_g, opt_d, loss, lambda: real,
                 lambda n: torch.randn(n, settings.z_dim, device=device), settings.n_critic, rng=rng)
        if ema is not None:
            ema.update(generator)

    for _ in range(warmup):
        one_step()
    _sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        one_step()
        _sync(device)
        times.append(time.perf_counter() - t)
    per_step = statistics.median(times)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        peak_kind = "cuda max_memory_allocated"
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        peak_kind = "process max RSS"
    schedule = total_generator_steps(n_train, min(b, n_train), settings.epochs, settings.min_steps)
    return {
        "gan": name,
        "s_per_step": per_step,
        "schedule_steps": schedule,
        "schedule_minutes": per_step * schedule / 60,
        "peak_mb": peak_mb,
        "peak_kind": peak_kind,
        "params_g": sum(x.numel() for x in generator.parameters()),
        "params_d": sum(x.numel() for x in critic.parameters()),
    }


#: One change at a time on top of the study's settings: (label, GanConfig fields).
CHANGES: tuple[tuple[str, dict], ...] = (
    ("study settings", {}),
    ("+ EMA of weights", {"ema_decay": 0.999}),
    ("+ DiffAugment", {"diffaug": ("flip", "rot90", "translation", "cutout")}),
    ("+ nearest3 upsampling", {"upsampling": "nearest3"}),
    ("+ kernel-4 critic", {"critic_kernel": 4}),
)
STUDY_AIDS = {"ema_decay": None, "diffaug": (), "upsampling": "transposed5", "critic_kernel": 5}


def _line(label: str, r: dict) -> str:
    return (f"{r['gan']:11s} {label:24s} {1.0 / r['s_per_step']:7.2f} generator steps/s  {r['s_per_step']:.4f} s/step | "
            f"schedule {r['schedule_steps']} steps ~ {r['schedule_minutes']:.1f} min | peak {r['peak_mb']:.0f} MiB "
            f"({r['peak_kind']}) | params G {r['params_g']:,} D {r['params_d']:,}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="course")
    ap.add_argument("--gan", default="all", help="dcgan, wgan_gp, wgan_gp_sn or all")
    ap.add_argument("--steps", type=int, default=10, help="timed generator steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--changes", action="store_true",
                    help="time the study's settings, then each training aid alone, then the profile's own settings")
    ap.add_argument("--n-train", type=int, default=None,
                    help="real training patches for the schedule estimate (default: profile's train subjects x patches)")
    a = ap.parse_args(argv)
    profile = get_profile(a.profile)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if a.threads:
        torch.set_num_threads(a.threads)
    names = GAN_NAMES if a.gan == "all" else (a.gan,)
    n_train = a.n_train or profile.data.n_train * profile.data.patches_per_subject
    print(f"profile {profile.name}, patch {profile.data.patch_size} px, channels {profile.gan.generator_channels}, "
          f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                f" ({torch.get_num_threads()} threads)") + f", schedule on {n_train} patches")
    variants = [("profile settings", profile)]
    if a.changes:
        study = dataclasses.replace(profile, gan=dataclasses.replace(profile.gan, **STUDY_AIDS))
        variants = [(label, dataclasses.replace(study, gan=dataclasses.replace(study.gan, **fields)))
                    for label, fields in CHANGES] + variants
    for name in names:
        for label, prof in variants:
            print(_line(label, bench(prof, name, a.steps, a.warmup, device, n_train)))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
