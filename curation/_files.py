"""Private folders and files: the workspace holds password hashes and the curated data.

Design decisions:
- Whatever Curate creates is the user's alone: folders 0700, files 0600, whatever the umask
  (`mkdir(mode=0o700)` and `os.open(..., 0o600)`: a umask can only take bits away).
- The CLI and the app set the process umask to 077 at start (`private_umask`), so what
  libraries write on their own (DuckDB's WAL and spill files, torch and safetensors
  checkpoints, a trainer process, which inherits the umask) is private too.
- Existing folders and files are tightened only where that is safe: Curate's own folders
  (runs, import reports, uploads) and the workspace's database files always; the folder of
  `--db` only when it is the user's own, not a shared one (sticky like /tmp), and neither
  their home nor the current folder (a `--db curate.duckdb` in a project must not lock the
  project). Anything not the user's own is left as it is (chmod would fail anyway).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

PRIVATE_UMASK = 0o077
DIR_MODE, FILE_MODE = 0o700, 0o600


def private_umask() -> None:
    """Make every file this process (and its children) creates private to the user."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: str | os.PathLike, *, tighten: bool = True) -> Path:
    """`path` as a folder: each missing level created 0700; an existing `path` of the user's
    own made 0700 too unless `tighten` is False."""
    path = Path(path)
    missing = []
    for level in (path, *path.parents):
        if level.exists():
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            level.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by another thread or process
            pass
    if tighten and not missing:
        _tighten(path, DIR_MODE)
    return path


def workspace_dir(path: str | os.PathLike) -> Path:
    """The folder of a workspace database: created 0700, or tightened to 0700 when it is the
    user's own and not a shared, home or current folder."""
    path = Path(path)
    if path.exists():
        resolved = path.resolve()
        shared = (resolved.stat().st_mode & stat.S_ISVTX
                  or resolved in (Path.home().resolve(), Path.cwd().resolve()))
        return private_dir(path, tighten=not shared)
    return private_dir(path)


def private_file(path: str | os.PathLike) -> Path:
    """Make an existing file of the user's own 0600 (a missing one is fine)."""
    path = Path(path)
    if path.exists():
        _tighten(path, FILE_MODE)
    return path


def open_private(path: str | os.PathLike, mode: str = "wb") -> IO:
    """Open `path` for writing ('wb', 'ab' or 'w'), created 0600 (or made 0600 if it exists)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (another user's counts): whose leftover files to keep."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _tighten(path: Path, mode: int) -> None:
    info = path.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & ~mode:
        path.chmod(mode)
