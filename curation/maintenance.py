"""Keeping the workspace file safe: online backups, recovery of a damaged file, reclaiming space.

What DuckDB guarantees, and what follows (see docs/operations.md):
- A committed transaction is in the write-ahead log (`curate.duckdb.wal`) before COMMIT
  returns; a checkpoint later moves it into the database file. A crash, `kill -9` or power
  loss after COMMIT loses nothing; before COMMIT, the transaction is gone as a whole.
- The log is replayed when the file is opened. A log cut short (a disk full, a copy of the
  file without its log) is replayed up to its last whole entry, silently: the commits after
  that are lost. A log with a bad checksum is refused. Only a backup protects against both.

Design decisions:
- `backup` is online and consistent (`Store.copy_to`: `ATTACH` a new file and `COPY FROM
  DATABASE` into it, in one transaction, while other threads keep working). The result is
  an ordinary workspace file (sequences included); restoring is copying it back, which
  `curate doctor --restore FILE` does without deleting what it replaces.
- Before a schema migration the file is checkpointed and copied byte for byte into
  `backups/` (named with the old schema version); the store is not shared yet at that point.
- A backup is written to `.<name>.curate-backup-<pid>.partial` beside its target and renamed
  into place when complete. A backup killed mid-copy (kill -9, power loss) leaves that file
  (as big as the workspace, password hashes included); every backup first removes such
  leftovers in its folder whose process is gone, and says so (`BackupResult.removed`).
  The folder is made 0700 whatever the umask (`curation._files.private_dir`).
- `doctor` never deletes a user's file: it moves the damaged files aside with a timestamp and
  works on copies. It tries, in order: the file with the valid start of its log (DuckDB names
  the byte where a bad log entry starts), the file without its log, the newest backup in
  `backups/`, and last a new, empty workspace; it reports which one it kept and the counts.
- A transaction that never commits leaves its blocks in the file (DuckDB writes a large
  insert straight into free blocks): 70 MB for a failed 200,000-row import. DuckDB's VACUUM
  does not give them back; a checkpoint truncates free blocks at the end of the file, but it
  is skipped when nothing changed since the last one, so `Store.reclaim_space` commits an
  empty change (a table created and dropped) first.
- The SQL of all this lives in the store (`curation.store._maintenance`); this module decides
  what to copy where and in which order `doctor` tries to recover.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from curation._files import private_dir, process_alive
from curation.auth import User, require
from curation.errors import InvalidValue, StoreUnreadable
from curation.store import Store, file_counts, probe_file, utcnow

log = logging.getLogger("curate")
BACKUP_DIR = "backups"
_WAL_ENTRY = re.compile(r"entry at byte position (\d+)")
_PARTIAL = ".curate-backup-{pid}.partial"
_PARTIAL_NAME = re.compile(r"^\..+\.curate-backup-(\d+)\.partial(\.wal)?$")


def backup_dir(db_path: Path) -> Path:
    """Where backups of a workspace file go by default: `backups/` beside it."""
    return Path(db_path).parent / BACKUP_DIR


def _stamp() -> str:
    return f"{utcnow():%Y%m%dT%H%M%SZ}"


def _private(path: Path) -> None:
    os.chmod(path, 0o600)  # it holds everything, password hashes included


# --- backups ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupResult:
    """A backup file and what it holds."""

    path: str
    bytes: int
    counts: dict[str, int]
    removed: tuple[str, ...] = ()  # half-written copies of killed backups, removed first

    def summary(self) -> str:
        return "".join(f"removed {p}, left by a backup that was killed\n" for p in self.removed) \
            + (f"backed up to {self.path} ({self.bytes / 1e6:,.1f} MB: "
               f"{_describe(self.counts)}); restore it with `curate doctor --restore "
               f"{self.path}`")


def backup(store: Store, dest: str | os.PathLike | None = None, *, user: User) -> BackupResult:
    """Copy the whole workspace, consistently, while it stays in use.

    `dest` is a new `.duckdb` file, or a folder (made if need be) to put `<name>-<time>.duckdb`
    in; by default the workspace's `backups/` folder. An existing file is never overwritten."""
    require(user, "maintain")
    target = Path(dest) if dest is not None else backup_dir(store.path)
    if target.is_dir() or (target.suffix != ".duckdb" and not target.exists()):
        target = target / f"{store.path.stem}-{_stamp()}.duckdb"  # a folder, made if need be
    if target.exists():
        raise InvalidValue(f"{target} already exists; name a new .duckdb file or a folder")
    private_dir(target.parent, tighten=False)
    removed = _remove_killed_partials(target.parent)
    partial = target.with_name(f".{target.name}" + _PARTIAL.format(pid=os.getpid()))
    for leftover in (partial, Path(f"{partial}.wal")):
        leftover.unlink(missing_ok=True)  # our own half-written copy from an interrupted run
    try:
        store.copy_to(partial)
        _private(partial)
        os.replace(partial, target)
    finally:
        for leftover in (partial, Path(f"{partial}.wal")):
            leftover.unlink(missing_ok=True)  # a copy that failed (a full disk): not kept
    return BackupResult(str(target), target.stat().st_size, file_counts(target), removed)


def _remove_killed_partials(folder: Path) -> tuple[str, ...]:
    """Remove the half-written copies that killed backups left in `folder`; return them."""
    removed = []
    for item in sorted(folder.iterdir()):
        match = _PARTIAL_NAME.match(item.name)
        if match and item.is_file() and not process_alive(int(match.group(1))):
            item.unlink(missing_ok=True)
            removed.append(str(item))
    return tuple(removed)


def backup_before_migration(store: Store, version: int) -> Path:
    """Copy the file aside before its schema (now `version`) is migrated; say so in the log."""
    target = backup_dir(store.path) / f"{store.path.stem}-schema{version}-{_stamp()}.duckdb"
    private_dir(target.parent, tighten=False)
    store.checkpoint()  # everything in the file, nothing left in the log
    shutil.copyfile(store.path, target)
    _private(target)
    log.warning("curate: %s has schema version %d; backed it up to %s before upgrading it",
                store.path, version, target)
    return target


# --- doctor ----------------------------------------------------------------------------------

@dataclass
class DoctorReport:
    """What `doctor` found, what it set aside, what it kept, and what the workspace holds."""

    path: str
    problem: str | None = None
    set_aside: list[str] = field(default_factory=list)
    kept: str = "the workspace as it was"
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        if self.problem is None:
            return f"{self.path}: no damage found ({_describe(self.counts)}); nothing changed"
        lines = [self.problem]
        lines += [f"  set aside (kept, not deleted): {p}" for p in self.set_aside]
        lines.append(f"  kept: {self.kept}")
        lines.append(f"  the workspace now holds {_describe(self.counts)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def doctor(path: str | os.PathLike, *, user: User,
           restore: str | os.PathLike | None = None) -> DoctorReport:
    """Check a workspace file; if it is damaged (or `restore` names a backup), set its files
    aside and reopen it from the last good state. Run it with the app stopped."""
    require(user, "maintain")
    path = Path(path)
    wal = Path(f"{path}.wal")
    report = DoctorReport(str(path))
    if restore is not None:
        restore = Path(restore)
        if probe_file(restore) is not None:
            raise StoreUnreadable(f"{restore} is not a readable workspace backup; nothing "
                                  "was changed")
        report.problem = f"restoring the backup {restore}"
        _set_aside(path, wal, report)
        _copy(restore, path)
        report.kept = f"the backup {restore}; changes made after it are not in the workspace"
        return _finish(path, report)
    if not path.exists():
        raise StoreUnreadable(f"{path} does not exist; nothing to check")
    report.problem = probe_file(path)
    if report.problem is None:
        report.counts = file_counts(path)
        return report
    main_aside, wal_aside = _set_aside(path, wal, report)
    if wal_aside is not None and (m := _WAL_ENTRY.search(report.problem)):
        good = int(m.group(1))
        _copy(main_aside, path)
        with open(wal_aside, "rb") as f:
            Path(wal).write_bytes(f.read(good))
        if probe_file(path) is None:
            report.kept = (f"the database file and the first {good:,} of "
                           f"{wal_aside.stat().st_size:,} bytes of its write-ahead log (the "
                           "last good entry); the commits logged after it are lost")
            return _finish(path, report)
    if main_aside is not None:
        _copy(main_aside, path)
        wal.unlink(missing_ok=True)  # only ever our own cut copy: the original is aside
        if probe_file(path) is None:
            report.kept = ("the database file without its write-ahead log: the commits since "
                           "its last checkpoint are lost" if wal_aside is not None
                           else "the database file")
            return _finish(path, report)
    wal.unlink(missing_ok=True)
    for candidate in _backups(path):
        _copy(candidate, path)
        if probe_file(path) is None:
            report.kept = (f"the newest readable backup, {candidate}; changes made after it "
                           "are lost")
            return _finish(path, report)
    path.unlink(missing_ok=True)  # our own copy that did not open; the original is aside
    report.kept = (f"nothing could be read and there is no backup in {backup_dir(path)}: a new, "
                   "empty workspace")
    return _finish(path, report)


def _set_aside(path: Path, wal: Path, report: DoctorReport) -> tuple[Path | None, Path | None]:
    """Move the file and its log to `<name>.doctor-<time>`; return where they now are."""
    stamp, moved = _stamp(), []
    for original in (path, wal):
        if not original.exists():
            moved.append(None)
            continue
        aside = original.with_name(f"{original.name}.doctor-{stamp}")
        os.replace(original, aside)
        report.set_aside.append(str(aside))
        moved.append(aside)
    return moved[0], moved[1]


def _copy(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    _private(target)


def _backups(path: Path) -> list[Path]:
    """Backups of this workspace in its backups folder, newest first."""
    folder = backup_dir(path)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"{path.stem}-*.duckdb") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _finish(path: Path, report: DoctorReport) -> DoctorReport:
    with Store(path):
        pass  # opens, brings the schema up to date, creates an empty workspace if need be
    report.counts = file_counts(path)
    return report


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {name}" for name, n in counts.items())
