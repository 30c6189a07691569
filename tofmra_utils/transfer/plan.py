"""Planning the sweep: the arms, the runs, the subject draws, the step rule, the pretrained weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import DataError
from ..profiles import Profile
from ..runs import RunPaths

__all__ = [
    "ARMS", "FINETUNES", "NO_FINETUNE", "BEST_CHECKPOINT", "TransferRun", "plan_runs", "draw_subjects",
    "steps_by_n", "selection_rule", "find_unet_checkpoint", "pretrained_checkpoints",
]

#: Initializations compared by the sweep.
ARMS: tuple[str, ...] = ("scratch", "synthetic", "real")
#: Fine-tuning variants of the pretrained arms.
FINETUNES: tuple[str, ...] = ("full", "frozen_encoder")
#: The fine-tuning "variant" of the ``n = 0`` runs: the site-A weights as they are.
NO_FINETUNE = "none"
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


def selection_rule(dataset: Any, profile: Profile) -> str:
    """What chooses each fine-tuned model's weights, in words (recorded in ``summary.json``).

    Site-B validation subjects when the data set has them (never the test subjects), else the
    final weights.
    """
    val = list(dataset.splits.get("val", []))
    if not val:
        return "final weights (site B has no validation subjects)"
    k = profile.transfer.val_patches_per_subject
    patches = f"at most {k} patches of each of" if k else "the patches of"
    return (f"best Dice on {patches} {len(val)} site-B validation subject{'s' if len(val) > 1 else ''}, "
            f"checked {profile.transfer.val_checks} times per run")


def steps_by_n(profile: Profile, n_subjects: Sequence[int] | None = None) -> dict[int, int]:
    """Optimizer steps per run for each ``n`` of the sweep (``profile.transfer.steps_for``)."""
    t = profile.transfer
    return {int(n): t.steps_for(int(n)) for n in (n_subjects if n_subjects is not None else t.n_subjects)}


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
