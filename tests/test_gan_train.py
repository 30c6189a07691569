"""GAN training loop (exact resume, files, errors) and generation (format, datasheet, CLI)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from tofmra_utils.checkpoint import load_checkpoint
from tofmra_utils.cli import main as cli_main
from tofmra_utils.gan.generate import fixed_noise_pairs, generate_from_checkpoint, generate_pairs, load_generator
from tofmra_utils.gan.quality import compare_sets, pair_statistics
from tofmra_utils.gan.train import gan_tensor, train_gan
from tofmra_utils.io import DataError
from tofmra_utils.patchset import KIND_SYNTHETIC, PatchSet
from tofmra_utils.profiles import GAN_NAMES

from builders import SUBJECTS, gan_patches, gan_profile





def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny WGAN-GP-SN run shared by the generation tests."""
    out = tmp_path_factory.mktemp("gan") / "wgan_gp_sn"
    result = train_gan("wgan_gp_sn", gan_patches(), gan_profile(sample_every=3), out, device="cpu", seed=3, progress=False)
    return result


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("name", GAN_NAMES)
def test_resume_is_bit_exact(tmp_path, name):
    profile, data = gan_profile(steps=6, checkpoint_every=4), gan_patches()
    full = train_gan(name, data, profile, tmp_path / "full", device="cpu", seed=5, progress=False)
    part = train_gan(name, data, profile, tmp_path / "part", device="cpu", seed=5, progress=False, stop_after_steps=3)
    assert (part.steps, part.finished) == (3, False)
    # Another process would start from scratch: scramble the global RNG to be sure it is restored.
    torch.manual_seed(999)
    rest = train_gan(name, data, profile, tmp_path / "part", device="cpu", seed=5, progress=False)
    assert (full.steps, rest.steps) == (6, 6)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(rest.checkpoint)
    for key in ("generator", "critic"):
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), f"{key}.{k} differs after resume"
    pd.testing.assert_frame_equal(full.history, rest.history)
    assert full.history["step"].tolist() == list(range(1, 7))


def test_training_writes_log_samples_and_a_complete_checkpoint(trained):
    out = trained.checkpoint.parent
    log = pd.read_csv(out / "losses.csv")
    assert len(log) == trained.total_steps == 6
    assert {"step", "d_loss", "g_loss", "wasserstein", "gp", "critic_real", "critic_fake"} <= set(log.columns)
    assert np.isfinite(log[["d_loss", "g_loss", "wasserstein", "gp"]].to_numpy()).all()
    assert [p.name for p in trained.sample_grids] == ["step_000003.png", "step_000006.png"]
    assert trained.seconds > 0
    state = load_checkpoint(trained.checkpoint)
    for key in ("generator", "critic", "opt_g", "opt_d", "step", "data", "noise_rng", "rng", "fixed_noise",
                "gan", "profile", "generator_args"):
        assert key in state, key
    assert state["gan"] == "wgan_gp_sn" and state["profile"] == "smoke" and state["step"] == 6
    betas = state["opt_g"]["param_groups"][0]["betas"]
    assert all(isinstance(b, float) for b in betas) and tuple(betas) == (0.0, 0.9)


def test_finished_run_returns_without_training(trained, tmp_path):
    again = train_gan("wgan_gp_sn", gan_patches(), gan_profile(sample_every=3), trained.checkpoint.parent,
                      device="cpu", seed=3, progress=False)
    assert again.steps == 6 and again.seconds == pytest.approx(trained.seconds, rel=0.2)
    assert len(again.history) == 6


def test_another_gan_in_the_folder_starts_afresh_and_says_why(trained, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(trained.checkpoint.parent, folder)
    other = train_gan("wgan_gp", gan_patches(), gan_profile(), folder, device="cpu", progress=False, stop_after_steps=1)
    assert other.steps == 1 and len(other.history) == 1
    assert "settings changed since the stored run (gan \"wgan_gp_sn\" -> \"wgan_gp\"" in capsys.readouterr().err
    assert load_checkpoint(other.checkpoint)["gan"] == "wgan_gp"
    assert not list((folder / "samples").glob("step_000006.png")), "the old run's sample grids go with it"


def test_training_rejects_the_wrong_patch_size(tmp_path):
    with pytest.raises(ValueError, match="16 px"):
        train_gan("dcgan", gan_patches(size=32), gan_profile(), tmp_path, device="cpu", progress=False)


def test_gan_tensor():
    data = gan_patches(n=5)
    x = gan_tensor(data)
    assert x.shape == (5, 2, 16, 16) and set(torch.unique(x[:, 1]).tolist()) == {-1.0, 1.0}
    assert torch.equal(x[:, 0], torch.from_numpy(data.image))


# ----------------------------------------------------------------------------- generation
def test_generate_from_checkpoint_writes_the_patch_format_and_a_datasheet(trained, tmp_path):
    path = generate_from_checkpoint(trained.checkpoint, n=13, out_dir=tmp_path / "syn", seed=1, batch_size=5)
    assert path == tmp_path / "syn" / "patches.npz"
    syn = PatchSet.load(path)
    assert len(syn) == 13 and syn.image.shape == (13, 16, 16)
    assert syn.image.dtype == np.float32 and syn.label.dtype == np.uint8
    assert set(np.unique(syn.label)) <= {0, 1}
    assert syn.image.min() >= -1 and syn.image.max() <= 1
    assert (syn.kind == KIND_SYNTHETIC).all() and (syn.subject == "synthetic").all()
    sheet = json.loads((tmp_path / "syn" / "datasheet.json").read_text())
    for key in ("gan", "checkpoint_sha256", "generator_step", "seed", "n", "threshold", "date", "profile", "note"):
        assert key in sheet, key
    assert (sheet["gan"], sheet["n"], sheet["generator_step"], sheet["stored_threshold"]) == ("wgan_gp_sn", 13, 6, 0.8)
    # The smoke profile binarizes where the synthetic vessel fraction matches the real one (stored at training).
    assert sheet["threshold_rule"] == "match_real" and sheet["threshold"] == sheet["threshold_matching_real"]
    assert sheet["real_vessel_fraction"] == pytest.approx(float((gan_patches().label > 0).mean()), abs=1e-5)
    assert len(sheet["checkpoint_sha256"]) == 64 and sheet["contains_source_subject_data"] is False
    text = (tmp_path / "syn" / "datasheet.json").read_text() + json.dumps(syn.meta)
    assert not any(s in text for s in SUBJECTS), "no training subject id may leak into the synthetic set"


def test_generation_is_reproducible_and_thresholds_labels(trained):
    generator, info = load_generator(trained.checkpoint, device="cpu")
    assert info["z_dim"] == 128 and info["step"] == 6
    a = generate_pairs(generator, 7, seed=4, threshold=0.5)
    b = generate_pairs(generator, 7, seed=4, threshold=0.5)
    c = generate_pairs(generator, 7, seed=5, threshold=0.5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    in_batches_of_3 = generate_pairs(generator, 7, seed=4, threshold=0.5, batch_size=3)
    assert np.allclose(a[0], in_batches_of_3[0], atol=1e-5), "the same noise whatever the batch size"
    assert not np.array_equal(a[0], c[0])
    low = generate_pairs(generator, 7, seed=4, threshold=0.05)[1]
    high = generate_pairs(generator, 7, seed=4, threshold=0.95)[1]
    assert low.sum() >= a[1].sum() >= high.sum() and low.sum() > high.sum()
    with pytest.raises(ValueError, match="threshold"):
        generate_pairs(generator, 2, threshold=1.5)
    image, label = fixed_noise_pairs(trained.checkpoint, device="cpu")
    assert image.shape == label.shape == (32, 16, 16) and label.dtype == np.uint8


def test_generate_command(trained, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["generate", "--checkpoint", str(trained.checkpoint), "--n", "4", "--out", str(out)]) == 0
    assert len(PatchSet.load(out / "patches.npz")) == 4
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert cli_main(["generate", "--checkpoint", str(bad), "--n", "4", "--out", str(out)]) == 2
    assert "bad.pt" in capsys.readouterr().err


def test_load_generator_rejects_a_checkpoint_without_a_generator(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(DataError, match="not a GAN checkpoint"):
        load_generator(path)


# ----------------------------------------------------------------------------- quality statistics
def test_pair_statistics_by_hand():
    n, size = 4, 10
    image = np.full((n, size, size), -0.6, np.float32)  # 0.2 on the [0, 1] scale
    label = np.zeros((n, size, size), np.uint8)
    label[:, 4, :5] = 1  # 5 % of the pixels
    image[label == 1] = 0.6  # 0.8 on the [0, 1] scale
    s = pair_statistics(image, label)
    assert s["vessel_fraction"] == pytest.approx(0.05)
    assert s["inside_outside_ratio"] == pytest.approx(4.0)
    assert s["label_on_bright"] == pytest.approx(1.0)
    assert s["pair_distance"] == pytest.approx(0.0), "identical patches"
    moved = np.roll(label, 3, axis=1)  # labels off the bright pixels
    s2 = pair_statistics(image, moved)
    assert s2["label_on_bright"] == pytest.approx(0.0) and s2["inside_outside_ratio"] < 1
    table = compare_sets({"real": (image, label), "moved": (image, moved)})
    assert list(table.columns) == ["real", "moved"] and table.loc["vessel_fraction", "moved"] == pytest.approx(0.05)
