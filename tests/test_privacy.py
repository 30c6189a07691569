"""The privacy audit: copies are caught, strangers are not, the numbers agree with references, bad input exits 2."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from tofmra_utils.cli import main
from tofmra_utils.gan.models import build_critic
from tofmra_utils.patchset import PatchSet
from tofmra_utils.privacy import (
    AUDIT_KEYS,
    audit_synthetic,
    auc,
    embed_flips,
    frechet_distance,
    kernel_distance,
    prdc,
)
from tofmra_utils.privacy.neighbours import nearest
from tofmra_utils.profiles import get_profile


# ----------------------------------------------------------------------------- data
def vessel_patches(subjects: list[str], per_subject: int, size: int = 16, seed: int = 0) -> PatchSet:
    """Independent patches with 1-3 bright line 'vessels' on a smooth background; mild per-subject contrast."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    images, labels = [], []
    for _ in subjects:
        contrast = rng.uniform(0.8, 1.0)
        for _ in range(per_subject):
            background = gaussian_filter(rng.standard_normal((size, size)), 1.5)
            label = np.zeros((size, size), bool)
            for _ in range(rng.integers(1, 4)):
                angle, cy, cx = rng.uniform(0, np.pi), rng.uniform(0, size), rng.uniform(0, size)
                label |= np.abs((yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)) < rng.uniform(0.6, 1.4)
            image = 0.5 * background + contrast * label
            image = 2 * (image - image.min()) / (image.max() - image.min()) - 1
            images.append(image.astype(np.float32))
            labels.append(label.astype(np.uint8))
    subject = np.repeat(np.asarray(subjects), per_subject)
    n = len(images)
    return PatchSet(np.stack(images), np.stack(labels), subject, np.ones(n), np.zeros((n, 3)))


def copycat(train: PatchSet, noise: float = 0.02, seed: int = 0) -> PatchSet:
    """A 'generator' that returns its training patches with a little noise, half of them flipped."""
    rng = np.random.default_rng(seed)
    image = np.clip(train.image + rng.normal(0, noise, train.image.shape), -1, 1).astype(np.float32)
    label = train.label.copy()
    lr, ud = rng.random(len(train)) < 0.5, rng.random(len(train)) < 0.3
    image[lr], label[lr] = image[lr][:, :, ::-1], label[lr][:, :, ::-1]
    image[ud], label[ud] = image[ud][:, ::-1], label[ud][:, ::-1]
    return PatchSet.synthetic(image, label)


@pytest.fixture(scope="module")
def real_sets():
    train = vessel_patches([f"tr-{i}" for i in range(8)], 60, seed=1)
    holdout = vessel_patches([f"ho-{i}" for i in range(4)], 60, seed=2)
    unseen = vessel_patches([f"un-{i}" for i in range(4)], 60, seed=3)
    return train, holdout, unseen


# ----------------------------------------------------------------------------- the audit's verdicts
@pytest.mark.parametrize("features", ["pixels", "random"])
def test_a_copycat_generator_is_flagged(real_sets, features):
    train, holdout, _ = real_sets
    result = audit_synthetic(copycat(train), train, holdout, features=features, seed=0, n_boot=50)
    assert result.copy_rate > 0.95
    assert result.mia_auc > 0.95
    assert result.blackbox.interval[0] > 0.9
    assert result.blackbox.subject_auc == 1.0  # every training subject nearer the copies than every stranger
    # The control (two halves of the members) cannot tell members from members.
    assert abs(result.control.auc - 0.5) < 0.15


def test_unseen_real_patches_of_other_subjects_are_not_flagged(real_sets):
    train, holdout, unseen = real_sets
    result = audit_synthetic(PatchSet.synthetic(unseen.image, unseen.label), train, holdout, seed=0, n_boot=100)
    assert result.copy_rate <= 0.05  # the calibration's 1 %, give or take 240 draws
    assert abs(result.mia_auc - 0.5) < 0.1
    assert result.blackbox.interval[0] < 0.5 < result.blackbox.interval[1]
    assert 0.85 < result.memorization.nn_ratio < 1.15


def test_copies_of_a_few_patches_raise_the_copy_rate_by_their_share(real_sets):
    train, holdout, unseen = real_sets
    copies = copycat(train.select(np.arange(0, len(train), 8)))  # 60 copies
    mixed = PatchSet.concatenate([copies, PatchSet.synthetic(unseen.image[:180], unseen.label[:180])])
    result = audit_synthetic(mixed, train, holdout, seed=0, n_boot=10)
    assert 0.23 <= result.copy_rate <= 0.30  # 60 of 240, plus the calibration's ~1 % of strangers


def test_the_nn_ratio_falls_well_below_1_when_a_copier_meets_an_equal_training_set(real_sets):
    _, holdout, _ = real_sets
    train = vessel_patches([f"tr-{i}" for i in range(4)], 60, seed=5)  # as large as the held-out set
    result = audit_synthetic(copycat(train), train, holdout, seed=0, n_boot=10)
    assert result.memorization.nn_ratio < 0.3


def test_flipped_copies_are_found_only_when_flips_are_searched(real_sets):
    train, _, _ = real_sets
    flipped = PatchSet.synthetic(train.image[:, :, ::-1].copy(), train.label[:, :, ::-1].copy())
    with_flips = nearest(embed_flips(flipped, "pixels"), embed_flips(train, "pixels", flips=False)[0])
    without = nearest(embed_flips(flipped, "pixels", flips=False), embed_flips(train, "pixels", flips=False)[0])
    # float32 matrix products: an exact copy lands within ~0.01 of 0 (pixel vectors of norm ~20)
    assert np.allclose(with_flips[0], 0, atol=0.05) and (with_flips[1] == np.arange(len(train))).all()
    assert (with_flips[2] == 1).all()  # reached through the left-right flip
    assert np.median(without[0]) > 1.0


def test_as_dict_has_exactly_the_cli_keys_and_details_carry_more(real_sets):
    train, holdout, unseen = real_sets
    result = audit_synthetic(PatchSet.synthetic(unseen.image, unseen.label), train, holdout, max_per_set=100, n_boot=10)
    assert tuple(result.as_dict()) == AUDIT_KEYS
    assert result.n_synthetic == 100 and result.n_holdout == 100 and result.n_train == len(train)
    details = result.details()
    for key in ("mia_auc_interval", "mia_subject_auc", "copy_threshold", "reference_real_vs_real", "whitebox_auc"):
        assert key in details
    assert len(result.memorization.closest_pairs(4)) == 4
    assert result.blackbox.fpr[0] == 0 and result.blackbox.tpr[-1] == 1


def test_the_api_signature_other_notebooks_call_is_stable():
    params = list(inspect.signature(audit_synthetic).parameters)
    assert params[:8] == ["synthetic", "train", "holdout", "features", "unet", "critic", "seed", "max_per_set"]


def test_the_same_seed_gives_the_same_audit(real_sets):
    train, holdout, unseen = real_sets
    syn = PatchSet.synthetic(unseen.image, unseen.label)
    a = audit_synthetic(syn, train, holdout, features="random", seed=3, max_per_set=150, n_boot=20).as_dict()
    b = audit_synthetic(syn, train, holdout, features="random", seed=3, max_per_set=150, n_boot=20, cache={}).as_dict()
    assert a == b


# ----------------------------------------------------------------------------- white-box
def _critic_checkpoint(tmp_path: Path) -> Path:
    critic = build_critic("wgan_gp", get_profile("smoke"))
    path = tmp_path / "checkpoint.pt"
    torch.save({"gan": "wgan_gp", "profile": "smoke", "critic": critic.state_dict(), "generator": {}}, path)
    return path


def test_the_white_box_attack_loads_the_critic_from_a_checkpoint(tmp_path):
    train = vessel_patches([f"tr-{i}" for i in range(3)], 20, size=32, seed=1)
    holdout = vessel_patches(["ho-0", "ho-1"], 20, size=32, seed=2)
    syn = PatchSet.synthetic(holdout.image[::-1].copy(), holdout.label[::-1].copy())
    result = audit_synthetic(syn, train, holdout, critic=_critic_checkpoint(tmp_path), n_boot=10)
    assert result.whitebox is not None and 0.0 <= result.whitebox.auc <= 1.0
    assert result.details()["whitebox_auc"] == result.whitebox.auc


def test_a_critic_that_remembers_its_members_is_caught(real_sets):
    train, holdout, _ = real_sets
    members = torch.from_numpy(train.image.reshape(len(train), -1))

    class Remembering(torch.nn.Module):  # scores a pair by minus its distance to the nearest training image
        def __init__(self) -> None:
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return -torch.cdist(x[:, 0].reshape(len(x), -1), members).min(dim=1).values

    result = audit_synthetic(copycat(holdout), train, holdout, critic=Remembering(), n_boot=10)
    assert result.whitebox.auc > 0.99
    assert result.mia_auc < 0.05  # the synthetic set copies the non-members here


# ----------------------------------------------------------------------------- metrics against references
def test_auc_is_the_probability_a_member_outscores_a_non_member():
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auc(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 0.5
    assert auc(np.array([2.0]), np.array([2.0])) == 0.5


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance`")
def test_frechet_and_kernel_distance_agree_with_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, (300, 6))
    fake = rng.normal(0.3, 1.3, (250, 6)) @ rng.normal(0, 0.6, (6, 6))

    class Identity(torch.nn.Module):
        num_features = 6

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    fid = FrechetInceptionDistance(feature=Identity(), normalize=False)
    fid.set_dtype(torch.float64)
    fid.update(torch.from_numpy(real), real=True)
    fid.update(torch.from_numpy(fake), real=False)
    assert frechet_distance(real, fake) == pytest.approx(float(fid.compute()), rel=1e-6)

    torch.manual_seed(0)
    kid = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=250, normalize=False)
    kid.update(torch.from_numpy(real[:250]), real=True)
    kid.update(torch.from_numpy(fake), real=False)
    assert kernel_distance(real[:250], fake) == pytest.approx(float(kid.compute()[0]), rel=1e-5)


def test_the_two_frechet_forms_agree():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(0, 1, (40, 30)), rng.normal(0.5, 2, (50, 30))
    wide = frechet_distance(real[:, :30], fake[:, :30])  # F = 30 < 40: the covariance form
    padded = frechet_distance(np.pad(real, ((0, 0), (0, 20))), np.pad(fake, ((0, 0), (0, 20))))  # F = 50 > 40
    assert wide == pytest.approx(padded, rel=1e-8)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)


def test_prdc_of_a_set_with_itself_and_with_a_far_set():
    rng = np.random.default_rng(2)
    real = rng.normal(0, 1, (200, 4))
    same = prdc(real, real.copy(), k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    assert same["density"] >= 1.0
    far = prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    collapsed = prdc(real, np.zeros((200, 4)) + rng.normal(0, 0.01, (200, 4)), k=5)
    assert collapsed["precision"] == 1.0 and collapsed["coverage"] < 0.2  # real-looking but no diversity


# ----------------------------------------------------------------------------- the command
def _save(tmp_path: Path, name: str, ps: PatchSet) -> str:
    return str(ps.save(tmp_path / name))


@pytest.fixture()
def audit_files(tmp_path, real_sets):
    train, holdout, unseen = real_sets
    return {"synthetic": _save(tmp_path, "syn.npz", PatchSet.synthetic(unseen.image[:80], unseen.label[:80])),
            "train": _save(tmp_path, "train.npz", train.select(np.arange(120))),
            "holdout": _save(tmp_path, "holdout.npz", holdout.select(np.arange(80)))}


def _audit_args(files: dict[str, str], *extra: str) -> list[str]:
    return ["audit", "--synthetic", files["synthetic"], "--train", files["train"], "--holdout", files["holdout"], *extra]


def test_audit_json_prints_exactly_the_documented_keys(audit_files, capsys):
    assert main(_audit_args(audit_files, "--json", "--features", "random")) == 0
    out = json.loads(capsys.readouterr().out)
    assert tuple(out) == AUDIT_KEYS
    assert out["features"] == "random" and out["n_synthetic"] == 80 and out["n_train"] == 120 and out["n_holdout"] == 80
    assert all(isinstance(out[k], float) for k in AUDIT_KEYS[:10])


def _write_raw(path: Path, ps: PatchSet, **override) -> str:
    arrays = dict(image=ps.image, label=ps.label, subject=ps.subject, kind=ps.kind, centre=ps.centre,
                  meta=np.asarray("{}"))
    arrays.update(override)
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("problem", ["missing", "sizes", "empty", "nan", "not_npz"])
def test_bad_audit_input_exits_2_with_one_line_naming_the_file(problem, tmp_path, audit_files, real_sets, capsys):
    train = real_sets[0]
    bad = tmp_path / "bad.npz"
    if problem == "missing":
        bad = tmp_path / "nowhere.npz"
    elif problem == "sizes":
        _save(tmp_path, "bad.npz", vessel_patches(["x"], 10, size=32))
    elif problem == "empty":
        _write_raw(bad, train.select(np.arange(0)))
    elif problem == "nan":
        image = train.image[:20].copy()
        image[3, 4, 5] = np.nan
        _write_raw(bad, train.select(np.arange(20)), image=image)
    else:
        bad.write_text("not a patch set")
    files = {**audit_files, "holdout": str(bad)}
    assert main(_audit_args(files, "--json")) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0], captured.err


def test_audit_with_unet_features_needs_the_checkpoint(audit_files, capsys):
    assert main(_audit_args(audit_files, "--features", "unet")) == 2
    assert "--unet" in capsys.readouterr().err


def test_the_unet_space_uses_the_trained_encoder(tmp_path, real_sets):
    from tofmra_utils.unet.model import UNet

    train, holdout, _ = real_sets
    unet = (UNet(1, 4, 2, 0.0).eval(), {"norm_mean": 0.0, "norm_std": 1.0})
    result = audit_synthetic(copycat(train), train, holdout, features="unet", unet=unet, n_boot=10)
    assert result.features == "unet" and result.copy_rate > 0.9
    assert embed_flips(train.select(np.arange(3)), "unet", unet=unet).shape == (4, 3, 4 + 8 + 16)


def test_profiles_size_the_audit():
    for name in ("smoke", "course", "paper"):
        cfg = get_profile(name).privacy
        assert cfg.max_per_set >= 100 and 0 < cfg.max_copy_rate < 1 and cfg.feature_spaces[0] == "pixels"
    assert dataclasses.is_dataclass(get_profile("course").privacy)


def test_bench_audit_prints_a_time_per_audit(capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_audit.py"
    spec = importlib.util.spec_from_file_location("bench_audit", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--profile", "smoke", "--features", "pixels,random"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " cpu " in line]
    assert len(lines) == 2 * 3 + 1 and lines[-1].startswith("total   6 audits")
