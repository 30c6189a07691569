"""The 2D U-net of Livne et al. 2019 used by Kossen et al. 2021.

``depth`` poolings (study: 4); level ``i`` has ``base_width * 2**i`` channels (study: 64, the
"half" U-net 32); dropout after the convolution blocks of the two deepest encoder levels
(``dropout_placement="deep"``, this project's CPU profiles) or between the two convolutions of
every block, encoder and decoder (``"every_block"``, Livne et al. 2019, the study); a 1x1
convolution and a sigmoid give the vessel probability per pixel. No batch normalization (the
study's U-net has none).

Weight initialization matters here. Without batch normalization nothing rescales the signal on
its way through the U-net's 19 convolutions, so the initialization alone decides whether the
output depends on the input at the start of training:

``"he"`` (default)
    He/Kaiming normal (std ``sqrt(2 / fan_in)``), zero biases: keeps the activation variance
    through ReLU layers (He et al. 2015; the original U-net paper's choice).
``"glorot"``
    Glorot/Xavier uniform, zero biases: Keras' default, so the study's U-net (Livne et al. 2019).
``"torch"``
    PyTorch's default (Kaiming uniform with ``a = sqrt(5)``, variance ``1 / (3 fan_in)``).

With ``"torch"`` or ``"glorot"`` the variance shrinks at every ReLU convolution (about 6x and
2x), the initial output is nearly constant, and negative soft Dice on a few percent of vessel
pixels sits on the constant-prediction plateau (Dice about 0.05) for 40-80 Adam steps at lr
5e-4 on the course data before it starts to segment; a short budget can end on the plateau
with an empty prediction. With ``"he"`` the plateau lasts about 10 steps (measured over 6
seeds; see ``benchmarks/bench_unet_init.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from .parts import DoubleConv, Down, OutConv, Up

__all__ = ["UNet", "check_patch_size", "WEIGHT_INITS", "DROPOUT_PLACEMENTS", "init_weights"]

#: Where the U-net's dropout sits (see the module docstring).
DROPOUT_PLACEMENTS: tuple[str, ...] = ("deep", "every_block")

#: Weight initializations :func:`init_weights` knows (see the module docstring).
WEIGHT_INITS: tuple[str, ...] = ("he", "glorot", "torch")


def check_patch_size(size: int, depth: int) -> None:
    """Raise ``ValueError`` unless ``size`` can be halved ``depth`` times without remainder."""
    factor = 2**depth
    if size < factor or size % factor:
        raise ValueError(
            f"patch size {size} px does not fit a U-net with {depth} poolings: "
            f"it must be a positive multiple of 2**{depth} = {factor} (e.g. {factor * 2}, {factor * 4}, {factor * 6})"
        )


def init_weights(model: nn.Module, scheme: str = "he") -> None:
    """Initialize every convolution of ``model`` in place (``scheme`` in :data:`WEIGHT_INITS`).

    ``"torch"`` leaves PyTorch's default initialization as it is.
    """
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"unknown weight initialization {scheme!r}: choose one of {', '.join(WEIGHT_INITS)}")
    if scheme == "torch":
        return
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            if scheme == "he":
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


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
        Dropout probability (``0`` disables it).
    weight_init
        Initialization of the convolutions, one of :data:`WEIGHT_INITS` (default ``"he"``).
    dropout_placement
        ``"deep"``: after the blocks of the two deepest encoder levels; ``"every_block"``: between
        the two convolutions of every block, encoder and decoder (the study's).

    Forward: (B, in_channels, H, W) float -> (B, 1, H, W) probabilities in (0, 1), with
    ``H`` and ``W`` multiples of ``2**depth`` (:class:`ValueError` otherwise).
    """

    def __init__(
        self, in_channels: int = 1, base_width: int = 64, depth: int = 4, dropout: float = 0.1, weight_init: str = "he",
        dropout_placement: str = "deep",
    ) -> None:
        super().__init__()
        if depth < 1 or base_width < 1:
            raise ValueError(f"depth and base_width must be >= 1, got depth={depth}, base_width={base_width}")
        if dropout_placement not in DROPOUT_PLACEMENTS:
            raise ValueError(f"unknown dropout placement {dropout_placement!r}: choose one of {', '.join(DROPOUT_PLACEMENTS)}")
        self.in_channels, self.base_width, self.depth, self.dropout = in_channels, base_width, depth, dropout
        self.dropout_placement = dropout_placement
        widths = [base_width * 2**i for i in range(depth + 1)]
        every = dropout_placement == "every_block"
        deep = set(range(depth + 1)) if every else {depth - 1, depth}  # encoder levels that get dropout
        self.inc = DoubleConv(in_channels, widths[0], dropout if 0 in deep else 0.0, between=every)
        self.downs = nn.ModuleList(
            Down(widths[i - 1], widths[i], dropout if i in deep else 0.0, between=every) for i in range(1, depth + 1)
        )
        self.ups = nn.ModuleList(Up(widths[i], widths[i - 1], widths[i - 1], dropout if every else 0.0, between=every)
                                 for i in range(depth, 0, -1))
        self.outc = OutConv(widths[0], 1)
        init_weights(self, weight_init)

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
        return {"in_channels": self.in_channels, "base_width": self.base_width, "depth": self.depth, "dropout": self.dropout,
                "dropout_placement": self.dropout_placement}
