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

from .plan import (
    ARMS,
    BEST_CHECKPOINT,
    FINETUNES,
    NO_FINETUNE,
    TransferRun,
    draw_subjects,
    find_unet_checkpoint,
    plan_runs,
    pretrained_checkpoints,
    selection_rule,
    steps_by_n,
)
from .stage import record_and_check
from .summary import (
    MIN_SEEDS_FOR_FINDING,
    gain_sentence,
    pretraining_gain,
    scratch_noise,
    study_comparison_table,
    summarize_transfer,
    summary_value,
)
from .sweep import METRICS, RESULT_COLUMNS, UnetBackend, load_transfer_results, results_file, run_transfer_sweep

__all__ = [
    "ARMS", "FINETUNES", "NO_FINETUNE", "BEST_CHECKPOINT", "RESULT_COLUMNS", "METRICS", "MIN_SEEDS_FOR_FINDING",
    "TransferRun", "UnetBackend", "plan_runs", "draw_subjects", "steps_by_n", "selection_rule",
    "find_unet_checkpoint", "pretrained_checkpoints", "run_transfer_sweep", "results_file", "load_transfer_results",
    "summarize_transfer", "pretraining_gain", "gain_sentence", "study_comparison_table", "summary_value",
    "scratch_noise", "record_and_check",
]
