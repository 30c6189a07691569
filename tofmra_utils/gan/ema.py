"""An exponential moving average (EMA) of the generator's weights, and batch-norm recalibration.

A GAN's generator wanders: from one step to the next its samples change more than the data
would justify, and the last step is an arbitrary point on that walk. Averaging the weights over
the recent steps (Yazici et al. 2019, "The unusual effectiveness of averaging in GAN training")
gives a generator that sits in the middle of the walk. The averaged weights never ran forward
during training, so their batch-norm statistics are recomputed afterwards
(:func:`recalibrate_batchnorm`) before they generate.

The study sampled from the last generator (``GanConfig.ema_decay = None`` reproduces that).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["GeneratorEma", "recalibrate_batchnorm"]


class GeneratorEma:
    """Running average ``w_ema <- d * w_ema + (1 - d) * w`` of a generator's parameters.

    Parameters
    ----------
    generator
        The network being trained; the average starts as a copy of it.
    decay
        ``d`` in (0, 1). Early on the effective decay is ``min(d, (1 + t) / (10 + t))`` at update
        ``t``, so a short run is not dominated by its random initialization.
    """

    def __init__(self, generator: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie strictly between 0 and 1, got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.model = copy.deepcopy(generator).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        """Fold the generator's current weights into the average (buffers are copied as they are)."""
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for avg, live in zip(self.model.parameters(), generator.parameters()):
            avg.lerp_(live.detach(), 1.0 - d)
        for avg, live in zip(self.model.buffers(), generator.buffers()):
            avg.copy_(live)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


@torch.no_grad()
def recalibrate_batchnorm(
    generator: nn.Module, z_dim: int, n_batches: int = 16, batch_size: int = 64, seed: int = 0,
) -> nn.Module:
    """Recompute every batch-norm layer's running mean and variance from fresh noise.

    The running statistics become the plain average over ``n_batches`` forward passes of
    ``batch_size`` latent vectors (momentum ``None``), so eval-mode generation matches what these
    weights produce. Returns ``generator`` in eval mode.
    """
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return generator.eval()
    device = next(generator.parameters()).device
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    rng = torch.Generator().manual_seed(int(seed))
    generator.train()
    for _ in range(int(n_batches)):
        generator(torch.randn(batch_size, z_dim, generator=rng).to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return generator.eval()
