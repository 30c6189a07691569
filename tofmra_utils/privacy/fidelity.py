"""Fidelity and diversity of a synthetic set against real patches, in a feature space.

* Frechet distance (FD; FID when the features are Inception's): the distance between Gaussians
  fitted to the two feature sets. 0 for identical statistics.
* Kernel distance (KD; KID with Inception features): the unbiased squared MMD with the cubic
  polynomial kernel ``k(x, y) = (x.y / F + 1)^3`` (Binkowski et al. 2018), over all samples.
* Precision, recall, density, coverage (Naeem et al. 2020) with k nearest neighbours: precision
  and density, how much of the synthetic set lies on the real manifold (fidelity); recall and
  coverage, how much of the real manifold it reaches (diversity).

Why not torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance``: both accept a
custom feature module (checked with the pinned torchmetrics 1.9.0, no download needed), but FID
takes the eigenvalues of a non-symmetric F x F product, which for pixel features (F = 2 P^2 =
2048 at 32 px) costs more than the whole audit's budget, and KID averages random subsets drawn
from torch's global random stream. Here both are exact and seeded; ``tests/test_privacy.py``
checks them against torchmetrics on small features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .neighbours import kth_nearest_within, pairwise_distances, torch_device

__all__ = ["Fidelity", "frechet_distance", "kernel_distance", "prdc", "fidelity"]


def frechet_distance(real: np.ndarray, fake: np.ndarray, device: Any = None) -> float:
    """Frechet distance between Gaussians fitted to ``real`` (N, F) and ``fake`` (M, F).

    ``|mu_r - mu_f|^2 + tr S_r + tr S_f - 2 tr (S_r S_f)^(1/2)``. When F exceeds a sample size the last
    trace is the sum of the singular values of the (N, M) matrix ``Xr Xf^T / sqrt((N-1)(M-1))``
    (centred data; the nonzero eigenvalues of ``S_r S_f`` are its squared singular values): exact and
    cheap. Otherwise it is the trace of the square root of the symmetric ``S_r^(1/2) S_f S_r^(1/2)``.
    Float64 throughout, on ``device`` (default CUDA when available: the paper profile's sets are large).
    """
    dev = torch_device(device)
    real_t = torch.from_numpy(np.asarray(real, np.float64)).to(dev)
    fake_t = torch.from_numpy(np.asarray(fake, np.float64)).to(dev)
    n, m = len(real_t), len(fake_t)
    xr, xf = real_t - real_t.mean(0), fake_t - fake_t.mean(0)
    if real_t.shape[1] > min(n, m):
        trace_sqrt = torch.linalg.svdvals(xr @ xf.T / np.sqrt((n - 1) * (m - 1))).sum()
    else:
        s_r, s_f = xr.T @ xr / (n - 1), xf.T @ xf / (m - 1)
        w, v = torch.linalg.eigh(s_r)
        root_r = (v * w.clamp_min(0.0).sqrt()) @ v.T
        trace_sqrt = torch.linalg.eigvalsh(root_r @ s_f @ root_r).clamp_min(0.0).sqrt().sum()
    mean_term = ((real_t.mean(0) - fake_t.mean(0)) ** 2).sum()
    value = mean_term + (xr * xr).sum() / (n - 1) + (xf * xf).sum() / (m - 1) - 2.0 * trace_sqrt
    return max(0.0, float(value))


def kernel_distance(real: np.ndarray, fake: np.ndarray, degree: int = 3, coef: float = 1.0, device: Any = None) -> float:
    """Unbiased squared MMD with the polynomial kernel ``(x.y / F + coef)^degree`` (KID's kernel), float64 on ``device``."""
    dev = torch_device(device)
    real_t = torch.from_numpy(np.asarray(real, np.float64)).to(dev)
    fake_t = torch.from_numpy(np.asarray(fake, np.float64)).to(dev)
    gamma = 1.0 / real_t.shape[1]
    k_rr = (real_t @ real_t.T * gamma + coef) ** degree
    k_ff = (fake_t @ fake_t.T * gamma + coef) ** degree
    k_rf = (real_t @ fake_t.T * gamma + coef) ** degree
    n, m = len(real_t), len(fake_t)
    value = ((k_rr.sum() - k_rr.trace()) / (n * (n - 1)) + (k_ff.sum() - k_ff.trace()) / (m * (m - 1))
             - 2.0 * k_rf.mean())
    return float(value)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, device: Any = None) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) of ``fake`` (M, F) against ``real`` (N, F).

    A real sample's neighbourhood is the ball reaching its k-th nearest real neighbour, a fake
    sample's the ball reaching its k-th nearest fake neighbour.
    """
    radius_real = kth_nearest_within(real, k, device)
    radius_fake = kth_nearest_within(fake, k, device)
    d = pairwise_distances(real, fake, device)  # (N, M)
    inside_real = d <= radius_real[:, None]
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d <= radius_fake[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * d.shape[1])),
        "coverage": float((d.min(axis=1) <= radius_real).mean()),
    }


@dataclass
class Fidelity:
    """Fidelity/diversity of one set against the real training patches (see the module docstring)."""

    fd: float
    kd: float
    precision: float
    recall: float
    density: float
    coverage: float
    n_real: int
    n_fake: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def fidelity(real: np.ndarray, fake: np.ndarray, k: int = 5, device: Any = None) -> Fidelity:
    """All fidelity/diversity numbers of ``fake`` (M, F) against ``real`` (N, F)."""
    return Fidelity(fd=frechet_distance(real, fake, device), kd=kernel_distance(real, fake, device=device), **prdc(real, fake, k, device),
                    n_real=len(real), n_fake=len(fake))
