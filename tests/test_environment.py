"""The set-up files agree with each other: pins, CI script, README commands."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for req in requirements:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)\s*", req)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    assert len(_pins(reqs)) == len(reqs), "every requirement uses =="
    assert _pins(reqs)["torch"] == "2.13.0"


def test_environment_yml_lists_the_same_pins_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(pip_section) == _pins(reqs)
    assert "python=3.11" in env["dependencies"]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip() and not line.startswith("#")]
    assert "make reproduce" in commands and "make test" in commands, "the README's first commands"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ci[-1] == "make test"


def test_makefile_test_target_runs_pytest_over_tests_and_notebooks():
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^test: .*?\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "pytest" in target
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert config["testpaths"] == ["tests", "notebooks"] and "--nbval-lax" in config["addopts"]
    assert {"_build", ".ipynb_checkpoints"} <= set(config["norecursedirs"])
