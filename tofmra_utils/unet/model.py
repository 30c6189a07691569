"""The 2D U-net of Livne et al. 2019 used by Kossen et al. 2021.

``depth`` poolings (study: 4); level ``i`` has ``base_width * 2**i`` channels (study: 64, the
"half" U-net 32); dropout after the convolution blocks of the two deepest levels; a 1x1
convolution and a sigmoid give the vessel probability per pixel. No batch normalization (the
study's U-net has none).
"""

from __future__ import annotations

import torch
from torch import nn

from .parts import DoubleConv, Down, OutConv, Up

__all__ = ["UNet", "check_patch_size"]


def check_patch_size(size: int, depth: int) -> None:
    """Raise ``ValueError`` unless ``size`` can be halved ``depth`` times without remainder."""
    factor = 2**depth
    if size < factor or size % factor:
        raise ValueError(
            f"patch size {size} px does not fit a U-net with {depth} poolings: "
            f"it must be a positive multiple of 2**{depth} = {factor} (e.g. {factor * 2}, {factor * 4}, {factor * 6})"
        )


class UNet(nn.Module):
    """U-net for 2D patches.

    Parameters
    ----------
    in_channels
        Input channels (1: the z-scored TOF-MRA patch).
    base_width
        Channels of the first level; doubled at each pooling.
    depth
        Number of poolings (study: 4).
    dropout
        Dropout probability after the blocks of the two deepest levels (``0`` disables it).

    Forward: (B, in_channels, H, W) float -> (B, 1, H, W) probabilities in (0, 1), with
    ``H`` and ``W`` multiples of ``2**depth`` (:class:`ValueError` otherwise).
    """

    def __init__(self, in_channels: int = 1, base_width: int = 64, depth: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        if depth < 1 or base_width < 1:
            raise ValueError(f"depth and base_width must be >= 1, got depth={depth}, base_width={base_width}")
        self.in_channels, self.base_width, self.depth, self.dropout = in_channels, base_width, depth, dropout
        widths = [base_width * 2**i for i in range(depth + 1)]
        deep = {depth - 1, depth}  # levels that get dropout (Livne et al.: the deepest ones)
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(
            Down(widths[i - 1], widths[i], dropout if i in deep else 0.0) for i in range(1, depth + 1)
        )
        self.ups = nn.ModuleList(Up(widths[i], widths[i - 1], widths[i - 1]) for i in range(depth, 0, -1))
        self.outc = OutConv(widths[0], 1)

    def encoder_modules(self) -> list[nn.Module]:
        """The contracting path (``inc`` and the ``downs``), frozen by ``freeze_encoder``."""
        return [self.inc, self.downs]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid output (B, 1, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        check_patch_size(int(x.shape[-2]), self.depth)
        check_patch_size(int(x.shape[-1]), self.depth)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up in self.ups:
            h = up(h, skips.pop())
        return self.outc(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    def architecture(self) -> dict[str, int | float]:
        """Constructor arguments (stored in checkpoints to rebuild the model)."""
        return {"in_channels": self.in_channels, "base_width": self.base_width, "depth": self.depth, "dropout": self.dropout}
