"""Generators and critics of the study's three GANs, sized by a profile.

All three GANs share one generator; they differ in the network that judges its output:

============== ======================= ================================================
GAN            judge                   normalization in the judge
============== ======================= ================================================
``dcgan``      discriminator (logits)  batch norm + minibatch discrimination
``wgan_gp``    Wasserstein critic      layer norm (no batch norm: the gradient penalty
                                       is per sample, batch norm mixes samples)
``wgan_gp_sn`` Wasserstein critic      none; spectral norm on every conv and the linear
============== ======================= ================================================

Shapes (``C = generator_channels``, ``P = patch_size``, ``base = P / 2**len(C)``)::

    generator: z (B, z_dim) -> linear -> (B, C[0], base, base)
               -> [ConvT k5 s2 -> BN -> ReLU] x (len(C) - 1)   (doubles H, W; C[i-1] -> C[i])
               -> ConvT k5 s2 -> tanh -> (B, 2, P, P)            (channel 0 image, 1 label)
    critic:    (B, 2, P, P) -> conv k5 s2 -> LeakyReLU(0.2)       (2 -> C[-1])
               -> [conv k5 s2 -> norm -> LeakyReLU(0.2)] x (len(C) - 1)   (C[i] -> C[i-1])
               -> (B, C[0], base, base) -> flatten [-> minibatch discrimination] -> linear -> (B,)

``GanConfig.upsampling = "nearest3"`` replaces each ConvT k5 s2 by nearest-neighbour doubling and
a 3x3 conv, and ``GanConfig.critic_kernel`` sets the critic's kernel (5, 4 or 3); the CPU
profiles use both, the paper profile keeps the study's layers.

The course profile ``C = (64, 32, 16)`` at 32 px starts from 4x4; the paper profile
``C = (1536, 768, 384, 192, 96)`` at 96 px from 3x3, as in the study.

Initialization: conv/linear weights N(0, s), biases 0, as the study's code; batch-norm and
layer-norm scales N(1, s), shifts 0 (the DCGAN convention; the study's ``weights_init`` draws the
scales N(0, s) too: ``GanConfig.norm_init = "study"``, the paper profile), with
s = ``profile.gan.init_std`` (the study: 0.05; the CPU profiles: 0.02, see
:class:`~tofmra_utils.profiles.GanConfig`). The study's code also leaves spectral norm off the
WGAN-GP-SN critic's last layer (``GanConfig.sn_last_layer = False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..profiles import GAN_NAMES, Profile

__all__ = [
    "INIT_STD",
    "UPSAMPLINGS",
    "CRITIC_KERNELS",
    "Generator",
    "Critic",
    "MinibatchDiscrimination",
    "base_size",
    "build_generator",
    "build_critic",
    "build_gan",
    "init_weights",
]

#: Standard deviation of the study's normal weight initialization.
INIT_STD = 0.05

#: Mean of the initial norm scales per ``GanConfig.norm_init``.
_NORM_SCALE_MEAN = {"dcgan": 1.0, "study": 0.0}

#: Critic normalization per GAN (see the module docstring).
CRITIC_NORM = {"dcgan": "batch", "wgan_gp": "layer", "wgan_gp_sn": "none"}


def base_size(patch_size: int, channels: Sequence[int]) -> int:
    """Side of the generator's first feature map: ``patch_size / 2**len(channels)``.

    Raises
    ------
    ValueError
        If ``patch_size`` is not a multiple of ``2**len(channels)`` or the base is below 2.
    """
    if not channels:
        raise ValueError("generator_channels must not be empty")
    base, rest = divmod(int(patch_size), 2 ** len(channels))
    if rest or base < 2:
        raise ValueError(
            f"patch size {patch_size} does not fit {len(channels)} doubling layers: it must be a multiple of "
            f"{2 ** len(channels)} with a base of at least 2 px"
        )
    return base


def init_weights(module: nn.Module, std: float = INIT_STD, norm_scale_mean: float = 1.0) -> None:
    """Conv/linear weights N(0, std), biases 0, norm scales N(``norm_scale_mean``, std), shifts 0.

    ``norm_scale_mean=1`` is the DCGAN convention (each norm layer starts near the identity);
    the study's ``weights_init`` draws the scales N(0, std) (``norm_scale_mean=0``).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            # With spectral norm the trainable tensor is parametrizations.weight.original.
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, norm_scale_mean, std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, MinibatchDiscrimination):
            nn.init.normal_(m.T, 0.0, std)


#: Generator upsampling layers: the study's kernel-5 transposed convolution, or nearest-neighbour
#: doubling followed by a 3x3 convolution (free of transposed-convolution checkerboards; it convolves at the
#: output size, so it costs more per step: ``benchmarks/bench_gan.py --changes``).
UPSAMPLINGS: tuple[str, ...] = ("transposed5", "nearest3")
#: Critic kernel sizes (stride 2 each): 5 as the study, or 4 / 3 (fewer multiplications).
CRITIC_KERNELS: tuple[int, ...] = (5, 4, 3)


def _up(c_in: int, c_out: int, upsampling: str = "transposed5") -> nn.Module:
    """A layer that exactly doubles H and W.

    ``transposed5``: transposed conv, kernel 5, stride 2, padding 2, output padding 1 (the study).
    ``nearest3``: nearest-neighbour doubling, then a 3x3 conv with padding 1.
    """
    if upsampling == "transposed5":
        return nn.ConvTranspose2d(c_in, c_out, kernel_size=5, stride=2, padding=2, output_padding=1)
    if upsampling == "nearest3":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
    raise ValueError(f"unknown upsampling {upsampling!r}: choose one of {', '.join(UPSAMPLINGS)}")


def _down(c_in: int, c_out: int, kernel_size: int = 5) -> nn.Conv2d:
    """Strided conv that exactly halves even H and W (stride 2; kernel 5, 4 or 3)."""
    if kernel_size not in CRITIC_KERNELS:
        raise ValueError(f"critic kernel size must be one of {CRITIC_KERNELS}, got {kernel_size}")
    return nn.Conv2d(c_in, c_out, kernel_size=kernel_size, stride=2, padding=(kernel_size - 1) // 2)


class Generator(nn.Module):
    """z -> (image, label) patch pair in [-1, 1].

    Parameters
    ----------
    z_dim
        Latent size.
    channels
        Feature widths from the first (smallest) map upward, e.g. ``(128, 64, 32)``.
    patch_size
        Output side in pixels; must equal ``base * 2**len(channels)``.
    out_channels
        2: image and label.
    init_std
        Spread of the normal weight initialization (the study: 0.05).
    upsampling
        One of :data:`UPSAMPLINGS` (the study: ``transposed5``).
    """

    def __init__(
        self, z_dim: int, channels: Sequence[int], patch_size: int, out_channels: int = 2, init_std: float = INIT_STD,
        upsampling: str = "transposed5", norm_scale_mean: float = 1.0,
    ) -> None:
        super().__init__()
        self.upsampling = str(upsampling)
        self.z_dim = int(z_dim)
        self.channels = tuple(int(c) for c in channels)
        self.patch_size = int(patch_size)
        self.out_channels = int(out_channels)
        self.base = base_size(patch_size, self.channels)
        c0 = self.channels[0]
        self.project = nn.Sequential(
            nn.Linear(self.z_dim, c0 * self.base * self.base),
            nn.Unflatten(1, (c0, self.base, self.base)),
            nn.BatchNorm2d(c0),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(self.channels[:-1], self.channels[1:]):
            blocks += [_up(c_in, c_out, self.upsampling), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        blocks += [_up(self.channels[-1], self.out_channels, self.upsampling), nn.Tanh()]
        self.upsample = nn.Sequential(*blocks)
        init_weights(self, init_std, norm_scale_mean)

    def constructor_args(self) -> dict[str, Any]:
        """What :func:`Generator(**args)` needs to rebuild this network (stored in checkpoints)."""
        return {
            "z_dim": self.z_dim,
            "channels": list(self.channels),
            "patch_size": self.patch_size,
            "out_channels": self.out_channels,
            "upsampling": self.upsampling,
        }

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) -> (B, 2, P, P) in [-1, 1]."""
        return self.upsample(self.project(z))


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, "Improved techniques for training GANs").

    Each sample's features f_i (F,) are projected by a tensor T to K kernels of D dims,
    M_i = (f_i T) in R^{K x D}. For each kernel k the closeness of sample i to the others is
    o_i,k = sum_{j != i} exp(-||M_i,k - M_j,k||_1). These K numbers are appended to the features:
    a generator that collapses to one mode produces a batch whose samples are all close, which the
    discriminator can then see.

    Input (B, F) -> output (B, F + K).
    """

    def __init__(self, in_features: int, n_kernels: int = 50, kernel_dim: int = 5) -> None:
        super().__init__()
        self.in_features, self.n_kernels, self.kernel_dim = int(in_features), int(n_kernels), int(kernel_dim)
        self.T = nn.Parameter(torch.empty(self.in_features, self.n_kernels * self.kernel_dim))
        nn.init.normal_(self.T, 0.0, INIT_STD)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        m = (f @ self.T).view(-1, self.n_kernels, self.kernel_dim)  # (B, K, D)
        l1 = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)  # (B, B, K)
        closeness = torch.exp(-l1).sum(dim=1) - 1.0  # drop exp(0) = 1 of the sample with itself
        return torch.cat([f, closeness], dim=1)


class Critic(nn.Module):
    """Discriminator / Wasserstein critic mirroring the generator: (B, 2, P, P) -> (B,) scores.

    Parameters
    ----------
    channels
        The generator's widths (the critic uses them in reverse order).
    patch_size
        Input side in pixels.
    norm
        ``"batch"`` (DCGAN), ``"layer"`` (WGAN-GP; ``GroupNorm(1, C)``, i.e. layer norm over C, H, W
        per sample) or ``"none"``. The first conv never has a norm (DCGAN convention).
    spectral
        Spectral normalization on every conv and the final linear (WGAN-GP-SN).
    minibatch_kernels
        Number of minibatch-discrimination kernels before the final linear (0: none).
    in_channels
        2: image and label.
    init_std
        Spread of the normal weight initialization (the study: 0.05).
    kernel_size
        Kernel of the strided convolutions, one of :data:`CRITIC_KERNELS` (the study: 5).
    norm_scale_mean
        Mean of the initial norm scales (:func:`init_weights`).
    spectral_last
        With ``spectral``, normalize the final linear layer too (the study's code does not).

    Notes
    -----
    The outputs are raw scores: logits for the DCGAN (the sigmoid lives in the BCE-with-logits
    loss) and unbounded Wasserstein scores for the critics (no sigmoid).
    """

    def __init__(
        self,
        channels: Sequence[int],
        patch_size: int,
        norm: str = "none",
        spectral: bool = False,
        minibatch_kernels: int = 0,
        in_channels: int = 2,
        init_std: float = INIT_STD,
        kernel_size: int = 5,
        norm_scale_mean: float = 1.0,
        spectral_last: bool = True,
    ) -> None:
        super().__init__()
        if norm not in ("batch", "layer", "none"):
            raise ValueError(f"unknown critic norm {norm!r}: choose batch, layer or none")
        self.channels = tuple(int(c) for c in channels)
        self.patch_size = int(patch_size)
        self.base = base_size(patch_size, self.channels)
        self.norm, self.spectral = norm, bool(spectral)
        widths = [in_channels, *reversed(self.channels)]  # e.g. 2 -> 16 -> 32 -> 64
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(_down(c_in, c_out, kernel_size))
            if i > 0 and norm == "batch":
                layers.append(nn.BatchNorm2d(c_out))
            elif i > 0 and norm == "layer":
                layers.append(nn.GroupNorm(1, c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.features = nn.Sequential(*layers, nn.Flatten())
        n_features = self.channels[0] * self.base * self.base
        self.minibatch = MinibatchDiscrimination(n_features, minibatch_kernels) if minibatch_kernels else None
        head_in = n_features + (minibatch_kernels if minibatch_kernels else 0)
        self.head = nn.Linear(head_in, 1)
        init_weights(self, init_std, norm_scale_mean)
        if self.spectral:
            # After the init, so the power iteration starts from the weights actually trained.
            for m in self.modules():
                if isinstance(m, nn.Conv2d) or (m is self.head and spectral_last):
                    spectral_norm(m)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Scores (B,); with ``return_features`` also the flattened last conv features (B, F).

        The features are what DCGAN feature matching compares between real and fake batches.
        """
        f = self.features(x)
        h = self.minibatch(f) if self.minibatch is not None else f
        score = self.head(h).squeeze(1)
        return (score, f) if return_features else score


def build_generator(name: str, profile: Profile) -> Generator:
    """The generator of GAN ``name`` for ``profile`` (z size from the GAN's settings)."""
    settings = profile.gan.variants[_check_name(name)]
    return Generator(
        settings.z_dim, profile.gan.generator_channels, profile.data.patch_size, init_std=profile.gan.init_std,
        upsampling=profile.gan.upsampling, norm_scale_mean=_NORM_SCALE_MEAN[profile.gan.norm_init],
    )


def build_critic(name: str, profile: Profile, minibatch_kernels: int = 50) -> Critic:
    """The discriminator (``dcgan``) or critic (``wgan_gp``, ``wgan_gp_sn``) for ``profile``."""
    name = _check_name(name)
    return Critic(
        profile.gan.generator_channels,
        profile.data.patch_size,
        norm=CRITIC_NORM[name],
        spectral=name == "wgan_gp_sn",
        minibatch_kernels=minibatch_kernels if name == "dcgan" else 0,
        init_std=profile.gan.init_std,
        kernel_size=profile.gan.critic_kernel,
        norm_scale_mean=_NORM_SCALE_MEAN[profile.gan.norm_init],
        spectral_last=profile.gan.sn_last_layer,
    )


def build_gan(name: str, profile: Profile) -> tuple[Generator, Critic]:
    """``(generator, critic)`` of GAN ``name`` (one of ``dcgan``, ``wgan_gp``, ``wgan_gp_sn``)."""
    return build_generator(name, profile), build_critic(name, profile)


def _check_name(name: str) -> str:
    if name not in GAN_NAMES:
        raise ValueError(f"unknown GAN {name!r}: choose one of {', '.join(GAN_NAMES)}")
    return name
