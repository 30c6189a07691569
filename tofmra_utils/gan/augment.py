"""Differentiable augmentation for the critic (DiffAugment, Zhao et al. 2020), on image+label pairs.

A critic trained on a few thousand patches memorizes them and stops giving the generator useful
gradients. DiffAugment shows the critic every input -- real, fake and the gradient penalty's
interpolates alike -- through the same family of random transforms. They are differentiable, so
the generator still learns through them, and applied to both sides, so the generator is not
pushed to make augmented-looking patches.

Each transform acts on the whole pair (B, 2, H, W): image and label move together, so a vessel
label stays on its vessel. Transforms, drawn per sample from a ``torch.Generator``:

``flip``         horizontal flip with probability 1/2;
``rot90``        rotation by 0, 90, 180 or 270 degrees (square patches);
``translation``  shift by up to ``1/8`` of the side in x and y, uncovered pixels set to -1
                 (dark image, no vessel);
``cutout``       a square of half the side set to -1 at a random place.

The study used none of this; profiles switch it on with ``GanConfig.diffaug``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DIFFAUG_POLICIES", "diff_augment", "AugmentedCritic"]

#: The transforms :func:`diff_augment` knows, in the order they are applied.
DIFFAUG_POLICIES: tuple[str, ...] = ("flip", "rot90", "translation", "cutout")
#: Value of pixels a transform uncovers: the background of both channels in [-1, 1].
FILL = -1.0


def _check_policy(policy: Sequence[str]) -> tuple[str, ...]:
    unknown = [p for p in policy if p not in DIFFAUG_POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment transform(s) {unknown}: choose from {', '.join(DIFFAUG_POLICIES)}")
    return tuple(policy)


def _rand(shape: tuple[int, ...], rng: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=rng)


def _randint(high: int, shape: tuple[int, ...], rng: torch.Generator | None, low: int = 0) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=rng)


def _flip(x: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
    flip = (_rand((x.shape[0],), rng) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def _rot90(x: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
    k = _randint(4, (x.shape[0],), rng).to(x.device)
    rotations = torch.stack([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])  # (4, B, C, H, W)
    return rotations[k, torch.arange(x.shape[0], device=x.device)]


def _translation(x: torch.Tensor, rng: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(sh + 1, (b, 1, 1), rng, low=-sh).to(x.device)
    dx = _randint(sw + 1, (b, 1, 1), rng, low=-sw).to(x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    # Index the 1-pixel padded tensor; every read outside the patch lands on the padding (FILL).
    gy = (gy + dy + 1).clamp(0, h + 1)
    gx = (gx + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1), value=FILL)
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, rng: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # Top-left corner anywhere such that the square may hang over the border (as in DiffAugment).
    y0 = _randint(h, (b, 1, 1), rng).to(x.device) - ch // 2
    x0 = _randint(w, (b, 1, 1), rng).to(x.device) - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, FILL), x)


_TRANSFORMS = {"flip": _flip, "rot90": _rot90, "translation": _translation, "cutout": _cutout}


def diff_augment(x: torch.Tensor, policy: Sequence[str], rng: torch.Generator | None = None) -> torch.Tensor:
    """Apply the transforms of ``policy`` (each drawn per sample) to a batch of pairs.

    Parameters
    ----------
    x
        (B, C, H, W) pairs in [-1, 1], square (H == W) when ``rot90`` is used.
    policy
        Names from :data:`DIFFAUG_POLICIES`; applied in that tuple's order whatever order is given.
    rng
        CPU ``torch.Generator`` the random choices come from (reproducible, resumable runs).

    Returns
    -------
    (B, C, H, W) tensor, differentiable with respect to ``x``.
    """
    chosen = set(_check_policy(policy))
    if "rot90" in chosen and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rot90 needs square patches, got {tuple(x.shape[-2:])}")
    for name in DIFFAUG_POLICIES:
        if name in chosen:
            x = _TRANSFORMS[name](x, rng)
    return x


class AugmentedCritic(nn.Module):
    """The critic seen through :func:`diff_augment`: ``critic(diff_augment(x))``, same call signature.

    Holds no parameters of its own (save ``critic``'s state, not this wrapper's); every call draws
    new transforms, so real, fake and interpolated batches are augmented independently.
    """

    def __init__(self, critic: nn.Module, policy: Sequence[str], rng: torch.Generator | None = None) -> None:
        super().__init__()
        self.critic = critic
        self.policy = _check_policy(policy)
        self.rng = rng

    def forward(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return self.critic(diff_augment(x, self.policy, self.rng), **kwargs)
