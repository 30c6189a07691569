"""One training loop for the three GANs; the loss object is the only difference.

Per generator step the critic takes ``n_critic`` steps (1 for DCGAN, 5 for the WGANs), each on
the next real batch and a freshly generated, detached fake batch; then the generator takes one
step. Training length: ``epochs`` passes over the real patches counted in generator steps x
batch, i.e. ``round(epochs * N / batch_size)`` generator steps (the WGAN critics therefore see
each real patch ``n_critic`` times per epoch).

Everything random comes from explicit ``torch.Generator`` objects (data order; noise and
gradient-penalty weights) seeded from one seed, and their states go into the checkpoint with
the models, optimizers, step counter and global RNG state. A run stopped at any checkpoint and
resumed continues bit-exactly on the CPU (``tests/test_gan.py`` checks it).

Files in ``out_dir``::

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

from ..checkpoint import load_checkpoint, save_checkpoint
from ..io import DataError, atomic_path
from ..patchset import PatchSet
from ..profiles import GAN_NAMES, Profile
from ..seeding import default_device, get_rng_state, set_determinism, set_rng_state
from .losses import loss_for
from .models import Generator, build_gan

__all__ = [
    "GanTrainResult",
    "BatchStream",
    "train_gan",
    "gan_tensor",
    "total_generator_steps",
    "load_history",
    "save_sample_grid",
    "sample_mosaic",
    "CHECKPOINT_NAME",
    "N_FIXED_NOISE",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOSSES_NAME = "losses.csv"
SAMPLES_DIR = "samples"
#: Samples in the fixed-noise grid (4 rows of 8).
N_FIXED_NOISE = 32
#: Columns of losses.csv in this order (NaN where a GAN does not have the quantity).
HISTORY_COLUMNS = (
    "step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "wasserstein", "gp", "g_adv", "feature_matching",
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
    """

    checkpoint: Path
    history: pd.DataFrame
    seconds: float
    steps: int = 0
    total_steps: int = 0
    seconds_this_call: float = 0.0
    out_dir: Path | None = None

    @property
    def finished(self) -> bool:
        return self.steps >= self.total_steps

    @property
    def sample_grids(self) -> list[Path]:
        """Sample-grid PNGs written so far, in step order."""
        return sorted((Path(self.checkpoint).parent / SAMPLES_DIR).glob("step_*.png"))


class BatchStream:
    """Endless stream of shuffled mini-batch indices, one permutation per pass (partial batch dropped).

    The permutation, the cursor and the generator's state are the stream's whole state, so a
    resumed run draws exactly the batches an uninterrupted run would have drawn.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        if not 1 <= batch_size <= n:
            raise ValueError(f"batch size {batch_size} must be between 1 and the number of samples {n}")
        self.n, self.batch_size, self.generator = int(n), int(batch_size), generator
        self.perm = torch.randperm(self.n, generator=self.generator)
        self.cursor = 0
        self.passes = 0

    def next(self) -> torch.Tensor:
        """Indices (batch_size,) of the next batch."""
        if self.cursor + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.cursor = 0
            self.passes += 1
        idx = self.perm[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx

    @property
    def epoch(self) -> float:
        """Passes over the data so far (fractional)."""
        return self.passes + self.cursor / self.n

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.generator.get_state(), "perm": self.perm.clone(), "cursor": self.cursor, "passes": self.passes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["rng"])
        self.perm = state["perm"].clone()
        self.cursor, self.passes = int(state["cursor"]), int(state["passes"])


def gan_tensor(patches: PatchSet) -> torch.Tensor:
    """Patches as the GANs see them: (N, 2, H, W) float32, image as is and label 0/1 -> -1/1."""
    image = torch.from_numpy(np.ascontiguousarray(patches.image, dtype=np.float32))
    label = torch.from_numpy(patches.label.astype(np.float32)) * 2.0 - 1.0
    return torch.stack([image, label], dim=1)


def total_generator_steps(n_samples: int, batch_size: int, epochs: float) -> int:
    """``round(epochs * N / batch)`` generator steps, at least 1."""
    return max(1, int(round(epochs * n_samples / batch_size)))


def load_history(out_dir: str | Path) -> pd.DataFrame:
    """``out_dir/losses.csv`` as a DataFrame (DataError naming the file if missing)."""
    path = Path(out_dir) / LOSSES_NAME
    if not path.exists():
        raise DataError(path, "no training log: train the GAN first")
    return pd.read_csv(path)


# ----------------------------------------------------------------------------- the loop
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
        Folder for checkpoint, losses and sample grids (created).
    device
        Default: CUDA when available, else CPU.
    seed
        Default: ``profile.seed``. Seeds the initialization, data order and noise.
    resume
        Continue from ``out_dir/checkpoint.pt`` if present (a finished run returns at once).
        ``False`` starts over and overwrites it.
    progress
        Show a tqdm progress bar.
    stop_after_steps
        Stop (with a checkpoint) once this many generator steps are done in total, even if the
        schedule asks for more; a later call resumes from there.

    Raises
    ------
    DataError
        If the existing checkpoint belongs to a different GAN, architecture or data size.
    ValueError
        For an unknown GAN name, an empty training set or a patch size that does not match.
    """
    if name not in GAN_NAMES:
        raise ValueError(f"unknown GAN {name!r}: choose one of {', '.join(GAN_NAMES)}")
    if len(train) == 0:
        raise ValueError("the training patch set is empty")
    if train.patch_size != profile.data.patch_size:
        raise ValueError(
            f"training patches are {train.patch_size} px but profile {profile.name!r} expects {profile.data.patch_size} px"
        )
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device) if device is not None else default_device()
    seed = profile.seed if seed is None else int(seed)
    settings = profile.gan.variants[name]
    batch_size = min(settings.batch_size, len(train))
    total_steps = total_generator_steps(len(train), batch_size, settings.epochs)
    stop_at = total_steps if stop_after_steps is None else min(total_steps, int(stop_after_steps))

    # Fresh state from the seed; a checkpoint (if resumed) then overwrites all of it.
    set_determinism(seed)
    generator, critic = build_gan(name, profile)
    generator.to(device)
    critic.to(device)
    betas = (float(settings.betas[0]), float(settings.betas[1]))
    opt_g = torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=betas)
    opt_d = torch.optim.Adam(critic.parameters(), lr=settings.lr, betas=betas)
    stream = BatchStream(len(train), batch_size, torch.Generator().manual_seed(seed))
    noise_rng = torch.Generator().manual_seed(seed + 1)
    fixed_noise = torch.randn(N_FIXED_NOISE, settings.z_dim, generator=torch.Generator().manual_seed(seed + 2))
    loss = loss_for(name, settings)
    identity = {
        "gan": name,
        "generator_args": generator.constructor_args(),
        "n_train": len(train),
        "batch_size": batch_size,
        "z_dim": settings.z_dim,
    }
    step, seconds_before, history = 0, 0.0, []

    ckpt_path = out_dir / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location="cpu")  # RNG states must stay CPU tensors
        _check_same_run(ckpt_path, state, identity)
        generator.load_state_dict(state["generator"])
        critic.load_state_dict(state["critic"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        stream.load_state_dict(state["data"])
        noise_rng.set_state(state["noise_rng"])
        fixed_noise = state["fixed_noise"].cpu()
        set_rng_state(state["rng"])
        step, seconds_before = int(state["step"]), float(state["seconds"])
        history = _rows_from_columns(state["history"])

    steps_at_start = step
    data = gan_tensor(train)  # stays on the CPU; batches move to the device
    bar = tqdm(total=total_steps, initial=step, desc=name, disable=not progress, mininterval=1.0, leave=False)

    def save(at_step: int) -> None:
        _write_losses(out_dir, history)
        save_checkpoint(ckpt_path, {
            "format": CHECKPOINT_FORMAT,
            **identity,
            "profile": profile.name,
            "seed": seed,
            "settings": dataclasses.asdict(settings),
            "label_threshold": float(profile.gan.label_threshold),
            "generator": generator.state_dict(),
            "critic": critic.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "step": at_step,
            "total_steps": total_steps,
            "data": stream.state_dict(),
            "noise_rng": noise_rng.get_state(),
            "rng": get_rng_state(),
            "fixed_noise": fixed_noise,
            "history": _columns_from_rows(history),
            "seconds": seconds_before + time.perf_counter() - started,
        })

    def noise(n: int) -> torch.Tensor:
        return torch.randn(n, settings.z_dim, generator=noise_rng).to(device)

    generator.train()
    critic.train()
    while step < stop_at:
        critic_stats: list[dict[str, float]] = []
        for _ in range(settings.n_critic):
            real = data[stream.next()].to(device, non_blocking=True)
            with torch.no_grad():
                fake = generator(noise(batch_size))
            d_loss, stats = loss.critic_loss(critic, real, fake, rng=noise_rng)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            critic_stats.append(stats)

        critic.requires_grad_(False)  # the generator step needs gradients through, not of, the critic
        g_loss, g_stats = loss.generator_loss(critic, generator(noise(batch_size)), real)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        critic.requires_grad_(True)

        step += 1
        row = {c: math.nan for c in HISTORY_COLUMNS}
        row.update({k: float(np.mean([s[k] for s in critic_stats])) for k in critic_stats[0]})
        row.update(g_stats)
        row.update(step=step, epoch=stream.epoch)
        history.append(row)
        if not (math.isfinite(row["d_loss"]) and math.isfinite(row["g_loss"])):
            _write_losses(out_dir, history)  # for diagnosis; the last good checkpoint stays as it is
            raise FloatingPointError(
                f"{name}: losses became {row['d_loss']} / {row['g_loss']} at step {step}; see {out_dir / LOSSES_NAME}"
            )
        bar.update(1)
        bar.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}", refresh=False)

        if step % profile.gan.sample_every == 0 or step == total_steps:
            save_sample_grid(generator, fixed_noise, out_dir / SAMPLES_DIR / f"step_{step:06d}.png",
                             threshold=profile.gan.label_threshold)
        if step % profile.gan.checkpoint_every == 0 or step == stop_at:
            save(step)
    bar.close()
    if not ckpt_path.exists():  # nothing trained and nothing saved yet (stop_after_steps=0)
        save(step)
    this_call = time.perf_counter() - started
    trained_now = step > steps_at_start
    return GanTrainResult(
        checkpoint=ckpt_path,
        history=_history_frame(history),
        seconds=seconds_before + (this_call if trained_now else 0.0),
        steps=step,
        total_steps=total_steps,
        seconds_this_call=this_call,
        out_dir=out_dir,
    )


# ----------------------------------------------------------------------------- helpers
@torch.no_grad()
def save_sample_grid(
    generator: Generator, noise: torch.Tensor, path: Path, threshold: float = 0.8, ncols: int = 8, scale: int = 3
) -> Path:
    """Fixed-noise samples as one PNG mosaic: each image with its binarized label overlaid in red.

    The generator runs in eval mode (running batch-norm statistics), as generation does. The
    mosaic is drawn with NumPy and written without a matplotlib figure: cheap enough for the
    training loop.
    """
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    out = generator(noise.to(device)).float().cpu().numpy()
    generator.train(was_training)
    labels = ((out[:, 1] + 1.0) / 2.0 > threshold).astype(np.uint8)
    mosaic = sample_mosaic(out[:, 0], labels, ncols=ncols, scale=scale)
    import matplotlib.image

    with atomic_path(path, suffix=".png") as tmp:
        matplotlib.image.imsave(tmp, mosaic, format="png")
    return path


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


def _check_same_run(path: Path, state: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint made for another GAN, architecture or data set size."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(path, "not a tofmra GAN checkpoint")
    for key, wanted in identity.items():
        if state.get(key) != wanted:
            raise DataError(
                path,
                f"was trained with {key}={state.get(key)!r}, this run asks for {wanted!r}; "
                "use another folder or resume=False to start over",
            )


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


def _write_losses(out_dir: Path, rows: list[dict[str, float]]) -> Path:
    path = out_dir / LOSSES_NAME
    with atomic_path(path) as tmp:
        _history_frame(rows).to_csv(tmp, index=False)
    return path

