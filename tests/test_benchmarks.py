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
