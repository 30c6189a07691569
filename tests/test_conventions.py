"""The conventions every stage shares: label channel, per-patch scaling, z-score, Dice, file hash."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from tofmra_utils.conventions import decode_label, dice, encode_label, file_hash, normalization_stats, normalize_patch, zscore


def test_label_channel_round_trip_numpy_and_torch():
    label = np.array([[0, 1], [1, 0]], np.float32)
    channel = encode_label(label)
    np.testing.assert_array_equal(channel, [[-1, 1], [1, -1]])
    np.testing.assert_array_equal(decode_label(channel, 0.8), label.astype(bool))
    t = encode_label(torch.from_numpy(label))
    assert t.dtype == torch.float32 and torch.equal(decode_label(t, 0.8), torch.from_numpy(label.astype(bool)))


def test_decode_label_threshold_is_on_the_unit_scale():
    # 0.5 on [-1, 1] is 0.75 on [0, 1]: vessel at threshold 0.5, background at the study's 0.8
    channel = np.array([0.5])
    assert decode_label(channel, 0.5).item() and not decode_label(channel, 0.8).item()


def test_normalize_patch_scales_each_patch_on_its_own():
    x = np.stack([np.arange(16.0).reshape(4, 4), 100 + 3 * np.arange(16.0).reshape(4, 4)])
    y = normalize_patch(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    for p in y:
        assert p.min() == -1.0 and p.max() == 1.0
    np.testing.assert_allclose(y[0], y[1], atol=1e-6)  # same pattern, different range


def test_normalize_patch_constant_patch_has_no_nan():
    y = normalize_patch(np.full((2, 5, 5), 7.0))
    assert np.isfinite(y).all() and (y == -1.0).all()


def test_zscore_and_stats():
    mean, std = normalization_stats(np.array([[1.0, 3.0]]))
    assert (mean, std) == (2.0, 1.0)
    assert normalization_stats(np.zeros((2, 2)))[1] == pytest.approx(1e-6)
    z = zscore(np.array([1.0, 3.0]), mean, std)
    assert z.dtype == np.float32 and z.tolist() == [-1.0, 1.0]


def test_dice():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros(3), np.zeros(3)) == 1.0
    assert dice(a, np.zeros(4)) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        dice(a, b[:3])


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_file_hash(tmp_path, algorithm):
    path = tmp_path / "f.bin"
    path.write_bytes(b"tofmra" * 1000)
    assert file_hash(path, algorithm) == hashlib.new(algorithm, b"tofmra" * 1000).hexdigest()
