"""The two adversarial games: DCGAN (binary cross-entropy) and Wasserstein with gradient penalty.

Both are objects with the same two methods, so one training loop serves all three GANs:

``critic_loss(critic, real, fake, rng) -> (loss, stats)``
    Loss of the discriminator/critic on a real batch and a batch of generated samples. ``fake``
    is detached here: the critic step must not push gradients into the generator.
``generator_loss(critic, fake, real) -> (loss, stats)``
    Loss of the generator on freshly generated ``fake`` samples (``real`` only for DCGAN feature
    matching).

``stats`` are plain floats for the training log (``losses.csv``).

Tensors are ``(B, 2, H, W)`` in [-1, 1]: channel 0 image, channel 1 label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..profiles import GanConfig, GanSettings

__all__ = ["gradient_penalty", "DcganLoss", "WassersteinGpLoss", "GanLoss", "loss_for"]


def gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    rng: torch.Generator | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    r"""Two-sided gradient penalty of Gulrajani et al. (2017), computed per sample.

    .. math::
        \hat x_i = \alpha_i x_i + (1 - \alpha_i) \tilde x_i,\quad \alpha_i \sim U[0, 1],\qquad
        GP = \frac{1}{B} \sum_i \left( \sqrt{\lVert \nabla_{\hat x} f(\hat x_i) \rVert_2^2 + \epsilon} - 1 \right)^2

    One :math:`\alpha_i` per sample (shape ``(B, 1, 1, 1)``) and one gradient norm per sample over
    all its pixels and channels. (The study's code drew one alpha for the whole batch and took
    a single norm over the whole batch's gradient, which penalizes something else.) ``eps`` sits
    inside the square root so the norm's derivative stays finite where the gradient vanishes.

    Parameters
    ----------
    critic
        Maps (B, ...) to (B,) scores.
    real, fake
        Batches of the same shape (B, ...); ``fake`` is detached here.
    rng
        ``torch.Generator`` for the interpolation weights (reproducible runs); CPU or the data's
        device.

    Returns
    -------
    Scalar tensor, differentiable with respect to the critic's parameters (``create_graph``).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} batches differ in shape")
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    rng_device = rng.device if rng is not None else real.device
    alpha = torch.rand(shape, generator=rng, device=rng_device, dtype=real.dtype).to(real.device)
    interpolates = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(interpolates)
    (grads,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
    norms = torch.sqrt(grads.flatten(1).pow(2).sum(dim=1) + eps)
    return ((norms - 1.0) ** 2).mean()


@dataclass
class DcganLoss:
    """Binary cross-entropy game with the study's DCGAN tricks.

    Attributes
    ----------
    real_target
        One-sided label smoothing: real samples get target 0.9 instead of 1 (fakes keep 0), so
        the discriminator does not become over-confident and keeps giving useful gradients.
    noisy_targets
        The study's code instead: real targets U(0.7, 1.2), fake targets U(0, 0.3), drawn per
        sample and step from ``rng`` (``GanConfig.dcgan_targets = "noisy_two_sided"``).
    generator_loss_kind
        ``"bce_fm"`` (below) or ``"fm_l1"``, the study's code: feature matching only, the L1
        distance per sample between the last conv features of a real and a fake sample,
        averaged over the batch and divided by 100.
    feature_matching_weight
        Weight of feature matching in the generator loss: the squared distance between the batch
        means of the discriminator's last conv features on real and on fake samples (averaged
        over feature dimensions, so the weight does not depend on the network width).
    """

    real_target: float = 0.9
    feature_matching_weight: float = 1.0
    noisy_targets: bool = False
    generator_loss_kind: str = "bce_fm"

    def _targets(self, logits: torch.Tensor, low: float, high: float, fixed: float,
                 rng: torch.Generator | None) -> torch.Tensor:
        if not self.noisy_targets:
            return torch.full_like(logits, fixed)
        u = torch.rand(logits.shape, generator=rng, device=rng.device if rng is not None else logits.device)
        return (low + (high - low) * u).to(logits.device, logits.dtype)

    def critic_loss(
        self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logit_real = critic(real)
        logit_fake = critic(fake.detach())
        # The study's code: noisy two-sided targets, real U(0.7, 1.2) and fake U(0, 0.3).
        real_targets = self._targets(logit_real, 0.7, 1.2, self.real_target, rng)
        fake_targets = self._targets(logit_fake, 0.0, 0.3, 0.0, rng)
        loss_real = F.binary_cross_entropy_with_logits(logit_real, real_targets)
        loss_fake = F.binary_cross_entropy_with_logits(logit_fake, fake_targets)
        loss = loss_real + loss_fake
        stats = {
            "d_loss": float(loss.detach()),
            "d_real_prob": float(torch.sigmoid(logit_real.detach()).mean()),  # D(x)
            "d_fake_prob": float(torch.sigmoid(logit_fake.detach()).mean()),  # D(G(z))
        }
        return loss, stats

    def generator_loss(
        self, critic: nn.Module, fake: torch.Tensor, real: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logit_fake, feat_fake = critic(fake, return_features=True)
        if self.generator_loss_kind == "fm_l1":  # the study's code: feature matching only
            if real is None:
                raise ValueError("feature matching needs the real batch")
            with torch.no_grad():
                _, feat_real = critic(real, return_features=True)
            matching = (feat_real - feat_fake).abs().sum(dim=1).mean() / 100.0
            return matching, {"feature_matching": float(matching.detach()), "g_loss": float(matching.detach())}
        # Non-saturating loss: maximize log D(G(z)) rather than minimize log(1 - D(G(z))).
        adversarial = F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
        loss = adversarial
        stats = {"g_adv": float(adversarial.detach())}
        if self.feature_matching_weight and real is not None:
            with torch.no_grad():
                _, feat_real = critic(real, return_features=True)
            matching = F.mse_loss(feat_fake.mean(dim=0), feat_real.mean(dim=0))
            loss = loss + self.feature_matching_weight * matching
            stats["feature_matching"] = float(matching.detach())
        stats["g_loss"] = float(loss.detach())
        return loss, stats


@dataclass
class WassersteinGpLoss:
    """Wasserstein game with gradient penalty (WGAN-GP and WGAN-GP-SN).

    The critic maximizes ``mean f(real) - mean f(fake)`` (an estimate of the Wasserstein-1
    distance when f is 1-Lipschitz) under the penalty; the generator minimizes ``-mean f(fake)``.
    """

    gp_weight: float = 10.0

    def critic_loss(
        self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        fake = fake.detach()
        score_real = critic(real).mean()
        score_fake = critic(fake).mean()
        gp = gradient_penalty(critic, real, fake, rng=rng)
        loss = score_fake - score_real + self.gp_weight * gp
        stats = {
            "d_loss": float(loss.detach()),
            "wasserstein": float((score_real - score_fake).detach()),
            "gp": float(gp.detach()),
            "critic_real": float(score_real.detach()),
            "critic_fake": float(score_fake.detach()),
        }
        return loss, stats

    def generator_loss(
        self, critic: nn.Module, fake: torch.Tensor, real: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        loss = -critic(fake).mean()
        return loss, {"g_loss": float(loss.detach())}


GanLoss = DcganLoss | WassersteinGpLoss


def loss_for(name: str, settings: GanSettings, gan: GanConfig | None = None) -> GanLoss:
    """The loss object of GAN ``name``: BCE for ``dcgan`` (its variant from ``gan``), Wasserstein-GP for the others."""
    if name == "dcgan":
        if gan is None:
            return DcganLoss()
        return DcganLoss(noisy_targets=gan.dcgan_targets == "noisy_two_sided", generator_loss_kind=gan.dcgan_generator_loss)
    if name in ("wgan_gp", "wgan_gp_sn"):
        return WassersteinGpLoss(gp_weight=settings.gp_weight)
    raise ValueError(f"unknown GAN {name!r}")
