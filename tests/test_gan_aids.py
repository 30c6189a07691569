"""The training aids of issue 20: per-patch scaling of generated images, DiffAugment, the weight
average (EMA), snapshots and their selection on real validation patches, the label threshold
report, the label monitor, the step floor and the cheaper layers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tofmra_utils.checkpoint import load_checkpoint
from tofmra_utils.conventions import normalize_patch
from tofmra_utils.gan.augment import AugmentedCritic, diff_augment
from tofmra_utils.gan.ema import GeneratorEma, recalibrate_batchnorm
from tofmra_utils.gan.generate import (generate_from_checkpoint, generate_pairs, load_generator, matching_threshold,
                                       scale_generated_images)
from tofmra_utils.gan.models import Critic, Generator
from tofmra_utils.gan.selection import ProbeSettings, select_snapshot, tstr_score
from tofmra_utils.gan.train import LabelMonitor, list_snapshots, snapshot_steps, total_generator_steps, train_gan
from tofmra_utils.data.sampling import extract_patches
from tofmra_utils.io import read_json

from builders import gan_patches, gan_profile


def _aided(**gan_fields):
    profile = gan_profile(steps=6, checkpoint_every=3, sample_every=3)
    return dataclasses.replace(profile, gan=dataclasses.replace(profile.gan, **gan_fields))


# ----------------------------------------------------------------------------- scaling
def test_generated_images_follow_the_rule_of_real_patches():
    torch.manual_seed(0)
    generator = Generator(8, (8, 4), 16)
    # A generator whose tanh output never reaches +-1 (the usual case) is stretched like a real patch.
    with torch.no_grad():
        generator.upsample[-2].weight.mul_(0.01)
    image, _ = generate_pairs(generator, 5, seed=1, threshold=0.5)
    raw, _ = generate_pairs(generator, 5, seed=1, threshold=0.5, image_scaling="clip")
    assert raw.max() - raw.min() < 1.0, "the test needs a low-contrast raw output"
    np.testing.assert_allclose(image, normalize_patch(raw), atol=1e-6)
    assert np.allclose(image.min(axis=(1, 2)), -1) and np.allclose(image.max(axis=(1, 2)), 1)
    # Real patches obey the same rule: every real patch spans [-1, 1] exactly.
    volume = np.random.default_rng(0).uniform(0, 300, (24, 24, 8)).astype(np.float32)
    label = np.zeros(volume.shape, np.uint8)
    real = extract_patches(volume, label, np.ones(volume.shape, np.uint8), n_patches=4, patch_size=16,
                           vessel_fraction=0.0, rng=np.random.default_rng(0))
    assert np.allclose(real.image.min(axis=(1, 2)), -1) and np.allclose(real.image.max(axis=(1, 2)), 1)
    with pytest.raises(ValueError, match="unknown image scaling"):
        scale_generated_images(raw, "stretch")


def test_matching_threshold_reproduces_the_real_fraction():
    channel = np.linspace(-1, 1, 10_000).reshape(100, 10, 10)
    t = matching_threshold(channel, 0.03)
    assert ((channel + 1) / 2 > t).mean() == pytest.approx(0.03, abs=1e-3)
    with pytest.raises(ValueError):
        matching_threshold(channel, 0.0)


# ----------------------------------------------------------------------------- DiffAugment
def test_diff_augment_moves_image_and_label_together_and_keeps_gradients():
    data = torch.from_numpy(np.stack([gan_patches(n=8).image, gan_patches(n=8).label * 2.0 - 1.0], 1)).float()
    data.requires_grad_(True)
    out = diff_augment(data, ("flip", "rot90", "translation"), torch.Generator().manual_seed(0))
    assert out.shape == data.shape
    # The bar's bright pixels are exactly its label (image > 0.5 <=> label 1), before and after.
    assert torch.equal(out[:, 0].detach() > 0.5, out[:, 1].detach() > 0)
    assert not torch.equal(out.detach(), data.detach()), "transforms were drawn"
    out.sum().backward()
    assert data.grad is not None and data.grad.abs().sum() > 0
    same = diff_augment(data.detach(), ("flip", "rot90", "translation", "cutout"), torch.Generator().manual_seed(4))
    again = diff_augment(data.detach(), ("flip", "rot90", "translation", "cutout"), torch.Generator().manual_seed(4))
    assert torch.equal(same, again), "seeded transforms repeat"
    cut = diff_augment(torch.ones(16, 2, 16, 16), ("cutout",), torch.Generator().manual_seed(0))
    holes = (cut == -1).float().mean(dim=(1, 2, 3))
    assert (holes > 0).all() and (holes <= 0.25 + 1e-6).all(), "a cutout square of at most half the side"
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(data, ("colour",))


def test_augmented_critic_passes_feature_requests_through():
    critic = Critic((8, 4), 16, minibatch_kernels=3)
    judged = AugmentedCritic(critic, ("flip",), torch.Generator().manual_seed(0))
    score, features = judged(torch.zeros(4, 2, 16, 16), return_features=True)
    assert score.shape == (4,) and features.shape[0] == 4
    assert not list(judged.state_dict().keys() - {f"critic.{k}" for k in critic.state_dict()})


# ----------------------------------------------------------------------------- EMA
def test_ema_averages_and_batchnorm_is_recalibrated():
    torch.manual_seed(0)
    live = Generator(8, (8, 4), 16)
    ema = GeneratorEma(live, decay=0.5)
    start = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    for _ in range(30):
        ema.update(live)
    for s, a, l in zip(start, ema.model.parameters(), live.parameters()):
        assert torch.all(a > s) and torch.allclose(a, l, atol=1e-3), "the average moves to a still generator"
    with pytest.raises(ValueError):
        GeneratorEma(live, 1.0)
    bn = ema.model.project[2]
    bn.running_mean.fill_(123.0)
    recalibrate_batchnorm(ema.model, 8, n_batches=2, batch_size=16)
    assert bn.running_mean.abs().max() < 50 and not ema.model.training and bn.momentum == 0.1


def test_training_with_every_aid_resumes_exactly_and_generates_from_the_average(tmp_path):
    profile = _aided(ema_decay=0.9, diffaug=("flip", "rot90", "translation", "cutout"), snapshots=2,
                     upsampling="nearest3", critic_kernel=4, label_threshold_rule="fixed")
    data = gan_patches()
    full = train_gan("wgan_gp", data, profile, tmp_path / "full", device="cpu", seed=2, progress=False)
    part = train_gan("wgan_gp", data, profile, tmp_path / "part", device="cpu", seed=2, progress=False, stop_after_steps=4)
    assert part.steps == 4 and not part.finished
    torch.manual_seed(7)
    rest = train_gan("wgan_gp", data, profile, tmp_path / "part", device="cpu", seed=2, progress=False)
    assert sorted(list_snapshots(rest.out_dir)) == [3, 6], "snapshots before and after the interruption"
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(rest.checkpoint)
    for k, v in a["generator_ema"]["model"].items():
        assert torch.equal(v, b["generator_ema"]["model"][k]), k
    for k, v in a["critic"].items():
        assert torch.equal(v, b["critic"][k]), k
    assert sorted(list_snapshots(full.out_dir)) == snapshot_steps(6, 2) == [3, 6]
    generator, info = load_generator(full.checkpoint, device="cpu")
    assert info["weights"] == "ema" and generator.upsampling == "nearest3"
    avg = {k: v for k, v in a["generator_ema"]["model"].items() if "running" not in k and "num_batches" not in k}
    for k, v in avg.items():
        assert torch.equal(generator.state_dict()[k], v), k
    out = generate_from_checkpoint(full.checkpoint, n=10, out_dir=tmp_path / "syn", seed=1, real_fraction=0.125)
    sheet = read_json(out.parent / "datasheet.json")
    assert sheet["weights"] == "ema" and sheet["image_scaling"] == "per_patch"
    assert 0 < sheet["threshold_matching_real"] < 1 and sheet["threshold"] == sheet["stored_threshold"]


def test_snapshot_selection_scores_every_snapshot_on_validation_patches(tmp_path):
    profile = _aided(snapshots=3, label_threshold_rule="match_real")
    result = train_gan("dcgan", gan_patches(), profile, tmp_path / "g", device="cpu", seed=1, progress=False)
    val = gan_patches(n=16, seed=9)
    probe = ProbeSettings(n_pairs=32, steps=3, base_width=2, depth=2)
    chosen = select_snapshot(result.checkpoint, val, real_fraction=0.125, probe=probe, seed=0)
    assert set(chosen["scores"]) == {str(s) for s in snapshot_steps(6, 3)}
    assert chosen["score"] == max(chosen["scores"].values()) and chosen["measured_on"] == "real validation patches"
    out = generate_from_checkpoint(result.checkpoint, n=8, out_dir=tmp_path / "syn", real_fraction=0.125,
                                   snapshot=chosen["snapshot"], selection=chosen)
    sheet = read_json(out.parent / "datasheet.json")
    assert sheet["generator_step"] == chosen["step"] and sheet["selection"]["scores"] == chosen["scores"]
    assert sheet["threshold_rule"] == "match_real" and sheet["threshold"] == sheet["threshold_matching_real"]
    # With no snapshots kept there is no snapshot to choose; label fractions are still scored on the final weights.
    plain = train_gan("dcgan", gan_patches(), _aided(snapshots=1), tmp_path / "p", device="cpu", seed=1, progress=False)
    assert select_snapshot(plain.checkpoint, val, 0.125, probe=probe)["snapshot"] is None
    scaled = select_snapshot(plain.checkpoint, val, 0.125, probe=probe, fraction_scales=(1.0, 2.0))
    assert scaled["snapshot"] is None and set(scaled["scale_scores"]) == {"1.0", "2.0"}
    assert scaled["score"] == max(scaled["scale_scores"].values())
    out = generate_from_checkpoint(plain.checkpoint, n=8, out_dir=tmp_path / "syn2", label_fraction_scale=2.0)
    sheet = read_json(out.parent / "datasheet.json")
    assert sheet["label_fraction_scale"] == 2.0
    assert sheet["vessel_fraction_at_scaled_threshold"] == pytest.approx(2 * sheet["real_vessel_fraction"], rel=0.2)
    assert sheet["threshold"] == sheet["threshold_matching_scaled_fraction"] < sheet["threshold_matching_real"]


def test_tstr_score_prefers_pairs_that_agree_with_their_images():
    data, val = gan_patches(n=96), gan_patches(n=32, seed=5)
    probe = ProbeSettings(steps=40, base_width=4, depth=2)
    good = tstr_score(data.image, data.label, val, probe)
    shuffled = tstr_score(data.image, data.label[::-1].copy(), val, probe)
    assert good > 0.5 and good > shuffled + 0.2, (good, shuffled)


# ----------------------------------------------------------------------------- budget and monitor
def test_step_floor_and_label_monitor(capsys):
    assert total_generator_steps(100, 10, epochs=2) == 20
    assert total_generator_steps(100, 10, epochs=2, min_steps=50) == 50
    monitor = LabelMonitor(real_fraction=0.03, total_steps=100, gan="x")
    monitor.check(10, 0.0)  # too early to judge
    monitor.check(30, 0.0)  # one alert
    monitor.check(40, 0.02)  # recovered
    monitor.check(50, 0.0)
    assert capsys.readouterr().err == "" and not monitor.warned
    monitor.check(60, 0.001)
    assert "label monitor warning: x: the label channel is dying at step 60" in capsys.readouterr().err
    assert [s for s, _ in monitor.alerts] == [30, 50, 60]
    monitor.check(70, 0.03)
    assert monitor.recovered_at == 70


def test_label_monitor_state_survives_a_checkpoint(capsys):
    """A run killed between two low checks must warn at the second one after resuming, and report
    the alerts of the whole training, as an uninterrupted run does."""
    before = LabelMonitor(real_fraction=0.03, total_steps=100, gan="x")
    before.check(30, 0.0)
    state = before.state()
    after = LabelMonitor(real_fraction=0.03, total_steps=100, gan="x")
    after.restore(state)
    after.check(40, 0.0)
    assert "label monitor warning" in capsys.readouterr().err
    assert [s for s, _ in after.alerts] == [30, 40] and after.warned


# ----------------------------------------------------------------------------- the study's code (paper profile)
def test_the_study_code_options_train_and_generate(tmp_path):
    from torch import nn

    from tofmra_utils.gan.losses import DcganLoss
    from tofmra_utils.gan.models import build_gan
    from tofmra_utils.profiles import get_profile

    paper = get_profile("paper").gan
    assert (paper.dcgan_targets, paper.dcgan_generator_loss, paper.norm_init, paper.sn_last_layer,
            paper.generate_mode) == ("noisy_two_sided", "fm_l1", "study", False, "train")
    profile = _aided(dcgan_targets="noisy_two_sided", dcgan_generator_loss="fm_l1", norm_init="study",
                     sn_last_layer=False, generate_mode="train", snapshots=1)
    generator, critic = build_gan("wgan_gp_sn", profile)
    assert not hasattr(critic.head, "parametrizations") and hasattr(critic.features[0], "parametrizations")
    scales = torch.cat([m.weight.detach() for m in generator.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(float(scales.mean())) < 0.1, "norm scales drawn around 0, as the study's weights_init"
    loss = DcganLoss(noisy_targets=True, generator_loss_kind="fm_l1")
    d_critic = build_gan("dcgan", profile)[1]
    real, fake = torch.rand(8, 2, 16, 16) * 2 - 1, torch.rand(8, 2, 16, 16, requires_grad=True) * 2 - 1
    rng = torch.Generator().manual_seed(0)
    targets = loss._targets(torch.zeros(1000), 0.7, 1.2, 0.9, rng)
    assert 0.7 <= float(targets.min()) and float(targets.max()) <= 1.2 and float(targets.std()) > 0.1
    g_loss, stats = loss.generator_loss(d_critic, fake, real)
    assert set(stats) == {"feature_matching", "g_loss"} and g_loss.requires_grad
    result = train_gan("dcgan", gan_patches(), profile, tmp_path / "g", device="cpu", seed=0, progress=False)
    assert np.isfinite(result.history[["d_loss", "g_loss"]].to_numpy()).all()
    out = generate_from_checkpoint(result.checkpoint, n=12, out_dir=tmp_path / "syn", batch_size=6)
    assert read_json(out.parent / "datasheet.json")["generate_mode"] == "train"
    g, info = load_generator(result.checkpoint, device="cpu")
    eval_pairs = generate_pairs(g, 12, seed=1, threshold=0.5)[0]
    train_pairs = generate_pairs(g, 12, seed=1, threshold=0.5, batch_statistics=True, batch_size=6)[0]
    other_batch = generate_pairs(g, 12, seed=1, threshold=0.5, batch_statistics=True, batch_size=4)[0]
    assert not np.allclose(eval_pairs, train_pairs) and not np.allclose(train_pairs, other_batch)
