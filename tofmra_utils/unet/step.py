"""One U-net training step: negative soft Dice, as the study trained it (Livne et al. 2019).

Vessels fill a few percent of a patch, so the loss rewards overlap with the vessel set directly
instead of per-pixel correctness:

.. math::
    \\mathcal{L} = -\\frac{2 \\sum_i p_i t_i + 1}{\\sum_i p_i + \\sum_i t_i + 1}

summed over every pixel of the batch (Keras style, smoothing 1).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["soft_dice_loss", "unet_step"]


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Negative soft Dice over the whole batch (scalar in [-1, 0)).

    Parameters
    ----------
    prob
        (B, 1, H, W) probabilities.
    target
        (B, 1, H, W) 0/1 labels (float).
    """
    inter = (prob * target).sum()
    return -(2.0 * inter + smooth) / (prob.sum() + target.sum() + smooth)


def unet_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
    max_grad_norm: float | None = None,
) -> float:
    """One optimizer step on a batch; returns the batch's loss (negative soft Dice).

    Parameters
    ----------
    model
        The U-net (train mode), mapping (B, 1, H, W) z-scored images to probabilities.
    optimizer
        Its optimizer (Adam in the study).
    images
        (B, 1, H, W) float32, z-scored with the training set's statistics, on the model's device.
    labels
        (B, 1, H, W) float32 0/1 vessel labels, same device.
    max_grad_norm
        Clip the gradient's global norm to this before the step (``None``: no clipping, the
        study's setting). Without batch normalization one early Adam step can swing every logit
        far negative; soft Dice then has no gradient left (the sigmoid is saturated) and the
        U-net predicts no vessel for the rest of its training.
    """
    optimizer.zero_grad(set_to_none=True)
    loss = soft_dice_loss(model(images), labels)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return float(loss.detach())
