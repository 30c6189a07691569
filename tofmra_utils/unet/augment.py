"""The study's U-net training augmentation: rotation, vertical flip and shear, on image and label alike.

Livne et al. (2019), whose U-net the study trains, augmented every training batch with a random
rotation of up to 30 degrees, a vertical flip and a shear of up to 20 degrees (Keras
``ImageDataGenerator``, ``fill_mode="nearest"``). Here one affine map per patch is drawn and
applied with :func:`torch.nn.functional.grid_sample`: bilinear for the image, nearest for the
label (which stays 0/1), border values repeated outward as Keras' ``"nearest"`` fill does.

The random draws come from a generator seeded by ``(seed, step)``, so a resumed run augments
step ``k`` exactly as an uninterrupted one and nothing extra goes into the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentSettings", "STUDY_AUGMENT", "augment_batch"]


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random affine map (the study's by default: :data:`STUDY_AUGMENT`).

    Attributes
    ----------
    rotation_deg
        Rotation drawn uniformly in ``[-rotation_deg, rotation_deg]`` degrees.
    shear_deg
        Shear angle drawn uniformly in ``[-shear_deg, shear_deg]`` degrees (x shifted by
        ``tan(shear) * y``).
    vertical_flip
        Flip rows with probability 1/2.
    """

    rotation_deg: float = 30.0
    shear_deg: float = 20.0
    vertical_flip: bool = True


#: Livne et al. 2019 / the study: rotation up to 30 degrees, vertical flip, shear up to 20 degrees.
STUDY_AUGMENT = AugmentSettings()


def augment_batch(
    images: torch.Tensor, labels: torch.Tensor, seed: int, step: int, settings: AugmentSettings = STUDY_AUGMENT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random affine map per patch, the same for a patch's image and label.

    Parameters
    ----------
    images
        (B, 1, H, W) float images (z-scored), any device.
    labels
        (B, 1, H, W) float 0/1 labels, same device.
    seed, step
        Seed the draws (``seed`` of the run, ``step`` the optimizer step about to be taken).
    settings
        Ranges of the map.

    Returns
    -------
    (images, labels), same shapes; labels still exactly 0/1.
    """
    b = images.shape[0]
    rng = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    angle = (torch.rand(b, generator=rng) * 2 - 1) * math.radians(settings.rotation_deg)
    shear = (torch.rand(b, generator=rng) * 2 - 1) * math.radians(settings.shear_deg)
    flip = (torch.rand(b, generator=rng) < 0.5) if settings.vertical_flip else torch.zeros(b, dtype=torch.bool)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # Output grid (x, y) in [-1, 1] -> input position: rotate, then shear, then flip rows.
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + tan * cos
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos + tan * sin
    theta[flip, 1, :] *= -1
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out_images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out_labels = F.grid_sample(labels, grid, mode="nearest", padding_mode="border", align_corners=False)
    return out_images, out_labels
