"""GAN networks and losses: shapes for every profile size, normalization rules, the gradient penalty."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from tofmra_utils.gan.losses import DcganLoss, WassersteinGpLoss, gradient_penalty, loss_for
from tofmra_utils.gan.models import Critic, Generator, MinibatchDiscrimination, base_size, build_gan
from tofmra_utils.profiles import GAN_NAMES, get_profile




# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    ("patch", "channels", "base"),
    [(32, (32, 16, 8), 4), (64, (32, 16, 8, 4), 4), (96, (48, 24, 12, 8, 4), 3)],
)
@pytest.mark.parametrize("name", GAN_NAMES)
def test_generator_and_critic_shapes(patch, channels, base, name):
    """Same depth as the profiles, reduced widths: z -> (B, 2, P, P) -> (B,)."""
    smoke = get_profile("smoke")
    profile = dataclasses.replace(
        smoke,
        data=dataclasses.replace(smoke.data, patch_size=patch),
        gan=dataclasses.replace(smoke.gan, generator_channels=channels),
    )
    g, d = build_gan(name, profile)
    assert g.base == d.base == base
    z = torch.randn(3, profile.gan.variants[name].z_dim)
    x = g(z)
    assert x.shape == (3, 2, patch, patch)
    assert float(x.detach().abs().max()) <= 1.0, "tanh output"
    score, features = d(x, return_features=True)
    assert score.shape == (3,)
    assert features.shape == (3, channels[0] * base * base)


def test_paper_generator_makes_96px_pairs_from_a_3px_base():
    paper = get_profile("paper")
    g = Generator(paper.gan.variants["wgan_gp"].z_dim, paper.gan.generator_channels, paper.data.patch_size)
    assert g.base == 3
    assert [m.out_channels for m in g.modules() if isinstance(m, nn.ConvTranspose2d)] == [768, 384, 192, 96, 2]
    with torch.no_grad():
        x = g.eval()(torch.randn(1, 128))
    assert x.shape == (1, 2, 96, 96)
    _, critic = build_gan("wgan_gp_sn", paper)
    with torch.no_grad():
        assert critic.eval()(x).shape == (1,)


def test_course_critic_mirrors_the_generator():
    course = get_profile("course")
    g, d = build_gan("wgan_gp", course)
    assert g.base == 4
    assert [m.out_channels for m in d.modules() if isinstance(m, nn.Conv2d)] == list(reversed(course.gan.generator_channels))
    k = course.gan.critic_kernel
    assert all(m.kernel_size == (k, k) and m.stride == (2, 2) for m in d.modules() if isinstance(m, nn.Conv2d))
    paper_critic = build_gan("wgan_gp", get_profile("paper"))[1]
    assert all(m.kernel_size == (5, 5) for m in paper_critic.modules() if isinstance(m, nn.Conv2d)), "the study's"


def test_base_size_rejects_sizes_that_do_not_divide():
    assert base_size(96, (1, 2, 3, 4, 5)) == 3
    with pytest.raises(ValueError, match="multiple of 8"):
        base_size(36, (1, 2, 3))


def test_weights_follow_the_study_init():
    g = Generator(100, (64, 32, 16), 32)
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d))])
    assert abs(float(w.detach().std()) - 0.05) < 0.005 and abs(float(w.detach().mean())) < 0.005


# ----------------------------------------------------------------------------- normalization rules
def _norm_layers(module: nn.Module) -> list[nn.Module]:
    kinds = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
    return [m for m in module.modules() if isinstance(m, kinds)]


def test_wgan_critics_have_no_batch_norm():
    smoke = get_profile("smoke")
    for name in ("wgan_gp", "wgan_gp_sn"):
        _, critic = build_gan(name, smoke)
        assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in critic.modules()), name
        assert not any(isinstance(m, nn.Sigmoid) for m in critic.modules()), name
    _, gp_critic = build_gan("wgan_gp", smoke)
    assert _norm_layers(gp_critic) and all(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in _norm_layers(gp_critic))
    _, sn_critic = build_gan("wgan_gp_sn", smoke)
    assert _norm_layers(sn_critic) == [], "the SN critic has no norm layers"
    _, disc = build_gan("dcgan", smoke)
    assert any(isinstance(m, nn.BatchNorm2d) for m in disc.modules())
    assert isinstance(disc.minibatch, MinibatchDiscrimination)


def test_spectral_norm_on_every_layer_of_the_sn_critic():
    torch.manual_seed(0)
    _, critic = build_gan("wgan_gp_sn", get_profile("smoke"))
    layers = [m for m in critic.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 4  # 3 convs + the final linear
    critic.train()
    x = torch.randn(4, 2, 32, 32)
    for _ in range(10):  # power iterations run in training-mode forward passes
        critic(x)
    for m in layers:
        assert parametrize.is_parametrized(m, "weight")
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.02, float(sigma)
    # Without spectral norm, the same init gives singular values far from 1.
    _, plain = build_gan("wgan_gp", get_profile("smoke"))
    conv = next(m for m in plain.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 16)
    assert not parametrize.is_parametrized(conv, "weight")


def test_minibatch_discrimination_sees_collapse():
    torch.manual_seed(0)
    mbd = MinibatchDiscrimination(6, n_kernels=4, kernel_dim=3)
    with torch.no_grad():
        mbd.T.mul_(10)
    same = mbd(torch.ones(5, 6))[:, 6:]
    diverse = mbd(torch.randn(5, 6) * 3)[:, 6:]
    assert torch.allclose(same, torch.full_like(same, 4.0)), "identical samples: closeness to the 4 others is 1 each"
    assert float(diverse.detach().mean()) < 1.0


# ----------------------------------------------------------------------------- gradient penalty
class LinearCritic(nn.Module):
    """f(x) = <w, x>: its gradient is w everywhere."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w


class HalfSquareCritic(nn.Module):
    """f(x) = ||x||^2 / 2 per sample: its gradient is x itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.flatten(1).pow(2).sum(1)


def test_gradient_penalty_of_a_linear_critic_is_exact():
    w = torch.zeros(2 * 4 * 4)
    w[:9] = 1.0  # ||w|| = 3
    critic = LinearCritic(w)
    real, fake = torch.randn(6, 2, 4, 4), torch.randn(6, 2, 4, 4)
    gp = gradient_penalty(critic, real, fake, rng=torch.Generator().manual_seed(0))
    assert math.isclose(float(gp.detach()), (3.0 - 1.0) ** 2, rel_tol=1e-6)
    gp.backward()  # create_graph: the penalty trains the critic; d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    assert torch.allclose(critic.w.grad, 2 * (3.0 - 1.0) * w / 3.0, atol=1e-5)


def test_gradient_penalty_uses_one_alpha_and_one_norm_per_sample():
    b, shape = 5, (2, 3, 3)
    d = 2 * 3 * 3
    real, fake = torch.ones(b, *shape), torch.zeros(b, *shape)
    gp = gradient_penalty(HalfSquareCritic(), real, fake, rng=torch.Generator().manual_seed(11))
    alpha = torch.rand((b, 1, 1, 1), generator=torch.Generator().manual_seed(11)).flatten()
    # gradient at x_hat_i = alpha_i * 1 is x_hat_i itself, norm alpha_i * sqrt(d)
    expected = ((alpha * math.sqrt(d) - 1.0) ** 2).mean()
    assert math.isclose(float(gp.detach()), float(expected), rel_tol=1e-5)
    # The same seed with one alpha for the batch, or a norm over the whole batch (the original
    # code), gives other numbers.
    one_alpha = (alpha[0] * math.sqrt(d) - 1.0) ** 2
    batch_wide = (alpha[0] * math.sqrt(d * b) - 1.0) ** 2
    for wrong in (one_alpha, batch_wide):
        assert not math.isclose(float(expected), float(wrong), rel_tol=1e-2)


def test_gradient_penalty_is_finite_for_a_flat_critic():
    critic = LinearCritic(torch.zeros(8))
    gp = gradient_penalty(critic, torch.randn(3, 8), torch.randn(3, 8))
    gp.backward()
    assert math.isclose(float(gp.detach()), 1.0, rel_tol=1e-5) and torch.isfinite(critic.w.grad).all()


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("name", GAN_NAMES)
def test_critic_step_sends_no_gradient_into_the_generator(name):
    smoke = get_profile("smoke")
    g, d = build_gan(name, smoke)
    loss = loss_for(name, smoke.gan.variants[name])
    fake = g(torch.randn(4, smoke.gan.variants[name].z_dim))
    real = torch.rand(4, 2, 32, 32) * 2 - 1
    d_loss, stats = loss.critic_loss(d, real, fake, rng=torch.Generator().manual_seed(0))
    d_loss.backward()
    assert all(p.grad is None for p in g.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())
    assert math.isfinite(stats["d_loss"])


class ConstantLogit(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        score = torch.full((x.shape[0],), self.value) + self.anchor
        return (score, x.flatten(1)) if return_features else score


def test_dcgan_loss_smooths_real_targets_and_matches_features():
    c = 0.3
    critic = ConstantLogit(c)
    x = torch.rand(4, 2, 8, 8)
    d_loss, stats = DcganLoss().critic_loss(critic, x, x)
    sig = 1 / (1 + math.exp(-c))
    by_hand = -(0.9 * math.log(sig) + 0.1 * math.log(1 - sig)) - math.log(1 - sig)
    assert math.isclose(float(d_loss.detach()), by_hand, rel_tol=1e-6)
    assert math.isclose(stats["d_real_prob"], sig, rel_tol=1e-6)
    g_loss, g_stats = DcganLoss().generator_loss(critic, x, x)
    assert g_stats["feature_matching"] == 0.0, "identical batches have identical feature means"
    assert math.isclose(float(g_loss.detach()), -math.log(sig), rel_tol=1e-6), "non-saturating: -log D(G(z))"
    _, shifted = DcganLoss().generator_loss(critic, x + 0.5, x)
    assert math.isclose(shifted["feature_matching"], 0.25, rel_tol=1e-5)


def test_wasserstein_losses():
    critic = LinearCritic(torch.ones(4) / 2)  # ||w|| = 1: no penalty
    real, fake = torch.full((3, 4), 1.0), torch.full((3, 4), -1.0)
    loss, stats = WassersteinGpLoss(gp_weight=10.0).critic_loss(critic, real, fake)
    assert math.isclose(stats["wasserstein"], 4.0, rel_tol=1e-6)
    assert stats["gp"] < 1e-10 and math.isclose(float(loss.detach()), -4.0, rel_tol=1e-5)
    g_loss, _ = WassersteinGpLoss().generator_loss(critic, fake)
    assert math.isclose(float(g_loss.detach()), 2.0, rel_tol=1e-6)
    assert isinstance(Critic((8, 4), 16, norm="layer")(torch.randn(2, 2, 16, 16)), torch.Tensor)
