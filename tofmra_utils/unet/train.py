"""Training the U-net on a patch set (real or synthetic): negative soft Dice, Adam, resumable.

What :func:`train_unet` does, in the study's terms (Kossen et al. 2021, Livne et al. 2019):

* **Input normalization.** Patches arrive min-max scaled to [-1, 1] per patch (the
  :class:`~tofmra_utils.patchset.PatchSet` format); they are then z-scored with the mean and
  standard deviation of *all training pixels*. The two numbers are stored in every checkpoint's
  ``info`` so inference normalizes whole volumes the same way. When fine-tuning from
  ``init_checkpoint`` they are **recomputed from the new training data** (what "z-score with the
  training set's statistics" means for the new training set; it also re-centres a new site's
  intensities onto the distribution the pretrained encoder saw). The pretrained model's values
  are kept in ``info["init_norm"]`` for reference.
* **Loss.** Negative soft Dice with smoothing 1 over the whole batch (Keras style):
  ``-(2 sum(p t) + 1) / (sum(p) + sum(t) + 1)``.
* **Optimizer.** Adam (``lr`` from the config unless overridden), default betas.
* **Budget.** ``config.epochs`` passes over the training patches, capped at ``config.max_steps``
  when set; an explicit ``max_steps`` argument sets the exact number of optimizer steps (the
  transfer sweep gives every arm the same budget that way). The last batch of an epoch may be
  smaller.
* **Model selection.** Every ``val_every`` steps (and at the last step) the hard Dice
  (threshold 0.5) over all validation pixels is computed; the weights with the best value are
  ``best.pt``. Without a validation set ``best.pt`` holds the final weights.
* **Resume.** ``train_state.pt`` (model, optimizer, step, RNG states, the data-order
  ``torch.Generator`` and the current epoch's permutation, history, best weights) is written
  atomically every ``val_every`` steps and at the end. A later call with the same settings
  (data, architecture, seed, learning rate, batch size, initialization, freezing, validation
  schedule) continues from it; the step budget may grow. Different settings start afresh. On
  CPU an interrupted-and-resumed run equals an uninterrupted one bit for bit.

Files in ``out_dir``: ``train_state.pt``, ``best.pt`` (``{"model", "info"}``, what
:func:`load_unet` reads), ``best.json`` (its ``info``), ``history.csv`` (step, train_loss,
val_dice; ``val_dice`` empty between evaluations).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..checkpoint import file_sha256, load_checkpoint, save_checkpoint, strip_module_prefix
from ..io import DataError, atomic_path, write_json
from ..patchset import PatchSet
from ..profiles import UnetConfig
from ..seeding import default_device, get_rng_state, set_rng_state
from .model import UNet, check_patch_size

__all__ = [
    "UnetTrainResult",
    "train_unet",
    "load_unet",
    "soft_dice_loss",
    "hard_dice",
    "normalization_stats",
    "plan_steps",
    "default_val_every",
    "predict_patches",
    "TRAIN_STATE",
    "BEST",
    "HISTORY",
]

TRAIN_STATE = "train_state.pt"
BEST = "best.pt"
HISTORY = "history.csv"
#: ``info["format"]`` of U-net checkpoints written here.
FORMAT = "tofmra-unet-1"


@dataclass
class UnetTrainResult:
    """Outcome of :func:`train_unet`.

    Attributes
    ----------
    checkpoint
        ``out_dir/best.pt``: the selected weights (best validation Dice, or final without val).
    history
        One row per optimizer step: ``step`` (1-based), ``train_loss`` (negative soft Dice of
        that batch), ``val_dice`` (NaN except at evaluations).
    best_val_dice
        Best validation Dice, ``None`` without a validation set.
    seconds
        Wall time of the training steps over all (resumed) calls together.
    """

    checkpoint: Path
    history: pd.DataFrame
    best_val_dice: float | None
    seconds: float


# ----------------------------------------------------------------------------- losses and metrics
def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Negative soft Dice over the whole batch (scalar in [-1, 0)).

    Parameters
    ----------
    prob
        (B, 1, H, W) probabilities.
    target
        (B, 1, H, W) 0/1 labels (float).
    """
    inter = (prob * target).sum()
    return -(2.0 * inter + smooth) / (prob.sum() + target.sum() + smooth)


def hard_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary arrays pooled over all pixels; 1.0 when both are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    denom = int(pred.sum()) + int(truth.sum())
    return 1.0 if denom == 0 else 2.0 * int((pred & truth).sum()) / denom


def normalization_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of all training pixels (float64 sums; std floored at 1e-6)."""
    x = np.asarray(images, dtype=np.float64)
    mean = float(x.mean())
    std = float(x.std())
    return mean, max(std, 1e-6)


def _zscore(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """(N, H, W) -> (N, 1, H, W) float32 tensor ``(x - mean) / std``."""
    return torch.from_numpy(((np.asarray(images, np.float32) - mean) / std).astype(np.float32)).unsqueeze(1)


@torch.no_grad()
def predict_patches(
    model: UNet, images: np.ndarray, mean: float, std: float, batch_size: int = 256, device: Any = None
) -> np.ndarray:
    """Probabilities (N, H, W) float32 for [-1, 1]-scaled patches (N, H, W), z-scored with ``mean``/``std``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = _zscore(images, mean, std)
    out = np.empty((len(x), *x.shape[2:]), np.float32)
    for i in range(0, len(x), batch_size):
        out[i : i + batch_size] = model(x[i : i + batch_size].to(device))[:, 0].float().cpu().numpy()
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------- schedule
def plan_steps(n_patches: int, config: UnetConfig, batch_size: int, max_steps: int | None) -> int:
    """Optimizer steps of a run: ``max_steps`` if given, else ``epochs`` passes capped at ``config.max_steps``."""
    if max_steps is not None:
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        return int(max_steps)
    steps = config.epochs * math.ceil(n_patches / batch_size)
    return min(steps, config.max_steps) if config.max_steps is not None else steps


def default_val_every(total_steps: int, steps_per_epoch: int) -> int:
    """About ten evaluations per run, at most one per epoch apart."""
    return max(1, min(steps_per_epoch, math.ceil(total_steps / 10)))


# ----------------------------------------------------------------------------- checkpoints
def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _info(model: UNet, patch_size: int, mean: float, std: float, **extra: Any) -> dict[str, Any]:
    return {"format": FORMAT, **model.architecture(), "patch_size": int(patch_size), "norm_mean": float(mean),
            "norm_std": float(std), **extra}


def _read_unet_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, info) of a U-net checkpoint (``best.pt`` or ``train_state.pt``)."""
    state = load_checkpoint(path)
    if "model" not in state or "info" not in state or state["info"].get("format") != FORMAT:
        raise DataError(path, "not a tofmra U-net checkpoint (expected keys 'model' and 'info' written by train_unet)")
    return strip_module_prefix(state["model"]), state["info"]


def load_unet(checkpoint: str | os.PathLike[str], device: Any = None) -> tuple[UNet, dict[str, Any]]:
    """Rebuild a trained U-net in eval mode on ``device`` (default CUDA when available).

    Returns
    -------
    model, info
        ``info`` holds the architecture, ``patch_size``, ``norm_mean`` / ``norm_std`` (the training
        set's z-score statistics, needed for inference), ``step`` and ``val_dice``.
    """
    path = Path(checkpoint)
    weights, info = _read_unet_checkpoint(path)
    model = UNet(info["in_channels"], info["base_width"], info["depth"], info["dropout"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise DataError(path, f"weights do not fit the stored architecture ({err})") from None
    device = torch.device(device) if device is not None else default_device()
    return model.to(device).eval(), dict(info)


def _load_init_weights(model: UNet, path: Path) -> dict[str, Any]:
    """Copy another U-net's weights (not its optimizer) into ``model``; returns that model's info."""
    weights, info = _read_unet_checkpoint(path)
    mine = model.architecture()
    theirs = {k: info.get(k) for k in ("in_channels", "base_width", "depth")}
    if any(theirs[k] != mine[k] for k in theirs):
        raise DataError(path, f"pretrained U-net architecture {theirs} does not match the config's {mine}")
    model.load_state_dict(weights)
    return info


def _freeze(modules: list[torch.nn.Module]) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)


def _write_history(out_dir: Path, history: dict[str, list[float]]) -> pd.DataFrame:
    df = pd.DataFrame({"step": np.asarray(history["step"], dtype=np.int64),
                       "train_loss": np.asarray(history["train_loss"], dtype=np.float64),
                       "val_dice": np.asarray(history["val_dice"], dtype=np.float64)})
    with atomic_path(out_dir / HISTORY) as tmp:
        df.to_csv(tmp, index=False)
    return df


def _cpu_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


# ----------------------------------------------------------------------------- training
def train_unet(
    train: PatchSet,
    val: PatchSet | None,
    config: UnetConfig,
    out_dir: str | os.PathLike[str],
    seed: int,
    device: Any = None,
    init_checkpoint: str | os.PathLike[str] | None = None,
    freeze_encoder: bool = False,
    max_steps: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    val_every: int | None = None,
) -> UnetTrainResult:
    """Train a U-net on ``train`` patches; resume from ``out_dir`` when it holds a matching run.

    Parameters
    ----------
    train
        Training patches (real or synthetic), (N, H, W) with ``H`` a multiple of ``2**config.depth``.
    val
        Validation patches for model selection (``None``: keep the final weights).
    config
        Architecture and schedule (``base_width``, ``depth``, ``dropout``, ``batch_size``,
        ``epochs``, ``lr``, ``max_steps``, ``inference_batch``).
    out_dir
        Folder for ``train_state.pt``, ``best.pt``, ``best.json``, ``history.csv``.
    seed
        Seeds the weight initialization, dropout and the data order.
    device
        Default: CUDA when available, else CPU.
    init_checkpoint
        Start from these U-net weights (``best.pt`` or ``train_state.pt`` of another run; the
        optimizer starts fresh). The architecture must match ``config``.
    freeze_encoder
        Train only the decoder (``ups`` and ``outc``); ``inc`` and ``downs`` keep their weights.
    max_steps, lr, batch_size
        Overrides of the config (``max_steps`` = exact number of optimizer steps).
    progress
        Show a tqdm bar.
    val_every
        Steps between validations and checkpoints (default :func:`default_val_every`).

    Returns
    -------
    UnetTrainResult
    """
    out_dir = Path(out_dir)
    if len(train) == 0:
        raise ValueError("the training patch set is empty")
    check_patch_size(train.patch_size, config.depth)
    if val is not None and len(val) and val.patch_size != train.patch_size:
        raise ValueError(f"validation patches are {val.patch_size} px, training patches {train.patch_size} px")
    if val is not None and len(val) == 0:
        val = None
    lr = float(config.lr if lr is None else lr)
    batch_size = int(config.batch_size if batch_size is None else batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else default_device()
    n = len(train)
    steps_per_epoch = math.ceil(n / batch_size)
    total = plan_steps(n, config, batch_size, max_steps)
    val_every = int(val_every or default_val_every(total, steps_per_epoch))
    init_path = Path(init_checkpoint) if init_checkpoint is not None else None

    mean, std = normalization_stats(train.image)
    fingerprint = {
        "train": _digest(train.image, train.label), "val": None if val is None else _digest(val.image, val.label),
        "in_channels": 1, "base_width": config.base_width, "depth": config.depth, "dropout": float(config.dropout),
        "weight_init": config.weight_init, "seed": int(seed), "lr": lr, "batch_size": batch_size, "val_every": val_every,
        "init_checkpoint": None if init_path is None else file_sha256(init_path),
        "freeze_encoder": bool(freeze_encoder),
    }

    # Build the model from the seed (initialization uses the global torch RNG).
    torch.manual_seed(seed)
    model = UNet(1, config.base_width, config.depth, config.dropout, config.weight_init)
    init_norm = None
    if init_path is not None:
        init_info = _load_init_weights(model, init_path)
        init_norm = [init_info.get("norm_mean"), init_info.get("norm_std")]
    if freeze_encoder:
        _freeze(model.encoder_modules())
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr)
    order = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=order)
    history: dict[str, list[float]] = {"step": [], "train_loss": [], "val_dice": []}
    best: dict[str, Any] = {"dice": None, "step": 0, "weights": None}
    step, seconds = 0, 0.0
    extra_info = {"seed": int(seed), "lr": lr, "batch_size": batch_size, "n_train": n,
                  "train_source": str(train.meta.get("source", train.meta.get("gan", ""))),
                  "init_checkpoint": None if init_path is None else str(init_path), "init_norm": init_norm,
                  "freeze_encoder": bool(freeze_encoder)}

    state_file = out_dir / TRAIN_STATE
    resumed = _try_resume(state_file, fingerprint, total)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        order.set_state(resumed["order"])
        perm = resumed["perm"]
        history = {k: list(v) for k, v in resumed["history"].items()}
        best = {"dice": resumed["best_dice"], "step": resumed["best_step"], "weights": resumed["best_model"]}
        step, seconds = int(resumed["step"]), float(resumed["seconds"])
        set_rng_state(resumed["rng"])
    else:
        torch.manual_seed(seed)  # the same dropout stream whether or not init weights were loaded

    x_train = _zscore(train.image, mean, std)
    y_train = torch.from_numpy(train.label.astype(np.float32)).unsqueeze(1)

    def save_state() -> None:
        info = _info(model, train.patch_size, mean, std, step=step, val_dice=None, **extra_info)
        save_checkpoint(state_file, {
            "model": _cpu_state(model.state_dict()), "optimizer": optimizer.state_dict(), "step": step,
            "seconds": seconds, "rng": get_rng_state(), "order": order.get_state(), "perm": perm,
            "history": history, "best_dice": best["dice"], "best_step": best["step"], "best_model": best["weights"],
            "fingerprint": fingerprint, "info": info,
        })
        _write_history(out_dir, history)

    bar = tqdm(total=total, initial=step, disable=not progress, desc="U-net", leave=False)
    try:
        while step < total:
            started = time.perf_counter()
            k = step % steps_per_epoch
            if k == 0 and step > 0:
                perm = torch.randperm(n, generator=order)
            idx = perm[k * batch_size : (k + 1) * batch_size]
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = soft_dice_loss(model(xb), yb)
            loss.backward()
            optimizer.step()
            step += 1
            history["step"].append(step)
            history["train_loss"].append(float(loss.detach()))
            history["val_dice"].append(float("nan"))
            if val is not None and (step % val_every == 0 or step == total):
                dice = hard_dice(predict_patches(model, val.image, mean, std, config.inference_batch, device) >= 0.5,
                                 val.label)
                history["val_dice"][-1] = dice
                if best["dice"] is None or dice > best["dice"]:
                    best = {"dice": dice, "step": step, "weights": _cpu_state(model.state_dict())}
            seconds += time.perf_counter() - started
            bar.update(1)
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}")
            if step % val_every == 0 or step == total:
                save_state()
    finally:
        bar.close()
    if resumed is None and total == 0:
        save_state()

    # The selected weights: best validation Dice, or the final model without validation.
    if best["weights"] is not None:
        weights, sel_step, sel_dice = best["weights"], best["step"], best["dice"]
    else:
        weights, sel_step, sel_dice = _cpu_state(model.state_dict()), step, None
    info = _info(model, train.patch_size, mean, std, step=sel_step, val_dice=sel_dice, total_steps=total, **extra_info)
    best_file = save_checkpoint(out_dir / BEST, {"model": weights, "info": info})
    write_json(out_dir / "best.json", info)
    df = _write_history(out_dir, history)
    return UnetTrainResult(checkpoint=best_file, history=df, best_val_dice=best["dice"], seconds=seconds)


def _try_resume(state_file: Path, fingerprint: dict[str, Any], total: int) -> dict[str, Any] | None:
    """The stored training state if it belongs to the same run and has not gone past ``total``.

    Loaded on the CPU (RNG snapshots and the generator must be CPU tensors); ``load_state_dict``
    moves model and optimizer tensors to the model's device.
    """
    if not state_file.exists():
        return None
    try:
        state = load_checkpoint(state_file, map_location="cpu")
    except DataError:
        return None  # unreadable leftovers: start afresh (the file is overwritten atomically)
    if state.get("fingerprint") != fingerprint or int(state.get("step", -1)) > total:
        return None
    return state
