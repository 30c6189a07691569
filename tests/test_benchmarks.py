"""The benchmarks run and print their numbers (their speed is what they measure, never asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_gan_prints_steps_per_second_for_each_change(capsys):
    bench = _load("bench_gan")
    assert bench.main(["--profile", "smoke", "--gan", "wgan_gp_sn", "--steps", "1", "--warmup", "0", "--changes",
                       "--device", "cpu"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "generator steps/s" in l]
    labels = [label for label, _ in bench.CHANGES] + ["profile settings"]
    assert len(lines) == len(labels) and all(label in line for label, line in zip(labels, lines))


def test_bench_infer_prints_slices_per_second_for_every_inference(capsys):
    bench = _load("bench_infer")
    assert bench.main(["--profile", "smoke", "--slices", "2", "--repeat", "1", "--size", "96", "--no-monai",
                       "--threads", "1"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "slices/s" in l]
    assert [l.split()[1:3] for l in lines] == [["tiles", "per_tile"], ["sliding", "per_tile"], ["tiles", "volume"],
                                                ["sliding", "volume"], ["slice", "volume"]]


def test_bench_infer_monai_runs_the_same_scaling_as_ours():
    import numpy as np
    import pytest
    import torch

    pytest.importorskip("monai")
    bench = _load("bench_infer")
    from tofmra_utils.unet.infer import predict_volume

    class Pointwise(torch.nn.Module):  # no context: tile positions cannot matter, only the scaling
        depth = 2

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return torch.sigmoid(x * self.w)

    rng = np.random.default_rng(0)
    image = rng.gamma(4.0, 25.0, (48, 48, 2)).astype(np.float32)
    mask = bench.ellipsoid_mask(image.shape, 4.0)
    # volume scaling: a voxel's input does not depend on the tile, so a pointwise model must agree exactly
    ours = predict_volume(Pointwise(), {"norm_mean": 0.1, "norm_std": 2.0}, image, mask, 16, mode="sliding",
                          scaling="volume")
    theirs = bench.monai_sliding(Pointwise(), image, mask, 16, 0.5, 8, 0.1, 2.0, "volume", "cpu")
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
