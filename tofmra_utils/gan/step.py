"""One GAN training step, the same for the three GANs: read it beside pytorch/examples' DCGAN loop.

A *generator step* is ``n_critic`` critic steps (1 for DCGAN, 5 for the WGANs), each on a real
batch and a freshly generated fake batch that is **detached** (the critic's update must not
reach the generator), then one generator step through a frozen critic. The loss object
(:mod:`tofmra_utils.gan.losses`) is the only thing that differs between the GANs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .losses import GanLoss

__all__ = ["gan_step"]


def gan_step(
    generator: nn.Module,
    critic: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    loss: GanLoss,
    next_real: Callable[[], torch.Tensor],
    noise: Callable[[int], torch.Tensor],
    n_critic: int = 1,
    rng: torch.Generator | None = None,
) -> dict[str, float]:
    """One generator step with ``n_critic`` critic steps before it.

    Parameters
    ----------
    generator, critic
        The two networks (train mode).
    opt_g, opt_d
        Their optimizers.
    loss
        :class:`~tofmra_utils.gan.losses.DcganLoss` or :class:`~tofmra_utils.gan.losses.WassersteinGpLoss`.
    next_real
        Returns the next real batch, (B, 2, H, W) in [-1, 1], on the networks' device.
    noise
        ``noise(B)`` returns latent vectors (B, z_dim) on the networks' device.
    n_critic
        Critic steps per generator step.
    rng
        ``torch.Generator`` for the gradient penalty's interpolation weights.

    Returns
    -------
    dict
        The critic's statistics averaged over its steps (``d_loss``; ``d_real_prob``, ``d_fake_prob`` for
        DCGAN; ``critic_real``, ``critic_fake``, ``wasserstein``, ``gp`` for the WGANs) and the generator's (``g_loss``, ...).
    """
    critic_stats = []
    for _ in range(n_critic):
        real = next_real()
        with torch.no_grad():
            fake = generator(noise(len(real)))
        d_loss, stats = loss.critic_loss(critic, real, fake, rng=rng)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        critic_stats.append(stats)

    critic.requires_grad_(False)  # gradients flow through the critic to the generator, not into it
    g_loss, g_stats = loss.generator_loss(critic, generator(noise(len(real))), real)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    critic.requires_grad_(True)

    return {**{k: float(np.mean([s[k] for s in critic_stats])) for k in critic_stats[0]}, **g_stats}
