"""One training loop for the three GANs; the loss object is the only difference.

Per generator step the critic takes ``n_critic`` steps (1 for DCGAN, 5 for the WGANs), each on
the next real batch and a freshly generated, detached fake batch; then the generator takes one
step. Training length: ``epochs`` passes over the real patches counted in generator steps x
batch, i.e. ``round(epochs * N / batch_size)`` generator steps (the WGAN critics therefore see
each real patch ``n_critic`` times per epoch).

Everything random comes from explicit ``torch.Generator`` objects (data order; noise and
gradient-penalty weights) seeded from one seed, and their states go into the checkpoint with
the models, optimizers, step counter and global RNG state. A run stopped at any checkpoint and
resumed continues bit-exactly on the CPU (``tests/test_gan_train.py`` checks it). The folder is a
:class:`~tofmra_utils.resumable.ResumableUnit`: other settings start afresh, saying what changed.

Files in ``out_dir``::

    run.json               settings, fingerprint, status
    checkpoint.pt          latest state (atomic), loads with weights_only=True
    losses.csv             one row per generator step (step, epoch, d_loss, g_loss, ...)
    samples/step_XXXXXX.png  fixed-noise sample grid (image, label overlaid in red)
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..conventions import decode_label, encode_label
from ..io import DataError, atomic_path
from ..patchset import PatchSet
from ..batches import BatchStream
from ..profiles import GAN_NAMES, GanSettings, Profile
from ..progress import report as report_progress
from ..resumable import ResumableUnit, array_digest
from ..seeding import default_device, get_rng_state, set_determinism, set_rng_state
from ..cuda_speedups import cuda_speedups
from .augment import AugmentedCritic
from .ema import GeneratorEma
from .losses import GanLoss, loss_for
from .step import gan_step
from .models import Generator, build_gan

__all__ = [
    "GanTrainResult",
    "train_gan",
    "gan_tensor",
    "total_generator_steps",
    "load_history",
    "save_sample_grid",
    "save_snapshot",
    "list_snapshots",
    "snapshot_steps",
    "LabelMonitor",
    "sample_mosaic",
    "CHECKPOINT_NAME",
    "N_FIXED_NOISE",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOSSES_NAME = "losses.csv"
SAMPLES_DIR = "samples"
SNAPSHOTS_DIR = "snapshots"
#: Samples in the fixed-noise grid (4 rows of 8).
N_FIXED_NOISE = 32
#: Columns of losses.csv in this order (NaN where a GAN does not have the quantity).
HISTORY_COLUMNS = (
    "step", "epoch", "d_loss", "g_loss", "d_real_prob", "d_fake_prob", "critic_real", "critic_fake", "wasserstein", "gp",
    "g_adv", "feature_matching",
)
CHECKPOINT_FORMAT = "tofmra-gan-1"


@dataclass
class GanTrainResult:
    """What :func:`train_gan` returns.

    Attributes
    ----------
    checkpoint
        ``out_dir/checkpoint.pt``.
    history
        One row per generator step (columns :data:`HISTORY_COLUMNS`).
    seconds
        Training wall time summed over every call that contributed to this checkpoint
        (a resumed or already finished run reports the whole cost, not just this call's).
    steps, total_steps
        Generator steps done and planned.
    seconds_this_call
        Wall time of this call only.
    out_dir
        The GAN's folder.
    label_alerts
        ``(step, vessel fraction)`` of the sample checks at which the label monitor found the
        label channel nearly empty (:class:`LabelMonitor`; over the whole training, a resumed
        run included).
    label_recovered_at
        The sample step at which the label channel came back after a warning, if it did.
    """

    checkpoint: Path
    history: pd.DataFrame
    seconds: float
    steps: int = 0
    total_steps: int = 0
    seconds_this_call: float = 0.0
    out_dir: Path | None = None
    label_alerts: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    label_recovered_at: int | None = None

    @property
    def finished(self) -> bool:
        return self.steps >= self.total_steps

    @property
    def sample_grids(self) -> list[Path]:
        """Sample-grid PNGs written so far, in step order."""
        return sorted((Path(self.checkpoint).parent / SAMPLES_DIR).glob("step_*.png"))

    @property
    def sample_steps(self) -> dict[int, Path]:
        """Generator step -> its fixed-noise sample grid, in step order."""
        return {int(p.stem.split("_")[-1]): p for p in self.sample_grids}


def gan_tensor(patches: PatchSet) -> torch.Tensor:
    """Patches as the GANs see them: (N, 2, H, W) float32, image as is and label 0/1 -> -1/1."""
    image = torch.from_numpy(np.ascontiguousarray(patches.image, dtype=np.float32))
    label = encode_label(torch.from_numpy(patches.label.astype(np.float32)))
    return torch.stack([image, label], dim=1)


def total_generator_steps(n_samples: int, batch_size: int, epochs: float, min_steps: int = 0) -> int:
    """``round(epochs * N / batch)`` generator steps, at least ``min_steps`` and at least 1."""
    return max(1, int(min_steps), int(round(epochs * n_samples / batch_size)))


def load_history(out_dir: str | Path) -> pd.DataFrame:
    """``out_dir/losses.csv`` as a DataFrame (DataError naming the file if missing)."""
    path = Path(out_dir) / LOSSES_NAME
    if not path.exists():
        raise DataError(path, "no training log: train the GAN first")
    return pd.read_csv(path)


# ----------------------------------------------------------------------------- the loop
@dataclass
class _Gan:
    """Networks, optimizers, loss and the random streams of one GAN run: what a checkpoint holds."""

    name: str
    settings: GanSettings
    generator: Generator
    critic: torch.nn.Module
    loss: GanLoss
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    stream: BatchStream
    noise_rng: torch.Generator
    fixed_noise: torch.Tensor
    device: torch.device
    ema: GeneratorEma | None = None
    augment_rng: torch.Generator | None = None

    @classmethod
    def create(cls, name: str, profile: Profile, n_train: int, batch_size: int, seed: int, device: torch.device) -> "_Gan":
        """Fresh state from the seed (a checkpoint, if resumed, then overwrites all of it)."""
        settings = profile.gan.variants[name]
        set_determinism(seed)
        generator, critic = build_gan(name, profile)
        speed = cuda_speedups(device)  # channels-last weights on CUDA when switched on; nothing on a CPU
        generator, critic = speed.layout(generator.to(device)), speed.layout(critic.to(device))
        betas = (float(settings.betas[0]), float(settings.betas[1]))
        ema = GeneratorEma(generator, profile.gan.ema_decay) if profile.gan.ema_decay else None
        return cls(
            name=name, settings=settings, generator=generator.to(device), critic=critic.to(device),
            loss=loss_for(name, settings, profile.gan),
            opt_g=torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=betas),
            opt_d=torch.optim.Adam(critic.parameters(), lr=settings.lr, betas=betas),
            stream=BatchStream(n_train, batch_size, torch.Generator().manual_seed(seed)),
            noise_rng=torch.Generator().manual_seed(seed + 1),
            fixed_noise=torch.randn(N_FIXED_NOISE, settings.z_dim, generator=torch.Generator().manual_seed(seed + 2)),
            device=device, ema=ema, augment_rng=torch.Generator().manual_seed(seed + 3),
        )

    @property
    def sampler(self) -> Generator:
        """The generator samples come from: the weight average when there is one."""
        return self.ema.model if self.ema is not None else self.generator

    def noise(self, n: int) -> torch.Tensor:
        """Latent vectors (n, z_dim) on the device, from the run's own noise stream."""
        return torch.randn(n, self.settings.z_dim, generator=self.noise_rng).to(self.device)

    def state(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(), "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "data": self.stream.state_dict(),
            "noise_rng": self.noise_rng.get_state(), "rng": get_rng_state(), "fixed_noise": self.fixed_noise,
            "augment_rng": self.augment_rng.get_state() if self.augment_rng is not None else None,
            **({"generator_ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.stream.load_state_dict(state["data"])
        self.noise_rng.set_state(state["noise_rng"])
        self.fixed_noise = state["fixed_noise"].cpu()
        if self.augment_rng is not None and state.get("augment_rng") is not None:
            self.augment_rng.set_state(state["augment_rng"])
        if self.ema is not None:
            self.ema.load_state_dict(state["generator_ema"])
        set_rng_state(state["rng"])


def _check_inputs(name: str, train: PatchSet, profile: Profile) -> None:
    if name not in GAN_NAMES:
        raise ValueError(f"unknown GAN {name!r}: choose one of {', '.join(GAN_NAMES)}")
    if len(train) == 0:
        raise ValueError("the training patch set is empty")
    if train.patch_size != profile.data.patch_size:
        raise ValueError(
            f"training patches are {train.patch_size} px but profile {profile.name!r} expects {profile.data.patch_size} px"
        )


def _run_settings(name: str, train: PatchSet, profile: Profile, batch_size: int, seed: int) -> dict[str, Any]:
    """What a stored run must match to be resumed: everything but the budget (epochs) and reporting."""
    settings = dataclasses.asdict(profile.gan.variants[name])
    settings.pop("epochs")
    settings.pop("min_steps")
    return {
        "format": CHECKPOINT_FORMAT, "gan": name, "settings": settings, "batch_size": batch_size, "seed": int(seed),
        "generator_channels": list(profile.gan.generator_channels), "init_std": profile.gan.init_std,
        "ema_decay": profile.gan.ema_decay, "diffaug": list(profile.gan.diffaug),
        "upsampling": profile.gan.upsampling, "critic_kernel": profile.gan.critic_kernel,
        **({"study_code": [profile.gan.dcgan_targets, profile.gan.dcgan_generator_loss, profile.gan.norm_init,
                           profile.gan.sn_last_layer]}
           if (profile.gan.dcgan_targets, profile.gan.dcgan_generator_loss, profile.gan.norm_init, profile.gan.sn_last_layer)
           != ("one_sided", "bce_fm", "dcgan", True) else {}),
        "patch_size": profile.data.patch_size, "n_train": len(train), "train": array_digest(train.image, train.label),
    }


def train_gan(
    name: str,
    train: PatchSet,
    profile: Profile,
    out_dir: str | Path,
    device: torch.device | str | None = None,
    seed: int | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> GanTrainResult:
    """Train GAN ``name`` on the real training patches; resumable.

    Parameters
    ----------
    name
        ``dcgan``, ``wgan_gp`` or ``wgan_gp_sn``.
    train
        Real training patches (patch size must be ``profile.data.patch_size``).
    profile
        Sizes: ``profile.gan`` (architecture, sample/checkpoint intervals) and
        ``profile.gan.variants[name]`` (z size, Adam, batch, epochs, n_critic, gp weight).
    out_dir
        Folder for ``run.json``, checkpoint, losses and sample grids (created). A stored run made
        with other settings (another GAN, architecture, data, seed, optimizer) is replaced, with a
        message saying what changed (:mod:`tofmra_utils.resumable`); more epochs continue it.
    device
        Default: CUDA when available, else CPU.
    seed
        Default: ``profile.seed``. Seeds the initialization, data order and noise.
    resume
        Continue from ``out_dir/checkpoint.pt`` if it matches (a finished run returns at once).
        ``False`` starts over and overwrites it.
    progress
        Show a tqdm progress bar.
    stop_after_steps
        Stop (with a checkpoint) once this many generator steps are done in total, even if the
        schedule asks for more; a later call resumes from there.

    Raises
    ------
    ValueError
        For an unknown GAN name, an empty training set or a patch size that does not match.
    FloatingPointError
        If a loss becomes NaN or infinite (the last good checkpoint stays).
    """
    _check_inputs(name, train, profile)
    started = time.perf_counter()
    device = torch.device(device) if device is not None else default_device()
    seed = profile.seed if seed is None else int(seed)
    batch_size = min(profile.gan.variants[name].batch_size, len(train))
    variant = profile.gan.variants[name]
    total_steps = total_generator_steps(len(train), batch_size, variant.epochs, variant.min_steps)
    stop_at = total_steps if stop_after_steps is None else min(total_steps, int(stop_after_steps))
    unit = ResumableUnit(out_dir, {**_run_settings(name, train, profile, batch_size, seed), **cuda_speedups(device).settings()},
                         state_name=CHECKPOINT_NAME,
                         history_name=LOSSES_NAME, owned=[SAMPLES_DIR, SNAPSHOTS_DIR])
    unit.open(fresh=not resume)
    gan = _Gan.create(name, profile, len(train), batch_size, seed, device)
    step, seconds_before, history = 0, 0.0, []
    state = unit.load_state(lambda s: int(s.get("step", -1)) <= total_steps)
    if state is not None:
        gan.restore(state)
        step, seconds_before, history = int(state["step"]), float(state["seconds"]), _rows_from_columns(state["history"])
    steps_at_start = step
    real_fraction = float((train.label > 0).mean())

    def save(at_step: int) -> None:
        unit.write_history(_history_frame(history))
        unit.save_state({
            "format": CHECKPOINT_FORMAT, "gan": name, "generator_args": gan.generator.constructor_args(),
            "n_train": len(train), "batch_size": batch_size, "z_dim": gan.settings.z_dim, "profile": profile.name,
            "seed": seed, "settings": dataclasses.asdict(gan.settings),
            "label_threshold": float(profile.gan.label_threshold), "label_threshold_rule": profile.gan.label_threshold_rule,
            "image_scaling": profile.gan.image_scaling, "real_vessel_fraction": real_fraction,
            "generate_mode": profile.gan.generate_mode,
            "step": at_step, "total_steps": total_steps,
            "history": _columns_from_rows(history), "seconds": seconds_before + time.perf_counter() - started, **gan.state(),
            "label_monitor": monitor.state(),
        })

    monitor = LabelMonitor(real_fraction=real_fraction, total_steps=total_steps, gan=name)
    if state is not None and "label_monitor" in state:  # a resumed run reports what an uninterrupted one would
        monitor.restore(state["label_monitor"])
    step = _train_steps(gan, gan_tensor(train), profile, unit, history, step, stop_at, total_steps, save, progress,
                        monitor)
    if not unit.state_file.exists():  # nothing trained and nothing saved yet (stop_after_steps=0)
        save(step)
    if step >= total_steps:
        unit.finish({"steps": step, "seconds": round(seconds_before + time.perf_counter() - started, 1)})
    this_call = time.perf_counter() - started
    return GanTrainResult(
        checkpoint=unit.state_file, history=_history_frame(history),
        seconds=seconds_before + (this_call if step > steps_at_start else 0.0),
        steps=step, total_steps=total_steps, seconds_this_call=this_call, out_dir=unit.folder,
        label_alerts=list(monitor.alerts), label_recovered_at=monitor.recovered_at,
    )


def snapshot_steps(total_steps: int, n: int) -> list[int]:
    """Generator steps at which :func:`train_gan` keeps a snapshot: ``n`` evenly spaced over the
    second half of training, the last step included (``[total_steps]`` for ``n = 1``)."""
    if n <= 1:
        return [int(total_steps)]
    half = total_steps / 2.0
    return sorted({max(1, int(round(half + half * i / (n - 1)))) for i in range(n)})


def _train_steps(gan: _Gan, data: torch.Tensor, profile: Profile, unit: ResumableUnit, history: list[dict[str, float]],
                 step: int, stop_at: int, total_steps: int, save: Any, progress: bool,
                 monitor: "LabelMonitor | None" = None) -> int:
    """Generator steps from ``step`` to ``stop_at`` (:func:`~tofmra_utils.gan.step.gan_step`), with
    the log row, a NaN guard, the weight average, sample grids, the label monitor, snapshots and
    checkpoints; returns the step reached."""
    speed = cuda_speedups(gan.device)
    if gan.device.type == "cuda":  # the patches move to the GPU once, not a batch per step
        data = data.to(gan.device)

    def next_real() -> torch.Tensor:  # on a CPU the batch is a slice of the data; on CUDA already there
        return speed.layout(data[gan.stream.next()].to(gan.device, non_blocking=True))

    bar = tqdm(total=total_steps, initial=step, desc=gan.name, disable=not progress, mininterval=1.0, leave=False)
    gan.generator.train()
    gan.critic.train()
    judge = AugmentedCritic(gan.critic, profile.gan.diffaug, gan.augment_rng) if profile.gan.diffaug else gan.critic
    keep = set(snapshot_steps(total_steps, profile.gan.snapshots)) if profile.gan.snapshots > 1 else set()
    while step < stop_at:
        with speed.autocast(gan.device):
            stats = gan_step(gan.generator, judge, gan.opt_g, gan.opt_d, gan.loss, next_real, gan.noise,
                             gan.settings.n_critic, rng=gan.noise_rng)
        if gan.ema is not None:
            gan.ema.update(gan.generator)
        step += 1
        row = {c: math.nan for c in HISTORY_COLUMNS} | stats | {"step": step, "epoch": gan.stream.epoch}
        history.append(row)
        if not (math.isfinite(row["d_loss"]) and math.isfinite(row["g_loss"])):
            unit.write_history(_history_frame(history))  # for diagnosis; the last good checkpoint stays as it is
            raise FloatingPointError(
                f"{gan.name}: losses became {row['d_loss']} / {row['g_loss']} at step {step}; see {unit.history_file}"
            )
        bar.update(1)
        bar.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}", refresh=False)
        report_progress(gan.name, step, total_steps)
        if step % profile.gan.sample_every == 0 or step == total_steps:
            fraction = save_sample_grid(gan.sampler, gan.fixed_noise, unit.folder / SAMPLES_DIR / f"step_{step:06d}.png",
                                        threshold=profile.gan.label_threshold)
            if monitor is not None:
                monitor.check(step, fraction)
        if step in keep:
            save_snapshot(gan, unit.folder / SNAPSHOTS_DIR, step)
        if step % profile.gan.checkpoint_every == 0 or step == stop_at:
            save(step)
    bar.close()
    return step


# ----------------------------------------------------------------------------- helpers
@torch.no_grad()
def save_sample_grid(
    generator: Generator, noise: torch.Tensor, path: Path, threshold: float = 0.8, ncols: int = 8, scale: int = 3
) -> float:
    """Fixed-noise samples as one PNG mosaic: each image with its binarized label overlaid in red.

    The generator runs in eval mode (running batch-norm statistics), as generation does. The
    mosaic is drawn with NumPy and written without a matplotlib figure: cheap enough for the
    training loop. Returns the samples' vessel fraction (labels at ``threshold``), which the
    label monitor watches.
    """
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    out = generator(noise.to(device)).float().cpu().numpy()
    generator.train(was_training)
    labels = decode_label(out[:, 1], threshold).astype(np.uint8)
    mosaic = sample_mosaic(out[:, 0], labels, ncols=ncols, scale=scale)
    import matplotlib.image

    with atomic_path(path, suffix=".png") as tmp:
        matplotlib.image.imsave(tmp, mosaic, format="png")
    return float(labels.mean())


def save_snapshot(gan: _Gan, folder: Path, step: int) -> Path:
    """The sampling generator's weights at ``step`` as ``folder/step_XXXXXX.pt`` (atomic)."""
    path = folder / f"step_{step:06d}.pt"
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"generator": gan.sampler.state_dict(), "generator_args": gan.generator.constructor_args(),
                    "step": int(step), "ema": gan.ema is not None}, tmp)
    return path


def list_snapshots(out_dir: str | Path) -> dict[int, Path]:
    """Generator step -> snapshot file in ``out_dir/snapshots`` (empty when none were kept)."""
    return {int(p.stem.split("_")[-1]): p for p in sorted((Path(out_dir) / SNAPSHOTS_DIR).glob("step_*.pt"))}


class LabelMonitor:
    """Watches the vessel fraction of the fixed-noise samples while a GAN trains.

    A generator can give up on the label channel: drawing no vessel at all is a cheap way to
    avoid drawing wrong ones, and a U-net trained on such pairs learns to find nothing. Once a
    fifth of training is done, a sample check whose vessel fraction is below ``floor`` times the
    real training fraction is an *alert*; the second alert in a row prints a warning to stderr
    (the notebook shows it under the training cell) with the numbers and the usual causes, and
    the alerts are kept in :attr:`alerts` instead of surfacing only after generation.
    """

    def __init__(self, real_fraction: float, total_steps: int, gan: str, floor: float = 0.1) -> None:
        self.real_fraction, self.total_steps, self.gan, self.floor = float(real_fraction), int(total_steps), gan, floor
        self.alerts: list[tuple[int, float]] = []
        self._in_a_row = 0
        self.warned = False
        self.recovered_at: int | None = None

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so that a resumed run continues the same count."""
        return {"alerts": [[s, f] for s, f in self.alerts], "in_a_row": self._in_a_row, "warned": self.warned,
                "recovered_at": self.recovered_at}

    def restore(self, state: dict[str, Any]) -> None:
        self.alerts = [(int(s), float(f)) for s, f in state["alerts"]]
        self._in_a_row, self.warned = int(state["in_a_row"]), bool(state["warned"])
        self.recovered_at = None if state["recovered_at"] is None else int(state["recovered_at"])

    def check(self, step: int, fraction: float) -> None:
        if step < 0.2 * self.total_steps or self.real_fraction <= 0:
            return
        if fraction >= self.floor * self.real_fraction:
            if self.warned and self._in_a_row:
                self.recovered_at = int(step)
            self._in_a_row = 0
            return
        self._in_a_row += 1
        self.alerts.append((int(step), float(fraction)))
        if self._in_a_row >= 2 and not self.warned:
            import sys

            self.warned = True
            print(
                f"label monitor warning: {self.gan}: the label channel is dying at step {step} of {self.total_steps}: its samples mark "
                f"{fraction:.4f} of their pixels as vessel, the real patches {self.real_fraction:.4f}. If it does not "
                "recover, a U-net trained on its pairs learns to find nothing. Usual causes: too few generator steps for the data "
                "(raise GanSettings.min_steps), a critic that wins outright (d_loss near 0 or Wasserstein estimate "
                "growing), or a label threshold above what the generator reaches (see the matching threshold).",
                file=sys.stderr, flush=True,
            )


def sample_mosaic(images: np.ndarray, labels: np.ndarray, ncols: int = 8, scale: int = 3, gap: int = 2) -> np.ndarray:
    """(N, P, P) images and 0/1 labels -> one RGB array: overlays in a grid with white gaps.

    Returns
    -------
    (rows * (P + gap) * scale, ncols * (P + gap) * scale, 3) float array in [0, 1].
    """
    from ..plots import overlay_rgb

    n, p = len(images), images.shape[-1]
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    cell = p + gap
    mosaic = np.ones((nrows * cell, ncols * cell, 3), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        mosaic[r * cell : r * cell + p, c * cell : c * cell + p] = overlay_rgb(images[i], labels[i])
    return np.kron(mosaic, np.ones((scale, scale, 1), dtype=np.float32)) if scale > 1 else mosaic


def _columns_from_rows(rows: list[dict[str, float]]) -> dict[str, torch.Tensor]:
    """History as one float64 tensor per column (compact, weights_only-safe)."""
    return {c: torch.tensor([r[c] for r in rows], dtype=torch.float64) for c in HISTORY_COLUMNS}


def _rows_from_columns(cols: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    values = {c: cols[c].tolist() for c in HISTORY_COLUMNS}
    return [{c: values[c][i] for c in HISTORY_COLUMNS} for i in range(len(values["step"]))]


def _history_frame(rows: list[dict[str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    frame["step"] = frame["step"].astype(int)
    return frame
