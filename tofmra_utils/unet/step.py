"""One U-net training step: negative soft Dice, as the study trained it (Livne et al. 2019).

Vessels fill a few percent of a patch, so the loss rewards overlap with the vessel set directly
instead of per-pixel correctness:

.. math::
    \\mathcal{L} = -\\frac{2 \\sum_i p_i t_i + 1}{\\sum_i p_i + \\sum_i t_i + 1}

summed over every pixel of the batch (Keras style, smoothing 1).

Soft Dice alone has a trap: its gradient reaches a logit ``z`` through ``sigmoid'(z)``, which
vanishes once every logit is far negative. One unlucky early step there, and the U-net predicts
no vessel for the rest of its training (seen on the course profile; see :data:`LOSSES`). Adding
the pixel-wise binary cross-entropy, computed from the logits, keeps a gradient of ``p - t`` per
pixel, so a saturated U-net is pushed back towards the vessels.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LOSSES", "soft_dice_loss", "unet_loss", "unet_step"]

#: Training losses: ``"dice"`` (negative soft Dice, the study's) or ``"dice_bce"`` (soft Dice plus
#: the mean binary cross-entropy of the logits, which cannot saturate).
LOSSES: tuple[str, ...] = ("dice", "dice_bce")


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


def unet_loss(logits: torch.Tensor, target: torch.Tensor, loss: str = "dice") -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss to minimize, the batch's negative soft Dice) for (B, 1, H, W) logits and 0/1 targets.

    ``loss``: one of :data:`LOSSES`.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown U-net loss {loss!r}; choose one of {LOSSES}")
    dice = soft_dice_loss(torch.sigmoid(logits), target)
    if loss == "dice":
        return dice, dice
    return dice + nn.functional.binary_cross_entropy_with_logits(logits, target), dice


def unet_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
    max_grad_norm: float | None = None, loss: str = "dice",
) -> float:
    """One optimizer step on a batch; returns the batch's negative soft Dice (whatever ``loss`` is).

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
        study's setting).
    loss
        ``"dice"`` (the study's) or ``"dice_bce"`` (:func:`unet_loss`). The model must have a
        ``logits`` method (:class:`~tofmra_utils.unet.model.UNet`).
    """
    optimizer.zero_grad(set_to_none=True)
    total, dice = unet_loss(model.logits(images), labels, loss)
    total.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return float(dice.detach())
