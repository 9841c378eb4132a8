"""Background processes of the run folder: the trainer and the evaluator.

Design decisions:
- `spawn` starts `python -P -m MODULE RUN_DIR` with `subprocess.Popen(start_new_session=True)`:
  its own session and process group, so stopping signals the whole group and nothing is left
  behind, and a Ctrl-C in the terminal that started it does not reach it. It starts in the
  run folder (`-P`: that folder is not on its import path) and imports the same code as the
  launcher: a checkout the launcher was imported from goes first on its PYTHONPATH; an
  installed package is found by the interpreter itself.
- Liveness is read from /proc: a zombie counts as dead, and the command line must name our
  module, so a reused pid does not keep a dead run "active". Without /proc (macOS) it is a
  best-effort `kill(pid, 0)`.
- `stop_group` sends SIGTERM, then SIGKILL after a timeout, and returns once no process of
  the group is left. Our own children are reaped as they end, so they do not linger as
  zombies.
- In the child, `raise_on_sigterm` (installed as the SIGTERM handler) turns the signal into
  `Cancelled`, raised in the main thread, so the process writes its ending and exits with
  `EXIT_CANCELLED`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curation._files import open_private

IMPORT_ROOT = Path(__file__).resolve().parent.parent  # holds training/ and curation/
EXIT_CANCELLED = 143

_children: dict[int, subprocess.Popen] = {}


class Cancelled(BaseException):
    """Raised in the main thread of a trainer or evaluator by its SIGTERM handler."""


def raise_on_sigterm(signum, frame) -> None:
    """SIGTERM handler of the child processes: raise `Cancelled` (once)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not interrupt cleanup
    raise Cancelled


def spawn(module: str, run_dir: Path, log_name: str, env: dict[str, str]) -> subprocess.Popen:
    """Start `python -m MODULE RUN_DIR` in a session and process group of its own, in the
    run folder (by absolute path), output appended to RUN_DIR/LOG_NAME, with `env` added to
    ours. Where our packages are not on the interpreter's own path (a checkout run by path),
    their folder leads PYTHONPATH: the child runs this very code, whatever the cwd."""
    run_dir = Path(run_dir).resolve()
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", **env,
           **import_path_env()}
    with open_private(run_dir / log_name, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-P", "-m", module, str(run_dir)], cwd=run_dir,
                                env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _children[proc.pid] = proc
    return proc


def exited(proc: subprocess.Popen) -> bool:
    """Whether a process `spawn` started has exited (it is then forgotten)."""
    if proc.poll() is None:
        return False
    _children.pop(proc.pid, None)
    return True


def import_path_env() -> dict[str, str]:
    """PYTHONPATH for a child when we were imported from a checkout rather than an installed
    package, so the child runs the same code; {} for an installed package (putting
    site-packages on PYTHONPATH would put it before the standard library)."""
    import site

    site_dirs = {Path(p).resolve() for p in [*site.getsitepackages(),
                                            site.getusersitepackages()]}
    if IMPORT_ROOT in site_dirs:
        return {}
    rest = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(IMPORT_ROOT), *([rest] if rest else [])])}


def process_alive(pid: int, module: bytes = b"training.trainer") -> bool:
    """True while `pid` is a live (not zombie) process of `module` (the trainer's, or the
    evaluator's)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        return False
    stat = proc_stat(pid)
    if stat is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc (macOS): best effort
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if stat[0] in "ZX":
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # Right after fork the command line can still be empty: that process is starting, alive.
    return not cmdline or module in cmdline


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group id) from /proc/PID/stat, or None if there is no such
    process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group `pgid`, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat and stat[1] == pgid and stat[0] not in "ZX":
                members.append(int(entry.name))
    return members


def stop_group(pgid: int, timeout: float) -> None:
    """SIGTERM to process group `pgid`, SIGKILL if it is not gone after `timeout` seconds;
    returns once no process of the group is left (or 10 s after the SIGKILL)."""
    signal_group(pgid, signal.SIGTERM)
    if not wait_group_gone(pgid, timeout):
        signal_group(pgid, signal.SIGKILL)
        wait_group_gone(pgid, 10.0)


def stop_job(read: Callable[[], Any], starting: Callable[[Any], bool], timeout: float) -> None:
    """Stop a job (a run, an evaluation) read by `read()`: a job still `starting` gets 5 s
    for its launcher to record the pid, then its process group is stopped (`stop_group`)."""
    job = read()
    deadline = time.monotonic() + 5
    while starting(job) and not job.pid and time.monotonic() < deadline:
        time.sleep(0.1)
        job = read()
    if job.pid:
        stop_group(job.pid, timeout)


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to process group `pgid`; a group that is gone (or not ours) is ignored."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for process group `pgid` to be gone; whether it is."""
    deadline = time.monotonic() + timeout
    while True:
        child = _children.get(pgid)
        if child is not None:
            child.poll()  # reap our own child so it does not linger as a zombie
        if Path("/proc").is_dir():
            gone = not group_members(pgid)
        else:
            try:
                os.killpg(pgid, 0)
                gone = False
            except ProcessLookupError:
                gone = True
        if gone:
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=1)
                _children.pop(pgid, None)
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


__all__ = ["Cancelled", "EXIT_CANCELLED", "IMPORT_ROOT", "exited", "group_members",
           "import_path_env", "process_alive", "proc_stat", "raise_on_sigterm",
           "signal_group", "spawn", "stop_group", "wait_group_gone"]
