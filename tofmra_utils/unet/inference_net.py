"""A trained U-net prepared for fast inference: the same function, fewer memory passes.

:class:`InferenceUNet` computes exactly what :meth:`UNet.forward <tofmra_utils.unet.model.UNet.forward>`
computes in evaluation mode (dropout off), up to float32 rounding (a few 1e-6 relative), with
changes that only matter for speed:

- Each decoder block's first convolution is split in two, one weight for the skip tensor and one
  for the upsampled tensor, and the two results are added: ``conv([skip, up(x)], W) =
  conv(skip, W_skip) + conv(up(x), W_up)``. No concatenated tensor is written and read again
  (``torch.cat`` was 13 % of a course U-net's inference time).
- The upsampled half never exists either: a 3x3 convolution of a nearest-neighbour 2x upsampled
  tensor is a transposed convolution of the small tensor with stride 2 and a 4x4 kernel
  (:func:`upsampled_conv_as_transposed`), which touches 4 input pixels per output pixel
  instead of 9.
- On a CPU, weights and activations are channels-last, where oneDNN's convolutions take about
  half the time of the default layout (course U-net, 32 px tiles, 2 cores).
- Dropout layers (identities at evaluation) and the per-call shape checks are skipped; the
  caller (:func:`~tofmra_utils.unet.infer.predict_volume`) checks shapes once.

The model itself is not changed: the prepared weights are copies, so training code never sees
another layout. Measured by ``benchmarks/bench_infer.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model import UNet
from .parts import DoubleConv

__all__ = ["InferenceUNet", "upsampled_conv_as_transposed"]

#: Which of a 3x3 kernel's taps (columns: offsets -1, 0, +1 at full resolution) reach each of the
#: 4 taps of the equivalent stride-2 transposed convolution of the half-resolution input (rows).
_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

_Conv = tuple[torch.Tensor, torch.Tensor | None]


def _convs(block: DoubleConv) -> list[nn.Conv2d]:
    return [layer for layer in block.block if isinstance(layer, nn.Conv2d)]


def upsampled_conv_as_transposed(weight: torch.Tensor) -> torch.Tensor:
    """The transposed-convolution weight equal to a 3x3 convolution after nearest 2x upsampling.

    ``conv2d(interpolate(h, scale_factor=2, mode="nearest"), weight, padding=1)`` equals
    ``conv_transpose2d(h, upsampled_conv_as_transposed(weight), stride=2, padding=1)``: output
    pixel ``2i + a`` reads input rows ``i - 1, i`` (``a = 0``) or ``i, i + 1`` (``a = 1``), each
    with the sum of the 3x3 taps that fall on that row's two upsampled copies.

    Parameters
    ----------
    weight
        (C_out, C_in, 3, 3) convolution weight.

    Returns
    -------
    (C_in, C_out, 4, 4) transposed-convolution weight.
    """
    if weight.ndim != 4 or tuple(weight.shape[-2:]) != (3, 3):
        raise ValueError(f"expected a (C_out, C_in, 3, 3) weight, got {tuple(weight.shape)}")
    taps = _TAPS.to(weight.device, weight.dtype)
    return torch.einsum("ka,oiab,lb->iokl", taps, weight, taps).contiguous()


class InferenceUNet:
    """Evaluation-only forward pass of a :class:`~tofmra_utils.unet.model.UNet`.

    Parameters
    ----------
    model
        A U-net (its weights are copied; later changes to ``model`` are not seen).
    device
        Where to run; default: where the model's weights are.

    Call: (B, in_channels, H, W) float32 -> (B, 1, H, W) probabilities in (0, 1); ``H`` and ``W``
    multiples of ``2**depth``. Run it under :func:`torch.inference_mode`.
    """

    def __init__(self, model: UNet, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.depth = model.depth
        self.channels_last = self.device.type == "cpu"
        self.inc = [self._prepare(c) for c in _convs(model.inc)]
        self.downs = [[self._prepare(c) for c in _convs(d.conv)] for d in model.downs]
        self.ups: list[tuple[_Conv, torch.Tensor, _Conv]] = []
        for up in model.ups:  # the first convolution reads [skip, up(x)] along channels
            first, second = _convs(up.conv)
            w_skip, b = self._prepare(first, slice(0, up.skip_channels))
            w_up = self._weight(upsampled_conv_as_transposed(first.weight.detach()[:, up.skip_channels:]))
            self.ups.append(((w_skip, b), w_up, self._prepare(second)))
        self.out = self._prepare(model.outc.conv)

    def _weight(self, w: torch.Tensor) -> torch.Tensor:
        """A copy of ``w`` on the device, in the layout the convolutions run in."""
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return w.to(self.device, copy=True, memory_format=layout)

    def _prepare(self, conv: nn.Conv2d, channels: slice = slice(None)) -> _Conv:
        b = None if conv.bias is None else conv.bias.detach().to(self.device, copy=True)
        return self._weight(conv.weight.detach()[:, channels]), b

    def _double(self, x: torch.Tensor, convs: list[_Conv]) -> torch.Tensor:
        for w, b in convs:
            x = F.relu_(F.conv2d(x, w, b, padding=1))
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        skips = [self._double(x, self.inc)]
        for convs in self.downs:
            skips.append(self._double(F.max_pool2d(skips[-1], 2), convs))
        h = skips.pop()
        for (w_skip, b), w_up, second in self.ups:
            up = F.conv_transpose2d(h, w_up, stride=2, padding=1)  # = conv(upsample(h), the 3x3 weight)
            h = F.conv2d(skips.pop(), w_skip, b, padding=1).add_(up)
            h = self._double(F.relu_(h), [second])
        w, b = self.out
        return torch.sigmoid(F.conv2d(h, w, b))
