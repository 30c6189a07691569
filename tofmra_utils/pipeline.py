"""Run the numbered notebooks in order with papermill: the whole study with one command.

``tofmra run --profile course`` executes ``notebooks/NN_*.ipynb`` in number order, passes each
the profile and run folder as papermill parameters, writes executed notebooks to
``runs/<profile>/notebooks/`` and keeps ``runs/<profile>/summary.json`` up to date after every
notebook (status, wall time, the key results the notebook recorded).

Three rules papermill does not enforce on its own:

* An unknown ``-p NAME=VALUE`` is an error, raised before anything runs (papermill only warns).
  The runner's own options (``--data``, ``--data-b``) go only to the notebooks declaring them.
* One run folder, one ``tofmra run`` at a time: a second run on the same folder stops at once,
  naming the process that holds ``<run>/.tofmra-run.lock`` (a lock left by a killed run is taken over).
* A failing notebook stops the run, naming the notebook and the failing cell; the results of
  the notebooks before it stay, and the failed execution is kept as ``<name>.failed.ipynb``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .io import read_json, write_json
from .progress import ENV as PROGRESS_ENV
from .progress import ProgressWatcher
from .profiles import get_profile
from .runlock import RunLockedError, run_lock
from .runs import RunPaths, default_run_dir, repo_commit, repo_root

__all__ = [
    "PipelineError",
    "RunLockedError",
    "run_lock",
    "discover_notebooks",
    "select_notebooks",
    "notebook_parameters",
    "parse_parameters",
    "plan_parameters",
    "run_pipeline",
]

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")
#: Parameters every numbered notebook declares; the runner always passes them.
STANDARD_PARAMETERS = ("profile", "run_dir")
#: Runner options that become parameters of the notebooks declaring them (the others never see them).
DATA_PARAMETERS = {"data_dir": "--data", "site_b_dir": "--data-b"}


class PipelineError(RuntimeError):
    """A run could not start or a notebook failed; the message says which and where."""


def discover_notebooks(notebooks_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) of ``notebooks_dir``, in number order."""
    nb_dir = Path(notebooks_dir) if notebooks_dir else repo_root() / "notebooks"
    if not nb_dir.is_dir():
        raise PipelineError(f"{nb_dir}: notebooks folder not found (run from the repository)")
    found = sorted(p for p in nb_dir.iterdir() if NOTEBOOK_PATTERN.match(p.name))
    if not found:
        raise PipelineError(f"{nb_dir}: no numbered notebooks (NN_name.ipynb)")
    return found


def select_notebooks(notebooks: Sequence[Path], only: str | Sequence[str] | None) -> list[Path]:
    """Keep the notebooks whose number is in ``only`` (``"01,05"`` or ``["01", "5"]``)."""
    if not only:
        return list(notebooks)
    wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only) if w.strip()]
    by_number = {NOTEBOOK_PATTERN.match(p.name).group(1): p for p in notebooks}  # type: ignore[union-attr]
    chosen = []
    for w in wanted:
        key = w.zfill(2)
        if key not in by_number:
            raise PipelineError(f"--only {w}: no notebook numbered {key} (have {', '.join(sorted(by_number))})")
        chosen.append(by_number[key])
    return sorted(set(chosen))


def notebook_parameters(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parameters declared in a notebook's ``parameters`` cell (name -> default as written)."""
    import papermill

    try:
        declared = papermill.inspect_notebook(str(path))
    except Exception as err:
        raise PipelineError(f"{path}: cannot read its parameters ({err})") from None
    return {name: info.get("default") for name, info in declared.items()}


def parse_parameters(pairs: Sequence[str]) -> dict[str, Any]:
    """``["epochs=3", "name=x"]`` -> ``{"epochs": 3, "name": "x"}`` (values parsed as YAML scalars)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise PipelineError(f"-p {pair!r}: expected NAME=VALUE with a Python identifier as NAME")
        params[name] = yaml.safe_load(value) if value else ""
    return params


def plan_parameters(
    notebooks: Sequence[Path],
    standard: dict[str, Any],
    extra: dict[str, Any],
    options: dict[str, Any] | None = None,
) -> dict[Path, dict[str, Any]]:
    """Decide what each notebook receives; raise on a user parameter no notebook declares.

    Parameters
    ----------
    notebooks
        The selected notebooks.
    standard
        Parameters every notebook must declare and always receives (profile, run_dir).
    extra
        The user's ``-p NAME=VALUE`` parameters: each goes to the notebooks declaring it and must
        be declared by at least one selected notebook.
    options
        Parameters the runner sets from its own options (``data_dir``, ``site_b_dir``): each goes
        to the notebooks declaring it, silently skipping the others, since rerunning later
        notebooks of a ``--data`` run (``--only 02,03``) must not fail on notebooks that never
        read the data. They win over an ``extra`` of the same name.

    Returns
    -------
    Notebook -> the parameters papermill injects into it.

    Raises
    ------
    PipelineError
        A notebook does not declare a standard parameter, or an ``extra`` name is declared by no
        selected notebook.
    """
    options = dict(options or {})
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    for nb, names in declared.items():
        missing = [k for k in standard if k not in names]
        if missing:
            raise PipelineError(f"{nb.name}: its parameters cell does not declare {', '.join(missing)}")
    for name in extra:
        if not any(name in names for names in declared.values()):
            known = sorted({n for names in declared.values() for n in names})
            raise PipelineError(
                f"unknown parameter {name!r}: no selected notebook declares it (known: {', '.join(known)})"
            )
    return {
        nb: {**standard, **{k: v for k, v in {**extra, **options}.items() if k in names}}
        for nb, names in declared.items()
    }


def _failure_message(nb: Path, err: BaseException, executed: Path) -> tuple[str, dict[str, Any]]:
    """Name the notebook and the failing cell of a papermill error."""
    info: dict[str, Any] = {"error": f"{type(err).__name__}"}
    cell = None
    try:
        import nbformat

        done = nbformat.read(str(executed), as_version=4)
        # Count cells as in the source notebook: skip the cells papermill inserts.
        inserted = {"injected-parameters", "papermill-error-cell-tag"}
        own = [c for c in done.cells if not inserted & set(c.get("metadata", {}).get("tags", []))]
        for index, c in enumerate(own):
            if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", [])):
                cell = (index, c.get("execution_count"), c.source.strip().splitlines()[:1])
                break
    except Exception:  # the executed file may be missing if the kernel died early
        pass
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    where = f"cell {cell[0]} (In [{cell[1]}]: {cell[2][0] if cell[2] else ''!s})" if cell else "before any cell ran"
    info.update({"error": f"{ename}: {evalue}", "cell_index": cell[0] if cell else None})
    return f"notebook {nb.stem} failed in {where}: {ename}: {evalue}", info


def _base_summary(paths: RunPaths, profile: str) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    if paths.summary_file.exists():
        try:
            summary = read_json(paths.summary_file)
        except Exception:
            summary = {}
    summary.update(
        {
            "profile": profile,
            "run_dir": str(paths.root),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
            "commit": repo_commit(),
        }
    )
    summary.setdefault("notebooks", {})
    return summary


def _execute(
    nb: Path, parameters: dict[str, Any], paths: RunPaths, nb_dir: Path, summary: dict[str, Any]
) -> tuple[str | None, dict[str, Any], float]:
    """Run one notebook with papermill and record it in ``summary`` (written after each change).

    Returns (failure message or ``None``, failure info, seconds). The executed copy replaces the
    previous one only on success; a failed execution is kept as ``<name>.failed.ipynb``.
    """
    import papermill

    t0 = time.perf_counter()
    entry: dict[str, Any] = {"status": "running", "parameters": parameters}
    summary["notebooks"][nb.stem] = entry
    write_json(paths.summary_file, summary)
    tmp = paths.notebooks_dir / f".{nb.stem}.partial.ipynb"
    failed_copy = paths.notebooks_dir / f"{nb.stem}.failed.ipynb"
    try:
        papermill.execute_notebook(
            str(nb), str(tmp), parameters=parameters, cwd=str(nb_dir), kernel_name="python3",
            progress_bar=False, log_output=False, report_mode=False, config=_kernel_config(),
        )
    except Exception as err:  # a failing cell (PapermillExecutionError), kernel death, missing kernel, ...
        message, info = _failure_message(nb, err, tmp)
        if tmp.exists():
            os.replace(tmp, failed_copy)
            info["executed"] = str(failed_copy)
        seconds = time.perf_counter() - t0
        entry.update(status="failed", seconds=round(seconds, 1), **info)
        return message, info, seconds
    target = paths.notebooks_dir / nb.name
    os.replace(tmp, target)
    seconds = time.perf_counter() - t0
    failed_copy.unlink(missing_ok=True)
    results_file = paths.results_file(nb.stem)
    entry.update(status="ok", seconds=round(seconds, 1), executed=str(target),
                 results=read_json(results_file) if results_file.exists() else {})
    write_json(paths.summary_file, summary)
    return None, {}, seconds


#: Seconds between two looks at a running notebook's progress (:mod:`tofmra_utils.progress`).
PROGRESS_EVERY = 30.0


def _kernel_config() -> Any:
    """Kernels talk to papermill over encrypted sockets where the kernel supports it (CurveZMQ):
    ipykernel >= 7.3 otherwise warns, once per notebook, that the kernel runs over TCP unencrypted."""
    from traitlets.config import Config  # installed with papermill's Jupyter stack

    return Config({"KernelManager": {"transport_encryption": "auto"}})


def run_pipeline(
    profile: str = "course",
    out: str | os.PathLike[str] | None = None,
    only: str | Sequence[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    site_b_dir: str | os.PathLike[str] | None = None,
    parameters: dict[str, Any] | None = None,
    book: bool = False,
    notebooks_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
    threads: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Execute the numbered notebooks in order; return (and write) the run summary.

    Parameters
    ----------
    profile
        ``smoke``, ``course`` or ``paper``.
    out
        Run folder (default ``runs/<profile>``).
    only
        Notebook numbers to run (``"01,05"``); default all.
    data_dir, site_b_dir
        Folders of real NIfTI volumes for sites A and B, passed to the notebooks that declare
        ``data_dir`` / ``site_b_dir`` (the others do not receive them, and that is no error);
        default: the built-in phantom.
    parameters
        Further notebook parameters (``-p``); each must be declared by a selected notebook.
    book
        Build the Jupyter Book from the executed notebooks afterwards.
    threads
        CPU threads for torch in every notebook (``TOFMRA_THREADS``, read by
        :func:`~tofmra_utils.notebook.setup_notebook`); default: an inherited ``TOFMRA_THREADS``,
        else torch's own choice. Results are bit-exact for one machine and thread count; another
        thread count changes floating-point summation order, so numbers move within their spread.
    seed
        Training seed of the GANs, U-nets and transfer runs (``TOFMRA_SEED``, read by
        :func:`~tofmra_utils.notebook.setup_notebook`); default: the profile's seed. The data
        (subjects, split, patches) always come from the profile's seed, so runs with different
        seeds differ only in training randomness: repeat a run with 3 seeds to see the spread.

    Returns
    -------
    The summary dict, also written to ``<run>/summary.json``: ``status`` ("ok" or "failed"),
    ``failed`` (message or None), and per notebook its status, seconds and key results.

    Raises
    ------
    RunLockedError
        Another live ``tofmra run`` is writing into the same run folder.
    PipelineError
        Bad input found before any notebook runs (unknown ``-p`` parameter, ``--only`` number,
        notebooks folder). A failing notebook does not raise: it sets ``status`` to "failed".
    """
    get_profile(profile)  # fail early on an unknown profile
    paths = RunPaths(Path(out) if out else default_run_dir(profile)).ensure()
    # Before anything reads or writes the folder: a second run on it must stop at once.
    with run_lock(paths):
        before = os.environ.get("TOFMRA_SEED")
        if seed is not None:
            os.environ["TOFMRA_SEED"] = str(int(seed))
        try:
            return _run_locked(profile, paths, only, data_dir, site_b_dir, parameters, book, notebooks_dir, log, threads)
        finally:  # the seed and the progress file belong to this run, not to the calling process
            os.environ.pop(PROGRESS_ENV, None)
            if before is None:
                os.environ.pop("TOFMRA_SEED", None)
            else:
                os.environ["TOFMRA_SEED"] = before


def _run_locked(
    profile: str,
    paths: RunPaths,
    only: str | Sequence[str] | None,
    data_dir: str | os.PathLike[str] | None,
    site_b_dir: str | os.PathLike[str] | None,
    parameters: dict[str, Any] | None,
    book: bool,
    notebooks_dir: str | os.PathLike[str] | None,
    log: Callable[[str], None],
    threads: int | None,
) -> dict[str, Any]:
    """The body of :func:`run_pipeline`, run while holding the run folder's lock."""
    nb_dir = Path(notebooks_dir) if notebooks_dir else repo_root() / "notebooks"
    selected = select_notebooks(discover_notebooks(nb_dir), only)
    options = {
        key: str(Path(value).resolve())
        for key, value in (("data_dir", data_dir), ("site_b_dir", site_b_dir))
        if value
    }
    plan = plan_parameters(selected, {"profile": profile, "run_dir": str(paths.root)}, dict(parameters or {}), options)

    paths.notebooks_dir.mkdir(parents=True, exist_ok=True)
    summary = _base_summary(paths, profile)
    summary.update(status="running", failed=None, started=_dt.datetime.now().isoformat(timespec="seconds"))
    write_json(paths.summary_file, summary)
    if threads is not None:
        if threads < 1:
            raise PipelineError(f"threads must be >= 1, got {threads}")
        os.environ["TOFMRA_THREADS"] = str(int(threads))
    summary["threads"] = os.environ.get("TOFMRA_THREADS") or f"torch default ({os.cpu_count()} CPU cores)"
    summary["seed"] = int(os.environ.get("TOFMRA_SEED") or get_profile(profile).seed)
    # Widgets must not wait for a browser inside papermill's kernels (they inherit this).
    os.environ["TOFMRA_HEADLESS"] = "1"
    # ... and must draw figures inline (an inherited MPLBACKEND=Agg would drop them from the book).
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    # The trainers in the kernels report their step here; a watcher prints it (tofmra_utils.progress).
    progress_file = paths.root / ".progress.json"
    os.environ[PROGRESS_ENV] = str(progress_file)
    log(f"tofmra run: profile {profile}, {len(selected)} notebook(s) -> {paths.root}")
    t_run = time.perf_counter()
    for i, nb in enumerate(selected, 1):
        tag = f"[{i}/{len(selected)}] {nb.stem}"
        log(f"{tag} ...")
        with ProgressWatcher(progress_file, log, every=PROGRESS_EVERY):
            message, info, seconds = _execute(nb, plan[nb], paths, nb_dir, summary)
        if message is not None:
            summary.update(status="failed", failed=message, total_seconds=round(time.perf_counter() - t_run, 1))
            write_json(paths.summary_file, summary)
            log(f"{tag} FAILED after {seconds:.1f} s: {message}")
            log(f"executed notebook with the error: {info.get('executed', 'not written')}")
            return summary
        log(f"{tag} ok in {seconds:.1f} s")
    summary.update(
        status="ok",
        total_seconds=round(time.perf_counter() - t_run, 1),
        finished=_dt.datetime.now().isoformat(timespec="seconds"),
    )
    from .cleanup import folder_bytes, human_bytes, removable_files

    summary["run_folder_bytes"] = folder_bytes(paths.root)
    removable = sum(f.stat().st_size for f in removable_files(paths.root))
    write_json(paths.summary_file, summary)
    log(f"tofmra run: all {len(selected)} notebook(s) ok in {summary['total_seconds']:.1f} s; summary: {paths.summary_file}")
    log(f"run folder: {human_bytes(summary['run_folder_bytes'])}; `tofmra clean --run {paths.root}` frees "
        f"{human_bytes(removable)} of checkpoints and data and keeps results, figures and notebooks")
    if book:
        from .book import build_book

        html = build_book(paths.root)
        summary["book"] = str(html)
        write_json(paths.summary_file, summary)
        log(f"book: {html}")
    return summary


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `tofmra run` command")
