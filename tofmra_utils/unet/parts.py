"""Building blocks of the U-net (Livne et al. 2019), in the style of milesial/Pytorch-UNet.

The study's U-net (Keras, Livne et al. 2019) has no batch normalization, so none of these
blocks has one: two 3x3 convolutions with ReLU per level, max pooling down, nearest-neighbour
upsampling (Keras ``UpSampling2D``) up, skip connections by concatenation.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DoubleConv", "Down", "Up", "OutConv"]


class DoubleConv(nn.Module):
    """Two 3x3 convolutions (``padding=1``, size kept), each followed by ReLU; optional dropout.

    ``between=False`` puts the dropout after the block, ``True`` between the two convolutions
    (Livne et al. 2019, the study's U-net). Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, between: bool = False) -> None:
        super().__init__()
        first: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        second: list[nn.Module] = [nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        # Element-wise dropout like Keras' Dropout layer.
        drop: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        self.block = nn.Sequential(*first, *drop, *second) if between else nn.Sequential(*first, *second, *drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Down(nn.Module):
    """2x2 max pooling, then :class:`DoubleConv`. (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, between: bool = False) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(in_channels, out_channels, dropout, between)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class Up(nn.Module):
    """Nearest 2x upsampling, concatenation with the skip tensor, then :class:`DoubleConv`.

    Shapes: x (B, C_in, H, W) and skip (B, C_skip, 2H, 2W) -> (B, C_out, 2H, 2W).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, dropout: float = 0.0,
                 between: bool = False) -> None:
        super().__init__()
        self.skip_channels = skip_channels
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = DoubleConv(in_channels + skip_channels, out_channels, dropout, between)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class OutConv(nn.Module):
    """1x1 convolution to one channel (logits; the model applies the sigmoid)."""

    def __init__(self, in_channels: int, out_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
