"""One ``tofmra run`` per run folder: a lock file that names its holder, and takes over stale ones.

A class double-clicks, and JupyterLab runs notebooks while the pipeline runs: two runs writing
into one folder would corrupt each other's files. :func:`run_lock` creates
``<run>/.tofmra-run.lock`` atomically (``O_CREAT | O_EXCL``) holding the holder's pid, host,
start time and command; a second run stops at once naming that holder, while a lock whose pid no
longer runs on this host (a killed run) is taken over with one line on standard error.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .runs import RunPaths

__all__ = ["RunLockedError", "run_lock"]

#: An unreadable lock younger than this may be one another run is writing right now.
_LOCK_GRACE_SECONDS = 10.0


class RunLockedError(RuntimeError):
    """Another live ``tofmra run`` holds the run folder's lock."""


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` is running on this host."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _started_after(pid: int, when: str) -> bool:
    """Whether process ``pid`` started after the ISO time ``when`` (Linux ``/proc``; else False).

    A lock's pid may belong to a new, unrelated process after a reboot or pid wrap-around; a
    process younger than the lock cannot be the run that wrote it.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks after boot
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        started = _dt.datetime.fromisoformat(when).timestamp()
    except (OSError, ValueError, IndexError, StopIteration, TypeError):
        return False
    # The lock is written after its process starts; 2 s absorb the lock's whole-second time.
    return boot + ticks / os.sysconf("SC_CLK_TCK") > started + 2


def _read_lock(lock: Path) -> dict[str, Any] | None:
    """The lock's JSON, or ``None`` when it is unreadable (half written, or damaged)."""
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _holder_text(holder: dict[str, Any]) -> str:
    """``pid 123 on host h, started 2024-..., command: tofmra run ...``."""
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}, "
            f"command: {holder.get('command')}")


@contextlib.contextmanager
def run_lock(paths: RunPaths, command: str | None = None) -> Iterator[dict[str, Any]]:
    """Hold ``paths.lock_file`` while the block runs, so one run folder has one writer.

    The lock is created atomically (``O_CREAT | O_EXCL``) and holds JSON with pid, host, start
    time and command; it is removed when the block ends, also on an exception or Ctrl-C. A lock
    whose pid no longer runs on this host (a killed run) is taken over, saying so on stderr.

    Parameters
    ----------
    paths
        The run folder (it must exist).
    command
        Shown to a second run that finds the lock; default: this process's command line.

    Yields
    ------
    The lock's content.

    Raises
    ------
    RunLockedError
        A live process (or one on another host, which cannot be checked) holds the lock.
    """
    lock = paths.lock_file
    mine = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    text = json.dumps(mine)
    # Two tries: the second follows the removal of a stale lock.
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _judge_existing_lock(paths)  # raises unless the lock was stale and is now gone
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        except BaseException:  # a half-written lock would block the next run for a while
            lock.unlink(missing_ok=True)
            raise
        break
    else:
        raise RunLockedError(f"{paths.root}: another tofmra run took the lock {lock} just now; try again")
    try:
        yield mine
    finally:
        # Remove only our own lock: someone may have deleted ours by hand and started a run.
        try:
            if lock.read_text(encoding="utf-8") == text:
                lock.unlink()
        except OSError:
            pass


def _judge_existing_lock(paths: RunPaths) -> None:
    """Raise :class:`RunLockedError` if the existing lock is held; else remove the stale lock."""
    lock = paths.lock_file
    holder = _read_lock(lock)
    if holder is None:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:  # its run ended between our two looks
            return
        if age < _LOCK_GRACE_SECONDS:  # another run is writing its lock right now
            raise RunLockedError(f"{paths.root}: another tofmra run is starting in this run folder (lock {lock})")
        print(f"tofmra run: {paths.root}: taking over the unreadable lock {lock} "
              f"({age:.0f} s old, left by a run that did not finish)", file=sys.stderr)
    else:
        pid = holder.get("pid")
        same_host = holder.get("host") == socket.gethostname()
        if not same_host:
            raise RunLockedError(
                f"{paths.root}: run folder in use by another tofmra run ({_holder_text(holder)}); "
                f"that host cannot be checked from here: delete {lock} if that run has ended"
            )
        if isinstance(pid, int) and _process_alive(pid) and not _started_after(pid, holder.get("started", "")):
            raise RunLockedError(
                f"{paths.root}: run folder in use by another tofmra run ({_holder_text(holder)}); "
                "wait for it to end or stop it first"
            )
        print(f"tofmra run: {paths.root}: taking over the stale lock of a run that no longer runs "
              f"({_holder_text(holder)})", file=sys.stderr)
    # A run judging the same stale lock at the same instant could remove the lock just taken by
    # another; the window is a few microseconds, accepted for a course tool.
    lock.unlink(missing_ok=True)
