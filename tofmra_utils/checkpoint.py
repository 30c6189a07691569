"""Checkpoints: models, optimizers, counters and RNG states in one atomic file.

A checkpoint is a plain dict saved with ``torch.save`` and loaded with ``weights_only=True``
(no pickled code). Only ``state_dict``s, tensors and plain Python values go in, so a resumed
run continues exactly where it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .io import DataError, atomic_path

__all__ = ["save_checkpoint", "load_checkpoint", "strip_module_prefix"]


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, then rename)."""
    path = Path(path)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises
    ------
    DataError
        If the file is missing, truncated or not a checkpoint dict.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise DataError(path, f"unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise DataError(path, f"checkpoint holds a {type(state).__name__}, expected a dict")
    return state


def strip_module_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` prefix that ``DataParallel`` adds to every key."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict
