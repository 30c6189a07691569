"""Student and instructor copies of the notebooks, made by a tool from the notebooks themselves.

Exercise convention (every numbered notebook follows it)::

    markdown   "### Exercise N: <title>" and the task
    code       tagged ``solution``: optional starter lines, then the worked solution between
               the lines ``# BEGIN SOLUTION`` and ``# END SOLUTION``, then optional lines
    code       tagged ``exercise-check``: asserts a student can run on their own answer

:func:`write_course_kit` (``tofmra course-kit --out DIR``) writes

``DIR/student/``
    every ``notebooks/NN_*.ipynb`` with each solution region replaced by
    ``raise NotImplementedError("Exercise N")`` and all outputs cleared;
``DIR/instructor/``
    the notebooks as they are, plus ``SOLUTIONS.md``, the solutions appendix (task and worked
    solution of every exercise, notebook by notebook).

The kit is built in a temporary folder beside ``DIR`` and renamed into place, so a failure
leaves no half-written kit; a folder that is not an earlier kit is never overwritten.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import DataError
from .runs import repo_root

__all__ = [
    "BEGIN", "END", "Exercise", "find_notebooks", "notebook_exercises", "student_notebook", "write_course_kit",
    "KIT_MARKER", "solution_leaks", "SESSION_MINUTES", "compute_seconds", "executed_seconds",
    "timing_markdown",
]

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
SOLUTION_TAG = "solution"
CHECK_TAG = "exercise-check"
#: File that marks a folder as a course kit this tool wrote (so rebuilding may replace it).
KIT_MARKER = ".tofmra-course-kit"

_HEADING = re.compile(r"^###\s+Exercise\s+(\d+)\s*:\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Exercise:
    """One exercise of a notebook.

    Attributes
    ----------
    number, title
        From the heading ``### Exercise N: <title>``.
    task
        The heading cell's markdown (the task as the student reads it).
    solution
        The worked solution: the lines strictly between ``# BEGIN SOLUTION`` and ``# END SOLUTION``.
    solution_cell, check_cell
        Indices of the ``solution`` and ``exercise-check`` cells in the notebook.
    """

    number: int
    title: str
    task: str
    solution: str
    solution_cell: int
    check_cell: int


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def find_notebooks(source: str | os.PathLike[str] | None = None) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` of ``source`` (default ``<repo>/notebooks``), sorted."""
    folder = Path(source) if source else repo_root() / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def _read_notebook(path: Path) -> dict[str, Any]:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(path, f"not a readable notebook ({err})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise DataError(path, "not a notebook: no 'cells' list")
    return nb


def _solution_span(lines: list[str], path: Path, cell: int) -> tuple[int, int]:
    """Line indices of the BEGIN and END markers of a solution cell (exactly one of each, in order)."""
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise DataError(path, f"cell {cell} is tagged '{SOLUTION_TAG}' but does not hold one '{BEGIN}' line "
                              f"followed by one '{END}' line")
    return begins[0], ends[0]


def notebook_exercises(nb: dict[str, Any], path: str | os.PathLike[str] = "<notebook>") -> list[Exercise]:
    """The exercises of a notebook, checked against the convention.

    Raises
    ------
    DataError
        Naming the notebook and cell: a solution cell without its markers or without an exercise
        heading before it, an exercise heading without exactly one solution cell and one
        ``exercise-check`` cell after it, or an exercise number used twice.
    """
    path = Path(path)
    cells = nb["cells"]
    found: list[Exercise] = []
    heading_cells = [i for i, c in enumerate(cells) if c.get("cell_type") == "markdown" and _HEADING.search(_source(c))]
    for k, start in enumerate(heading_cells):
        stop = heading_cells[k + 1] if k + 1 < len(heading_cells) else len(cells)
        match = _HEADING.search(_source(cells[start]))
        assert match is not None
        number, title = int(match.group(1)), match.group(2)
        solutions = [i for i in range(start + 1, stop) if SOLUTION_TAG in _tags(cells[i])]
        checks = [i for i in range(start + 1, stop) if CHECK_TAG in _tags(cells[i])]
        if len(solutions) != 1 or len(checks) != 1 or checks[0] < solutions[0]:
            raise DataError(path, f"exercise {number} (cell {start}) needs exactly one code cell tagged "
                                  f"'{SOLUTION_TAG}' followed by one tagged '{CHECK_TAG}' before the next exercise; "
                                  f"found {len(solutions)} and {len(checks)}")
        lines = _source(cells[solutions[0]]).splitlines()
        b, e = _solution_span(lines, path, solutions[0])
        solution = "\n".join(lines[b + 1:e])
        if not solution.strip():
            raise DataError(path, f"exercise {number}: the solution region of cell {solutions[0]} is empty")
        if any(ex.number == number for ex in found):
            raise DataError(path, f"exercise number {number} is used twice")
        found.append(Exercise(number, title, _source(cells[start]), solution, solutions[0], checks[0]))
    claimed = {ex.solution_cell for ex in found}
    for i, c in enumerate(cells):
        if SOLUTION_TAG in _tags(c) and i not in claimed:
            raise DataError(path, f"cell {i} is tagged '{SOLUTION_TAG}' but no '### Exercise N: <title>' heading precedes it")
    return found


def _clear_outputs(cell: dict[str, Any]) -> None:
    if cell.get("cell_type") == "code":
        cell["outputs"] = []
        cell["execution_count"] = None
    cell.get("metadata", {}).pop("execution", None)
    cell.get("metadata", {}).pop("papermill", None)


def student_notebook(nb: dict[str, Any], path: str | os.PathLike[str] = "<notebook>") -> dict[str, Any]:
    """A copy of ``nb`` with every solution region replaced by its stub and all outputs cleared.

    The solution and check cells get the tag ``raises-exception``, so running the whole student
    notebook (nbval, "Run All" in papermill) gets past an exercise not yet done.
    """
    student = copy.deepcopy(nb)
    for ex in notebook_exercises(nb, path):
        cell = student["cells"][ex.solution_cell]
        lines = _source(cell).splitlines()
        b, e = _solution_span(lines, Path(path), ex.solution_cell)
        indent = lines[b][: len(lines[b]) - len(lines[b].lstrip())]
        stub = [*lines[:b], f"{indent}# Your code here (exercise {ex.number}); then run the check below.",
                f'{indent}raise NotImplementedError("Exercise {ex.number}")', *lines[e + 1:]]
        cell["source"] = "\n".join(stub)
        for i in (ex.solution_cell, ex.check_cell):
            tags = student["cells"][i].setdefault("metadata", {}).setdefault("tags", [])
            if "raises-exception" not in tags:
                tags.append("raises-exception")
    for cell in student["cells"]:
        _clear_outputs(cell)
    student.get("metadata", {}).pop("papermill", None)
    return student


def _solutions_appendix(per_notebook: list[tuple[str, list[Exercise]]]) -> str:
    parts = ["# Solutions appendix\n",
             "Generated by `tofmra course-kit` from the notebooks' `solution` cells; do not edit by hand. "
             "Every solution here is executed by `make test` (instructor notebooks, smoke profile).\n"]
    for stem, exercises in per_notebook:
        parts.append(f"\n## {stem}\n")
        if not exercises:
            parts.append("\nNo exercises.\n")
        for ex in exercises:
            task = _HEADING.sub("", ex.task, count=1).strip()
            parts.append(f"\n### Exercise {ex.number}: {ex.title}\n\n{task}\n\n```python\n{ex.solution}\n```\n")
    return "".join(parts)


def _readme(per_notebook: list[tuple[str, list[Exercise]]]) -> str:
    rows = "\n".join(f"| {stem} | {len(ex)} | {', '.join(e.title for e in ex) or '-'} |" for stem, ex in per_notebook)
    return ("# Course kit\n\nMade by `tofmra course-kit`; rebuild it instead of editing it.\n\n"
            "* `student/`: hand this to the class. Each exercise cell raises `NotImplementedError` until the student "
            "replaces the stub; the `exercise-check` cell below it tests the answer. Copy the notebooks into the "
            "`notebooks/` folder of a checkout of the repository (they import `tofmra_utils`).\n"
            "* `instructor/`: the notebooks with worked solutions, and `SOLUTIONS.md`.\n\n"
            "| notebook | exercises | titles |\n|---|---|---|\n" + rows + "\n")


def _write_json(path: Path, nb: dict[str, Any]) -> None:
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_course_kit(out: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> dict[str, list[int]]:
    """Write ``out/student/``, ``out/instructor/`` (with ``SOLUTIONS.md``) and ``out/README.md``.

    Parameters
    ----------
    out
        The kit folder. Replaced if it holds an earlier kit; refused if it holds anything else.
    source
        Folder of the numbered notebooks (default ``<repo>/notebooks``).

    Returns
    -------
    dict
        Exercise numbers per notebook stem.

    Raises
    ------
    DataError
        No notebooks in ``source``, a notebook breaking the exercise convention, solution text
        left in a student copy, or ``out`` being a non-empty folder that is not a kit.
    """
    out = Path(out)
    notebooks = find_notebooks(source)
    if not notebooks:
        raise DataError(Path(source) if source else repo_root() / "notebooks", "no numbered notebooks NN_*.ipynb found")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / KIT_MARKER).exists())):
        raise DataError(out, "exists and is not a course kit made by this tool; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        (tmp / "student").mkdir()
        (tmp / "instructor").mkdir()
        per_notebook: list[tuple[str, list[Exercise]]] = []
        for path in notebooks:
            nb = _read_notebook(path)
            exercises = notebook_exercises(nb, path)
            student = student_notebook(nb, path)
            leaked = solution_leaks(student, nb, exercises)
            if leaked:
                raise DataError(path, f"solution text survived in the student copy: {leaked[0]!r}")
            _write_json(tmp / "student" / path.name, student)
            shutil.copy2(path, tmp / "instructor" / path.name)
            per_notebook.append((path.stem, exercises))
        (tmp / "instructor" / "SOLUTIONS.md").write_text(_solutions_appendix(per_notebook), encoding="utf-8")
        (tmp / "README.md").write_text(_readme(per_notebook), encoding="utf-8")
        (tmp / KIT_MARKER).write_text("made by tofmra course-kit\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {stem: [ex.number for ex in exercises] for stem, exercises in per_notebook}


def solution_leaks(student: dict[str, Any], original: dict[str, Any], exercises: list[Exercise]) -> list[str]:
    """Solution lines that survive in the student notebook.

    A solution line counts when it has at least 12 characters, is not a comment, and does not
    occur anywhere in the original notebook outside the solution regions (an import or a load
    the rest of the notebook shows anyway is no leak; text only a solution had is).
    """
    regions = {ex.solution_cell for ex in exercises}
    outside: set[str] = set()
    for i, c in enumerate(original["cells"]):
        lines = _source(c).splitlines()
        if i in regions:
            b, e = _solution_span(lines, Path("<notebook>"), i)
            lines = lines[:b] + lines[e + 1:]
        outside.update(line.strip() for line in lines)
    present = {line.strip() for c in student["cells"] for line in _source(c).splitlines()}
    leaks = []
    for ex in exercises:
        for line in ex.solution.splitlines():
            s = line.strip()
            if len(s) >= 12 and not s.startswith("#") and s in present and s not in outside:
                leaks.append(s)
    return leaks


#: Class time planned per notebook in minutes (reading, discussion and exercises; compute
#: excluded): a course-design choice of the instructor guide, not a result.
SESSION_MINUTES: dict[str, int] = {
    "00": 15, "01": 30, "02": 30, "03": 30, "04": 25, "05": 40, "06": 35, "07": 30, "08": 30,
}


def compute_seconds(summary_file: str | os.PathLike[str], notebook: str) -> float | None:
    """Seconds ``notebook`` took in the run recorded by ``summary.json`` (``None``: not recorded, or failed)."""
    path = Path(summary_file)
    if not path.exists():
        return None
    try:
        entry = json.loads(path.read_text()).get("notebooks", {}).get(notebook, {})
    except (OSError, json.JSONDecodeError):
        return None
    seconds = entry.get("seconds") if entry.get("status") == "ok" else None
    return float(seconds) if seconds is not None else None


def executed_seconds(notebook: str | os.PathLike[str]) -> float | None:
    """Duration papermill recorded in an executed notebook's metadata (``None`` when absent)."""
    path = Path(notebook)
    if not path.exists():
        return None
    try:
        duration = json.loads(path.read_text()).get("metadata", {}).get("papermill", {}).get("duration")
    except (OSError, json.JSONDecodeError):
        return None
    return float(duration) if isinstance(duration, (int, float)) else None


def timing_markdown(ctx: Any) -> str:
    """The timing line a notebook shows under its objectives (markdown).

    Class time comes from :data:`SESSION_MINUTES`; compute time from this run folder's
    ``summary.json`` or, while ``tofmra run`` reruns the notebook, from the previous executed
    copy's papermill metadata; else it says it is not measured yet rather than guessing (the
    book, staged after the run, puts the measured time in: :func:`timing_line`).
    """
    seconds = compute_seconds(ctx.paths.summary_file, ctx.name)
    if seconds is None:
        # `tofmra run` marks the notebook it is running in summary.json, but the executed copy of
        # the previous run stays until this run finishes: papermill recorded its duration there.
        seconds = executed_seconds(ctx.paths.notebooks_dir / f"{ctx.name}.ipynb")
    return timing_line(ctx.name, ctx.profile.name, seconds)


def timing_line(notebook: str, profile: str, seconds: float | None) -> str:
    """``**Timing.** <class time>; <compute time>.`` for ``notebook`` (``NN_name``) at ``profile``."""
    minutes = SESSION_MINUTES.get(notebook[:2])
    plan = f"about {minutes} min of reading, discussion and exercises" if minutes else "no class time planned"
    if seconds is None:
        compute = (f"compute time at the `{profile}` profile: not yet measured in this run folder "
                   "(`tofmra run` records it in `summary.json`)")
    else:
        compute = f"compute time at the `{profile}` profile in this run folder's last run: {seconds / 60:.1f} min"
    return f"**Timing.** {plan}; {compute}."
