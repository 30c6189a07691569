"""U-net training: loss, learning, resume exactness, fine-tuning from a checkpoint, files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tofmra_utils.checkpoint import load_checkpoint
from tofmra_utils.conventions import normalization_stats
from tofmra_utils.io import DataError
from tofmra_utils.patchset import PatchSet
from tofmra_utils.profiles import UnetConfig, get_profile
from tofmra_utils.unet.step import soft_dice_loss
from tofmra_utils.unet.train import (
    BEST,
    HISTORY,
    TRAIN_STATE,
    load_unet,
    plan_steps,
    train_unet,
)

CFG = UnetConfig(base_width=4, depth=2, dropout=0.2, batch_size=16, epochs=4, lr=1e-2, inference_batch=64)




def easy_patches(n: int, size: int = 32, seed: int = 0, brightness: float = 2.0) -> PatchSet:
    """Bright straight 'vessels' on noise: a U-net learns them in a few dozen steps."""
    rng = np.random.default_rng(seed)
    label = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        label[i, :, rng.integers(2, size - 2) + np.arange(-1, 2)] = 1
        if i % 2:
            label[i, rng.integers(2, size - 2) + np.arange(-1, 2), :] = 1
    image = rng.normal(0, 0.3, (n, size, size)) + brightness * label
    lo, hi = image.min(axis=(1, 2), keepdims=True), image.max(axis=(1, 2), keepdims=True)
    image = 2 * (image - lo) / (hi - lo) - 1
    return PatchSet(image=image, label=label, subject=np.repeat([f"s{i}" for i in range(4)], -(-n // 4))[:n],
                    kind=np.zeros(n), centre=np.zeros((n, 3)))


def weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


# ----------------------------------------------------------------------------- pieces
def test_soft_dice_loss_matches_the_formula():
    p = torch.tensor([0.9, 0.2, 0.0, 0.6]).reshape(1, 1, 2, 2)
    t = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(1, 1, 2, 2)
    expected = -(2 * (0.9 + 0.6) + 1) / (1.7 + 2 + 1)
    assert float(soft_dice_loss(p, t)) == pytest.approx(expected)
    assert float(soft_dice_loss(t, t)) == pytest.approx(-1.0)
    assert float(soft_dice_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))) == pytest.approx(-1.0)  # smooth 1


def test_plan_steps():
    cfg = UnetConfig(base_width=2, depth=2, dropout=0, batch_size=10, epochs=3, lr=1e-3, max_steps=None)
    assert plan_steps(25, cfg, 10, None) == 9  # 3 epochs x ceil(25 / 10)
    assert plan_steps(25, UnetConfig(**{**cfg.__dict__, "max_steps": 5}), 10, None) == 5  # cap
    assert plan_steps(25, cfg, 10, 40) == 40  # explicit budget is exact


# ----------------------------------------------------------------------------- learning
def test_training_improves_soft_dice_and_val_dice(tmp_path):
    train, val = easy_patches(64), easy_patches(16, seed=1)
    result = train_unet(train, val, CFG, tmp_path, seed=0, max_steps=24, val_every=4, progress=False)
    loss = result.history["train_loss"].to_numpy()
    assert len(loss) == 24 and list(result.history["step"]) == list(range(1, 25))
    assert loss[-4:].mean() < loss[:4].mean() - 0.2  # the soft Dice really improves
    val_dice = result.history["val_dice"].dropna()
    assert list(val_dice.index + 1) == [4, 8, 12, 16, 20, 24]
    assert result.best_val_dice == pytest.approx(val_dice.max())
    assert result.best_val_dice > val_dice.iloc[0] + 0.2 and result.best_val_dice > 0.6
    # Files: the selected weights with their info, and the history as CSV.
    assert result.checkpoint == tmp_path / BEST and (tmp_path / TRAIN_STATE).exists()
    model, info = load_unet(result.checkpoint, device="cpu")
    assert not model.training and info["step"] == int(val_dice.idxmax()) + 1
    assert info["val_dice"] == pytest.approx(result.best_val_dice)
    mean, std = normalization_stats(train.image)
    assert info["norm_mean"] == pytest.approx(mean) and info["norm_std"] == pytest.approx(std)
    assert info["patch_size"] == 32 and info["base_width"] == 4 and info["depth"] == 2
    csv = pd.read_csv(tmp_path / HISTORY)
    assert list(csv.columns) == ["step", "train_loss", "val_dice"]
    np.testing.assert_allclose(csv["train_loss"], loss, rtol=1e-6)
    assert result.seconds > 0


def test_without_validation_the_final_weights_are_kept(tmp_path):
    result = train_unet(easy_patches(32), None, CFG, tmp_path, seed=0, max_steps=3, progress=False)
    assert result.best_val_dice is None and result.history["val_dice"].isna().all()
    state = load_checkpoint(tmp_path / TRAIN_STATE)
    for k, v in weights(result.checkpoint).items():
        assert torch.equal(v, state["model"][k])


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    train = easy_patches(32)
    a = train_unet(train, None, CFG, tmp_path / "a", seed=3, max_steps=3, progress=False)
    b = train_unet(train, None, CFG, tmp_path / "b", seed=3, max_steps=3, progress=False)
    c = train_unet(train, None, CFG, tmp_path / "c", seed=4, max_steps=3, progress=False)
    np.testing.assert_array_equal(a.history["train_loss"], b.history["train_loss"])
    assert not np.array_equal(a.history["train_loss"], c.history["train_loss"])


# ----------------------------------------------------------------------------- resume
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    # 40 patches / batch 16 = 3 steps per epoch: the interruption at step 4 falls inside epoch 2,
    # and dropout is on, so data order, permutation and RNG states must all be restored.
    train, val = easy_patches(40), easy_patches(8, seed=1)
    kw = dict(config=CFG, seed=7, val_every=2, progress=False)
    full = train_unet(train, val, out_dir=tmp_path / "full", max_steps=8, **kw)
    part = train_unet(train, val, out_dir=tmp_path / "part", max_steps=4, **kw)
    assert len(part.history) == 4
    resumed = train_unet(train, val, out_dir=tmp_path / "part", max_steps=8, **kw)
    pd.testing.assert_frame_equal(resumed.history, full.history)
    assert resumed.best_val_dice == full.best_val_dice
    for name in (BEST, TRAIN_STATE):
        w_full, w_res = weights(tmp_path / "full" / name), weights(tmp_path / "part" / name)
        assert all(torch.equal(w_full[k], w_res[k]) for k in w_full)
    assert load_checkpoint(tmp_path / "part" / BEST)["info"]["step"] == load_checkpoint(tmp_path / "full" / BEST)["info"]["step"]


def test_finished_run_is_reused_and_changed_settings_start_afresh(tmp_path):
    train = easy_patches(32)
    first = train_unet(train, None, CFG, tmp_path, seed=0, max_steps=4, progress=False)
    again = train_unet(train, None, CFG, tmp_path, seed=0, max_steps=4, progress=False)
    pd.testing.assert_frame_equal(first.history, again.history)
    assert again.seconds == pytest.approx(first.seconds)  # nothing was trained the second time
    other_lr = train_unet(train, None, CFG, tmp_path, seed=0, max_steps=4, lr=5e-3, progress=False)
    assert other_lr.seconds != pytest.approx(first.seconds)
    assert not np.array_equal(other_lr.history["train_loss"], first.history["train_loss"])
    # A shorter budget than what is stored cannot be resumed: retrained from scratch.
    shorter = train_unet(train, None, CFG, tmp_path, seed=0, max_steps=2, progress=False)
    np.testing.assert_array_equal(shorter.history["train_loss"], first.history["train_loss"][:2])


# ----------------------------------------------------------------------------- fine-tuning
def test_init_checkpoint_with_frozen_encoder_trains_only_the_decoder(tmp_path):
    pre = train_unet(easy_patches(32), None, CFG, tmp_path / "pre", seed=0, max_steps=3, progress=False)
    new_data = easy_patches(32, seed=5, brightness=4.0)  # another 'site': other pixel statistics
    ft = train_unet(new_data, None, CFG, tmp_path / "ft", seed=1, init_checkpoint=pre.checkpoint,
                    freeze_encoder=True, max_steps=3, progress=False)
    w_pre, w_ft = weights(pre.checkpoint), weights(ft.checkpoint)
    encoder = [k for k in w_pre if k.startswith(("inc.", "downs."))]
    decoder = [k for k in w_pre if k.startswith(("ups.", "outc."))]
    assert encoder and decoder
    assert all(torch.equal(w_pre[k], w_ft[k]) for k in encoder)
    assert all(not torch.equal(w_pre[k], w_ft[k]) for k in decoder)
    # Normalization: recomputed from the new training data; the pretrained values kept for reference.
    _, info = load_unet(ft.checkpoint, device="cpu")
    _, pre_info = load_unet(pre.checkpoint, device="cpu")
    assert info["norm_mean"] == pytest.approx(normalization_stats(new_data.image)[0])
    assert info["norm_mean"] != pytest.approx(pre_info["norm_mean"])
    assert info["init_norm"] == pytest.approx([pre_info["norm_mean"], pre_info["norm_std"]])
    assert info["freeze_encoder"] is True


def test_init_checkpoint_without_freezing_changes_the_encoder(tmp_path):
    pre = train_unet(easy_patches(32), None, CFG, tmp_path / "pre", seed=0, max_steps=2, progress=False)
    ft = train_unet(easy_patches(32, seed=5), None, CFG, tmp_path / "ft", seed=1, init_checkpoint=pre.checkpoint,
                    max_steps=2, progress=False)
    assert not torch.equal(weights(pre.checkpoint)["inc.block.0.weight"], weights(ft.checkpoint)["inc.block.0.weight"])


def test_init_checkpoint_strips_dataparallel_prefixes(tmp_path):
    from tofmra_utils.checkpoint import save_checkpoint

    pre = train_unet(easy_patches(32), None, CFG, tmp_path / "pre", seed=0, max_steps=1, progress=False)
    state = load_checkpoint(pre.checkpoint)
    prefixed = save_checkpoint(tmp_path / "dp.pt", {"model": {f"module.{k}": v for k, v in state["model"].items()},
                                                    "info": state["info"]})
    model, _ = load_unet(prefixed, device="cpu")
    assert torch.equal(model.inc.block[0].weight, state["model"]["inc.block.0.weight"])
    ft = train_unet(easy_patches(32), None, CFG, tmp_path / "ft", seed=0, init_checkpoint=prefixed,
                    freeze_encoder=True, max_steps=1, progress=False)
    assert torch.equal(weights(ft.checkpoint)["inc.block.0.weight"], state["model"]["inc.block.0.weight"])


def test_init_checkpoint_with_other_architecture_is_a_clear_error(tmp_path):
    pre = train_unet(easy_patches(32), None, CFG, tmp_path / "pre", seed=0, max_steps=1, progress=False)
    wider = UnetConfig(**{**CFG.__dict__, "base_width": 8})
    with pytest.raises(DataError, match="does not match"):
        train_unet(easy_patches(32), None, wider, tmp_path / "ft", seed=0, init_checkpoint=pre.checkpoint,
                   max_steps=1, progress=False)


def test_bad_inputs(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="x.pt"):
        load_unet(bad)
    with pytest.raises(ValueError, match="multiple of"):
        train_unet(easy_patches(4, size=34), None, CFG, tmp_path / "r", seed=0, max_steps=1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        train_unet(easy_patches(4).select(np.zeros(4, bool)), None, CFG, tmp_path / "r", seed=0, progress=False)


def test_paper_profile_builds_and_takes_one_step(tmp_path):
    cfg = get_profile("paper").unet
    assert (cfg.base_width, cfg.depth, cfg.lr) == (64, 4, 1e-4)
    train = easy_patches(2, size=96)
    result = train_unet(train, None, cfg, tmp_path, seed=0, max_steps=1, batch_size=2, progress=False)
    assert len(result.history) == 1 and np.isfinite(result.history["train_loss"]).all()


def test_other_settings_in_the_same_folder_start_afresh_and_say_why(tmp_path, capsys):
    train = easy_patches(32)
    train_unet(train, None, CFG, tmp_path, seed=0, max_steps=2, progress=False)
    again = train_unet(train, None, CFG, tmp_path, seed=0, max_steps=2, lr=1e-3, progress=False)
    assert len(again.history) == 2
    assert "settings changed since the stored run (lr 0.01 -> 0.001); starting afresh" in capsys.readouterr().err


def test_dice_bce_keeps_a_gradient_where_soft_dice_has_died():
    """A U-net whose logits are all far negative gets no gradient from soft Dice, but one from dice_bce."""
    from tofmra_utils.unet.model import UNet
    from tofmra_utils.unet.step import unet_loss, unet_step

    torch.manual_seed(0)
    model = UNet(base_width=4, depth=2)
    with torch.no_grad():
        model.outc.conv.bias.fill_(-40.0)  # the collapsed state: p ~ 1e-18 everywhere
    x, t = torch.randn(4, 1, 16, 16), (torch.rand(4, 1, 16, 16) > 0.9).float()
    norms = {}
    for loss in ("dice", "dice_bce"):
        model.zero_grad()
        unet_loss(model.logits(x), t, loss)[0].backward()
        norms[loss] = float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None)))
    assert norms["dice"] < 1e-9 < 1e-3 < norms["dice_bce"], norms
    # the value logged is the batch's negative soft Dice whatever the loss, and "dice" is the study's formula
    with torch.no_grad():
        total, dice = unet_loss(model.logits(x), t, "dice_bce")
        assert float(total) > float(dice) and float(dice) == pytest.approx(float(soft_dice_loss(model(x), t)))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    assert unet_step(model, opt, x, t, loss="dice_bce") == pytest.approx(float(dice), abs=1e-6)
    with pytest.raises(ValueError, match="unknown U-net loss"), torch.no_grad():
        unet_loss(model.logits(x), t, "bce")
