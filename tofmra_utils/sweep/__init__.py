"""Seeds and sweeps: the study's trainings as independent jobs (``tofmra sweep``), through submitit.

A sweep runs, for every seed, each GAN training (with its synthetic set), each U-net training
(with its test scores) and each transfer run as one job (:mod:`~tofmra_utils.sweep.units`),
stage by stage, on this machine (submitit's local executor), in this process (``debug``) or on a
SLURM cluster (job arrays, resources per stage from the profile's
:class:`~tofmra_utils.profiles.SweepConfig`) (:mod:`~tofmra_utils.sweep.submit`). Units already
done are skipped exactly; a rerun of a killed sweep finishes only what is missing.
``tofmra sweep --status`` shows what is queued, running, done and failed
(:mod:`~tofmra_utils.sweep.status`). The sweep folder ends with ``summary.csv`` (one row per
stage, model and seed) and ``aggregate.csv`` (mean and sd over seeds); notebooks 05 and 06 read
them with :func:`seed_results` (:mod:`~tofmra_utils.sweep.aggregate`).

Layout of a sweep folder (default ``runs/<profile>/sweep``)::

    state.json              the driver's view of every unit (status, job id, log)
    units/<key>.json        each unit's fingerprinted record and result (key: gans-dcgan-s0, ...)
    seed-<s>/               a run folder per seed (gans/, synthetic/, unets/, transfer/, results/);
                            its data/ links to the run's prepared data
    logs/<job id>/          submitit's pickles and each job's stdout / stderr
    summary.csv, aggregate.csv
"""

from .aggregate import aggregate_frame, find_sweep, seed_aggregate, seed_results, summary_frame, write_tables
from .status import SweepState, status_table, status_text
from .submit import EXECUTORS, SweepReport, run_sweep
from .units import STAGES, Unit, UnitJob, is_done, plan_units, run_unit, unit_settings

__all__ = [
    "EXECUTORS", "STAGES", "SweepReport", "SweepState", "Unit", "UnitJob", "aggregate_frame", "find_sweep",
    "is_done", "plan_units", "run_sweep", "run_unit", "seed_aggregate", "seed_results", "status_table",
    "status_text", "summary_frame", "unit_settings", "write_tables",
]
