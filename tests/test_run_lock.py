"""One run folder, one ``tofmra run``: the lock file ``<run>/.tofmra-run.lock``."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tofmra_utils.cli import main
from tofmra_utils.pipeline import PipelineError, RunLockedError, run_lock, run_pipeline
from tofmra_utils.runs import RunPaths


def _write_lock(paths: RunPaths, pid: int, host: str | None = None, started: str | None = None) -> None:
    """A lock as another run writes it (started now unless given)."""
    holder = {"pid": pid, "host": host or socket.gethostname(),
              "started": started or datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "tofmra run --profile smoke"}
    paths.lock_file.write_text(json.dumps(holder))


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture()
def paths(tmp_path) -> RunPaths:
    return RunPaths(tmp_path / "run").ensure()


def test_lock_is_held_during_the_block_and_removed_after(paths):
    assert paths.lock_file == paths.root / ".tofmra-run.lock"
    with run_lock(paths, command="tofmra run --only 01") as held:
        on_disk = json.loads(paths.lock_file.read_text())
        assert on_disk == held
        assert on_disk["pid"] == os.getpid() and on_disk["host"] == socket.gethostname()
        assert on_disk["command"] == "tofmra run --only 01" and on_disk["started"]
    assert not paths.lock_file.exists()


def test_a_live_holder_makes_a_second_run_fail_at_once(paths):
    _write_lock(paths, os.getpid())
    with pytest.raises(RunLockedError) as caught:
        with run_lock(paths):
            pytest.fail("the block must not run while another process holds the lock")
    message = str(caught.value)
    assert str(paths.root) in message and f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "\n" not in message
    assert json.loads(paths.lock_file.read_text())["pid"] == os.getpid(), "the holder's lock stays"


def test_cli_refuses_a_locked_run_folder_with_exit_2(paths, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no notebooks here: the lock is checked before anything else
    _write_lock(paths, os.getpid())
    code = main(["run", "--profile", "smoke", "--out", str(paths.root)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tofmra run: {paths.root}: run folder in use by another tofmra run (pid {os.getpid()}")
    assert len(err.splitlines()) == 1, err
    assert not (paths.root / "summary.json").exists(), "nothing written into the held folder"


def test_a_live_pid_younger_than_the_lock_is_a_reused_pid(paths, capsys):
    """After a reboot the dead run's pid may name another process, started after the lock was written."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs Linux /proc")
    _write_lock(paths, os.getpid(), started="2024-01-01T10:00:00")  # long before this test process started
    with run_lock(paths):
        pass
    assert "taking over the stale lock" in capsys.readouterr().err


def test_a_lock_from_another_host_is_not_taken_over(paths):
    _write_lock(paths, _dead_pid(), host="some-other-host.invalid")
    with pytest.raises(RunLockedError, match=r"on host some-other-host\.invalid.*delete .*\.tofmra-run\.lock"):
        with run_lock(paths):
            pass


def test_a_stale_lock_of_a_dead_pid_is_taken_over(paths, capsys):
    dead = _dead_pid()
    _write_lock(paths, dead)
    with run_lock(paths):
        assert json.loads(paths.lock_file.read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err.strip()
    assert f"taking over the stale lock of a run that no longer runs (pid {dead} on host" in err
    assert len(err.splitlines()) == 1, err
    assert not paths.lock_file.exists()


def test_an_unreadable_lock_is_held_while_fresh_and_taken_over_when_old(paths):
    paths.lock_file.write_text("")  # another run between creating and writing its lock
    with pytest.raises(RunLockedError, match="another tofmra run is starting"):
        with run_lock(paths):
            pass
    old = time.time() - 3600
    os.utime(paths.lock_file, (old, old))
    with run_lock(paths):
        assert json.loads(paths.lock_file.read_text())["pid"] == os.getpid()
    assert not paths.lock_file.exists()


def test_the_lock_is_released_when_a_run_raises(paths, tmp_path):
    with pytest.raises(PipelineError, match="notebooks folder not found"):
        run_pipeline("smoke", out=paths.root, notebooks_dir=tmp_path / "missing", log=lambda s: None)
    assert not paths.lock_file.exists()
    with pytest.raises(KeyboardInterrupt):
        with run_lock(paths):
            raise KeyboardInterrupt
    assert not paths.lock_file.exists()


def test_a_lock_replaced_by_hand_is_left_alone(paths):
    """Someone deleted our lock and another run took the folder: its lock must survive our end."""
    with run_lock(paths):
        _write_lock(paths, 1)
    assert json.loads(paths.lock_file.read_text())["pid"] == 1
