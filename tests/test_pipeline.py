"""The papermill runner: order, summary, unknown parameters, failure handling, and the book."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

from tofmra_utils.cli import main
from tofmra_utils.pipeline import (
    PipelineError,
    discover_notebooks,
    parse_parameters,
    plan_parameters,
    run_pipeline,
    select_notebooks,
)
from tofmra_utils.runs import repo_root

PARAMS = 'profile = ""\nrun_dir = ""\n'
SETUP = 'from tofmra_utils import setup_notebook\nctx = setup_notebook("{name}", profile, run_dir)\n'


def _write_notebook(folder: Path, name: str, body: str, extra_params: str = "") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(PARAMS + extra_params)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {name}"),
        params,
        nbformat.v4.new_code_cell(SETUP.format(name=name)),
        nbformat.v4.new_code_cell(body),
    ]
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return path


@pytest.fixture()
def tiny_notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _write_notebook(folder, "01_first", "ctx.record(answer=41 + factor)\n", extra_params="factor = 1\n")
    _write_notebook(folder, "02_second", "assert ctx.recorded('01_first')['answer'] == 42\nctx.record(seen=True)\n")
    (folder / "notes.ipynb").write_text("{}")  # not numbered: ignored
    return folder


def test_discover_and_select(tiny_notebooks):
    found = discover_notebooks(tiny_notebooks)
    assert [p.stem for p in found] == ["01_first", "02_second"]
    assert [p.stem for p in select_notebooks(found, "2")] == ["02_second"]
    with pytest.raises(PipelineError, match="no notebook numbered 07"):
        select_notebooks(found, "07")


def test_parse_parameters():
    assert parse_parameters(["n=3", "name=abc", "x=0.5", "flag=true"]) == {"n": 3, "name": "abc", "x": 0.5, "flag": True}
    with pytest.raises(PipelineError, match="NAME=VALUE"):
        parse_parameters(["oops"])


def test_run_in_order_writes_summary(tiny_notebooks, tmp_path, capfd):
    lines: list[str] = []
    out = tmp_path / "run"
    summary = run_pipeline("smoke", out=out, notebooks_dir=tiny_notebooks, log=lines.append)
    assert summary["status"] == "ok"
    captured = capfd.readouterr()
    assert "without encryption" not in captured.err + captured.out, "kernels run over encrypted sockets"
    assert summary["seed"] == 1234, "the profile's seed when no --seed is given"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["notebooks"]["01_first"]["results"] == {"answer": 42}
    assert on_disk["notebooks"]["02_second"]["results"] == {"seen": True}
    assert on_disk["notebooks"]["01_first"]["seconds"] > 0
    assert on_disk["commit"].rstrip("+") == subprocess.run(["git", "-C", str(repo_root()), "rev-parse", "--short", "HEAD"],
                                                           capture_output=True, text=True).stdout.strip()
    assert (out / "notebooks" / "02_second.ipynb").exists()
    assert any(line.startswith("[1/2] 01_first ok") for line in lines), lines
    assert on_disk["run_folder_bytes"] > 0 and any(line.startswith("run folder: ") for line in lines), lines
    # A declared extra parameter reaches only the notebook that declares it.
    summary = run_pipeline("smoke", out=out, only="01", parameters={"factor": 2}, notebooks_dir=tiny_notebooks, log=lines.append)
    assert summary["notebooks"]["01_first"]["results"] == {"answer": 43}
    assert summary["notebooks"]["02_second"]["status"] == "ok", "earlier entries are kept in the summary"
    assert not (out / ".tofmra-run.lock").exists(), "the run folder's lock is released after the run"


def test_unknown_parameter_is_an_error_before_anything_runs(tiny_notebooks, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(PipelineError, match="unknown parameter 'epochz'.*known: factor, profile, run_dir"):
        run_pipeline("smoke", out=out, parameters={"epochz": 3}, notebooks_dir=tiny_notebooks, log=lambda s: None)
    assert not (out / "notebooks").exists()
    # A user's -p named like a runner option is still the user's: unknown when nobody declares it.
    with pytest.raises(PipelineError, match="unknown parameter 'data_dir'"):
        run_pipeline("smoke", out=out, parameters={"data_dir": "x"}, notebooks_dir=tiny_notebooks, log=lambda s: None)


def test_runner_options_go_only_to_the_notebooks_declaring_them(tiny_notebooks, tmp_path):
    reader = _write_notebook(tiny_notebooks, "03_reader", "ctx.record(data=data_dir)\n", extra_params='data_dir = ""\n')
    first, second = discover_notebooks(tiny_notebooks)[:2]
    plan = plan_parameters([first, second, reader], {"profile": "smoke", "run_dir": "r"}, {"factor": 2},
                           options={"data_dir": "/d", "site_b_dir": "/b"})
    assert plan[reader] == {"profile": "smoke", "run_dir": "r", "data_dir": "/d"}
    assert plan[first] == {"profile": "smoke", "run_dir": "r", "factor": 2}
    assert plan[second] == {"profile": "smoke", "run_dir": "r"}
    # No selected notebook declares data_dir: not an error, nothing receives it.
    plan = plan_parameters([first, second], {"profile": "smoke", "run_dir": "r"}, {}, options={"data_dir": "/d"})
    assert all("data_dir" not in p for p in plan.values())


def test_only_with_data_on_notebooks_not_reading_data_runs(tiny_notebooks, tmp_path):
    """`tofmra run --only 02,03 --data DIR` reruns later notebooks of a user-data run."""
    out = tmp_path / "run"
    summary = run_pipeline("smoke", out=out, only="01", data_dir=tmp_path, site_b_dir=tmp_path,
                           notebooks_dir=tiny_notebooks, log=lambda s: None)
    assert summary["status"] == "ok"
    assert summary["notebooks"]["01_first"]["parameters"] == {"profile": "smoke", "run_dir": str(out.resolve())}


def test_failing_notebook_stops_the_run_and_keeps_earlier_results(tiny_notebooks, tmp_path):
    _write_notebook(tiny_notebooks, "02_second", "x = 1\nraise ValueError('synthetic labels are empty')\n")
    _write_notebook(tiny_notebooks, "03_third", "ctx.record(never=True)\n")
    out = tmp_path / "run"
    summary = run_pipeline("smoke", out=out, notebooks_dir=tiny_notebooks, log=lambda s: None)
    assert summary["status"] == "failed"
    assert "notebook 02_second failed in cell 3" in summary["failed"]
    assert "ValueError: synthetic labels are empty" in summary["failed"]
    assert summary["notebooks"]["01_first"]["status"] == "ok"
    assert "03_third" not in summary["notebooks"]
    assert (out / "notebooks" / "02_second.failed.ipynb").exists()
    assert not (out / "notebooks" / "02_second.ipynb").exists(), "no executed copy of a failed run"
    assert not list((out / "notebooks").glob(".*partial*")), "no temporary file left"
    assert (out / "results" / "01_first.json").exists()


def test_cli_reports_failure_with_exit_code(tiny_notebooks, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--profile", "smoke", "--out", str(tmp_path / "r"), "-p", "nope=1"])
    assert code == 2, "an unknown -p is bad input"
    err = capsys.readouterr().err
    assert "tofmra run: unknown parameter 'nope': no selected notebook declares it" in err
    assert len(err.strip().splitlines()) == 1, err
    # --data on notebooks that do not declare data_dir is no error.
    argv = ["run", "--profile", "smoke", "--out", str(tmp_path / "r"), "--only", "01", "--data", str(tmp_path)]
    assert main(argv) == 0


def test_real_notebooks_declare_the_standard_parameters():
    from tofmra_utils.pipeline import notebook_parameters

    for nb in discover_notebooks(repo_root() / "notebooks"):
        declared = notebook_parameters(nb)
        assert {"profile", "run_dir"} <= set(declared), nb.name
        assert declared["profile"] in ('""', "''"), f"{nb.name}: profile must default to '' (env or course)"


@pytest.mark.slow
def test_smoke_pipeline_and_book_from_executed_notebooks():
    """The whole study through `tofmra run` (papermill, smoke profile), then the book from the executed copies.

    It runs the notebooks the way `make reproduce` does, with the parameters papermill injects,
    into the test session's run folder (``$TOFMRA_RUN_DIR``, emptied by `make test`), and checks
    every chapter of the book carries figures. nbval executes the same notebooks afterwards
    (pytest collects ``tests`` before ``notebooks``) in the same folder: the GANs, U-nets and
    transfer runs are finished there, so the smoke study trains once per `make test`.
    """
    out = Path(os.environ["TOFMRA_RUN_DIR"])
    code = main(["run", "--profile", "smoke", "--out", str(out), "--book"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    expected = [nb.stem for nb in discover_notebooks(repo_root() / "notebooks")]
    assert summary["status"] == "ok" and list(summary["notebooks"]) == expected
    assert all(nb["status"] == "ok" for nb in summary["notebooks"].values())
    assert summary["notebooks"]["00_overview"]["results"]["profile"] == "smoke"
    assert summary["notebooks"]["01_data_preparation"]["results"]["source_a"] == "phantom"
    assert set(summary["notebooks"]["05_unet_synthetic_vs_real"]["results"]) >= {"dsc_real", "dsc_wgan_gp_sn"}
    html = out / "book" / "_build" / "html"
    for name in expected:
        page = (html / "notebooks" / f"{name}.html").read_text()
        assert "<img" in page, f"{name}: figures must appear in the HTML"
    assert (html / "index.html").exists() and (html / "reproducing.html").exists()
