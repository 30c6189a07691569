"""``tofmra course-kit``: student copies without solutions, instructor copies with them.

The kit is made from the repository's notebooks, so these tests run the tool on every notebook
present (including ones added later) and check the exercise convention on each.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tofmra_utils.cli import main
from tofmra_utils.coursekit import (BEGIN, END, KIT_MARKER, find_notebooks, notebook_exercises, solution_leaks,
                                    student_notebook, write_course_kit)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = find_notebooks(ROOT / "notebooks")
#: The notebooks of this issue's helpers; each must carry at least two runnable exercises.
WITH_EXERCISES = {"00", "01", "02", "03", "04", "05", "06", "07"}


def _cell(kind: str, source: str, tags: list[str] | None = None) -> dict:
    cell = {"cell_type": kind, "metadata": {"tags": tags or []}, "source": source}
    if kind == "code":
        cell.update(outputs=[{"output_type": "stream", "name": "stdout", "text": "secret output\n"}], execution_count=3)
    return cell


def _notebook(*cells: dict) -> dict:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _exercise(n: int, solution: str = "answer = compute_the_thing(42)") -> list[dict]:
    return [
        _cell("markdown", f"### Exercise {n}: a task\n\nCompute the thing."),
        _cell("code", f"data = load()\n{BEGIN}\n{solution}\n{END}\nshow(answer)", ["solution"]),
        _cell("code", "assert answer == 42", ["exercise-check"]),
    ]


def _write(folder: Path, name: str, nb: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(nb))
    return path


def _text(nb: dict) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"])


def test_student_copy_replaces_the_solution_and_clears_outputs():
    nb = _notebook(_cell("code", "x = 1"), *_exercise(1), *_exercise(2, "answer = other_way(6 * 7)"))
    student = student_notebook(nb)
    text = _text(student)
    assert "compute_the_thing" not in text and "other_way" not in text
    assert 'raise NotImplementedError("Exercise 1")' in text and 'raise NotImplementedError("Exercise 2")' in text
    assert "data = load()" in text and "show(answer)" in text, "starter lines around the solution stay"
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None for c in student["cells"] if c["cell_type"] == "code")
    assert "compute_the_thing" in _text(nb), "the instructor notebook is not modified"
    assert solution_leaks(student, nb, notebook_exercises(nb)) == []


def test_leak_check_catches_solution_text_left_in_a_student_copy():
    nb = _notebook(*_exercise(1))
    leaky = student_notebook(nb)
    leaky["cells"].append(_cell("code", "answer = compute_the_thing(42)"))
    assert solution_leaks(leaky, nb, notebook_exercises(nb)) == ["answer = compute_the_thing(42)"]


@pytest.mark.parametrize("cells, problem", [
    ([_cell("markdown", "### Exercise 1: t"), _cell("code", "x = 1", ["solution"]), _cell("code", "", ["exercise-check"])],
     "BEGIN SOLUTION"),
    ([_cell("markdown", "### Exercise 1: t"), _cell("code", f"{BEGIN}\nx = 1\n{END}", ["solution"])], "exercise-check"),
    ([_cell("code", f"{BEGIN}\nx = 1\n{END}", ["solution"])], "no '### Exercise N"),
    ([*_exercise(1), *_exercise(1)], "used twice"),
    ([_cell("markdown", "### Exercise 1: t"), _cell("code", f"{BEGIN}\n{END}", ["solution"]),
      _cell("code", "", ["exercise-check"])], "empty"),
])
def test_a_notebook_breaking_the_convention_is_refused(tmp_path, capsys, cells, problem):
    src = tmp_path / "notebooks"
    path = _write(src, "01_x.ipynb", _notebook(*cells))
    rc = main(["course-kit", "--out", str(tmp_path / "kit"), "--source", str(src)])
    err = capsys.readouterr().err
    assert rc == 2 and str(path) in err and problem in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "kit").exists(), "nothing half-written"
    assert not list(tmp_path.glob(".kit.*")), "no temporary folder left behind"


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    src = tmp_path / "notebooks"
    src.mkdir()
    (src / "02_broken.ipynb").write_text("{not json")
    assert main(["course-kit", "--out", str(tmp_path / "kit"), "--source", str(src)]) == 2
    assert "02_broken.ipynb" in capsys.readouterr().err
    assert main(["course-kit", "--out", str(tmp_path / "kit"), "--source", str(tmp_path / "empty")]) == 2
    assert "no numbered notebooks" in capsys.readouterr().err
    other = tmp_path / "not_a_kit"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    _write(tmp_path / "ok", "01_ok.ipynb", _notebook(*_exercise(1)))
    assert main(["course-kit", "--out", str(other), "--source", str(tmp_path / "ok")]) == 2
    assert (other / "thesis.tex").read_text() == "precious", "a folder that is not a kit is never overwritten"


def test_rebuilding_replaces_an_earlier_kit(tmp_path):
    src = tmp_path / "notebooks"
    _write(src, "01_a.ipynb", _notebook(*_exercise(1), *_exercise(2)))
    made = write_course_kit(tmp_path / "kit", src)
    assert made == {"01_a": [1, 2]}
    (src / "01_a.ipynb").unlink()
    _write(src, "02_b.ipynb", _notebook(*_exercise(1)))
    assert write_course_kit(tmp_path / "kit", src) == {"02_b": [1]}
    assert sorted(p.name for p in (tmp_path / "kit" / "student").iterdir()) == ["02_b.ipynb"]
    assert (tmp_path / "kit" / KIT_MARKER).exists()


@pytest.fixture(scope="module")
def repo_kit(tmp_path_factory) -> tuple[Path, dict[str, list[int]]]:
    out = tmp_path_factory.mktemp("kit") / "course"
    assert main(["course-kit", "--out", str(out)]) == 0
    return out, write_course_kit(out)


def test_kit_of_the_repository_notebooks(repo_kit):
    out, made = repo_kit
    assert NOTEBOOKS, "no notebooks found"
    assert sorted(made) == [p.stem for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        original = json.loads(path.read_text())
        student = json.loads((out / "student" / path.name).read_text())
        instructor = (out / "instructor" / path.name).read_text()
        assert instructor == path.read_text(), "the instructor copy is the notebook as it is"
        exercises = notebook_exercises(original, path)
        for ex in exercises:
            assert f'raise NotImplementedError("Exercise {ex.number}")' in _text(student)
            # Every substantive solution line is gone from the student copy unless the notebook shows it elsewhere.
        assert solution_leaks(student, original, exercises) == [], path.name
        assert BEGIN not in _text(student) and END not in _text(student)
        assert all(not c.get("outputs") for c in student["cells"] if c["cell_type"] == "code")
        assert len(student["cells"]) == len(original["cells"])


def test_each_course_notebook_has_two_runnable_exercises(repo_kit):
    _, made = repo_kit
    for stem, numbers in made.items():
        if stem[:2] in WITH_EXERCISES:
            assert len(numbers) >= 2, f"{stem}: the course kit needs at least two exercises, found {numbers}"
            assert numbers == list(range(1, len(numbers) + 1)), f"{stem}: exercises numbered 1..N in order"


def test_solutions_appendix_lists_every_solution(repo_kit):
    out, made = repo_kit
    appendix = (out / "instructor" / "SOLUTIONS.md").read_text()
    for path in NOTEBOOKS:
        assert f"## {path.stem}" in appendix
        for ex in notebook_exercises(json.loads(path.read_text()), path):
            assert f"### Exercise {ex.number}: {ex.title}" in appendix
            assert ex.solution.strip() in appendix
    readme = (out / "README.md").read_text()
    assert all(re.search(rf"\| {p.stem} \| {len(made[p.stem])} \|", readme) for p in NOTEBOOKS)


def test_exercises_write_only_into_the_exercise_folder():
    # Exercise cells must not write where the study's notebooks read (unets/, gans/, synthetic/, data/):
    # every writing call that names a run folder path names the exercise folder, and the study's
    # trainers that always write into the run's own folders are not called at all.
    writer = re.compile(r"\b(train_gan|train_unet|prepare_dataset|save_figure|savefig|to_csv|savez|save|write_text)\(([^()]*(?:\([^()]*\))?[^()]*)\)")
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        for ex in notebook_exercises(nb, path):
            source = "".join(nb["cells"][ex.solution_cell]["source"])
            assert "train_models(" not in source and "run_transfer_sweep(" not in source, (
                f"{path.name} exercise {ex.number}: retrains into the study's folders")
            for name, args in writer.findall(source):
                assert "paths." not in args or "exercise_dir" in args, (
                    f"{path.name} exercise {ex.number}: {name}({args}) writes outside ctx.paths.exercise_dir")


# ------------------------------------------------------------------ the viewers the course notebooks use
def test_viewers_are_static_figures_headless_and_widgets_live(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    from tofmra_utils import widgets
    from tofmra_utils.plots import save_figure

    rng = np.random.default_rng(0)
    images, raw_labels = rng.uniform(-1, 1, (10, 16, 16)), rng.uniform(-1, 1, (10, 16, 16))
    fig = widgets.label_threshold_viewer(images, raw_labels, 0.05, headless=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 8
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    fractions = [float(t.split("vessel fraction ")[1].split(" ")[0]) for t in titles]
    assert fractions == sorted(fractions, reverse=True), "a higher threshold keeps fewer label pixels"
    grids = {}
    for step in (10, 20, 30, 40):
        grids[step] = save_figure(widgets.slice_montage(rng.random((8, 8, 6)), n=2), tmp_path / f"step_{step}.png")
    assert len(widgets.sample_grid_scrubber(grids, headless=True).axes) == 3
    volume = rng.random((12, 12, 6))
    truth = volume > 0.8
    montage = widgets.threshold_error_viewer(volume, truth, volume, 0.8, headless=True)
    titles = [ax.get_title() for ax in montage.axes]
    assert titles[1] == "threshold 0.80: DSC 1.000" and not titles[0].endswith("DSC 1.000")
    pytest.importorskip("ipywidgets")
    for live in (widgets.label_threshold_viewer(images, raw_labels, 0.05, headless=False),
                 widgets.sample_grid_scrubber(grids, headless=False),
                 widgets.threshold_error_viewer(volume, truth, volume, headless=False),
                 widgets.slice_viewer(volume, truth.astype(np.uint8), headless=False)):
        assert isinstance(live, widgets.LiveViewer) and callable(live)
        assert "function" not in repr(live), "a viewer must not print <function ...> under its widget"


def test_timing_line_comes_from_the_run_not_from_prose(tmp_path):
    from types import SimpleNamespace

    from tofmra_utils.coursekit import SESSION_MINUTES, timing_markdown
    from tofmra_utils.profiles import get_profile
    from tofmra_utils.runs import RunPaths

    paths = RunPaths(tmp_path / "run").ensure()
    ctx = SimpleNamespace(name="05_unet_synthetic_vs_real", paths=paths, profile=get_profile("course"))
    assert "not yet measured" in timing_markdown(ctx)
    paths.notebooks_dir.mkdir()
    (paths.notebooks_dir / "05_unet_synthetic_vs_real.ipynb").write_text(json.dumps(
        {"cells": [], "metadata": {"papermill": {"duration": 90.0}}}))
    assert "1.5 min" in timing_markdown(ctx), "the previous executed copy's duration while tofmra run reruns it"
    paths.summary_file.write_text(json.dumps({"notebooks": {"05_unet_synthetic_vs_real": {"status": "ok", "seconds": 330.0}}}))
    line = timing_markdown(ctx)
    assert "5.5 min" in line and f"about {SESSION_MINUTES['05']} min" in line and "`course`" in line


def test_override_profile_changes_nested_settings_without_touching_the_package():
    from tofmra_utils.notebook import override_profile
    from tofmra_utils.profiles import get_profile

    course = get_profile("course")
    p = override_profile(course, unet__max_steps=20, gan__variants__dcgan__lr=1e-4, transfer__pretrained_gan="dcgan",
                         **{"gan.label_threshold": 0.5})
    assert (p.unet.max_steps, p.gan.variants["dcgan"].lr, p.transfer.pretrained_gan, p.gan.label_threshold) == (
        20, 1e-4, "dcgan", 0.5)
    assert p.gan.variants["wgan_gp"] == course.gan.variants["wgan_gp"], "other variants are untouched"
    assert get_profile("course") == course and course.unet.max_steps != 20, "the package's profile is unchanged"
    with pytest.raises(KeyError, match="unet.maxsteps: no such setting; choose one of .*max_steps"):
        override_profile(course, unet__maxsteps=1)
    with pytest.raises(KeyError, match="no such entry; choose one of dcgan, wgan_gp, wgan_gp_sn"):
        override_profile(course, gan__variants__biggan__lr=1.0)


def test_the_book_shows_the_measured_compute_time(tmp_path):
    """A notebook writes its timing line before summary.json holds its own time; the book, staged
    after the run, must show the measured time instead of 'not yet measured'."""
    import json as _json

    from tofmra_utils.book import prepare_notebook
    from tofmra_utils.coursekit import timing_line

    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(_json.dumps(
        {"profile": "course", "notebooks": {"03_wgan_gp": {"status": "ok", "seconds": 223.2}}}))
    line = timing_line("03_wgan_gp", "course", None)
    assert "not yet measured" in line
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "display(Markdown(timing_markdown(ctx)))",
                     "outputs": [{"output_type": "display_data", "metadata": {},
                                  "data": {"text/markdown": line, "text/plain": "<Markdown>"}}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    page = tmp_path / "03_wgan_gp.ipynb"
    page.write_text(_json.dumps(nb))
    prepare_notebook(page, run, [])
    shown = _json.loads(page.read_text())["cells"][0]["outputs"][0]["data"]["text/markdown"]
    assert shown == timing_line("03_wgan_gp", "course", 223.2) and "3.7 min" in shown
