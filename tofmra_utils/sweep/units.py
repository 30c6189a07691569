"""The sweep's units of work: one GAN training, one U-net training, one transfer run, per seed.

A unit is what one job does. Its identity is ``(stage, model, seed)``:

``gans``
    ``model`` is a GAN name. Trains the GAN with the seed (:func:`~tofmra_utils.gan.train.train_gan`)
    and generates its synthetic set as notebooks 02-04 do (:func:`~tofmra_utils.gan.stage.synthetic_stage`).
``unets``
    ``model`` is a training set: ``real`` or a GAN name. Trains the U-net as notebook 05 does (the
    real set's step budget and validation schedule for every set) and scores it on the site-A
    test volumes (sliding-window inference, notebook 05's main table).
``transfer``
    ``model`` is a transfer cell ``<arm>-<finetune>-n<NN>``. One run of notebook 06's sweep whose
    repetition is the seed: the seed's subject draw, fine-tuned from the same seed's U-nets.

Seed ``s`` of a sweep is a whole replica of the study's training with ``tofmra run --seed s``: its
GANs, U-nets and transfer runs all use ``s``; the data (subjects, split, patches) are prepared once
from the profile's seed and shared. Each seed's outputs live in ``<sweep>/seed-<s>/``, laid out as
a run folder (:class:`~tofmra_utils.runs.RunPaths`) whose ``data`` links to the run's data.

**Skipping is exact.** Each unit keeps a :class:`~tofmra_utils.resumable.ResumableUnit` record
``<sweep>/units/<key>.json`` whose settings are the profile (job resources aside), the prepared
data's identity and the digests of what its upstream units produced (the synthetic pairs' and the
U-net weights' arrays, not their files, whose bytes vary between writes). A unit is done when that
record is done with the same fingerprint *and* its outputs exist; anything else runs it again (the
trainers then resume their own fingerprinted state, so a half-trained model continues).
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..conventions import file_hash
from ..io import DataError, atomic_path, read_json
from ..profiles import GAN_NAMES, Profile
from ..resumable import ResumableUnit, array_digest, fingerprint
from ..runs import RunPaths

__all__ = [
    "STAGES",
    "EVAL_MODE",
    "Unit",
    "UnitJob",
    "plan_units",
    "unit_settings",
    "unit_record",
    "is_done",
    "seed_paths",
    "run_unit",
    "error_log",
    "write_transfer_table",
]

#: Sweep stages in the order they must run (each needs the one before it).
STAGES: tuple[str, ...] = ("gans", "unets", "transfer")
#: Whole-volume inference of the U-net units: notebook 05's main table.
EVAL_MODE = "sliding"
#: Folder of the unit records inside a sweep folder.
UNITS_DIR = "units"


@dataclass(frozen=True)
class Unit:
    """One job of a sweep.

    Attributes
    ----------
    stage
        One of :data:`STAGES`.
    model
        GAN name (``gans``), training set (``unets``: ``real`` or a GAN name) or transfer cell
        (``transfer``: ``<arm>-<finetune>-n<NN>``).
    seed
        Training seed (and, for transfer, the repetition: its subject draw).
    arm, finetune, n_subjects
        The transfer cell's parts (empty / 0 for the other stages).
    """

    stage: str
    model: str
    seed: int
    arm: str = ""
    finetune: str = ""
    n_subjects: int = 0

    @property
    def key(self) -> str:
        """File-name-safe identifier, e.g. ``unets-real-s1``."""
        return f"{self.stage}-{self.model}-s{self.seed}"

    def upstream(self, profile: Profile) -> list[Unit]:
        """The units whose outputs this one reads (same seed)."""
        if self.stage == "unets" and self.model != "real":
            return [Unit("gans", self.model, self.seed)]
        if self.stage == "transfer" and self.arm != "scratch":
            source = profile.transfer.pretrained_gan if self.arm == "synthetic" else "real"
            return [Unit("unets", source, self.seed)]
        return []


def transfer_unit(arm: str, finetune: str, n: int, seed: int) -> Unit:
    """The transfer unit of one sweep cell."""
    return Unit("transfer", f"{arm}-{finetune}-n{int(n):02d}", int(seed), arm=arm, finetune=finetune, n_subjects=int(n))


def plan_units(
    profile: Profile,
    seeds: list[int],
    stages: tuple[str, ...] = STAGES,
    gans: tuple[str, ...] | None = None,
    unets: tuple[str, ...] | None = None,
    arms: tuple[str, ...] | None = None,
    n_subjects: tuple[int, ...] | None = None,
) -> list[Unit]:
    """Every unit of a sweep, stage by stage, seed by seed.

    Parameters
    ----------
    profile
        Sizes; the defaults of the choices below come from it.
    seeds
        Training seeds.
    stages
        Subset of :data:`STAGES` to plan.
    gans
        GANs to train (default all three).
    unets
        U-net training sets (default ``real`` and every GAN of ``gans``).
    arms, n_subjects
        Transfer arms and numbers of site-B subjects (default ``profile.transfer``'s); fine-tuning
        variants always come from the profile.
    """
    from ..transfer.plan import plan_runs

    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    gan_list = tuple(gans) if gans is not None else GAN_NAMES
    bad = [g for g in gan_list if g not in GAN_NAMES]
    if bad:
        raise ValueError(f"unknown GAN(s) {bad}; choose from {', '.join(GAN_NAMES)}")
    unet_list = tuple(unets) if unets is not None else ("real", *gan_list)
    bad = [u for u in unet_list if u not in ("real", *GAN_NAMES)]
    if bad:
        raise ValueError(f"unknown U-net training set(s) {bad}; choose from real, {', '.join(GAN_NAMES)}")
    if not seeds:
        raise ValueError("no seeds given")
    t = profile.transfer
    units: list[Unit] = []
    for stage in STAGES:
        if stage not in stages:
            continue
        for seed in seeds:
            if stage == "gans":
                units += [Unit("gans", g, int(seed)) for g in gan_list]
            elif stage == "unets":
                units += [Unit("unets", u, int(seed)) for u in unet_list]
            else:
                runs = plan_runs(tuple(arms) if arms is not None else t.arms, t.finetunes,
                                 tuple(n_subjects) if n_subjects is not None else t.n_subjects, [int(seed)])
                units += [transfer_unit(r.arm, r.finetune, r.n_subjects, r.seed) for r in runs]
    return units


# ----------------------------------------------------------------------------- folders and records
def seed_paths(sweep_dir: Path, run_dir: Path, seed: int) -> RunPaths:
    """``<sweep>/seed-<s>/``, a run folder whose ``data`` is a link to the run's prepared data."""
    paths = RunPaths(Path(sweep_dir) / f"seed-{int(seed)}").ensure()
    link = paths.root / "data"
    target = RunPaths(run_dir).root / "data"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(os.path.relpath(target, paths.root), target_is_directory=True)
    return paths


def unit_record(sweep_dir: Path, unit: Unit, settings: dict[str, Any] | None = None) -> ResumableUnit:
    """The unit's record ``<sweep>/units/<key>.json`` (settings ``{}`` only to read it)."""
    return ResumableUnit(Path(sweep_dir) / UNITS_DIR, settings or {}, state_name=None, history_name=None,
                         record_name=f"{unit.key}.json")


def _data_identity(run_dir: Path) -> dict[str, str]:
    """Digest of each prepared site's ``dataset.json`` (subjects, split, cache key)."""
    out = {}
    for site in ("A", "B"):
        f = RunPaths(run_dir).site(site).dataset_file
        out[site] = file_hash(f) if f.exists() else "missing"
    return out


def unit_settings(unit: Unit, profile: Profile, run_dir: Path, sweep_dir: Path) -> dict[str, Any] | None:
    """What the unit's result depends on; ``None`` while an upstream unit is not done."""
    upstream = {}
    for up in unit.upstream(profile):
        rec = unit_record(sweep_dir, up).record()
        if rec is None or rec.get("status") != "done" or not _outputs_exist(sweep_dir, rec.get("result", {})):
            return None
        upstream[up.key] = {"fingerprint": rec["fingerprint"], "digest": rec["result"].get("digest")}
    prof = profile.to_dict()
    prof.pop("sweep", None)  # job resources change no result
    prof.pop("description", None)
    return {"unit": {"stage": unit.stage, "model": unit.model, "seed": unit.seed}, "profile": prof,
            "data": _data_identity(run_dir), "upstream": upstream}


def _outputs_exist(sweep_dir: Path, result: dict[str, Any]) -> bool:
    return all((Path(sweep_dir) / rel).exists() for rel in result.get("outputs", []))


def is_done(unit: Unit, settings: dict[str, Any] | None, sweep_dir: Path) -> bool:
    """Done with these settings and its outputs still there (see the module docstring)."""
    if settings is None:
        return False
    record = unit_record(sweep_dir, unit, settings)
    return record.is_done() and _outputs_exist(sweep_dir, record.result() or {})


# ----------------------------------------------------------------------------- running one unit
@dataclass(frozen=True)
class UnitJob:
    """Everything a job needs (pickled by submitit): the unit, its settings and where things are."""

    unit: Unit
    profile: Profile
    run_dir: str
    sweep_dir: str
    settings: dict[str, Any] = field(hash=False)
    threads: int = 1


def run_unit(job: UnitJob) -> dict[str, Any]:
    """Run one unit (in a job); never raises for the unit's own failure.

    Returns ``{"key", "status": "done" | "skipped" | "failed", "seconds", "error"?}``; a failure
    prints its traceback to standard error (the job's log) and leaves the record ``running``.
    """
    import torch

    from ..seeding import set_determinism

    sweep_dir, unit = Path(job.sweep_dir), job.unit
    started = time.perf_counter()
    record = unit_record(sweep_dir, unit, job.settings)
    if is_done(unit, job.settings, sweep_dir):
        return {"key": unit.key, "status": "skipped", "seconds": 0.0}
    try:
        record.open()
        torch.set_num_threads(max(1, int(job.threads)))
        set_determinism(unit.seed)  # as setup_notebook does for `tofmra run --seed`
        paths = seed_paths(sweep_dir, Path(job.run_dir), unit.seed)
        work = {"gans": _gan_unit, "unets": _unet_unit, "transfer": _transfer_unit}[unit.stage]
        result = work(unit, job.profile, paths)
        result["outputs"] = [os.path.relpath(p, sweep_dir) for p in result["outputs"]]
        result.update(seconds=round(time.perf_counter() - started, 2), host=socket.gethostname())
        record.finish(result)
    except Exception as err:  # the job's own failure: reported, the others go on
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        error_file = error_log(sweep_dir, unit)
        with atomic_path(error_file) as tmp:
            tmp.write_text(text)
        return {"key": unit.key, "status": "failed", "seconds": round(time.perf_counter() - started, 2),
                "error": f"{type(err).__name__}: {err}", "error_log": str(error_file)}
    return {"key": unit.key, "status": "done", "seconds": round(time.perf_counter() - started, 2)}


def error_log(sweep_dir: Path, unit: Unit) -> Path:
    """``<sweep>/units/<key>.error.txt``: the traceback of the unit's last failure."""
    return Path(sweep_dir) / UNITS_DIR / f"{unit.key}.error.txt"


def _context(unit: Unit, profile: Profile, paths: RunPaths) -> Any:
    """A notebook context for the stage functions notebooks 02-04 call (headless, the unit's seed)."""
    from ..notebook import NotebookContext
    from ..seeding import default_device

    return NotebookContext(name=f"sweep_{unit.key}", profile=profile, paths=paths, device=default_device(),
                           headless=True, train_seed=unit.seed)


def _gan_unit(unit: Unit, profile: Profile, paths: RunPaths) -> dict[str, Any]:
    from ..gan.stage import synthetic_stage
    from ..gan.train import train_gan

    ctx = _context(unit, profile, paths)
    train = ctx.dataset("A").patches("train")
    result = train_gan(unit.model, train, profile, paths.gan_dir(unit.model), device=ctx.device, seed=unit.seed,
                       progress=False)
    synthetic, sheet = synthetic_stage(ctx, unit.model, result)
    synthetic_file = paths.synthetic_file(unit.model)
    return {
        "metrics": {"generator_steps": int(result.steps), "train_seconds": round(float(result.seconds), 2),
                    "vessel_fraction_synthetic": round(float((synthetic.label > 0).mean()), 5),
                    "vessel_fraction_real": round(float((train.label > 0).mean()), 5),
                    "label_threshold": sheet.get("threshold"), "final_d_loss": float(result.history["d_loss"].iloc[-1]),
                    "final_g_loss": float(result.history["g_loss"].iloc[-1])},
        "digest": array_digest(synthetic.image, synthetic.label),
        "outputs": [synthetic_file, result.checkpoint],
    }


def _unet_unit(unit: Unit, profile: Profile, paths: RunPaths) -> dict[str, Any]:
    from ..data import load_dataset
    from ..patchset import PatchSet
    from ..seeding import default_device
    from ..unet.experiment import evaluate_models, summary_table
    from ..unet.train import default_val_every, plan_steps, train_unet

    cfg, device = profile.unet, default_device()
    dataset = load_dataset(paths.site("A").root)
    real, val = dataset.patches("train"), dataset.patches("val")
    if unit.model == "real":
        patches = real
    else:
        f = paths.synthetic_file(unit.model)
        if not f.exists():
            raise DataError(f, f"synthetic patches of {unit.model} not found: its GAN unit has not run")
        patches = PatchSet.load(f)
    # Notebook 05's budget: what the real set gets, the same validation steps for every set.
    steps = plan_steps(len(real), cfg, cfg.batch_size, None)
    val_every = default_val_every(steps, math.ceil(len(real) / cfg.batch_size))
    trained = train_unet(patches, val, cfg, paths.unet_dir(unit.model), seed=unit.seed, device=device, max_steps=steps,
                         progress=False, val_every=val_every)
    per_patient = evaluate_models({unit.model: trained.checkpoint}, dataset, "test", mode=EVAL_MODE, device=device)
    table = paths.table_file(f"sweep_unet_{unit.model}_per_patient.csv")
    with atomic_path(table) as tmp:
        per_patient.to_csv(tmp, index=False)
    row = summary_table(per_patient).iloc[0]
    return {
        "metrics": {"dsc": float(row["dsc_mean"]), "dsc_sd_patients": _finite(row["dsc_sd"]),
                    "hd95_mm": _finite(row["hd95_mm_mean"]), "hd95_study": _finite(row["hd95_study_mean"]),
                    "best_val_dice": _finite(trained.best_val_dice), "train_seconds": round(float(trained.seconds), 2),
                    "steps": int(steps), "n_test": int(row["n_patients"])},
        "digest": _weights_digest(trained.checkpoint),
        "outputs": [trained.checkpoint, table],
    }


def _transfer_unit(unit: Unit, profile: Profile, paths: RunPaths) -> dict[str, Any]:
    from ..data import load_dataset
    from ..seeding import default_device
    from ..transfer.plan import FINETUNES, TransferRun, pretrained_checkpoints
    from ..transfer.sweep import run_transfer_sweep

    site_b = load_dataset(paths.site("B").root)
    checkpoints = pretrained_checkpoints(paths, profile, [unit.arm])
    finetunes = [unit.finetune] if unit.finetune in FINETUNES else [FINETUNES[0]]  # n = 0 fine-tunes nothing
    rows = run_transfer_sweep(site_b, profile, paths.transfer_dir, checkpoints, n_subjects=[unit.n_subjects],
                              seeds=[unit.seed], finetunes=finetunes, device=default_device(), progress=False)
    mine = rows[(rows.arm == unit.arm) & (rows.finetune == unit.finetune) & (rows.n_subjects == unit.n_subjects)
                & (rows.seed == unit.seed)]
    if mine.empty:
        raise RuntimeError(f"{unit.key}: the transfer sweep returned no rows for this cell")
    cell = TransferRun(unit.arm, unit.finetune, unit.n_subjects, unit.seed)
    result_file = paths.transfer_dir / "results" / f"{cell.key}.json"
    return {
        "metrics": {"dsc": float(mine.dsc.mean()), "hd95_mm": _finite(mine.hd95_mm.mean()),
                    "hd95_study": _finite(mine.hd95_study.mean()), "train_seconds": float(mine.train_seconds.iloc[0]),
                    "n_test": int(len(mine)), "arm": unit.arm, "finetune": unit.finetune,
                    "n_subjects": unit.n_subjects},
        "digest": fingerprint({"rows": mine.drop(columns="train_seconds").to_dict("records")}),
        "outputs": [result_file],
    }


def _weights_digest(checkpoint: Path) -> str:
    """Digest of a U-net checkpoint's weights (not of the file: a zip archive's bytes vary between writes)."""
    from ..checkpoint import load_checkpoint

    weights = load_checkpoint(checkpoint)["model"]
    return array_digest(*(weights[k].cpu().numpy() for k in sorted(weights)))


def write_transfer_table(paths: RunPaths) -> Path | None:
    """Rewrite ``<seed>/transfer/results.csv`` from every finished run's record.

    Transfer jobs run side by side, each writing the table of its own run only; after the stage
    this puts every finished run back into one table (as notebook 06's sweep leaves it).
    """
    import pandas as pd

    from ..transfer.sweep import METRICS, RESULT_COLUMNS, results_file

    records = sorted((paths.transfer_dir / "results").glob("*.json"))
    if not records:
        return None
    rows = []
    for f in records:
        rec = read_json(f)
        if rec.get("status") == "done":
            rows += rec.get("result", {}).get("rows", [])
    df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    df[list(METRICS)] = df[list(METRICS)].astype(float)
    target = results_file(paths.transfer_dir)
    with atomic_path(target) as tmp:
        df.to_csv(tmp, index=False)
    return target


def _finite(value: Any) -> float | None:
    """A float, or ``None`` for a missing or undefined value (an empty prediction's distance)."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None
