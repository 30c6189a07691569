"""Running the sweep: one resumable, stored result per run; ``results.csv`` rewritten after each."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
from tqdm.auto import tqdm

from ..io import DataError, atomic_path
from ..profiles import Profile
from ..resumable import ResumableUnit
from .plan import TransferRun, _train_seed, draw_subjects, plan_runs

__all__ = ["RESULT_COLUMNS", "METRICS", "UnetBackend", "run_transfer_sweep", "results_file", "load_transfer_results"]

#: Columns of ``results.csv`` (one row per run and site-B test subject).
RESULT_COLUMNS: tuple[str, ...] = (
    "arm", "finetune", "n_subjects", "seed", "subjects_drawn", "subject", "dsc", "hd95_mm", "hd95_study",
    "hd95_tool", "train_seconds",
)
#: Per-subject scores of a run: DSC, 95HD in mm (the default), the study's exact voxel variant (a lower
#: bound of the tool's value) and the EvaluateSegmentation tool's emulation (what stands beside the study).
METRICS: tuple[str, ...] = ("dsc", "hd95_mm", "hd95_study", "hd95_tool")

# ----------------------------------------------------------------------------- the U-net backend
class UnetBackend(NamedTuple):
    """The three U-net functions the sweep needs (replaced by fakes in tests)."""

    train_unet: Callable[..., Any]
    load_unet: Callable[..., Any]
    evaluate_subjects: Callable[..., pd.DataFrame]


def _default_backend() -> UnetBackend:
    from ..unet.infer import evaluate_subjects
    from ..unet.train import load_unet, train_unet

    return UnetBackend(train_unet, load_unet, evaluate_subjects)


# ----------------------------------------------------------------------------- the sweep
def _val_every(steps: int, checks: int) -> int:
    return max(1, -(-steps // max(1, checks)))


def _run_settings(run: TransferRun, drawn: list[str], init: Path | None, profile: Profile,
                  val_subjects: list[str]) -> dict[str, Any]:
    """What a stored result must match to be reused."""
    t = profile.transfer
    steps = t.steps_for(run.n_subjects)
    return {
        "steps": steps, "lr": t.lr, "batch_size": t.batch_size, "eval_mode": t.eval_mode, "subjects_drawn": drawn,
        "init_checkpoint": None if init is None else str(init), "unet": profile.to_dict()["unet"],
        "train_seed": _train_seed(profile.seed, run.seed, run.n_subjects),
        "val_subjects": val_subjects if steps else [], "val_every": _val_every(steps, t.val_checks) if steps else None,
        "val_patches_per_subject": t.val_patches_per_subject if steps else None,
        "metrics": list(METRICS),  # a result stored with fewer scores is recomputed, not reused
    }


def _result_unit(results_dir: Path, run: TransferRun, settings: dict[str, Any]) -> ResumableUnit:
    """The stored result of one run: ``results/<key>.json``, reused only with the same settings."""
    return ResumableUnit(results_dir, settings, state_name=None, history_name=None, record_name=f"{run.key}.json")


def _one_run(
    run: TransferRun, settings: dict[str, Any], dataset: Any, pool_patches: Any, val_patches: Any,
    init: Path | None, profile: Profile, work_dir: Path, backend: UnetBackend, device: Any,
) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
    """Train (unless ``n = 0``) and score one run exactly as its stored ``settings`` say (:func:`_run_settings`)."""
    steps, drawn = settings["steps"], settings["subjects_drawn"]
    selected: dict[str, Any] = {"steps": steps}
    if steps == 0:  # n = 0: the site-A weights as they are
        checkpoint, seconds = init, 0.0
    else:
        result = backend.train_unet(
            train=pool_patches.for_subjects(drawn), val=val_patches, config=profile.unet, out_dir=work_dir,
            seed=settings["train_seed"], device=device, init_checkpoint=init,
            freeze_encoder=run.finetune == "frozen_encoder", max_steps=steps, lr=settings["lr"],
            batch_size=settings["batch_size"], progress=False, val_every=settings["val_every"],
        )
        checkpoint, seconds = result.checkpoint, float(result.seconds)
        selected["best_val_dice"] = None if result.best_val_dice is None else float(result.best_val_dice)
    model, info = backend.load_unet(checkpoint, device=device)
    if steps:
        selected["selected_step"] = info.get("step")
    table = backend.evaluate_subjects(model, info, dataset, split="test", mode=settings["eval_mode"], device=device)
    rows = [
        {
            "arm": run.arm, "finetune": run.finetune, "n_subjects": run.n_subjects, "seed": run.seed,
            "subjects_drawn": ";".join(drawn), "subject": str(r["subject"]),
            **{m: float(r[m]) for m in METRICS}, "train_seconds": seconds,
        }
        for r in table.to_dict("records")
    ]
    return rows, seconds, selected


def _write_csv(path: Path, units: list[ResumableUnit]) -> pd.DataFrame:
    rows = [row for unit in units if unit.is_done() for row in unit.result()["rows"]]
    df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    # An undefined distance (empty prediction) is stored as JSON null: keep the metrics numeric (NaN).
    df[list(METRICS)] = df[list(METRICS)].astype(float)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return df


def run_transfer_sweep(
    dataset: Any,
    profile: Profile,
    out_dir: str | Path,
    checkpoints: dict[str, Path | None],
    n_subjects: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    finetunes: Sequence[str] | None = None,
    device: Any = None,
    keep_checkpoints: bool = False,
    progress: bool = True,
    backend: UnetBackend | None = None,
) -> pd.DataFrame:
    """Run (or resume) the transfer-learning sweep; returns the tidy per-subject results.

    Parameters
    ----------
    dataset
        The site-B :class:`~tofmra_utils.data.SiteDataset`: ``splits["train"]`` is the
        fine-tuning pool, ``patches("train")`` its patches, ``patches("val")`` (when it has
        validation subjects) chooses each run's weights, the ``test`` split is evaluated.
    profile
        Step rule, validations, learning rate and batch size (``profile.transfer``), the U-net
        architecture (``profile.unet``, must match the pretrained checkpoints), the base seed.
    out_dir
        The run's ``transfer_dir``: ``results/<key>.json`` per finished run, ``results.csv``,
        and ``work/<key>/`` training folders (removed after evaluation unless
        ``keep_checkpoints``).
    checkpoints
        Arm name -> initial weights (``None`` for ``scratch``); its keys choose the arms, see
        :func:`pretrained_checkpoints`.
    n_subjects, seeds
        Default ``profile.transfer.n_subjects`` / ``.seeds``.
    finetunes
        Variants for the pretrained arms (default ``profile.transfer.finetunes``).
    device
        Torch device (default: the U-net trainer's default).
    keep_checkpoints
        Keep each run's weights (about 4x the model size each, with optimizer state).
    progress
        One tqdm bar over the whole sweep.
    backend
        The U-net functions (default :mod:`tofmra_utils.unet`); tests pass fakes.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`RESULT_COLUMNS`, one row per run and test subject, for the runs of this
        sweep (the same table as ``out_dir/results.csv``).
    """
    backend = backend or _default_backend()
    out_dir = Path(out_dir)
    results_dir, work_root = out_dir / "results", out_dir / "work"
    n_list = tuple(n_subjects if n_subjects is not None else profile.transfer.n_subjects)
    seed_list = tuple(seeds if seeds is not None else profile.transfer.seeds)
    pool = list(dataset.splits["train"])
    if max(n_list) > len(pool):
        raise DataError(getattr(dataset, "root", None), f"site-B pool has {len(pool)} subjects, the sweep needs {max(n_list)}")
    ft_list = tuple(finetunes if finetunes is not None else profile.transfer.finetunes)
    runs = plan_runs(list(checkpoints), ft_list, n_list, seed_list)
    draws = {r: draw_subjects(pool, r.n_subjects, r.seed, profile.seed) for r in runs}
    val_subjects = list(dataset.splits.get("val", []))
    units = {r: _result_unit(results_dir, r, _run_settings(r, draws[r], checkpoints[r.arm], profile, val_subjects))
             for r in runs}
    todo = [r for r in runs if not units[r].is_done()]

    training = any(r.n_subjects > 0 for r in todo)
    pool_patches = dataset.patches("train") if training else None
    val_patches = dataset.patches("val") if training and val_subjects else None
    if val_patches is not None and profile.transfer.val_patches_per_subject:
        val_patches = val_patches.at_most_per_subject(profile.transfer.val_patches_per_subject)
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="transfer sweep", unit="run", disable=not progress)
    try:
        for run in todo:
            bar.set_postfix_str(run.key)
            # The training folder is the U-net trainer's own resumable unit: it continues a
            # half-finished run with the same settings and replaces one with other settings.
            work_dir = work_root / run.key
            units[run].open()
            started = time.time()
            rows, seconds, selected = _one_run(run, units[run].settings, dataset, pool_patches, val_patches,
                                               checkpoints[run.arm], profile, work_dir, backend, device)
            units[run].finish({"run": run.__dict__, "rows": rows, "train_seconds": seconds, "selection": selected,
                               "wall_seconds": time.time() - started})
            _write_csv(results_file(out_dir), list(units.values()))
            if not keep_checkpoints:
                shutil.rmtree(work_dir, ignore_errors=True)
            bar.update(1)
    finally:
        bar.close()
    return _write_csv(results_file(out_dir), list(units.values()))


def results_file(out_dir: str | Path) -> Path:
    """The sweep's tidy table, ``<transfer_dir>/results.csv``."""
    return Path(out_dir) / "results.csv"


def load_transfer_results(out_dir: str | Path) -> pd.DataFrame:
    """``results.csv`` of a sweep (error naming the file if the sweep has not run)."""
    path = results_file(out_dir)
    if not path.exists():
        raise DataError(path, "no transfer results yet; run notebook 06_transfer_learning first")
    return pd.read_csv(path)
