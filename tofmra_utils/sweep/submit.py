"""Submitting a sweep through submitit, stage by stage: ``tofmra sweep``.

Executors (:data:`EXECUTORS`):

``local`` (default)
    submitit's local executor: every unit a separate process on this machine, at most
    ``parallel`` at a time, each limited to its stage's ``minutes`` and using its ``cpus`` torch
    threads (:class:`~tofmra_utils.profiles.SweepConfig`).
``slurm``
    submitit's SLURM executor: one job array per stage and seed set, each task asking for the
    stage's minutes, CPUs, GPUs and memory (``--slurm-partition`` chooses the partition). Run the
    command on the login node (in ``tmux`` or ``screen``): it waits for each stage's array before
    submitting the next, since U-nets read the GANs' synthetic sets and transfer reads the U-nets.
``debug``
    submitit's debug executor: every unit in this process, one after the other (the tests).

Data are prepared once in the run folder, as notebook 01 does (reused when present), and shared
by every seed. Units already done are skipped exactly (:mod:`tofmra_utils.sweep.units`); a unit
that fails is reported with its log file and the others go on; units that need its output are
``blocked``. ``summary.csv`` and ``aggregate.csv`` are rewritten after every stage.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..profiles import Profile, StageResources
from ..runs import RunPaths, default_run_dir
from .aggregate import SWEEP_DIR, write_tables
from .status import SweepState
from .units import STAGES, Unit, UnitJob, is_done, plan_units, run_unit, seed_paths, unit_settings, write_transfer_table

__all__ = ["EXECUTORS", "SweepReport", "run_sweep", "prepare_data", "make_executor", "default_parallel"]

EXECUTORS: tuple[str, ...] = ("local", "slurm", "debug")


@dataclass
class SweepReport:
    """What :func:`run_sweep` did.

    Attributes
    ----------
    sweep_dir
        The sweep folder.
    ran, skipped, failed, blocked
        Unit keys that ran to completion, were already done, failed, or could not run because a
        unit they need failed or is missing.
    logs
        Unit key -> log file of a failed unit.
    summary, aggregate
        The two tables' paths.
    seconds
        Wall time of the whole sweep.
    """

    sweep_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
    summary: Path | None = None
    aggregate: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


def default_parallel(resources: StageResources) -> int:
    """Local jobs side by side: as many as the CPU cores hold at the stage's ``cpus`` each."""
    return max(1, (os.cpu_count() or 1) // max(1, resources.cpus))


def make_executor(kind: str, folder: Path, stage: str, resources: StageResources, partition: str | None = None,
                  array_parallelism: int | None = None) -> Any:
    """The submitit executor of one stage, with the stage's resources."""
    import submitit

    if kind == "debug":
        return submitit.DebugExecutor(folder)
    if kind == "local":
        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(timeout_min=resources.minutes, gpus_per_node=resources.gpus)
        return executor
    if kind == "slurm":
        executor = submitit.AutoExecutor(folder, cluster="slurm")
        params: dict[str, Any] = {"timeout_min": resources.minutes, "cpus_per_task": resources.cpus,
                                  "gpus_per_node": resources.gpus, "mem_gb": resources.mem_gb, "tasks_per_node": 1,
                                  "nodes": 1, "name": f"tofmra-{stage}"}
        if partition:
            params["slurm_partition"] = partition
        if array_parallelism:
            params["slurm_array_parallelism"] = array_parallelism
        executor.update_parameters(**params)
        return executor
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")


def prepare_data(run_dir: Path, profile: Profile, log: Callable[[str], None] = print) -> None:
    """Both sites' data sets in the run folder, as notebook 01 prepares them (kept when present)."""
    from ..data import prepare_site

    paths = RunPaths(run_dir).ensure()
    for site in ("A", "B"):
        if paths.site(site).dataset_file.exists():
            continue
        started = time.perf_counter()
        prepare_site(paths, profile, site)
        log(f"prepared site {site} in {time.perf_counter() - started:.1f} s: {paths.site(site).root}")


def run_sweep(
    profile: Profile,
    seeds: Sequence[int],
    stages: Sequence[str] = STAGES,
    executor: str = "local",
    out: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    slurm_partition: str | None = None,
    parallel: int | None = None,
    gans: Sequence[str] | None = None,
    unets: Sequence[str] | None = None,
    arms: Sequence[str] | None = None,
    n_subjects: Sequence[int] | None = None,
    log: Callable[[str], None] = print,
) -> SweepReport:
    """Run (or finish) a sweep: every unit of ``stages`` for every seed; write its tables.

    Parameters
    ----------
    profile
        Sizes and the job resources per stage (``profile.sweep``).
    seeds
        Training seeds; seed ``s`` is a replica of ``tofmra run --seed s``.
    stages
        Subset of ``gans, unets, transfer``; a later stage needs its upstream units done (here or
        by an earlier sweep into the same folder).
    executor
        ``local``, ``slurm`` or ``debug`` (see the module docstring).
    out
        Sweep folder (default ``<run_dir>/sweep``).
    run_dir
        Run folder holding (or receiving) the prepared data (default ``runs/<profile>``).
    slurm_partition
        SLURM partition (``slurm`` only).
    parallel
        Local jobs side by side (default :func:`default_parallel`); SLURM array tasks at once.
    gans, unets, arms, n_subjects
        Restrict the units (:func:`~tofmra_utils.sweep.units.plan_units`).
    log
        Where progress lines go.
    """
    started = time.perf_counter()
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if executor == "slurm" and shutil.which("srun") is None:
        raise ValueError("--executor slurm: SLURM's srun is not on the PATH here (run on the cluster's login node)")
    run_dir = RunPaths(Path(run_dir) if run_dir else default_run_dir(profile.name)).root
    sweep_dir = Path(out).resolve() if out else run_dir / SWEEP_DIR
    seeds = [int(s) for s in seeds]
    units = plan_units(profile, seeds, tuple(stages), gans=None if gans is None else tuple(gans),
                       unets=None if unets is None else tuple(unets), arms=None if arms is None else tuple(arms),
                       n_subjects=None if n_subjects is None else tuple(n_subjects))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    state = SweepState(sweep_dir)
    state.describe(profile=profile.name, seeds=seeds, executor=executor, run_dir=str(run_dir),
                   started=_dt.datetime.now().isoformat(timespec="seconds"))
    state.plan([(u.key, u.stage) for u in units])
    prepare_data(run_dir, profile, log)
    for seed in seeds:
        seed_paths(sweep_dir, run_dir, seed)
    report = SweepReport(sweep_dir)
    log(f"sweep {sweep_dir}: {len(units)} units, seeds {seeds}, executor {executor}")
    for stage in (s for s in STAGES if s in stages):
        _run_stage(stage, [u for u in units if u.stage == stage], profile, run_dir, sweep_dir, executor, state, report,
                   slurm_partition, parallel, log)
        if stage == "transfer":
            for seed in seeds:
                write_transfer_table(seed_paths(sweep_dir, run_dir, seed))
        report.summary, report.aggregate = write_tables(sweep_dir)
    report.seconds = time.perf_counter() - started
    log(f"sweep done in {report.seconds:.1f} s: {len(report.ran)} ran, {len(report.skipped)} already done, "
        f"{len(report.failed)} failed, {len(report.blocked)} blocked; tables: {report.summary}, {report.aggregate}")
    return report


def _run_stage(stage: str, units: list[Unit], profile: Profile, run_dir: Path, sweep_dir: Path, executor: str,
               state: SweepState, report: SweepReport, partition: str | None, parallel: int | None,
               log: Callable[[str], None]) -> None:
    """Submit the stage's units that are not done, wait for them, record the outcome."""
    resources: StageResources = getattr(profile.sweep, stage)
    jobs = []
    for unit in units:
        settings = unit_settings(unit, profile, run_dir, sweep_dir)
        if settings is None:
            missing = ", ".join(u.key for u in unit.upstream(profile))
            state.set(unit.key, stage, "blocked", error=f"needs {missing}, not done")
            report.blocked.append(unit.key)
            log(f"  blocked  {unit.key}: needs {missing}, which is not done")
        elif is_done(unit, settings, sweep_dir):
            state.set(unit.key, stage, "done")
            report.skipped.append(unit.key)
        else:
            jobs.append(UnitJob(unit, profile, str(run_dir), str(sweep_dir), settings, threads=resources.cpus))
    log(f"{stage}: {len(jobs)} to run, {len(units) - len(jobs)} done or blocked")
    if not jobs:
        return
    folder = sweep_dir / "logs" / "%j"
    if executor == "slurm":  # one array for the stage; SLURM runs its tasks as resources free up
        waves = [jobs]
        width = parallel
    else:
        width = 1 if executor == "debug" else (parallel or default_parallel(resources))
        waves = [jobs[i:i + width] for i in range(0, len(jobs), width)]
    for wave in waves:
        ex = make_executor(executor, folder, stage, resources, partition, array_parallelism=width)
        submitted = ex.map_array(run_unit, wave)
        for job_spec, job in zip(wave, submitted):
            state.set(job_spec.unit.key, stage, "queued", job=str(job.job_id), log=str(job.paths.stderr),
                      executor=executor)
        for job_spec, job in zip(wave, submitted):
            _collect(job_spec.unit, stage, job, state, report, log)


def _collect(unit: Unit, stage: str, job: Any, state: SweepState, report: SweepReport,
             log: Callable[[str], None]) -> None:
    """Wait for one job and record what it says (a job killed from outside counts as failed)."""
    log_file = str(job.paths.stderr)
    try:
        outcome = job.result()
        # The debug executor's output is this process's; the traceback file is the log to read.
        log_file = outcome.get("error_log", log_file) if isinstance(job, _debug_job_class()) else log_file
    except Exception as err:  # the job process died: timeout, out of memory, cancelled, killed
        outcome = {"status": "failed", "error": f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"}
    status = outcome.get("status")
    if status in ("done", "skipped"):
        state.set(unit.key, stage, "done", seconds=outcome.get("seconds"))
        (report.ran if status == "done" else report.skipped).append(unit.key)
        log(f"  done     {unit.key} in {outcome.get('seconds', 0):.1f} s")
    else:
        state.set(unit.key, stage, "failed", error=outcome.get("error"), log=log_file)
        report.failed.append(unit.key)
        report.logs[unit.key] = log_file
        log(f"  FAILED   {unit.key}: {outcome.get('error')}; log: {log_file}")


def _debug_job_class() -> type:
    from submitit.local.debug import DebugJob

    return DebugJob
