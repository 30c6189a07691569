"""Differentially private WGAN-GP: the critic trained with DP-SGD, per patient or per patch.

Only the critic touches real data, so only its updates are privatized; the generator learns
through the critic alone, which is post-processing and costs no privacy. One private critic step:

1. **Poisson sampling** of privacy units with rate ``q``: each *patient* (``unit="patient"``;
   a sampled patient then contributes ``patches_per_patient`` of its patches, drawn at random)
   or each *patch* (``unit="patch"``) enters the step independently.
2. **Per-example gradients** of the WGAN-GP critic loss with ``torch.func``
   (``functional_call`` + ``vmap(grad)``). The loss of example ``i`` is
   ``f(fake_i) - f(real_i) + lambda * (||grad_x f(x_hat_i)|| - 1)^2`` with
   ``x_hat_i = alpha_i real_i + (1 - alpha_i) fake_i``: the interpolate contains the real patch,
   so the gradient penalty (a double backward, which ``torch.func`` supports and opacus' hooks do
   not) sits inside the clipped loss. Fakes are generated under ``no_grad`` (detached).
3. **Clipping per unit**: a patient's patch gradients are summed and the *sum* is clipped to L2
   norm ``C`` (the patient is the unit of sensitivity); per patch, each gradient is clipped.
4. **Gaussian noise** ``N(0, (sigma C)^2)`` on every coordinate of the summed gradient, then
   division by the *expected* number of real patches per step (a data-independent normalizer).

The accounting (:mod:`tofmra_utils.privacy_accounting`, Google's ``dp-accounting``) composes
``generator steps x n_critic`` Poisson-sampled Gaussian steps of rate ``q`` and noise multiplier
``sigma``; :func:`train_private_gan` picks ``sigma`` for a target epsilon before training.

A private critic must not mix samples: no batch norm, no minibatch discrimination, no spectral
norm (its power iteration updates buffers from the batch). The WGAN-GP critic qualifies (layer
norm, ``GroupNorm(1, C)``, is per sample); :func:`check_private_critic` refuses the others.

Files in ``out_dir`` (a :class:`~tofmra_utils.resumable.ResumableUnit`)::

    run.json        settings, fingerprint, status, privacy guarantee
    checkpoint.pt   models, optimizers, counters, RNG states, the privacy record (weights_only)
    losses.csv      one row per generator step
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from tqdm.auto import tqdm

from ..io import read_json, write_json
from ..patchset import PatchSet
from ..profiles import Profile
from ..resumable import ResumableUnit, array_digest
from ..seeding import default_device, get_rng_state, set_determinism, set_rng_state
from .. import privacy_accounting as accounting
from .generate import DATASHEET_NAME, generate_from_checkpoint
from .losses import WassersteinGpLoss
from .models import MinibatchDiscrimination, build_gan
from .train import gan_tensor

__all__ = [
    "STUDY_DP_RESULTS",
    "PRIVATE_GAN",
    "DpPlan",
    "PrivateGanResult",
    "check_private_critic",
    "per_example_critic_gradients",
    "private_critic_gradients",
    "plan_private_training",
    "train_private_gan",
    "generate_private_set",
    "sweep_label",
]

#: The follow-up study's result (Kossen et al. 2022, Front AI 5:813842; REFERENCE.md): U-net test DSC with
#: synthetic data of a GAN trained at epsilon 7.4 per patch (delta 1/41000) and without privacy.
STUDY_DP_RESULTS: dict[str, float | str] = {"epsilon": 7.4, "unit": "patch", "delta": 1.0 / 41000, "dsc_private": 0.75,
                                            "dsc_nonprivate": 0.84}

#: The GAN trained privately (its critic has no layer that mixes samples).
PRIVATE_GAN = "wgan_gp"
CHECKPOINT_NAME = "checkpoint.pt"
LOSSES_NAME = "losses.csv"
CHECKPOINT_FORMAT = "tofmra-dp-gan-1"
_GP_EPS = 1e-12  # inside the square root, as gan.losses.gradient_penalty


def check_private_critic(critic: nn.Module) -> None:
    """Raise ``ValueError`` if ``critic`` has a layer whose output for one sample depends on others.

    Batch norm and minibatch discrimination mix samples (a per-example gradient would not be
    one example's); spectral norm updates its power-iteration buffers from the batch.
    """
    for name, m in critic.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or isinstance(m, MinibatchDiscrimination):
            raise ValueError(f"a private critic must not mix samples: layer {name!r} is {type(m).__name__}")
        if hasattr(m, "parametrizations"):
            raise ValueError(f"a private critic must not use spectral norm (layer {name!r})")


# ----------------------------------------------------------------------------- gradients
def per_example_critic_gradients(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor, gp_weight: float,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Gradients of each example's WGAN-GP critic loss with respect to the critic's parameters.

    Parameters
    ----------
    critic
        Maps (B, 2, P, P) to (B,) scores; evaluated one sample at a time (``functional_call``).
    real, fake
        (B, 2, P, P); ``fake`` must come from the generator under ``no_grad``.
    alpha
        (B, 1, 1, 1) interpolation weights of the gradient penalty.
    gp_weight
        lambda of the penalty.

    Returns
    -------
    grads
        name -> (B, *parameter shape).
    losses
        (B,) each example's loss ``f(fake_i) - f(real_i) + lambda * gp_i``.
    """
    params = {k: v.detach() for k, v in critic.named_parameters()}
    buffers = {k: v.detach() for k, v in critic.named_buffers()}

    def score(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(critic, (p, buffers), (x.unsqueeze(0),)).squeeze(0)

    def example_loss(p: dict[str, torch.Tensor], r: torch.Tensor, f: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x_hat = a * r + (1.0 - a) * f
        g = torch.func.grad(score, argnums=1)(p, x_hat)
        penalty = (torch.sqrt(g.pow(2).sum() + _GP_EPS) - 1.0) ** 2
        return score(p, f) - score(p, r) + gp_weight * penalty

    grads, losses = vmap(grad_and_value(example_loss), in_dims=(None, 0, 0, 0), randomness="error")(
        params, real, fake.detach(), alpha)
    return grads, losses


def private_critic_gradients(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    alpha: torch.Tensor,
    groups: torch.Tensor,
    n_groups: int,
    gp_weight: float,
    clip_norm: float | None,
    noise_multiplier: float,
    normalizer: float,
    noise_rng: torch.Generator | None = None,
    per_example: bool | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The privatized critic gradient of one step: group, clip, sum, add noise, normalize.

    Parameters
    ----------
    critic, real, fake, alpha, gp_weight
        As :func:`per_example_critic_gradients`; ``B`` may be 0 (nothing sampled: noise only).
    groups
        (B,) int64 unit of each example in ``0..n_groups-1`` (patient index, or ``arange(B)``
        per patch).
    n_groups
        Number of units in this step.
    clip_norm
        L2 bound C of each unit's summed gradient; ``None``: no clipping (then no noise either).
    noise_multiplier
        sigma: noise standard deviation ``sigma * C`` per coordinate.
    normalizer
        The sum is divided by this (the expected number of real patches per step; the actual
        batch size reproduces the ordinary mean loss).
    noise_rng
        CPU ``torch.Generator`` of the noise.
    per_example
        Compute per-example gradients (``torch.func``). Default: only when clipping; without
        clipping and noise the sum of per-example gradients is the gradient of the summed loss,
        which one ordinary backward pass gives about 3x faster (``tests/test_dp_gan.py`` checks
        that both agree).

    Returns
    -------
    grads
        name -> gradient shaped like the parameter (on its device).
    stats
        ``d_loss`` (mean example loss), ``n_real``, ``n_units``, ``unit_grad_norm`` (mean norm
        before clipping), ``clipped`` (fraction of units clipped).
    """
    if noise_multiplier > 0 and clip_norm is None:
        raise ValueError("noise needs a clipping norm (the noise is calibrated to it)")
    named = dict(critic.named_parameters())
    stats = {"d_loss": math.nan, "n_real": float(len(real)), "n_units": float(n_groups), "unit_grad_norm": math.nan,
             "clipped": math.nan}
    if per_example is None:
        per_example = clip_norm is not None or noise_multiplier > 0
    if len(real) and not per_example:
        losses = _batched_losses(critic, real, fake, alpha, gp_weight)
        total = dict(zip(named, torch.autograd.grad(losses.sum(), list(named.values()))))
        stats["d_loss"] = float(losses.detach().mean())
    elif len(real):
        example_grads, losses = per_example_critic_gradients(critic, real, fake, alpha, gp_weight)
        sums = {}
        for k, g in example_grads.items():  # sum each unit's examples
            sums[k] = torch.zeros((n_groups, *g.shape[1:]), dtype=g.dtype, device=g.device).index_add_(0, groups, g)
        norms = torch.sqrt(sum(s.flatten(1).pow(2).sum(1) for s in sums.values()))
        if clip_norm is not None:
            factor = torch.clamp(clip_norm / (norms + 1e-6), max=1.0)
            stats["clipped"] = float((norms > clip_norm).float().mean())
        else:
            factor = torch.ones_like(norms)
        total = {k: torch.einsum("u,u...->...", factor, s) for k, s in sums.items()}
        stats["d_loss"] = float(losses.mean())
        stats["unit_grad_norm"] = float(norms.mean())
    else:
        total = {k: torch.zeros_like(p) for k, p in named.items()}
    out = {}
    for k, g in total.items():
        if noise_multiplier > 0:
            noise = torch.randn(g.shape, generator=noise_rng, dtype=g.dtype).to(g.device)
            g = g + noise_multiplier * float(clip_norm) * noise
        out[k] = g / float(normalizer)
    return out, stats


def _batched_losses(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor,
                    gp_weight: float) -> torch.Tensor:
    """(B,) the examples' WGAN-GP critic losses in one batched pass (differentiable; no clipping possible)."""
    fake = fake.detach()
    x_hat = (alpha * real.detach() + (1.0 - alpha) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    penalty = (torch.sqrt(g.flatten(1).pow(2).sum(1) + _GP_EPS) - 1.0) ** 2
    return critic(fake) - critic(real) + gp_weight * penalty


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class DpPlan:
    """Everything a private run decides before training, and its guarantees.

    Attributes
    ----------
    unit
        ``"patient"`` or ``"patch"``: the unit that is sampled and clipped.
    target_epsilon
        Requested epsilon (``inf``: non-private).
    noise_multiplier
        sigma met by the accountant for the target (0 when non-private).
    clip_norm
        C (``None`` when non-private: no clipping).
    sampling_rate
        q, the probability that a unit enters a critic step.
    expected_batch
        Expected real patches per critic step (the normalizer).
    patches_per_patient
        Patches drawn per sampled patient (patient mode; 1 per patch).
    n_units
        Patients (patient mode) or patches in the training set.
    max_patches_per_patient
        The largest number of training patches one patient owns (the group of patch mode).
    generator_steps, critic_steps
        Training length; ``critic_steps`` (= generator steps x n_critic) are the accounted steps.
    delta
        Delta of both guarantees.
    epsilon_patient, epsilon_patch
        The guarantee per patient and per patch of *this* training (see :func:`plan_private_training`).
    """

    unit: str
    target_epsilon: float
    noise_multiplier: float
    clip_norm: float | None
    sampling_rate: float
    expected_batch: float
    patches_per_patient: int
    n_units: int
    max_patches_per_patient: int
    generator_steps: int
    critic_steps: int
    delta: float
    epsilon_patient: float
    epsilon_patch: float

    def as_dict(self) -> dict[str, Any]:
        """Plain values (``inf`` kept as a float; JSON writers turn it into null)."""
        return dataclasses.asdict(self)


def plan_private_training(
    train: PatchSet, profile: Profile, target_epsilon: float, unit: str | None = None, steps: int | None = None,
    with_group_epsilon: bool = True,
) -> DpPlan:
    """Sampling rate, noise multiplier and both guarantees of a private run (no training).

    Per patient: ``q = min(1, batch / (patches_per_patient * patients))``; the patient epsilon
    is the RDP accountant's for ``(q, sigma, T)``. A patch of a sampled patient moves that
    patient's clipped sum by at most ``2C`` (both sums lie in the ball of radius ``C``), so the
    patch epsilon is the accountant's for ``(q, sigma / 2, T)``.

    Per patch: ``q = batch / N``; the patch epsilon is the RDP accountant's for ``(q, sigma, T)``
    (the 2022 study's accounting), the patient epsilon the mixture-of-Gaussians one of a patient
    owning ``k`` patches (:func:`~tofmra_utils.privacy_accounting.group_epsilon`, PLD; skipped,
    NaN, with ``with_group_epsilon=False``).

    Raises
    ------
    ValueError
        For an unknown unit, an empty training set or an unreachable epsilon.
    """
    cfg = profile.dp
    unit = cfg.unit if unit is None else unit
    if unit not in accounting.UNITS:
        raise ValueError(f"unknown privacy unit {unit!r}: choose one of {', '.join(accounting.UNITS)}")
    if len(train) == 0:
        raise ValueError("the training patch set is empty")
    settings = profile.gan.variants[PRIVATE_GAN]
    generator_steps = int(cfg.steps if steps is None else steps)
    critic_steps = generator_steps * int(settings.n_critic)
    _, counts = np.unique(train.subject, return_counts=True)
    max_k = int(counts.max())
    if unit == "patient":
        per_patient = int(min(cfg.patches_per_patient, counts.min()))
        q = min(1.0, cfg.batch_size / (per_patient * len(counts)))
        n_units, expected = len(counts), q * per_patient * len(counts)
    else:
        per_patient = 1
        q = min(1.0, cfg.batch_size / len(train))
        n_units, expected = len(train), q * len(train)
    private = math.isfinite(target_epsilon)
    sigma = accounting.noise_multiplier_for(target_epsilon, q, critic_steps, cfg.delta) if private else 0.0
    if unit == "patient":
        eps_patient = accounting.epsilon(sigma, q, critic_steps, cfg.delta)
        eps_patch = accounting.epsilon(sigma / 2.0, q, critic_steps, cfg.delta)
    else:
        eps_patch = accounting.epsilon(sigma, q, critic_steps, cfg.delta)
        eps_patient = (accounting.group_epsilon(sigma, q, critic_steps, cfg.delta, max_k)
                       if with_group_epsilon or not private else math.nan)
    return DpPlan(unit=unit, target_epsilon=float(target_epsilon), noise_multiplier=float(sigma),
                  clip_norm=float(cfg.clip_norm) if private else None, sampling_rate=float(q),
                  expected_batch=float(expected), patches_per_patient=per_patient, n_units=int(n_units),
                  max_patches_per_patient=max_k, generator_steps=generator_steps, critic_steps=critic_steps,
                  delta=float(cfg.delta), epsilon_patient=float(eps_patient), epsilon_patch=float(eps_patch))


# ----------------------------------------------------------------------------- sampling
class _UnitSampler:
    """Poisson sampling of patients or patches; its random stream goes into the checkpoint."""

    def __init__(self, subjects: np.ndarray, plan: DpPlan, rng: torch.Generator) -> None:
        self.plan, self.rng = plan, rng
        names, inverse = np.unique(subjects, return_inverse=True)
        self.members = [torch.from_numpy(np.flatnonzero(inverse == i)) for i in range(len(names))]
        self.n = len(subjects)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(patch indices, unit index of each within this step, number of units)``."""
        if self.plan.unit == "patch":
            chosen = torch.nonzero(torch.rand(self.n, generator=self.rng) < self.plan.sampling_rate).flatten()
            return chosen, torch.arange(len(chosen)), len(chosen)
        picked = torch.nonzero(torch.rand(len(self.members), generator=self.rng) < self.plan.sampling_rate).flatten()
        index, groups = [], []
        for j, patient in enumerate(picked.tolist()):
            members = self.members[patient]
            draw = members[torch.randperm(len(members), generator=self.rng)[: self.plan.patches_per_patient]]
            index.append(draw)
            groups.append(torch.full((len(draw),), j, dtype=torch.long))
        if not index:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 0
        return torch.cat(index), torch.cat(groups), len(picked)


# ----------------------------------------------------------------------------- training
@dataclass
class PrivateGanResult:
    """What :func:`train_private_gan` returns."""

    checkpoint: Path
    plan: DpPlan
    history: pd.DataFrame
    seconds: float
    steps: int


def _settings(train: PatchSet, profile: Profile, plan: DpPlan, seed: int) -> dict[str, Any]:
    s = profile.gan.variants[PRIVATE_GAN]
    return {
        "format": CHECKPOINT_FORMAT, "gan": PRIVATE_GAN, "z_dim": s.z_dim, "lr": s.lr, "betas": list(s.betas),
        "n_critic": s.n_critic, "gp_weight": s.gp_weight, "generator_channels": list(profile.gan.generator_channels),
        "init_std": profile.gan.init_std, "upsampling": profile.gan.upsampling, "critic_kernel": profile.gan.critic_kernel,
        "patch_size": profile.data.patch_size, "seed": int(seed), "train": array_digest(train.image, train.label),
        "privacy": {k: (v if not (isinstance(v, float) and math.isinf(v)) else "inf")
                    for k, v in plan.as_dict().items() if k not in ("epsilon_patient", "epsilon_patch")},
    }


def _privacy_record(plan: DpPlan) -> dict[str, Any]:
    """The guarantee as the checkpoint and the datasheet store it."""
    return {
        "epsilon": plan.epsilon_patient if plan.unit == "patient" else plan.epsilon_patch,
        "unit": plan.unit, "delta": plan.delta, "target_epsilon": plan.target_epsilon,
        "noise_multiplier": plan.noise_multiplier, "clip_norm": plan.clip_norm, "sampling_rate": plan.sampling_rate,
        "accounted_steps": plan.critic_steps, "generator_steps": plan.generator_steps,
        "expected_batch": plan.expected_batch, "patches_per_patient": plan.patches_per_patient,
        "epsilon_patient": plan.epsilon_patient, "epsilon_patch": plan.epsilon_patch,
        "max_patches_per_patient": plan.max_patches_per_patient,
        "accountant": "dp-accounting RdpAccountant, PoissonSampledDpEvent(GaussianDpEvent); patient epsilon of "
                      "patch-level training: PLDAccountant, MixtureOfGaussiansDpEvent",
        "neighbouring": "add or remove one unit",
        "private_network": "critic only; the generator is post-processing",
    }


def train_private_gan(
    train: PatchSet,
    profile: Profile,
    out_dir: str | Path,
    target_epsilon: float,
    unit: str | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
    steps: int | None = None,
    resume: bool = True,
    progress: bool = True,
    plan: DpPlan | None = None,
    stop_after_steps: int | None = None,
) -> PrivateGanResult:
    """Train the WGAN-GP with a differentially private critic; resumable.

    Parameters
    ----------
    train
        Real training patches with their ``subject`` ids (the patient groups).
    profile
        ``profile.dp`` (delta, C, unit, steps, batch), ``profile.gan.variants["wgan_gp"]``
        (z size, Adam, n_critic, gp weight) and the architecture.
    out_dir
        Folder of ``run.json``, ``checkpoint.pt`` and ``losses.csv``.
    target_epsilon
        Epsilon per ``unit`` (``inf``: non-private, no clipping, no noise, same loop).
    unit
        ``"patient"`` or ``"patch"`` (default ``profile.dp.unit``).
    seed
        Default ``profile.seed``: initialization, sampling, latents, interpolation weights, noise.
    steps
        Generator steps (default ``profile.dp.steps``).
    plan
        A plan made by :func:`plan_private_training` for the same arguments (saves recomputing it).
    stop_after_steps
        Stop (with a checkpoint) after this many generator steps in total; a later call resumes.
        The noise is calibrated to the whole budget, so another step budget is another run.

    Raises
    ------
    ValueError
        For an unknown unit, patches of another size, an unreachable epsilon.
    FloatingPointError
        If a loss becomes NaN or infinite.
    """
    started = time.perf_counter()
    if train.patch_size != profile.data.patch_size:
        raise ValueError(f"training patches are {train.patch_size} px but profile {profile.name!r} expects "
                         f"{profile.data.patch_size} px")
    seed = profile.seed if seed is None else int(seed)
    device = torch.device(device) if device is not None else default_device()
    plan = plan or plan_private_training(train, profile, target_epsilon, unit, steps)
    settings = profile.gan.variants[PRIVATE_GAN]
    unit_folder = ResumableUnit(out_dir, _settings(train, profile, plan, seed), state_name=CHECKPOINT_NAME,
                                history_name=LOSSES_NAME)
    unit_folder.open(fresh=not resume)

    set_determinism(seed)
    generator, critic = build_gan(PRIVATE_GAN, profile)
    check_private_critic(critic)
    generator, critic = generator.to(device), critic.to(device)
    betas = (float(settings.betas[0]), float(settings.betas[1]))
    opt_g = torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=betas)
    opt_d = torch.optim.Adam(critic.parameters(), lr=settings.lr, betas=betas)
    rngs = {name: torch.Generator().manual_seed(seed + i) for i, name in enumerate(("sample", "latent", "alpha", "dp"))}
    sampler = _UnitSampler(train.subject, plan, rngs["sample"])
    loss = WassersteinGpLoss(gp_weight=settings.gp_weight)
    data = gan_tensor(train)
    step, seconds_before, history = 0, 0.0, []

    state = unit_folder.load_state(lambda s: int(s.get("step", -1)) <= plan.generator_steps)
    if state is not None:
        generator.load_state_dict(state["generator"])
        critic.load_state_dict(state["critic"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        for name, r in rngs.items():
            r.set_state(state["rngs"][name])
        set_rng_state(state["rng"])
        step, seconds_before = int(state["step"]), float(state["seconds"])
        history = pd.DataFrame({k: v.numpy() for k, v in state["history"].items()}).to_dict("records")
    steps_at_start = step

    def noise(n: int) -> torch.Tensor:
        return torch.randn(n, settings.z_dim, generator=rngs["latent"]).to(device)

    def save(at_step: int) -> None:
        frame = pd.DataFrame(history)
        unit_folder.write_history(frame)
        unit_folder.save_state({
            "format": CHECKPOINT_FORMAT, "gan": PRIVATE_GAN, "generator_args": generator.constructor_args(),
            "n_train": len(train), "z_dim": settings.z_dim, "profile": profile.name, "seed": seed,
            "settings": dataclasses.asdict(settings), "label_threshold": float(profile.gan.label_threshold),
            # The real vessel fraction is a statistic of the private data: the private set's labels use the
            # fixed threshold, and the fraction is not stored (it would be an unaccounted release).
            "label_threshold_rule": "fixed", "real_vessel_fraction": None,
            "image_scaling": profile.gan.image_scaling, "generate_mode": profile.gan.generate_mode,
            "step": at_step, "total_steps": plan.generator_steps, "privacy": _privacy_record(plan),
            "generator": generator.state_dict(), "critic": critic.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "rngs": {name: r.get_state() for name, r in rngs.items()}, "rng": get_rng_state(),
            "history": {k: torch.tensor(frame[k].to_numpy(dtype=np.float64)) for k in frame.columns} if len(frame) else {},
            "seconds": seconds_before + time.perf_counter() - started,
        })

    bar = tqdm(total=plan.generator_steps, initial=step, desc=f"dp {plan.unit} eps={plan.target_epsilon:g}",
               disable=not progress, mininterval=1.0, leave=False)
    generator.train()
    critic.train()
    gen_batch = max(1, int(round(plan.expected_batch)))
    stop_at = plan.generator_steps if stop_after_steps is None else min(plan.generator_steps, int(stop_after_steps))
    while step < stop_at:
        rows = []
        for _ in range(settings.n_critic):
            index, groups, n_groups = sampler.sample()
            real = data[index].to(device)
            with torch.no_grad():
                fake = generator(noise(len(real))) if len(real) else real
            alpha = torch.rand((len(real), 1, 1, 1), generator=rngs["alpha"], dtype=real.dtype).to(device)
            grads, stats = private_critic_gradients(
                critic, real, fake, alpha, groups.to(device), n_groups, settings.gp_weight, plan.clip_norm,
                plan.noise_multiplier, plan.expected_batch, rngs["dp"])
            for name, p in critic.named_parameters():
                p.grad = grads[name]
            opt_d.step()
            rows.append(stats)
        critic.requires_grad_(False)  # the generator learns through the critic (post-processing)
        g_loss, _ = loss.generator_loss(critic, generator(noise(gen_batch)))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        critic.requires_grad_(True)
        step += 1
        row = {"step": step, **{k: float(np.nanmean([r[k] for r in rows])) if any(math.isfinite(r[k]) for r in rows)
                                else math.nan for k in rows[0]}, "g_loss": float(g_loss.detach())}
        history.append(row)
        if not math.isfinite(row["g_loss"]) or (row["n_real"] > 0 and not math.isfinite(row["d_loss"])):
            unit_folder.write_history(pd.DataFrame(history))
            raise FloatingPointError(f"private GAN: losses became {row['d_loss']} / {row['g_loss']} at step {step}")
        bar.update(1)
        if step % profile.gan.checkpoint_every == 0 or step == stop_at:
            save(step)
    bar.close()
    if not unit_folder.state_file.exists():
        save(step)
    seconds = seconds_before + (time.perf_counter() - started if step > steps_at_start else 0.0)
    if step >= plan.generator_steps:
        unit_folder.finish({"steps": step, "seconds": round(seconds, 1), **_json_safe(_privacy_record(plan))})
    return PrivateGanResult(checkpoint=unit_folder.state_file, plan=plan, history=pd.DataFrame(history),
                            seconds=seconds, steps=step)


def _json_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def generate_private_set(result: PrivateGanResult, n: int, out_dir: str | Path, seed: int = 0) -> Path:
    """Write ``n`` synthetic pairs of a private run and a datasheet that carries its guarantee.

    The datasheet (``datasheet.json``) gets a ``differential_privacy`` entry: epsilon and the
    unit it refers to, delta, noise multiplier, clipping norm, sampling rate, accounted steps,
    and the epsilon per patient and per patch of the same training.
    """
    path = generate_from_checkpoint(result.checkpoint, n, out_dir, seed=seed)
    sheet_file = Path(out_dir) / DATASHEET_NAME
    sheet = read_json(sheet_file)
    sheet["differential_privacy"] = _json_safe(_privacy_record(result.plan))
    write_json(sheet_file, sheet)
    return path


def sweep_label(unit: str, epsilon: float) -> str:
    """Folder / row name of one run: ``patient_eps_10``, ``patch_eps_7.4``, ``eps_inf``."""
    if math.isinf(epsilon):
        return "eps_inf"
    return f"{unit}_eps_{epsilon:g}"
