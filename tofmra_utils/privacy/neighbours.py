"""Euclidean nearest neighbours between feature sets, chunked so memory stays bounded.

All functions take float feature arrays (N, F) and return Euclidean distances in feature units.
The audit's sets hold a few thousand patches on a CPU profile, so exact search with matrix
products is cheap enough and needs no index library.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["torch_device", "pairwise_distances", "nearest", "kth_nearest_within"]

_CHUNK_ELEMENTS = 16_000_000  # distance-matrix entries per chunk (64 MB of float32)


def torch_device(device: Any) -> torch.device:
    """``device`` as a torch device; ``None``: CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _squared(query: torch.Tensor, ref: torch.Tensor, ref_sq: torch.Tensor) -> torch.Tensor:
    d2 = (query * query).sum(1, keepdim=True) + ref_sq[None, :] - 2.0 * query @ ref.T
    return d2.clamp_min_(0.0)


def pairwise_distances(x: np.ndarray, y: np.ndarray, device: Any = None) -> np.ndarray:
    """All distances (Nx, Ny) float64 between rows of ``x`` (Nx, F) and ``y`` (Ny, F)."""
    dev = torch_device(device)
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float64)).to(dev)
    yt = torch.from_numpy(np.ascontiguousarray(y, np.float64)).to(dev)
    return _squared(xt, yt, (yt * yt).sum(1)).sqrt_().cpu().numpy()


def nearest(query: np.ndarray, ref: np.ndarray, device: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest reference row of every query, the smallest over the query's variants (flips).

    Parameters
    ----------
    query
        (T, Nq, F): T variants (e.g. flips) of Nq query vectors, or (Nq, F) for one variant.
    ref
        (Nr, F) reference vectors, Nr >= 1.

    Returns
    -------
    distance
        (Nq,) float64: the smallest distance over variants and reference rows.
    index
        (Nq,) int: the reference row it is reached at.
    variant
        (Nq,) int: the query variant (flip) it is reached with.
    """
    query = query[None] if query.ndim == 2 else query
    if len(ref) == 0:
        raise ValueError("nearest: empty reference set")
    t, nq, _ = query.shape
    dev = torch_device(device)
    ref_t = torch.from_numpy(np.ascontiguousarray(ref, np.float32)).to(dev)
    ref_sq = (ref_t * ref_t).sum(1)
    best = np.full(nq, np.inf)
    index = np.zeros(nq, np.int64)
    variant = np.zeros(nq, np.int64)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, len(ref)))
    for v in range(t):
        for start in range(0, nq, chunk):
            q = torch.from_numpy(np.ascontiguousarray(query[v, start : start + chunk], np.float32)).to(dev)
            d2 = _squared(q, ref_t, ref_sq)
            m, i = d2.min(dim=1)
            m_np, i_np = m.double().sqrt().cpu().numpy(), i.cpu().numpy()
            sl = slice(start, start + len(m_np))
            better = m_np < best[sl]
            best[sl] = np.where(better, m_np, best[sl])
            index[sl] = np.where(better, i_np, index[sl])
            variant[sl] = np.where(better, v, variant[sl])
    return best, index, variant


def kth_nearest_within(x: np.ndarray, k: int, device: Any = None) -> np.ndarray:
    """Distance (N,) from each row of ``x`` (N, F) to its k-th nearest other row (self excluded)."""
    if len(x) <= k:
        raise ValueError(f"need more than k={k} vectors, got {len(x)}")
    d = pairwise_distances(x, x, device)
    # Index k of the sorted row: position 0 is the point itself (distance 0).
    return np.partition(d, k, axis=1)[:, k]
