"""Differentially private WGAN-GP (tofmra_utils.gan.dp) and its accounting (tofmra_utils.privacy_accounting)."""

from __future__ import annotations

import dataclasses
import math

import dp_accounting
import dp_accounting.pld
import numpy as np
import pytest
import torch

from tofmra_utils import privacy_accounting as acc
from tofmra_utils.checkpoint import load_checkpoint
from tofmra_utils.gan.dp import (
    check_private_critic,
    generate_private_set,
    plan_private_training,
    private_critic_gradients,
    train_private_gan,
)
from tofmra_utils.gan.losses import WassersteinGpLoss
from tofmra_utils.gan.models import build_critic
from tofmra_utils.io import read_json
from tofmra_utils.patchset import PatchSet
from tofmra_utils.profiles import PROFILES, DpConfig

SMOKE = PROFILES["smoke"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(b: int = 12, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    critic = build_critic("wgan_gp", SMOKE)
    p = SMOKE.data.patch_size
    real = torch.rand(b, 2, p, p) * 2 - 1
    fake = torch.rand(b, 2, p, p) * 2 - 1
    return critic, real, fake


def _ordinary_gradients(critic, real, fake, seed: int) -> list[torch.Tensor]:
    loss, _ = WassersteinGpLoss(gp_weight=10.0).critic_loss(critic, real, fake, rng=torch.Generator().manual_seed(seed))
    return list(torch.autograd.grad(loss, list(critic.parameters())))


def _patches(subjects: dict[str, int], p: int = 32, seed: int = 0) -> PatchSet:
    rng = np.random.default_rng(seed)
    n = sum(subjects.values())
    image = rng.uniform(-1, 1, (n, p, p)).astype(np.float32)
    label = (rng.uniform(size=(n, p, p)) > 0.97).astype(np.uint8)
    subject = np.concatenate([np.full(k, s) for s, k in subjects.items()])
    return PatchSet(image=image, label=label, subject=subject, kind=np.ones(n), centre=np.zeros((n, 3)))


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("per_example", [True, False])
def test_without_noise_and_clipping_the_private_gradient_is_the_ordinary_one(per_example):
    critic, real, fake = _batch()
    expected = _ordinary_gradients(critic, real, fake, seed=5)
    # The same interpolation weights as gradient_penalty draws from a generator seeded alike.
    alpha = torch.rand((len(real), 1, 1, 1), generator=torch.Generator().manual_seed(5))
    grads, stats = private_critic_gradients(critic, real, fake, alpha, torch.arange(len(real)), len(real), 10.0,
                                            clip_norm=None, noise_multiplier=0.0, normalizer=len(real),
                                            per_example=per_example)
    for (name, _), e in zip(critic.named_parameters(), expected):
        torch.testing.assert_close(grads[name], e, rtol=1e-4, atol=1e-5 * float(e.abs().max()), msg=name)
    assert math.isfinite(stats["d_loss"])


def test_a_clipping_norm_above_every_unit_norm_changes_nothing_and_groups_only_sum():
    critic, real, fake = _batch()
    alpha = torch.rand((len(real), 1, 1, 1), generator=torch.Generator().manual_seed(1))
    groups = torch.arange(len(real)) % 3  # three "patients"
    free, _ = private_critic_gradients(critic, real, fake, alpha, torch.arange(len(real)), len(real), 10.0, None, 0.0, 7.0,
                                       per_example=True)
    loose, stats = private_critic_gradients(critic, real, fake, alpha, groups, 3, 10.0, 1e9, 0.0, 7.0)
    for name in free:
        torch.testing.assert_close(loose[name], free[name], rtol=1e-4, atol=1e-7)
    assert stats["clipped"] == 0.0 and stats["n_units"] == 3


def test_each_units_contribution_is_clipped_to_the_norm():
    critic, real, fake = _batch()
    alpha = torch.rand((len(real), 1, 1, 1), generator=torch.Generator().manual_seed(2))
    clip = 1e-3
    # One unit per call: the normalized gradient times the normalizer is that unit's clipped sum.
    for groups, n in ((torch.zeros(len(real), dtype=torch.long), 1), (torch.arange(len(real)), len(real))):
        grads, stats = private_critic_gradients(critic, real, fake, alpha, groups, n, 10.0, clip, 0.0, 1.0)
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads.values()))
        assert stats["clipped"] == 1.0
        assert norm <= n * clip * (1 + 1e-4)
    assert norm < len(real) * clip * 0.999  # per-patch directions differ: the sum is shorter than n*C


def test_noise_has_the_calibrated_spread():
    critic, real, fake = _batch(b=0)
    sigma, clip, normalizer = 2.0, 0.5, 4.0
    grads, _ = private_critic_gradients(critic, real, fake, torch.zeros(0, 1, 1, 1), torch.zeros(0, dtype=torch.long),
                                        0, 10.0, clip, sigma, normalizer, torch.Generator().manual_seed(0))
    values = torch.cat([g.flatten() for g in grads.values()])
    assert values.numel() > 1000
    assert float(values.std()) == pytest.approx(sigma * clip / normalizer, rel=0.05)
    with pytest.raises(ValueError, match="clipping norm"):
        private_critic_gradients(critic, real, fake, torch.zeros(0, 1, 1, 1), torch.zeros(0, dtype=torch.long), 0, 10.0,
                                 None, 1.0, 1.0)


def test_critics_that_mix_samples_are_refused():
    check_private_critic(build_critic("wgan_gp", SMOKE))
    with pytest.raises(ValueError, match="BatchNorm2d|MinibatchDiscrimination"):
        check_private_critic(build_critic("dcgan", SMOKE))
    with pytest.raises(ValueError, match="spectral"):
        check_private_critic(build_critic("wgan_gp_sn", SMOKE))


# ----------------------------------------------------------------------------- accounting
def test_rdp_epsilon_matches_the_published_tf_privacy_example():
    # tensorflow/privacy, tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py, 'Test0':
    # n=60000, batch 150, noise multiplier 1.3, 15 epochs, delta 1e-5 -> epsilon 0.7242234026109595 at RDP
    # order 19, computed there with dp_accounting's RdpAccountant over these orders and ceil(15 * 60000 / 150) steps.
    orders = [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5] + list(range(5, 64)) + [128, 256, 512]
    eps, order = acc.epsilon_and_order(1.3, 150 / 60000, math.ceil(15 * 60000 / 150), 1e-5, orders)
    assert eps == pytest.approx(0.7242234026109595, rel=1e-9)
    assert order == 19.0
    # 'Test1' of the same file: n=100000, batch 100, noise 1.0, 30 epochs, delta 1e-7 -> 1.4154988495444845 (order 13).
    eps, order = acc.epsilon_and_order(1.0, 100 / 100000, math.ceil(30 * 100000 / 100), 1e-7, orders)
    assert eps == pytest.approx(1.4154988495444845, rel=1e-9)
    assert order == 13.0


def test_epsilon_edge_cases_and_monotonicity():
    assert acc.epsilon(0.0, 0.1, 10, 1e-5) == math.inf
    assert acc.epsilon(1.0, 0.1, 0, 1e-5) == 0.0
    assert acc.epsilon(2.0, 0.01, 100, 1e-5) < acc.epsilon(1.0, 0.01, 100, 1e-5) < acc.epsilon(1.0, 0.01, 1000, 1e-5)
    with pytest.raises(ValueError):
        acc.epsilon(1.0, 1.5, 10, 1e-5)


def test_noise_search_meets_the_target():
    q, steps, delta = 0.02, 500, 1e-5
    sigma = acc.noise_multiplier_for(3.0, q, steps, delta)
    assert acc.epsilon(sigma, q, steps, delta) <= 3.0 + 1e-6
    assert acc.epsilon(sigma * 0.98, q, steps, delta) > 3.0  # the smallest such noise, not any
    assert acc.noise_multiplier_for(math.inf, q, steps, delta) == 0.0
    with pytest.raises(ValueError, match="out of reach"):
        acc.noise_multiplier_for(1e-9, 1.0, 10**6, delta)


def test_a_patients_epsilon_under_patch_accounting_exceeds_the_patch_epsilon():
    sigma, q, steps, delta = 1.0, 0.01, 200, 1e-5
    per_patch = acc.epsilon(sigma, q, steps, delta)
    one = acc.group_epsilon(sigma, q, steps, delta, 1, value_discretization_interval=1e-2)
    # A group of one is the Poisson-sampled Gaussian itself: the library's PLD accountant on that event agrees,
    # and the RDP bound lies above it (RDP's conversion to (epsilon, delta) is looser).
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-2)
    pld.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    assert one == pytest.approx(pld.get_epsilon(delta), rel=0.03)
    assert one < per_patch
    groups = [acc.group_epsilon(sigma, q, steps, delta, k) for k in (1, 4, 16)]
    assert groups[0] < groups[1] < groups[2]
    assert groups[2] > 4 * per_patch


# ----------------------------------------------------------------------------- plans and training
def test_plans_state_the_unit_and_both_epsilons():
    train = _patches({"A": 10, "B": 10, "C": 10, "D": 10}, p=8)
    profile = dataclasses.replace(SMOKE, dp=DpConfig(target_epsilons=(math.inf, 8.0), delta=1e-5, unit="patient",
                                                     clip_norm=1.0, steps=20, batch_size=16, patches_per_patient=4))
    patient = plan_private_training(train, profile, 8.0)
    assert patient.unit == "patient" and patient.sampling_rate == pytest.approx(16 / (4 * 4))
    assert patient.epsilon_patient == pytest.approx(8.0, rel=1e-3)
    assert patient.epsilon_patch > patient.epsilon_patient  # a patch can move a patient's clipped sum by 2C
    patch = plan_private_training(train, profile, 8.0, unit="patch")
    assert patch.sampling_rate == pytest.approx(16 / 40) and patch.epsilon_patch == pytest.approx(8.0, rel=1e-3)
    assert patch.epsilon_patient > patch.epsilon_patch and patch.max_patches_per_patient == 10
    public = plan_private_training(train, profile, math.inf)
    assert public.noise_multiplier == 0.0 and public.clip_norm is None and public.epsilon_patient == math.inf


@pytest.mark.slow
def test_private_training_records_its_guarantee_and_resumes(tmp_path):
    train = _patches({"A": 24, "B": 24, "C": 24})
    profile = dataclasses.replace(SMOKE, dp=DpConfig(target_epsilons=(10.0,), delta=1e-5, unit="patient",
                                                     clip_norm=1.0, steps=4, batch_size=12, patches_per_patient=6))
    stopped = train_private_gan(train, profile, tmp_path / "gan", 10.0, seed=3, device="cpu", progress=False,
                                stop_after_steps=2)
    assert stopped.steps == 2
    state = load_checkpoint(stopped.checkpoint)  # weights_only
    record = state["privacy"]
    assert record["unit"] == "patient" and record["epsilon"] == pytest.approx(10.0, rel=1e-3)
    assert record["noise_multiplier"] > 0 and record["clip_norm"] == 1.0 and record["accounted_steps"] == 4 * 5
    assert {"opt_g", "opt_d", "rngs", "rng", "generator", "critic"} <= set(state)
    # The interrupted run continues from its checkpoint and ends where one uninterrupted run ends.
    resumed = train_private_gan(train, profile, tmp_path / "gan", 10.0, seed=3, device="cpu", progress=False)
    straight = train_private_gan(train, profile, tmp_path / "straight", 10.0, seed=3, device="cpu", progress=False)
    assert resumed.steps == straight.steps == 4 and len(resumed.history) == 4
    a, b = load_checkpoint(resumed.checkpoint), load_checkpoint(straight.checkpoint)
    for k in a["generator"]:
        torch.testing.assert_close(a["generator"][k], b["generator"][k])
    patches = generate_private_set(straight, 20, tmp_path / "syn", seed=0)
    sheet = read_json(patches.parent / "datasheet.json")
    dp = sheet["differential_privacy"]
    assert dp["unit"] == "patient" and dp["delta"] == 1e-5 and dp["epsilon"] == pytest.approx(10.0, rel=1e-3)
    assert len(PatchSet.load(patches)) == 20
