"""``tofmra run --dry-run``: a few real steps of every stage at a profile's shapes, and what the
full stages would cost on this device -- a projection, labelled as one.

Per stage the dry run builds the real networks and optimizers of the profile, runs the real step
functions (:func:`~tofmra_utils.gan.step.gan_step`, :func:`~tofmra_utils.unet.step.unet_step`,
the phantom, the U-net's forward pass on inference tiles) a few times and reports

``step_s``
    Seconds of one step at the measured batch (the fastest timed repeat; the first call, which
    allocates optimizer state and warms caches, is not timed when more than one is run: on CUDA.
    A CPU times a single call per measurement, so it includes those first-call costs).
``full_batch_step_s``
    One step at the profile's batch size. On CUDA the dry run measures at that batch. On a CPU a
    paper-size batch would take minutes per step, so it measures at a small batch and scales
    the time linearly with the batch (per-step fixed costs such as the optimizer update are
    scaled too, so the projection errs high).
``steps``
    What the full stage runs: generator steps of a GAN (``epochs`` over the real patches, with
    its ``n_critic`` critic steps each, timed as one step with one critic step plus the extra
    critic steps measured apart), optimizer steps of the four U-nets, phantom volumes, inference
    tiles of the test volumes, and the transfer sweep's steps and test volumes.
``projected_s``
    ``full_batch_step_s * steps``: the projected wall time of the full stage.
``peak_mb``
    Peak memory while the stage ran: on CUDA ``torch.cuda.max_memory_allocated``; on a CPU the
    process's resident-set high-water mark (``VmHWM``, reset before each stage where Linux allows
    it, else the high-water mark since the process started; the column ``memory`` says which).

On CUDA the steps run with the speed-ups switched on for training (``TOFMRA_CUDA_BF16``,
``TOFMRA_CUDA_CHANNELS_LAST``, :class:`~tofmra_utils.cuda_speedups.CudaSpeedups`), so two dry runs,
with and without them, say what they are worth in time and memory.

The stages omit what costs little beside them (sample grids, checkpoints, validation passes,
metrics). The numbers are the device's under its load at the time: a projection, not a measurement
of the full run.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .profiles import GAN_NAMES, Profile
from .cuda_speedups import cuda_speedups

__all__ = ["StageProjection", "dry_run", "projection_table", "format_projection", "CPU_BATCH"]

#: Batch measured on a CPU (scaled linearly to the profile's batch).
CPU_BATCH = 2


@dataclass
class StageProjection:
    """One row of the dry run (see the module docstring for the columns)."""

    stage: str
    unit: str
    measured_batch: int
    full_batch: int
    step_s: float
    full_batch_step_s: float
    steps: int
    projected_s: float
    peak_mb: float
    memory: str


class _Peak:
    """Peak memory of a block: CUDA allocator peak, or the process's resident high-water mark."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "CUDA max allocated"
        self.mb = math.nan

    def __enter__(self) -> _Peak:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.kind = "CPU peak RSS" if _reset_rss_peak() else "CPU peak RSS since start"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mb = _rss_peak_mb()


def _reset_rss_peak() -> bool:
    """Reset the process's ``VmHWM`` (Linux: write 5 to ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_peak_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Seconds of the fastest call of ``fn`` after an untimed first call (one timed call if ``repeats == 1``)."""
    def once() -> float:
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    if repeats <= 1:
        return once()
    once()
    return min(once() for _ in range(repeats - 1))


def _batch(full: int, device: torch.device, cpu_batch: int) -> int:
    return full if device.type == "cuda" else max(1, min(full, cpu_batch))


# ----------------------------------------------------------------------------- stages
def _data_stage(profile: Profile, device: torch.device) -> tuple[StageProjection, np.ndarray]:
    from .phantom.assemble import make_phantom

    d = profile.data
    with _Peak(torch.device("cpu")) as peak:
        started = time.perf_counter()
        volume = make_phantom("A", profile.seed, d.volume_shape)
        seconds = time.perf_counter() - started
    n = d.site_a_subjects + d.site_b_subjects
    row = StageProjection("data", "phantom volume (site B counted at site A's cost)", 1, 1, seconds, seconds, n,
                          seconds * n, peak.mb, peak.kind)
    return row, np.asarray(volume.mask)


def _gan_stage(name: str, profile: Profile, device: torch.device, repeats: int, cpu_batch: int) -> StageProjection:
    from .gan.step import gan_step
    from .gan.train import _Gan, total_generator_steps

    settings = profile.gan.variants[name]
    n_real = profile.data.n_train * profile.data.patches_per_subject
    batch = _batch(settings.batch_size, device, cpu_batch)
    size = profile.data.patch_size
    with _Peak(device) as peak:
        gan = _Gan.create(name, profile, n_real, batch, profile.seed, device)
        real = (torch.rand(batch, 2, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)

        speed = cuda_speedups(device)
        real = speed.layout(real)

        def step(n_critic: int) -> Callable[[], Any]:
            def run() -> Any:
                with speed.autocast(device):  # as train_gan steps (bf16 only on CUDA when switched on)
                    return gan_step(gan.generator, gan.critic, gan.opt_g, gan.opt_d, gan.loss, lambda: real, gan.noise,
                                    n_critic, rng=gan.noise_rng)
            return run

        critic = 0.0
        if settings.n_critic > 1:
            # The extra critic steps of a WGAN: one more critic step, measured as the difference. The
            # two-critic step runs first, so a single cold call's start-up cost lands on the critic (errs high).
            two = _timed(step(2), repeats, device)
            one = _timed(step(1), repeats, device)
            critic = max(0.0, two - one)
        else:
            one = _timed(step(1), repeats, device)
    measured = one + (settings.n_critic - 1) * critic
    full = measured * settings.batch_size / batch
    steps = total_generator_steps(n_real, settings.batch_size, settings.epochs, settings.min_steps)
    return StageProjection(f"gan {name}", f"generator step ({settings.n_critic} critic step(s))", batch,
                           settings.batch_size, measured, full, steps, full * steps, peak.mb, peak.kind)


def _generation_stage(profile: Profile, device: torch.device, repeats: int, cpu_batch: int) -> StageProjection:
    from .gan.models import build_generator

    name = GAN_NAMES[0]
    batch = _batch(500, device, cpu_batch)
    with _Peak(device) as peak:
        generator = build_generator(name, profile).to(device)
        generator.train(profile.gan.generate_mode == "train")
        z = torch.randn(batch, profile.gan.variants[name].z_dim, generator=torch.Generator().manual_seed(0)).to(device)

        @torch.no_grad()
        def forward() -> Any:
            return generator(z)

        seconds = _timed(forward, repeats, device)
    per_pair = seconds / batch
    n = profile.gan.n_synthetic * len(GAN_NAMES)
    return StageProjection("generation", "synthetic pair (3 GANs)", batch, batch, seconds, per_pair, n, per_pair * n,
                           peak.mb, peak.kind)


def _unet_parts(profile: Profile, device: torch.device) -> tuple[Any, Any]:
    from .unet.model import UNet

    cfg = profile.unet
    torch.manual_seed(profile.seed)
    model = UNet(1, cfg.base_width, cfg.depth, cfg.dropout, cfg.weight_init, cfg.dropout_placement).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=cfg.lr)


def _unet_step_fn(profile: Profile, device: torch.device, batch: int) -> Callable[[], Any]:
    from .unet.augment import augment_batch
    from .unet.step import unet_step

    cfg = profile.unet
    model, optimizer = _unet_parts(profile, device)
    model.train()
    size = profile.data.patch_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=g).to(device)
    y = (torch.rand(batch, 1, size, size, generator=g) < 0.05).float().to(device)

    speed = cuda_speedups(device)
    speed.layout(model)

    def step() -> Any:
        xb, yb = augment_batch(x, y, profile.seed, 0) if cfg.augment else (x, y)
        with speed.autocast(device):  # as train_unet steps
            return unet_step(model, optimizer, speed.layout(xb), yb, max_grad_norm=cfg.max_grad_norm, loss=cfg.loss)

    return step


def _unet_stage(profile: Profile, device: torch.device, repeats: int, cpu_batch: int) -> StageProjection:
    from .unet.train import plan_steps

    cfg = profile.unet
    batch = _batch(cfg.batch_size, device, cpu_batch)
    with _Peak(device) as peak:
        seconds = _timed(_unet_step_fn(profile, device, batch), repeats, device)
    full = seconds * cfg.batch_size / batch
    n_real = profile.data.n_train * profile.data.patches_per_subject
    steps = plan_steps(n_real, cfg, cfg.batch_size, None) * (1 + len(GAN_NAMES))
    return StageProjection("unet training", "optimizer step (4 U-nets)", batch, cfg.batch_size, seconds, full, steps,
                           full * steps, peak.mb, peak.kind)


def _inference_tile_seconds(profile: Profile, device: torch.device, repeats: int, cpu_batch: int) -> tuple[float, int, float, str]:
    """(seconds per tile, measured batch, peak MB, memory kind) of the U-net's forward pass on tiles."""
    model, _ = _unet_parts(profile, device)
    model.eval()
    batch = _batch(profile.unet.inference_batch, device, cpu_batch)
    size = profile.data.patch_size
    x = torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    with _Peak(device) as peak:
        @torch.no_grad()
        def forward() -> Any:
            return model(x)

        seconds = _timed(forward, repeats, device)
    return seconds / batch, batch, peak.mb, peak.kind


def _tiles_per_volume(mask: np.ndarray, patch_size: int, mode: str) -> int:
    from .unet.infer import tile_plan

    _, xs, ys, zs = tile_plan(mask, patch_size, mode)
    return len(xs) * len(ys) * len(zs)


def _transfer_steps(profile: Profile) -> tuple[int, int]:
    """(optimizer steps, fine-tuned models evaluated) of the profile's transfer sweep."""
    from .transfer.plan import plan_runs

    runs = plan_runs(profile.transfer.arms, profile.transfer.finetunes, profile.transfer.n_subjects,
                     profile.transfer.seeds)
    return sum(profile.transfer.steps_for(r.n_subjects) for r in runs), len(runs)


def dry_run(profile: Profile, device: Any = None, repeats: int | None = None, cpu_batch: int = CPU_BATCH,
            log: Callable[[str], None] = print) -> list[StageProjection]:
    """A few steps of every stage at the profile's shapes; one :class:`StageProjection` per stage.

    Parameters
    ----------
    profile
        Shapes and schedules (``paper``: the study's).
    device
        Default: CUDA when present, else CPU.
    repeats
        Calls per measurement (the first untimed when more than one); default 3 on CUDA, 1 on a CPU (a
        paper-size GAN step takes minutes there; one cold call includes first-call costs and errs high).
    cpu_batch
        Batch measured on a CPU (:data:`CPU_BATCH`), scaled linearly to the profile's.
    log
        Gets one line per stage as it finishes.
    """
    from .seeding import default_device

    device = torch.device(device) if device is not None else default_device()
    repeats = repeats if repeats is not None else (3 if device.type == "cuda" else 1)
    rows: list[StageProjection] = []

    def add(row: StageProjection) -> None:
        rows.append(row)
        log(f"  {row.stage}: {row.step_s:.3g} s per step at batch {row.measured_batch}, projected "
            f"{_duration(row.projected_s)} for {row.steps} steps")

    data_row, mask = _data_stage(profile, device)
    add(data_row)
    for name in GAN_NAMES:
        add(_gan_stage(name, profile, device, repeats, cpu_batch))
    add(_generation_stage(profile, device, repeats, cpu_batch))
    unet_row = _unet_stage(profile, device, repeats, cpu_batch)
    add(unet_row)
    per_tile, batch, peak_mb, kind = _inference_tile_seconds(profile, device, repeats, cpu_batch)
    # Notebook 05: every inference candidate on the validation volumes (the choice), then the test volumes
    # with the chosen inference (at most a sliding window's tiles) and the study's tiles beside it.
    # A whole slice costs about as much as the non-overlapping tiles covering it.
    from .unet.inference_choice import INFERENCE_CANDIDATES

    def tiles_of(mode: str) -> int:
        return _tiles_per_volume(mask, profile.data.patch_size, "tiles" if mode == "slice" else mode)

    models = 1 + len(GAN_NAMES)
    choice_tiles = sum(tiles_of(m) for m, _ in INFERENCE_CANDIDATES) * profile.data.n_val * models
    test_tiles = (tiles_of("sliding") + tiles_of("tiles")) * profile.data.n_test * models
    total = choice_tiles + test_tiles
    add(StageProjection("unet inference", f"tile ({choice_tiles} choosing the inference on validation volumes, "
                        f"{test_tiles} on test volumes)", batch, profile.unet.inference_batch, per_tile * batch,
                        per_tile, total, per_tile * total, peak_mb, kind))
    tiles = tiles_of(profile.transfer.eval_mode)
    steps, runs = _transfer_steps(profile)
    step_full = unet_row.step_s * profile.transfer.batch_size / unet_row.measured_batch
    eval_tiles = runs * profile.data.site_b_n_test * tiles
    add(StageProjection("transfer", f"optimizer step ({runs} runs), then {eval_tiles} inference tiles",
                        unet_row.measured_batch, profile.transfer.batch_size, unet_row.step_s, step_full, steps,
                        step_full * steps + per_tile * eval_tiles, max(unet_row.peak_mb, peak_mb), kind))
    return rows


def projection_table(rows: list[StageProjection]) -> Any:
    """The rows as a pandas DataFrame (columns: the fields of :class:`StageProjection`)."""
    import pandas as pd

    return pd.DataFrame([asdict(r) for r in rows])


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_projection(rows: list[StageProjection], profile: Profile, device: torch.device, seconds: float) -> str:
    """The table ``tofmra run --dry-run`` prints (markdown), labelled as a projection."""
    lines = [
        f"Dry run of profile {profile.name!r} on {_device_name(device)} ({seconds:.0f} s). PROJECTION: the full "
        "stages were not run; their time is the measured step time x the stage's steps"
        + (", the step measured at a small batch and scaled linearly to the profile's batch." if device.type != "cuda"
           else "."),
        "",
        "| stage | step | measured batch | step (s) | step at full batch (s) | steps | projected time | peak memory (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.stage} | {r.unit} | {r.measured_batch} | {r.step_s:.3g} | {r.full_batch_step_s:.3g} | "
                     f"{r.steps} | {_duration(r.projected_s)} | {r.peak_mb:.0f} ({r.memory}) |")
    total = sum(r.projected_s for r in rows)
    lines += ["", f"Projected total: {_duration(total)} on this device, one stage after the other."]
    return "\n".join(lines)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    import os

    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
