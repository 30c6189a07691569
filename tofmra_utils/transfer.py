"""Transfer learning on a second site: fine-tune with 1..N site-B subjects, with and without pretraining.

The study's last experiment (Kossen et al. 2021): a U-net is trained on a few patients of a
second, differently acquired data set, either from scratch or starting from the weights of the
U-net trained on synthetic (GAN) patches of the first site. Pretraining helped most when few
patients were available (1 patient: DSC 0.91 vs 0.84).

The sweep here runs every combination of

``arm``
    ``"scratch"`` (random initialization), ``"synthetic"`` (the notebook-05 U-net trained on the
    synthetic patches of ``profile.transfer.pretrained_gan``) or ``"real"`` (the notebook-05
    U-net trained on real site-A patches: the upper bound of what sharing data could give).
``finetune``
    ``"full"`` (all weights train) or ``"frozen_encoder"`` (only the decoder trains); scratch is
    always ``"full"``.
``n_subjects`` x ``seed``
    ``n`` site-B pool subjects drawn per seed: one permutation of the pool per seed, the first
    ``n`` taken, so the draws are nested in ``n`` within a seed (less noise along the curve) and
    independent between seeds. Every arm sees the same subjects for the same ``(n, seed)``, and
    the same training seed, so arms are compared pairwise. ``n = 0`` is the site-A U-net of a
    pretrained arm applied to site B as it is (fine-tuning ``"none"``, one run: nothing random).

Every arm trains by the same rule: ``profile.transfer.steps_for(n)`` optimizer steps (a budget
that grows with the number of subjects) at ``profile.transfer.lr`` with
``profile.transfer.batch_size``, validated ``profile.transfer.val_checks`` times on the patches of
the site-B validation subjects; the weights with the best validation Dice are kept (model
selection never sees a test subject; see :func:`selection_rule`). Each finished run is evaluated on
the site-B test volumes and leaves ``<transfer_dir>/results/<key>.json``, the record of a
:class:`~tofmra_utils.resumable.ResumableUnit` (settings, fingerprint, status, the result rows);
``results.csv`` (one row per run and test subject) is rewritten atomically from those records
after every run, so an interrupted sweep resumes where it stopped without duplicated rows. A
result whose settings no longer match (another step budget, another draw) is recomputed; a
half-finished training folder ``work/<key>/`` is resumed or replaced by the U-net trainer's own
unit.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .io import DataError, atomic_path
from .profiles import Profile
from .resumable import ResumableUnit
from .study import STUDY_TL_ONE_PATIENT
from .runs import RunPaths

__all__ = [
    "ARMS",
    "FINETUNES",
    "RESULT_COLUMNS",
    "TransferRun",
    "plan_runs",
    "draw_subjects",
    "selection_rule",
    "steps_by_n",
    "pretrained_checkpoints",
    "find_unet_checkpoint",
    "run_transfer_sweep",
    "results_file",
    "load_transfer_results",
    "summary_value",
    "scratch_noise",
    "record_and_check",
    "summarize_transfer",
    "pretraining_gain",
    "gain_sentence",
    "study_comparison_table",
]

#: Initializations compared by the sweep.
ARMS: tuple[str, ...] = ("scratch", "synthetic", "real")
#: Fine-tuning variants of the pretrained arms.
FINETUNES: tuple[str, ...] = ("full", "frozen_encoder")
#: The fine-tuning "variant" of the ``n = 0`` runs: the site-A weights as they are.
NO_FINETUNE = "none"
#: Columns of ``results.csv`` (one row per run and site-B test subject).
RESULT_COLUMNS: tuple[str, ...] = (
    "arm", "finetune", "n_subjects", "seed", "subjects_drawn", "subject", "dsc", "hd95_mm", "hd95_study",
    "train_seconds",
)
METRICS: tuple[str, ...] = ("dsc", "hd95_mm", "hd95_study")
#: The U-net trainer's selected weights (:data:`tofmra_utils.unet.train.BEST`; not imported: no torch here).
BEST_CHECKPOINT = "best.pt"


# ----------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class TransferRun:
    """One cell of the sweep."""

    arm: str
    finetune: str
    n_subjects: int
    seed: int

    @property
    def key(self) -> str:
        """File-name-safe identifier, e.g. ``synthetic-full-n02-s1``."""
        return f"{self.arm}-{self.finetune}-n{self.n_subjects:02d}-s{self.seed}"


def plan_runs(
    arms: Sequence[str], finetunes: Sequence[str], n_subjects: Sequence[int], seeds: Sequence[int]
) -> list[TransferRun]:
    """All runs of a sweep, ordered by n, seed, arm, variant (so partial sweeps cover small n first).

    ``scratch`` gets only ``full`` fine-tuning (there is no pretrained encoder to freeze).
    ``n = 0`` gives one run per pretrained arm, fine-tuning :data:`NO_FINETUNE`, under the first
    seed (applying fixed weights draws nothing at random).
    """
    unknown = [a for a in arms if a not in ARMS] + [f for f in finetunes if f not in FINETUNES]
    if unknown:
        raise ValueError(f"unknown arm/fine-tuning variant {unknown}; choose arms from {ARMS}, variants from {FINETUNES}")
    if any(int(n) < 0 for n in n_subjects) or not seeds:
        raise ValueError(f"n_subjects must be >= 0 and seeds not empty, got {tuple(n_subjects)} and {tuple(seeds)}")
    runs = []
    for n in n_subjects:
        if int(n) == 0:
            runs += [TransferRun(arm, NO_FINETUNE, 0, int(seeds[0])) for arm in arms if arm != "scratch"]
            continue
        for seed in seeds:
            for arm in arms:
                for ft in ("full",) if arm == "scratch" else finetunes:
                    runs.append(TransferRun(arm, ft, int(n), int(seed)))
    return runs


def draw_subjects(pool: Sequence[str], n: int, seed: int, base_seed: int = 0) -> list[str]:
    """The ``n`` pool subjects of repetition ``seed``: the first ``n`` of a seed-specific permutation.

    Nested in ``n`` for a fixed seed; independent between seeds; independent of the arm. ``n = 0``
    draws nobody.
    """
    pool = sorted(pool)
    if n == 0:
        return []
    if not 1 <= n <= len(pool):
        raise ValueError(f"cannot draw {n} subjects from a pool of {len(pool)}")
    order = np.random.default_rng([base_seed, seed]).permutation(len(pool))
    return [pool[i] for i in order[:n]]


def _train_seed(base_seed: int, seed: int, n: int) -> int:
    """One training seed per (seed, n), shared by all arms (paired comparison)."""
    return int(np.random.SeedSequence([base_seed, seed, n]).generate_state(1)[0] % (2**31))


# ----------------------------------------------------------------------------- pretrained weights
def find_unet_checkpoint(unet_dir: Path, notebook_hint: str = "05_unet_synthetic_vs_real") -> Path:
    """The selected weights of a U-net folder (``best.pt``), or a :class:`DataError` naming the notebook that makes them."""
    path = unet_dir / BEST_CHECKPOINT
    if not path.exists():
        raise DataError(unet_dir, f"no U-net checkpoint ({BEST_CHECKPOINT}); run notebook {notebook_hint} first")
    return path


def pretrained_checkpoints(paths: RunPaths, profile: Profile, arms: Sequence[str] | None = None) -> dict[str, Path | None]:
    """Initial weights per arm (default ``profile.transfer.arms``): ``None`` for scratch, the
    notebook-05 U-nets for the others."""
    where = {"synthetic": profile.transfer.pretrained_gan, "real": "real"}
    arms = tuple(arms if arms is not None else profile.transfer.arms)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm {unknown}; choose from {ARMS}")
    return {arm: None if arm == "scratch" else find_unet_checkpoint(paths.unet_dir(where[arm])) for arm in arms}


# ----------------------------------------------------------------------------- the U-net backend
class UnetBackend(NamedTuple):
    """The three U-net functions the sweep needs (replaced by fakes in tests)."""

    train_unet: Callable[..., Any]
    load_unet: Callable[..., Any]
    evaluate_subjects: Callable[..., pd.DataFrame]


def _default_backend() -> UnetBackend:
    from .unet.infer import evaluate_subjects
    from .unet.train import load_unet, train_unet

    return UnetBackend(train_unet, load_unet, evaluate_subjects)


# ----------------------------------------------------------------------------- the sweep
def selection_rule(dataset: Any, profile: Profile) -> str:
    """What chooses each fine-tuned model's weights, in words (recorded in ``summary.json``).

    Site-B validation subjects when the data set has them (never the test subjects), else the
    final weights.
    """
    val = list(dataset.splits.get("val", []))
    if not val:
        return "final weights (site B has no validation subjects)"
    return (f"best Dice on the patches of {len(val)} site-B validation subject{'s' if len(val) > 1 else ''}, "
            f"checked {profile.transfer.val_checks} times per run")


def steps_by_n(profile: Profile, n_subjects: Sequence[int] | None = None) -> dict[int, int]:
    """Optimizer steps per run for each ``n`` of the sweep (``profile.transfer.steps_for``)."""
    t = profile.transfer
    return {int(n): t.steps_for(int(n)) for n in (n_subjects if n_subjects is not None else t.n_subjects)}


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
    }


def _result_unit(results_dir: Path, run: TransferRun, settings: dict[str, Any]) -> ResumableUnit:
    """The stored result of one run: ``results/<key>.json``, reused only with the same settings."""
    return ResumableUnit(results_dir, settings, state_name=None, history_name=None, record_name=f"{run.key}.json")


def _one_run(
    run: TransferRun, dataset: Any, pool_patches: Any, val_patches: Any, drawn: list[str], init: Path | None,
    profile: Profile, work_dir: Path, backend: UnetBackend, device: Any,
) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
    t = profile.transfer
    steps = t.steps_for(run.n_subjects)
    selected: dict[str, Any] = {"steps": steps}
    if steps == 0:  # n = 0: the site-A weights as they are
        checkpoint, seconds = init, 0.0
    else:
        result = backend.train_unet(
            train=pool_patches.for_subjects(drawn), val=val_patches, config=profile.unet, out_dir=work_dir,
            seed=_train_seed(profile.seed, run.seed, run.n_subjects), device=device, init_checkpoint=init,
            freeze_encoder=run.finetune == "frozen_encoder", max_steps=steps, lr=t.lr, batch_size=t.batch_size,
            progress=False, val_every=_val_every(steps, t.val_checks),
        )
        checkpoint, seconds = result.checkpoint, float(result.seconds)
        selected["best_val_dice"] = None if result.best_val_dice is None else float(result.best_val_dice)
    model, info = backend.load_unet(checkpoint, device=device)
    if steps:
        selected["selected_step"] = info.get("step")
    table = backend.evaluate_subjects(model, info, dataset, split="test", mode=t.eval_mode, device=device)
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
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="transfer sweep", unit="run", disable=not progress)
    try:
        for run in todo:
            bar.set_postfix_str(run.key)
            # The training folder is the U-net trainer's own resumable unit: it continues a
            # half-finished run with the same settings and replaces one with other settings.
            work_dir = work_root / run.key
            units[run].open()
            started = time.time()
            rows, seconds, selected = _one_run(run, dataset, pool_patches, val_patches, draws[run],
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


# ----------------------------------------------------------------------------- summaries
def summarize_transfer(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds per (arm, finetune, n_subjects).

    Each run is first reduced to its mean over the test subjects (NaN distances, from empty
    predictions, are skipped and counted in ``n_undefined``); then the run means are averaged
    over seeds. ``*_sd`` is the sample standard deviation over seeds (NaN with one seed).

    Returns
    -------
    pandas.DataFrame
        Columns ``arm, finetune, n_subjects, n_seeds, dsc_mean, dsc_sd, hd95_mm_mean,
        hd95_mm_sd, hd95_study_mean, hd95_study_sd, n_undefined``, sorted by arm and n.
    """
    keys = ["arm", "finetune", "n_subjects", "seed"]
    per_run = results.groupby(keys, sort=False)[list(METRICS)].mean().reset_index()
    undefined = results.groupby(keys, sort=False)["hd95_mm"].apply(lambda s: int(s.isna().sum())).reset_index(name="n_undefined")
    per_run = per_run.merge(undefined, on=keys)
    grouped = per_run.groupby(["arm", "finetune", "n_subjects"], sort=False)
    out = grouped.agg(
        n_seeds=("seed", "nunique"),
        **{f"{m}_{stat}": (m, stat if stat == "mean" else "std") for m in METRICS for stat in ("mean", "sd")},
        n_undefined=("n_undefined", "sum"),
    ).reset_index()
    order = {a: i for i, a in enumerate(ARMS)}
    out["_arm"] = out["arm"].map(order)
    return out.sort_values(["_arm", "finetune", "n_subjects"]).drop(columns="_arm").reset_index(drop=True)


def pretraining_gain(
    results: pd.DataFrame, arm: str = "synthetic", finetune: str = "full", baseline: str = "scratch",
    metric: str = "dsc",
) -> pd.DataFrame:
    """Paired difference ``arm - baseline`` of run means, per n: mean ± sd over seeds.

    Arms share subjects and training seed for each (n, seed), so the difference per seed is a
    paired comparison. Positive = better for DSC, worse for the distances.

    Returns
    -------
    pandas.DataFrame
        Columns ``n_subjects, gain_mean, gain_sd, n_seeds, seeds_positive`` (seeds where the
        difference is > 0).
    """
    runs = results.groupby(["arm", "finetune", "n_subjects", "seed"])[metric].mean().reset_index()
    a = runs[(runs.arm == arm) & (runs.finetune == finetune)].set_index(["n_subjects", "seed"])[metric]
    b = runs[(runs.arm == baseline) & (runs.finetune == "full")].set_index(["n_subjects", "seed"])[metric]
    diff = (a - b).dropna().rename("gain").reset_index()
    out = diff.groupby("n_subjects")["gain"].agg(gain_mean="mean", gain_sd="std", n_seeds="count",
                                                  seeds_positive=lambda g: int((g > 0).sum()))
    return out.reset_index()


#: Fewer seeds than this make no finding (a difference needs its spread over at least 3 seeds).
MIN_SEEDS_FOR_FINDING = 3


def _gain_verdict(mean: float, sd: float, n_seeds: int) -> str:
    """"helps" / "hurts" only when the mean is beyond one sd over at least 3 seeds."""
    if n_seeds < MIN_SEEDS_FOR_FINDING or not np.isfinite(sd):
        return f"is not measured well enough to tell (fewer than {MIN_SEEDS_FOR_FINDING} seeds)"
    if mean - sd > 0:
        return "helps"
    if mean + sd < 0:
        return "hurts"
    return "makes no clear difference"


def gain_sentence(gain: pd.DataFrame, arm: str = "synthetic", metric: str = "DSC") -> str:
    """A conclusion computed from :func:`pretraining_gain`: the smallest and largest n, and the trend.

    A gain "helps" (or "hurts") only when its mean is more than one sd over seeds away from 0,
    with at least :data:`MIN_SEEDS_FOR_FINDING` seeds; the gain "shrinks" (or "grows") from the
    smallest to the largest n only when the change exceeds the larger of the two sds.
    """
    if gain.empty:
        return f"No paired {arm} vs scratch runs to compare."
    gain = gain.sort_values("n_subjects")
    parts = []
    for _, r in gain.iloc[[0, -1] if len(gain) > 1 else [0]].iterrows():
        sd = float(r.gain_sd) if pd.notna(r.gain_sd) else float("nan")
        sd_text = "" if np.isnan(sd) else f" ± {sd:.3f}"
        parts.append(
            f"with {int(r.n_subjects)} site-B subject{'s' if r.n_subjects > 1 else ''}, {arm} pretraining "
            f"{_gain_verdict(float(r.gain_mean), sd, int(r.n_seeds))}: {metric} {r.gain_mean:+.3f}{sd_text} "
            f"(mean ± sd over {int(r.n_seeds)} seed{'s' if r.n_seeds > 1 else ''}; better in "
            f"{int(r.seeds_positive)} of {int(r.n_seeds)})"
        )
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + "."
    if len(gain) > 1:
        first, last = gain.iloc[0], gain.iloc[-1]
        spread = np.nanmax([first.gain_sd, last.gain_sd, np.nan]) if min(first.n_seeds, last.n_seeds) >= MIN_SEEDS_FOR_FINDING else np.nan
        change = float(last.gain_mean - first.gain_mean)
        if not np.isfinite(spread):
            trend = "too few seeds to say how the gain changes with n"
        elif change < -spread:
            trend = f"the gain shrinks as site-B data grow ({change:+.3f} from n={int(first.n_subjects)} to n={int(last.n_subjects)}), as in the study"
        elif change > spread:
            trend = f"the gain grows with more site-B data ({change:+.3f}), unlike the study, where it was largest with 1 patient"
        else:
            trend = f"the gain does not change beyond the seeds' spread from n={int(first.n_subjects)} to n={int(last.n_subjects)} ({change:+.3f}, sd up to {spread:.3f})"
        text += " " + trend[0].upper() + trend[1:] + "."
    return text


def study_comparison_table(summary: pd.DataFrame, n: int = 1, finetune: str = "full") -> pd.DataFrame:
    """The study's 1-patient table beside ours (``n`` subjects, ``finetune`` variant for pretrained arms).

    The study's 95HD is EvaluateSegmentation's voxel quantile (compare with ``hd95_study``).
    """
    rows = []
    for arm, label in (("synthetic", "pretrained on synthetic"), ("scratch", "from scratch"), ("real", "pretrained on real")):
        ft = "full" if arm == "scratch" else finetune
        hit = summary[(summary.arm == arm) & (summary.finetune == ft) & (summary.n_subjects == n)]
        study = STUDY_TL_ONE_PATIENT.get(arm, (np.nan, np.nan)) if n == 1 else (np.nan, np.nan)
        if hit.empty and arm not in STUDY_TL_ONE_PATIENT:
            continue
        ours = hit.iloc[0] if not hit.empty else None

        def fmt(col: str) -> str:
            if ours is None:
                return "-"
            sd = ours[f"{col}_sd"]
            return f"{ours[f'{col}_mean']:.3g}" + ("" if pd.isna(sd) else f" ± {sd:.2g}")

        rows.append({
            "model": f"TL, {n} patient{'s' if n > 1 else ''}, {label}",
            "study DSC": study[0], "study 95HD (voxels, tool)": study[1],
            "our DSC": fmt("dsc"), "our 95HD (voxels, study variant)": fmt("hd95_study"),
            "our 95HD (mm)": fmt("hd95_mm"),
        })
    return pd.DataFrame(rows)


def summary_value(summary: pd.DataFrame, arm: str, n: int, finetune: str = "full", metric: str = "dsc",
                  stat: str = "mean") -> float:
    """``stat`` (``mean`` or ``sd`` over seeds) of ``metric`` for one (arm, finetune, n) cell of
    :func:`summarize_transfer` (NaN if absent)."""
    row = summary[(summary.arm == arm) & (summary.finetune == finetune) & (summary.n_subjects == n)]
    return float(row[f"{metric}_{stat}"].iloc[0]) if len(row) else float("nan")


def scratch_noise(summary: pd.DataFrame, small: int, large: int, floor: float = 0.02) -> float:
    """How far scratch DSC may fall from ``small`` to ``large`` subjects before it is "clearly worse".

    The larger of ``floor`` and the two cells' sd over seeds: with a fixed step budget and two
    seeds, the scratch curve's seed noise (measured: sd 0.03-0.06 on the course profile) exceeds
    a fixed 0.02, and a drop within that noise is no finding either way.
    """
    sds = [summary_value(summary, "scratch", n, stat="sd") for n in (small, large)]
    return max([floor, *[v for v in sds if np.isfinite(v)]])


def record_and_check(
    ctx: Any, results: pd.DataFrame, summary: pd.DataFrame, gain: pd.DataFrame, n_runs: int, n_test: int,
    sweep_minutes: float, conclusion: str, selection: str,
) -> dict[str, Any]:
    """Record notebook 06's key results for ``summary.json`` and check the sweep did what it claims.

    Recorded beside the small/large-n values: ``synthetic_gain_dsc_by_n`` (n -> mean paired
    gain over seeds) with ``synthetic_gain_dsc_sd_by_n``, ``steps_by_n`` (the step rule's
    budget), ``selection`` (what chose the weights, :func:`selection_rule`) and, when the sweep
    has ``n = 0``, the DSC of the site-A U-nets applied to site B as they are.

    Checks (``AssertionError``): every planned run finished and was scored once on every site-B
    test subject (in memory and in ``results.csv``), DSC in [0, 1]; beyond ``smoke``: no empty
    prediction (named by run and subject), training from scratch is not clearly worse (beyond
    :func:`scratch_noise`) with the most site-B data than with the least, and some fine-tuned
    model segments vessels (DSC > 0.3).
    """
    trained = summary[summary.n_subjects > 0]
    small, large = int(trained.n_subjects.min()), int(trained.n_subjects.max())
    has_gain = len(gain) > 0
    g = gain.set_index("n_subjects") if has_gain else pd.DataFrame()
    by_n = {str(int(n)): float(r.gain_mean) for n, r in g.iterrows()} if has_gain else {}
    sd_by_n = {str(int(n)): (float(r.gain_sd) if pd.notna(r.gain_sd) else None) for n, r in g.iterrows()} if has_gain else {}
    untuned = {f"{arm}_dsc_n0": summary_value(summary, arm, 0, finetune=NO_FINETUNE)
               for arm in summary[summary.finetune == NO_FINETUNE].arm.unique()}
    recorded = ctx.record(
        transfer_runs=n_runs, transfer_minutes=round(sweep_minutes, 2), n_small=small, n_large=large,
        n_seeds=int(trained.n_seeds.max()), selection=selection,
        steps_by_n={str(n): v for n, v in steps_by_n(ctx.profile, sorted(summary.n_subjects.unique())).items()},
        **{f"{arm}_dsc_{size}{suffix}": summary_value(summary, arm, n, stat=stat)
           for arm in ("scratch", "synthetic") for size, n in (("small", small), ("large", large))
           for suffix, stat in (("", "mean"), ("_sd", "sd"))},
        real_dsc_small=summary_value(summary, "real", small),
        **untuned,
        synthetic_gain_dsc_small=by_n.get(str(small)),
        synthetic_gain_dsc_large=by_n.get(str(large)),
        synthetic_gain_dsc_small_sd=sd_by_n.get(str(small)),
        synthetic_gain_dsc_large_sd=sd_by_n.get(str(large)),
        synthetic_gain_dsc_by_n=by_n,
        synthetic_gain_dsc_sd_by_n=sd_by_n,
        scratch_hd95_mm_small=summary_value(summary, "scratch", small, metric="hd95_mm"),
        synthetic_hd95_mm_small=summary_value(summary, "synthetic", small, metric="hd95_mm"),
        conclusion=conclusion,
    )
    assert len(results) == n_runs * n_test, (len(results), n_runs, n_test)
    assert not results.duplicated(["arm", "finetune", "n_subjects", "seed", "subject"]).any()
    assert len(pd.read_csv(results_file(ctx.paths.transfer_dir))) == n_runs * n_test
    assert results.dsc.between(0, 1).all()
    if ctx.profile.name != "smoke":
        empty = results[~np.isfinite(results[["hd95_mm", "hd95_study"]].to_numpy()).all(axis=1)]
        assert empty.empty, ("empty predictions in a course run: " + ", ".join(
            f"{r.arm}-{r.finetune} n={r.n_subjects} seed={r.seed} on {r.subject}" for r in empty.itertuples()))
        scratch_small, scratch_large = summary_value(summary, "scratch", small), summary_value(summary, "scratch", large)
        margin = scratch_noise(summary, small, large)
        assert scratch_large >= scratch_small - margin, (
            f"more site-B data must not make training from scratch clearly worse: n={large} {scratch_large:.3f}, "
            f"n={small} {scratch_small:.3f} (allowed: {margin:.3f}, the larger of 0.02 and the seeds' sd)")
        assert trained.dsc_mean.max() > 0.3, trained.dsc_mean.max()
    return recorded
