"""Input scaling, whole-slice inference, brain-edge false positives and the choice on validation volumes."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

from builders import VolumesDataset
from tofmra_utils.cli import main
from tofmra_utils.conventions import normalize_patch, zscore
from tofmra_utils.unet.infer import EDGE_WIDTH, brain_edge, check_inference, predict_volume, scale_volume
from tofmra_utils.unet.inference_choice import (
    INFERENCE_CANDIDATES, STUDY_INFERENCE, candidates_for, choose_inference, edge_false_positive_sentence,
    evaluate_inference_candidates, inference_label, select_inference,
)

INFO = {"norm_mean": 0.25, "norm_std": 2.0}


class PointwiseNet(torch.nn.Module):
    """A 'U-net' that sees one pixel at a time: sigmoid of its input (so the input can be read back)."""

    depth = 2

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0
        return torch.sigmoid(x)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def head(shape=(40, 36, 3), seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.gamma(4.0, 25.0, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[4:-5, 3:-4, :] = 1
    return image, mask


# ----------------------------------------------------------------------------- scaling
def test_scale_volume_maps_the_brain_range_to_minus_one_one():
    image, mask = head()
    scaled = scale_volume(image, mask, percentiles=(0.0, 100.0))
    brain = scaled[mask > 0]
    assert brain.min() == pytest.approx(-1.0) and brain.max() == pytest.approx(1.0)
    assert scaled.min() >= -1.0 and scaled.max() <= 1.0  # outside the brain: clipped
    # a linear map: order and ratios of differences are kept
    i, j, k = np.flatnonzero(mask)[:3]
    flat_i, flat_s = image.ravel(), scaled.ravel()
    assert (flat_s[i] - flat_s[j]) * (flat_i[k] - flat_i[j]) == pytest.approx(
        (flat_s[k] - flat_s[j]) * (flat_i[i] - flat_i[j]), rel=1e-4)
    # the default top percentile leaves hot voxels clipped instead of squeezing the rest
    hot = image.copy()
    hot[10, 10, 1] = 1e6
    assert np.median(scale_volume(hot, mask)[mask > 0]) == pytest.approx(np.median(scale_volume(image, mask)[mask > 0]), abs=0.02)
    assert (scale_volume(np.full((8, 8, 2), 7.0)) == -1).all()  # no contrast: the darkest value


def test_check_inference():
    check_inference("slice", "volume")
    with pytest.raises(ValueError, match="needs scaling 'volume'"):
        check_inference("slice", "per_tile")
    with pytest.raises(ValueError, match="unknown input scaling"):
        check_inference("tiles", "global")
    with pytest.raises(ValueError, match="unknown inference mode"):
        check_inference("cubes", "volume")


@pytest.mark.parametrize("mode", ["tiles", "sliding", "slice"])
def test_volume_scaling_feeds_the_volume_map_to_every_tile(mode):
    image, mask = head()
    prob = predict_volume(PointwiseNet(), INFO, image, mask, 8, mode=mode, scaling="volume", batch_size=5)
    expected = zscore(scale_volume(image, mask), INFO["norm_mean"], INFO["norm_std"])
    inside = mask > 0
    np.testing.assert_allclose(logit(prob[inside]), expected[inside], atol=2e-4)
    assert (prob[~inside] == 0).all()


def test_per_tile_scaling_feeds_each_tile_its_own_min_max():
    image, mask = head()
    prob = predict_volume(PointwiseNet(), INFO, image, mask, 8, mode="tiles", scaling="per_tile")
    # the non-overlapping tile at (8, 8) of slice 0 lies inside the brain box grid: check it
    from tofmra_utils.unet.infer import tile_plan

    (pads_x, pads_y), xs, ys, _ = tile_plan(mask > 0, 8, "tiles")
    assert pads_x == pads_y == (0, 0)
    x, y = xs[1], ys[1]
    tile = image[x : x + 8, y : y + 8, 0]
    expected = zscore(normalize_patch(tile), INFO["norm_mean"], INFO["norm_std"])
    np.testing.assert_allclose(logit(prob[x : x + 8, y : y + 8, 0]), expected, atol=2e-4)
    # and it differs from the volume scaling there
    vol = predict_volume(PointwiseNet(), INFO, image, mask, 8, mode="tiles", scaling="volume")
    assert not np.allclose(vol[x : x + 8, y : y + 8, 0], prob[x : x + 8, y : y + 8, 0], atol=1e-3)


def test_whole_slices_equal_one_tile_when_the_brain_box_is_one_tile():
    # A real U-net sees context: whole slices and tiles agree exactly only when the tile is the box.
    from tofmra_utils.unet.model import UNet

    torch.manual_seed(0)
    net = UNet(1, base_width=2, depth=2, dropout=0.0).eval()
    rng = np.random.default_rng(1)
    image = rng.normal(100, 20, (24, 24, 3)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[4:20, 4:20, :] = 1  # a 16 x 16 box: one 16 px tile, and a multiple of 2**2 for whole slices
    tiles = predict_volume(net, INFO, image, mask, 16, mode="tiles", scaling="volume")
    slices = predict_volume(net, INFO, image, mask, 16, mode="slice", scaling="volume")
    np.testing.assert_allclose(slices, tiles, atol=1e-6)
    with pytest.raises(ValueError, match="needs scaling 'volume'"):
        predict_volume(net, INFO, image, mask, 16, mode="slice")


# ----------------------------------------------------------------------------- the brain's rim
def test_brain_edge_is_an_in_plane_rim():
    mask = np.zeros((20, 20, 3), bool)
    mask[5:15, 5:15, :] = True
    edge = brain_edge(mask, width=2)
    assert (edge <= mask).all()
    assert edge[:, :, 1].sum() == 100 - 36  # 10 x 10 square minus its 6 x 6 core
    assert edge[:, :, 0].sum() == edge[:, :, 1].sum()  # in-plane: top and bottom slices are not all rim
    assert not brain_edge(np.zeros((4, 4, 2), bool)).any() and EDGE_WIDTH >= 1


# ----------------------------------------------------------------------------- the choice
def scores_table(dsc: dict[tuple[str, str], float], fp_edge: dict[tuple[str, str], float] | None = None) -> pd.DataFrame:
    rows = []
    for (mode, scaling), d in dsc.items():
        for model in ("real", "dcgan"):
            for subject in ("v1", "v2"):
                e = (fp_edge or {}).get((mode, scaling), 10.0)
                rows.append({"mode": mode, "scaling": scaling, "model": model, "subject": subject, "dsc": d,
                             "hd95_mm": 1.0, "fp_brain_edge": e, "fp_interior": 30.0, "eval_seconds": 0.1})
    return pd.DataFrame(rows)


def test_choose_inference_takes_the_best_validation_dsc_and_the_earlier_on_a_tie():
    dsc = {c: 0.5 for c in INFERENCE_CANDIDATES}
    dsc[STUDY_INFERENCE] = 0.7
    choice = choose_inference(scores_table(dsc))
    assert (choice.mode, choice.scaling) == STUDY_INFERENCE and choice.label == inference_label(*STUDY_INFERENCE)
    assert choice.table["chosen"].sum() == 1 and choice.table.attrs["n_volumes"] == 2
    tie = choose_inference(scores_table({c: 0.6 for c in reversed(INFERENCE_CANDIDATES)}))
    assert (tie.mode, tie.scaling) == INFERENCE_CANDIDATES[0]


def test_edge_sentence_follows_the_counts():
    dsc = {("tiles", "per_tile"): 0.5, ("tiles", "volume"): 0.5}
    more = choose_inference(scores_table(dsc, {("tiles", "per_tile"): 90.0, ("tiles", "volume"): 10.0})).table
    assert "does add false positives at the brain's edge" in edge_false_positive_sentence(more)
    same = choose_inference(scores_table(dsc, {("tiles", "per_tile"): 12.0, ("tiles", "volume"): 10.0})).table
    assert "do not show" in edge_false_positive_sentence(same)
    assert "needs" in edge_false_positive_sentence(choose_inference(scores_table({("slice", "volume"): 0.5})).table)


def test_candidates_for():
    assert candidates_for() == list(INFERENCE_CANDIDATES)
    assert candidates_for("auto", "volume") == [c for c in INFERENCE_CANDIDATES if c[1] == "volume"]
    assert candidates_for("tiles", "per_tile") == [("tiles", "per_tile")]
    with pytest.raises(ValueError, match="needs scaling"):
        candidates_for("slice", "per_tile")
    with pytest.raises(ValueError, match="unknown inference scaling"):
        candidates_for("auto", "global")


def val_dataset() -> VolumesDataset:
    volumes = {}
    for i in range(2):
        image, mask = head(seed=i)
        label = ((image > np.percentile(image, 95)) & (mask > 0)).astype(np.uint8)
        volumes[f"v{i}"] = (image, label, mask)
    return VolumesDataset(volumes, split="val")


def test_select_inference_chooses_on_validation_volumes_only(monkeypatch):
    import tofmra_utils.unet.experiment as experiment

    monkeypatch.setattr(experiment, "load_unet", lambda path, device=None: (PointwiseNet(), {**INFO, "patch_size": 8}))
    ds = val_dataset()
    mode, scaling, choice, how = select_inference({"real": "a.pt", "dcgan": "b.pt"}, ds, threshold=0.7)
    assert (mode, scaling) == (choice.mode, choice.scaling) and "validation volume" in how
    assert len(choice.table) == len(INFERENCE_CANDIDATES) and np.isfinite(choice.table["val DSC"]).all()
    assert 0 < choice.table.attrs["edge_share_of_brain"] < 1
    fixed = select_inference({"real": "a.pt"}, ds, "tiles", "volume")
    assert fixed[:3] == ("tiles", "volume", None) and "parameters" in fixed[3]
    with pytest.raises(ValueError, match="never on the test volumes"):
        evaluate_inference_candidates({"real": "a.pt"}, ds, split="test")


def test_cli_segment_refuses_whole_slices_with_per_tile_scaling(tmp_path, capsys):
    rc = main(["segment", "--model", str(tmp_path / "m.pt"), "--image", str(tmp_path / "i.nii.gz"),
               "--out", str(tmp_path / "o.nii.gz"), "--mode", "slice"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs scaling 'volume'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.nii.gz").exists()


def test_prediction_leaves_the_callers_model_layout_alone():
    from tofmra_utils.unet.model import UNet

    net = UNet(1, base_width=2, depth=2, dropout=0.0).eval()
    image, mask = head()
    predict_volume(net, INFO, image, mask, 8, mode="sliding", scaling="per_tile")
    assert all(p.is_contiguous() for p in net.parameters()), "channels-last is for inference only"
