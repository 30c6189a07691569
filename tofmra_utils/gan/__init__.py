"""The study's three GANs: models, losses, one training loop, generation and quality statistics.

``models``    generator and critics (DCGAN discriminator, WGAN-GP critic, WGAN-GP-SN critic)
``losses``    BCE with label smoothing + feature matching; Wasserstein with a per-sample gradient penalty
``train``     :func:`train_gan`, resumable, one loop for all three
``generate``  :func:`generate_from_checkpoint`, :func:`generate_pairs`
``quality``   real-versus-synthetic statistics
"""

from .generate import fixed_noise_pairs, generate_from_checkpoint, generate_pairs, load_generator
from .losses import DcganLoss, WassersteinGpLoss, gradient_penalty, loss_for
from .models import Critic, Generator, build_critic, build_gan, build_generator
from .quality import compare_sets, pair_statistics
from .train import GanTrainResult, load_history, train_gan

__all__ = [
    "Critic",
    "Generator",
    "build_gan",
    "build_generator",
    "build_critic",
    "DcganLoss",
    "WassersteinGpLoss",
    "gradient_penalty",
    "loss_for",
    "GanTrainResult",
    "train_gan",
    "load_history",
    "generate_from_checkpoint",
    "generate_pairs",
    "fixed_noise_pairs",
    "load_generator",
    "compare_sets",
    "pair_statistics",
]
