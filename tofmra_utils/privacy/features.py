"""Feature spaces in which synthetic and real patches are compared.

Three spaces, all offline (no downloaded weights):

``pixels``
    Both channels flattened: the image in [-1, 1] and the label mapped from 0/1 to -1/1, so the
    two carry equal weight. A copy is a copy here, whatever a network thinks of it.
``unet``
    The encoder of the U-net trained on the real patches (notebook 05, ``unets/real/best.pt``):
    each encoder level's feature maps averaged over space and concatenated. In-domain: the
    network learnt what matters for vessels. It sees the image channel only (its input).
``random``
    The same kind of pooled multi-scale features from a randomly initialised convolutional
    network on both channels (a fixed seed): a control, and random features are known to rank
    generative models well (Naeem et al. 2020).

Every embedding can be computed for the four flips of each patch (identity, left-right,
up-down, both), so a memorized patch that a generator returns flipped is still found: the audit
takes the smallest distance over the flips of the query.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import DataError
from ..patchset import PatchSet

__all__ = ["FEATURE_SPACES", "FLIPS", "RandomEncoder", "embed", "embed_flips", "unet_encoder_features", "load_unet_encoder"]

#: Feature spaces :func:`embed` knows.
FEATURE_SPACES: tuple[str, ...] = ("pixels", "unet", "random")

#: The flips of a patch a copy may come back in: (flip rows, flip columns).
FLIPS: tuple[tuple[bool, bool], ...] = ((False, False), (False, True), (True, False), (True, True))


def _flip(a: np.ndarray, flip: tuple[bool, bool]) -> np.ndarray:
    """Flip (N, H, W) patches along rows and/or columns."""
    axes = tuple(ax for ax, f in zip((1, 2), flip) if f)
    return np.flip(a, axis=axes) if axes else a


class RandomEncoder(nn.Module):
    """A fixed, randomly initialised conv net: (B, 2, P, P) -> (B, F) pooled multi-scale features.

    Four stride-2 3x3 convolutions (16, 32, 64, 128 channels) with leaky ReLU; each level's
    maps are averaged over space and concatenated (F = 240). Weights are He-normal from ``seed``.
    """

    widths: tuple[int, ...] = (16, 32, 64, 128)

    def __init__(self, in_channels: int = 2, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        layers, c_in = [], in_channels
        for c_out in self.widths:
            conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * np.sqrt(2.0 / (c_in * 9)))
                conv.bias.zero_()
            layers.append(conv)
            c_in = c_out
        self.convs = nn.ModuleList(layers)
        self.eval()

    @property
    def num_features(self) -> int:
        return int(sum(self.widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x), 0.2)
            pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


class _UnetEncoder(nn.Module):
    """The contracting path of a trained :class:`~tofmra_utils.unet.model.UNet`, pooled per level."""

    def __init__(self, unet: nn.Module, norm_mean: float, norm_std: float) -> None:
        super().__init__()
        self.inc, self.downs = unet.inc, unet.downs
        self.norm_mean, self.norm_std = float(norm_mean), float(norm_std)
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, P, P) images in [-1, 1] -> (B, F) features (z-scored as at training)."""
        h = self.inc((image - self.norm_mean) / self.norm_std)
        pooled = [h.mean(dim=(2, 3))]
        for down in self.downs:
            h = down(h)
            pooled.append(h.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


def load_unet_encoder(unet: Any) -> _UnetEncoder:
    """The pooled encoder of a real-trained U-net: a checkpoint path or ``(model, info)``.

    Raises
    ------
    DataError
        If the checkpoint is missing or not a U-net checkpoint (message names the file).
    """
    from ..unet.train import load_unet

    if isinstance(unet, _UnetEncoder):
        return unet
    if isinstance(unet, (str, os.PathLike)):
        model, info = load_unet(Path(unet), device="cpu")
    elif isinstance(unet, tuple) and len(unet) == 2:
        model, info = unet
    else:
        raise TypeError("unet must be a checkpoint path or (model, info) from load_unet")
    return _UnetEncoder(model.cpu(), info["norm_mean"], info["norm_std"])


@torch.no_grad()
def _run(module: nn.Module, x: np.ndarray, batch_size: int, device: Any = None) -> np.ndarray:
    """``module`` applied to ``x`` (N, C, P, P) in batches on ``device`` (default CUDA when available)."""
    from .neighbours import torch_device

    dev = torch_device(device)
    module = module.to(dev)
    out = [module(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(dev)).float().cpu().numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def unet_encoder_features(image: np.ndarray, unet: Any, batch_size: int = 512, device: Any = None) -> np.ndarray:
    """U-net encoder features (N, F) of images (N, P, P) in [-1, 1]."""
    return _run(load_unet_encoder(unet), image[:, None].astype(np.float32), batch_size, device)


def embed(patches: PatchSet, space: str = "pixels", unet: Any = None, seed: int = 0, flip: tuple[bool, bool] = (False, False),
          batch_size: int = 512, encoder: nn.Module | None = None, device: Any = None) -> np.ndarray:
    """Feature vectors (N, F) float32 of a patch set in ``space`` (see the module docstring).

    Parameters
    ----------
    patches
        N image/label pairs of side P.
    space
        One of :data:`FEATURE_SPACES`.
    unet
        For ``space="unet"``: the real-trained U-net's checkpoint path or ``(model, info)``.
    seed
        Weights of the ``random`` network.
    flip
        Flip (rows, columns) of every patch before embedding.
    encoder
        An already built encoder for ``unet`` / ``random`` (skips rebuilding it per call).
    device
        Where the networks run (default CUDA when available).

    Returns
    -------
    np.ndarray
        ``pixels``: F = 2 P^2; ``unet``: F = sum of the encoder widths; ``random``: F = 240.
    """
    image = _flip(patches.image, flip).astype(np.float32)
    label = _flip(patches.label, flip).astype(np.float32) * 2.0 - 1.0
    if space == "pixels":
        return np.concatenate([image.reshape(len(image), -1), label.reshape(len(label), -1)], axis=1)
    if space == "unet":
        if encoder is None:
            if unet is None:
                raise ValueError("space 'unet' needs the real-trained U-net (a checkpoint path)")
            encoder = load_unet_encoder(unet)
        return _run(encoder, image[:, None], batch_size, device)
    if space == "random":
        return _run(encoder or RandomEncoder(seed=seed), np.stack([image, label], axis=1), batch_size, device)
    raise ValueError(f"unknown feature space {space!r}: choose one of {', '.join(FEATURE_SPACES)}")


def embed_flips(patches: PatchSet, space: str = "pixels", unet: Any = None, seed: int = 0, flips: bool = True,
                batch_size: int = 512, device: Any = None) -> np.ndarray:
    """Embeddings of every flip of every patch: (T, N, F) with T = 4 (``flips``) or 1."""
    encoder: nn.Module | None = None
    if space == "unet":
        if unet is None:
            raise DataError(None, "feature space 'unet' needs the real-trained U-net checkpoint (--unet)")
        encoder = load_unet_encoder(unet)
    elif space == "random":
        encoder = RandomEncoder(seed=seed)
    return np.stack([embed(patches, space, seed=seed, flip=f, batch_size=batch_size, encoder=encoder, device=device)
                     for f in (FLIPS if flips else FLIPS[:1])])
