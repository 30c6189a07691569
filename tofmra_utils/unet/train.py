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
  ``-(2 sum(p t) + 1) / (sum(p) + sum(t) + 1)``; one step is
  :func:`~tofmra_utils.unet.step.unet_step`.
* **Optimizer.** Adam (``lr`` from the config unless overridden), default betas.
* **Budget.** ``config.epochs`` passes over the training patches, capped at ``config.max_steps``
  when set; an explicit ``max_steps`` argument sets the exact number of optimizer steps (the
  transfer sweep gives every arm the same budget that way). The last batch of an epoch may be
  smaller.
* **Model selection.** Every ``val_every`` steps (and at the last step) the hard Dice
  (threshold 0.5) over all validation pixels is computed; the weights with the best value are
  ``best.pt``. Without a validation set ``best.pt`` holds the final weights.
* **Resume.** The folder is a :class:`~tofmra_utils.resumable.ResumableUnit`:
  ``train_state.pt`` (model, optimizer, step, RNG states, the data-order
  :class:`~tofmra_utils.batches.BatchStream`, history, best weights) is written atomically
  every ``val_every`` steps and at the end. A later call with the same settings (data,
  architecture, initialization scheme, seed, learning rate, batch size, pretrained weights,
  freezing, validation schedule) continues from it; the step budget may grow. Other settings
  start afresh, saying what changed. On CPU an interrupted-and-resumed run equals an
  uninterrupted one bit for bit.

Files in ``out_dir``: ``run.json`` (settings and status), ``train_state.pt``, ``best.pt``
(``{"model", "info"}``, what :func:`load_unet` reads), ``best.json`` (its ``info``),
``history.csv`` (step, train_loss, val_dice; ``val_dice`` empty between evaluations).
"""

from __future__ import annotations

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

from ..batches import BatchStream
from ..checkpoint import load_checkpoint, save_checkpoint, strip_module_prefix
from ..conventions import dice, file_hash, normalization_stats, zscore
from ..cuda_speedups import cuda_speedups
from ..io import DataError, write_json
from ..patchset import PatchSet
from ..profiles import UnetConfig
from ..progress import report as report_progress
from ..resumable import ResumableUnit, array_digest
from ..seeding import default_device, get_rng_state, set_rng_state
from .model import UNet, check_patch_size
from .augment import augment_batch
from .step import unet_step

__all__ = [
    "UnetTrainResult",
    "train_unet",
    "load_unet",
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


# ----------------------------------------------------------------------------- data
def _zscore(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """(N, H, W) -> (N, 1, H, W) float32 tensor, z-scored (:func:`~tofmra_utils.conventions.zscore`)."""
    return torch.from_numpy(zscore(images, mean, std)).unsqueeze(1)


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
    model = UNet(info["in_channels"], info["base_width"], info["depth"], info["dropout"],
                 dropout_placement=info.get("dropout_placement", "deep"))
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


def _cpu_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


# ----------------------------------------------------------------------------- training
@dataclass
class _Plan:
    """Everything a training run is made of, resolved from the arguments and the config."""

    lr: float
    batch_size: int
    total: int
    val_every: int
    device: torch.device
    init_path: Path | None
    mean: float
    std: float


def _plan(train: PatchSet, val: PatchSet | None, config: UnetConfig, device: Any, init_checkpoint: Any,
          max_steps: int | None, lr: float | None, batch_size: int | None, val_every: int | None) -> _Plan:
    if len(train) == 0:
        raise ValueError("the training patch set is empty")
    check_patch_size(train.patch_size, config.depth)
    if val is not None and len(val) and val.patch_size != train.patch_size:
        raise ValueError(f"validation patches are {val.patch_size} px, training patches {train.patch_size} px")
    batch_size = int(config.batch_size if batch_size is None else batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = plan_steps(len(train), config, batch_size, max_steps)
    mean, std = normalization_stats(train.image)
    return _Plan(
        lr=float(config.lr if lr is None else lr), batch_size=batch_size, total=total,
        val_every=int(val_every or default_val_every(total, math.ceil(len(train) / batch_size))),
        device=torch.device(device) if device is not None else default_device(),
        init_path=Path(init_checkpoint) if init_checkpoint is not None else None, mean=mean, std=std,
    )


def _settings(train: PatchSet, val: PatchSet | None, config: UnetConfig, plan: _Plan, seed: int,
              freeze_encoder: bool) -> dict[str, Any]:
    """What a stored run must match to be resumed (the step budget may grow)."""
    return {
        "train": array_digest(train.image, train.label), "val": None if val is None else array_digest(val.image, val.label),
        "in_channels": 1, "base_width": config.base_width, "depth": config.depth, "dropout": float(config.dropout),
        "weight_init": config.weight_init, "max_grad_norm": config.max_grad_norm, "loss": config.loss,
        "augment": bool(config.augment), "dropout_placement": config.dropout_placement, "seed": int(seed), "lr": plan.lr, "batch_size": plan.batch_size,
        "val_every": plan.val_every, "freeze_encoder": bool(freeze_encoder),
        "init_checkpoint": None if plan.init_path is None else file_hash(plan.init_path),
        **cuda_speedups(plan.device).settings(),
    }


def _build(config: UnetConfig, plan: _Plan, seed: int, freeze_encoder: bool) -> tuple[UNet, torch.optim.Adam, Any]:
    """Model (initialized from the seed, or from ``plan.init_path``), its optimizer, the init model's z-score."""
    torch.manual_seed(seed)  # initialization uses the global torch RNG
    model = UNet(1, config.base_width, config.depth, config.dropout, config.weight_init, config.dropout_placement)
    init_norm = None
    if plan.init_path is not None:
        init_info = _load_init_weights(model, plan.init_path)
        init_norm = [init_info.get("norm_mean"), init_info.get("norm_std")]
    if freeze_encoder:
        _freeze(model.encoder_modules())
    cuda_speedups(plan.device).layout(model.to(plan.device)).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=plan.lr)
    return model, optimizer, init_norm


class _Progress:
    """The mutable part of a run: step, history, best weights, batches; what the state file holds."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        # a batch larger than the data set is the whole set, reshuffled every step
        self.batches = BatchStream(n, min(batch_size, n), torch.Generator().manual_seed(int(seed)), drop_last=False)
        self.step, self.seconds = 0, 0.0
        self.history: dict[str, list[float]] = {"step": [], "train_loss": [], "val_dice": []}
        self.best: dict[str, Any] = {"dice": None, "step": 0, "weights": None}

    def log(self, loss: float) -> None:
        self.step += 1
        for key, value in (("step", self.step), ("train_loss", loss), ("val_dice", float("nan"))):
            self.history[key].append(value)

    def validated(self, dice_value: float, model: UNet) -> None:
        self.history["val_dice"][-1] = dice_value
        if self.best["dice"] is None or dice_value > self.best["dice"]:
            self.best = {"dice": dice_value, "step": self.step, "weights": _cpu_state(model.state_dict())}

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"step": np.asarray(self.history["step"], dtype=np.int64),
                             "train_loss": np.asarray(self.history["train_loss"], dtype=np.float64),
                             "val_dice": np.asarray(self.history["val_dice"], dtype=np.float64)})

    def state(self) -> dict[str, Any]:
        return {"step": self.step, "seconds": self.seconds, "batches": self.batches.state_dict(),
                "history": self.history, "best_dice": self.best["dice"], "best_step": self.best["step"],
                "best_model": self.best["weights"]}

    def restore(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.best = {"dice": state["best_dice"], "step": state["best_step"], "weights": state["best_model"]}
        self.step, self.seconds = int(state["step"]), float(state["seconds"])


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
        Validation patches for model selection (``None`` or empty: keep the final weights).
    config
        Architecture and schedule (``base_width``, ``depth``, ``dropout``, ``weight_init``,
        ``batch_size``, ``epochs``, ``lr``, ``max_steps``, ``inference_batch``).
    out_dir
        Folder for ``run.json``, ``train_state.pt``, ``best.pt``, ``best.json``, ``history.csv``.
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
    val = val if val is not None and len(val) else None
    plan = _plan(train, val, config, device, init_checkpoint, max_steps, lr, batch_size, val_every)
    unit = ResumableUnit(out_dir, _settings(train, val, config, plan, seed, freeze_encoder),
                         state_name=TRAIN_STATE, history_name=HISTORY)
    unit.open()
    model, optimizer, init_norm = _build(config, plan, seed, freeze_encoder)
    run = _Progress(len(train), plan.batch_size, seed)
    extra_info = {"seed": int(seed), "lr": plan.lr, "batch_size": plan.batch_size, "n_train": len(train),
                  "train_source": str(train.meta.get("source", train.meta.get("gan", ""))),
                  "init_checkpoint": None if plan.init_path is None else str(plan.init_path), "init_norm": init_norm,
                  "freeze_encoder": bool(freeze_encoder)}
    resumed = unit.load_state(lambda state: int(state.get("step", -1)) <= plan.total)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        run.restore(resumed)
        set_rng_state(resumed["rng"])
    else:
        torch.manual_seed(seed)  # the same dropout stream whether or not init weights were loaded

    def save_state() -> None:
        info = _info(model, train.patch_size, plan.mean, plan.std, step=run.step, val_dice=None, **extra_info)
        unit.save_state({"model": _cpu_state(model.state_dict()), "optimizer": optimizer.state_dict(),
                         "rng": get_rng_state(), "info": info, **run.state()})
        unit.write_history(run.frame())

    _train_loop(model, optimizer, train, val, config, plan, run, save_state, progress, seed, f"U-net {Path(out_dir).name}")
    if resumed is None and plan.total == 0:
        save_state()
    return _select_and_write(unit, model, train.patch_size, plan, run, extra_info)


def _train_loop(model: UNet, optimizer: torch.optim.Optimizer, train: PatchSet, val: PatchSet | None,
                config: UnetConfig, plan: _Plan, run: _Progress, save_state: Any, progress: bool, seed: int = 0,
                stage: str = "U-net") -> None:
    """Steps until ``plan.total``: :func:`~tofmra_utils.unet.step.unet_step`, validation, checkpoints."""
    x_train = _zscore(train.image, plan.mean, plan.std)
    y_train = torch.from_numpy(train.label.astype(np.float32)).unsqueeze(1)
    if plan.device.type == "cuda":  # the patches move to the GPU once, not a batch per step
        x_train, y_train = x_train.to(plan.device), y_train.to(plan.device)
    speed = cuda_speedups(plan.device)
    bar = tqdm(total=plan.total, initial=run.step, disable=not progress, desc="U-net", leave=False)
    try:
        while run.step < plan.total:
            started = time.perf_counter()
            idx = run.batches.next()
            x, y = x_train[idx].to(plan.device), y_train[idx].to(plan.device)
            if config.augment:
                x, y = augment_batch(x, y, seed, run.step)
            with speed.autocast(plan.device):
                run.log(unet_step(model, optimizer, speed.layout(x), y, max_grad_norm=config.max_grad_norm,
                                  loss=config.loss))
            due = run.step % plan.val_every == 0 or run.step == plan.total
            if val is not None and due:
                prob = predict_patches(model, val.image, plan.mean, plan.std, config.inference_batch, plan.device)
                run.validated(dice(prob >= 0.5, val.label), model)
            run.seconds += time.perf_counter() - started
            bar.update(1)
            bar.set_postfix(loss=f"{run.history['train_loss'][-1]:.3f}")
            report_progress(stage, run.step, plan.total)
            if due:
                save_state()
    finally:
        bar.close()


def _select_and_write(unit: ResumableUnit, model: UNet, patch_size: int, plan: _Plan, run: _Progress,
                      extra_info: dict[str, Any]) -> UnetTrainResult:
    """``best.pt``: the best validation Dice's weights, or the final model without validation."""
    if run.best["weights"] is not None:
        weights, sel_step, sel_dice = run.best["weights"], run.best["step"], run.best["dice"]
    else:
        weights, sel_step, sel_dice = _cpu_state(model.state_dict()), run.step, None
    info = _info(model, patch_size, plan.mean, plan.std, step=sel_step, val_dice=sel_dice, total_steps=plan.total,
                 **extra_info)
    best_file = save_checkpoint(unit.folder / BEST, {"model": weights, "info": info})
    write_json(unit.folder / "best.json", info)
    df = run.frame()
    unit.write_history(df)
    unit.finish({"step": sel_step, "val_dice": sel_dice, "total_steps": plan.total, "seconds": run.seconds})
    return UnetTrainResult(checkpoint=best_file, history=df, best_val_dice=run.best["dice"], seconds=run.seconds)
