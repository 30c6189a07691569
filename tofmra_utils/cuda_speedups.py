"""CUDA-only speed-ups of the GAN and U-net trainers, off unless switched on, never on a CPU.

``TOFMRA_CUDA_BF16=1`` runs forward and backward passes under bf16 autocast and
``TOFMRA_CUDA_CHANNELS_LAST=1`` keeps weights and batches channels-last. Neither has been compared
with float32 on a GPU by this project yet; a run records them in its fingerprint, so a stored run
never resumes under other numerics.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["BF16_ENV", "CHANNELS_LAST_ENV", "CudaSpeedups", "cuda_speedups"]

#: Environment switches of the CUDA-only speed-ups (``1`` turns one on; off by default).
BF16_ENV, CHANNELS_LAST_ENV = "TOFMRA_CUDA_BF16", "TOFMRA_CUDA_CHANNELS_LAST"


@dataclass(frozen=True)
class CudaSpeedups:
    """Speed-ups a CUDA training may use; both off on a CPU whatever the switches say.

    Attributes
    ----------
    bf16
        Run forward and backward passes under ``torch.autocast(dtype=torch.bfloat16)`` (weights,
        optimizer and losses stay float32). Switch: ``TOFMRA_CUDA_BF16=1``.
    channels_last
        Keep weights and batches in the channels-last memory layout (faster convolutions on
        tensor cores; the same numbers up to summation order). Switch: ``TOFMRA_CUDA_CHANNELS_LAST=1``.

    Neither has been measured against float32 on a GPU by this project (none was available):
    compare a run with and without them before relying on them. A run's resumable settings record
    them when on, so a stored run never continues under other numerics.
    """

    bf16: bool = False
    channels_last: bool = False

    def autocast(self, device: torch.device) -> Any:
        """The bf16 autocast context on CUDA when switched on, else a context that does nothing."""
        if self.bf16 and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def layout(self, tensor_or_module: Any) -> Any:
        """``tensor_or_module`` in the channels-last layout when switched on (4D tensors, modules)."""
        if not self.channels_last:
            return tensor_or_module
        if isinstance(tensor_or_module, torch.Tensor) and tensor_or_module.dim() != 4:
            return tensor_or_module
        return tensor_or_module.to(memory_format=torch.channels_last)

    def settings(self) -> dict[str, Any]:
        """Entries for a resumable unit's settings: empty when both are off (CPU fingerprints never change)."""
        on = {k: True for k, v in (("cuda_bf16", self.bf16), ("cuda_channels_last", self.channels_last)) if v}
        return {"cuda_speedups": on} if on else {}


def cuda_speedups(device: torch.device) -> CudaSpeedups:
    """The switched-on speed-ups (``TOFMRA_CUDA_BF16``, ``TOFMRA_CUDA_CHANNELS_LAST``) if ``device`` is CUDA."""
    if torch.device(device).type != "cuda":
        return CudaSpeedups()
    return CudaSpeedups(bf16=os.environ.get(BF16_ENV) == "1", channels_last=os.environ.get(CHANNELS_LAST_ENV) == "1")
