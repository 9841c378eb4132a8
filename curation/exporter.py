"""One-call export of a snapshot to JSONL, with a manifest beside it.

Design decisions:
- Export always goes through a snapshot: the filters select examples, the store creates (or
  reuses) the immutable snapshot of their current versions, and the file is written from the
  snapshot. The manifest names the snapshot, so a training run can be traced to its data.
- Atomic: the file and the manifest are written to temporary names in the target folder and
  renamed into place, so a reader never sees half a file. A target that exists and is not a
  regular file (a device such as /dev/stdout, a pipe) is refused: the rename would replace it.
  Both are 0600, wherever they go (a missing folder is made 0700): they hold the curated data.
  A temporary file is named `.<name>.curate-export-<pid>-<random>.tmp`, so it is
  recognisable, and its writer holds an
  exclusive `flock` on it. An export killed mid-write (kill -9, power loss) leaves it behind; every
  export first removes such leftovers in its target folder: ours by name, with no writer
  holding the lock, and whose writing process is gone (or, if the pid was reused, untouched
  for `STALE_TEMP_SECONDS`). A live export's file is never touched. (Where `fcntl` does not
  exist, leftovers are left alone.)
- Reuse is said, not silent: when the filters over unchanged data give a snapshot that
  already exists, the export is written from it under its first name, and the result, the
  CLI, the app and the manifest say so (`snapshot_reused`, `note`).
- Examples that need an answer (imported with `--unanswered`) are never exported: the
  snapshot leaves them out (`curation.store._snapshots`), and the result and the manifest
  say how many the filters matched (`left_out`, `left_out_note`), counted when the file is
  written.
- Each line carries the example's external id (as `id`), label, tags and a `metadata` object
  (Curate id, version, split, status, source); importing the file again gives back the same
  conversations, labels and tags.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from curation._files import private_dir
from curation.auth import User, require
from curation.errors import InvalidValue
from curation.formats import OUTPUT_FORMATS, WRITERS
from curation.query import ExampleFilter
from curation.store import Snapshot, Store, utcnow

DEFAULT_EXPORT_FILTER = ExampleFilter(status=("accepted",))
TEMP_SUFFIX = ".curate-export-{pid}-{token}.tmp"
STALE_TEMP_SECONDS = 60  # a free temp file of a live pid (reused by another process) is stale
_TEMP_NAME = re.compile(r"^\..+\.curate-export-(\d+)-[0-9a-f]{8}\.tmp$")


@dataclass(frozen=True)
class ExportResult:
    """Where an export went and what it holds."""

    path: Path
    manifest_path: Path
    format: str
    count: int
    file_sha256: str
    snapshot: Snapshot
    snapshot_reused: bool = False
    note: str | None = None  # says so when an existing snapshot was reused
    removed_temp_files: tuple[Path, ...] = ()  # leftovers of killed exports, removed
    left_out: dict[str, int] | None = None  # matched the filters, never exported: by reason

    @property
    def left_out_note(self) -> str | None:
        """A sentence on the examples left out, or None when there are none."""
        n = (self.left_out or {}).get("needs_answer", 0)
        if not n:
            return None
        return (f"{n:,} example{'s' if n != 1 else ''} matching the filters "
                f"{'need' if n != 1 else 'needs'} an answer and "
                f"{'were' if n != 1 else 'was'} left out (answer them in Review first)")

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "manifest": str(self.manifest_path),
                "format": self.format, "count": self.count, "file_sha256": self.file_sha256,
                "snapshot_id": self.snapshot.id, "snapshot_hash": self.snapshot.content_hash,
                "snapshot_name": self.snapshot.name, "snapshot_reused": self.snapshot_reused,
                "note": self.note, "left_out": self.left_out,
                "left_out_note": self.left_out_note}


def export_jsonl(store: Store, out_path: str | os.PathLike, *, fmt: str = "openai",
                 where: ExampleFilter = DEFAULT_EXPORT_FILTER, user: User,
                 snapshot_name: str | None = None) -> ExportResult:
    """Snapshot what `where` selects (accepted examples by default) and write it as JSONL."""
    require(user, "export")
    _check_format(fmt)
    _check_target(Path(out_path))
    started = utcnow()
    snapshot = store.snapshot(where, actor=user.name, name=snapshot_name)
    note = None
    if snapshot.created_at < started:  # the store gave back an existing snapshot
        note = f"same content as snapshot {snapshot.name} ({snapshot.id}): reused"
        if snapshot_name and snapshot_name.strip() != snapshot.name:
            note += f"; it keeps its name, not {snapshot_name.strip()!r}"
    return write_snapshot(store, snapshot.id, out_path, user=user, fmt=fmt, note=note)


def write_snapshot(store: Store, snapshot_id: str, out_path: str | os.PathLike, *,
                   user: User, fmt: str = "openai", note: str | None = None) -> ExportResult:
    """Write an existing snapshot as JSONL plus `<name>.manifest.json`, both atomically.
    `note` (set by `export_jsonl` when it reused a snapshot) goes into the result and the
    manifest."""
    require(user, "export")
    _check_format(fmt)
    snapshot = store.get_snapshot(snapshot_id)
    out_path = Path(out_path)
    _check_target(out_path)
    private_dir(out_path.parent, tighten=False)
    removed = remove_stale_temp_files(out_path.parent)
    writer = WRITERS[fmt]
    digest, count = hashlib.sha256(), 0
    with _atomic(out_path) as f:
        for row in store.snapshot_rows(snapshot_id):
            record = writer(row["messages"], external_id=row["external_id"], label=row["label"],
                            tags=row["tags"],
                            metadata={"curate_id": row["id"], "version": row["version"],
                                      "split": row["split"], "status": row["status"],
                                      "source": row["source"]})
            line = orjson.dumps(record) + b"\n"
            f.write(line)
            digest.update(line)
            count += 1
    manifest_path = out_path.with_name(out_path.name.removesuffix(".jsonl") + ".manifest.json")
    result = ExportResult(out_path, manifest_path, fmt, count, digest.hexdigest(), snapshot,
                          note is not None, note, removed, store.left_out(snapshot_id))
    manifest = {**result.to_dict(), "filters": snapshot.filters, "snapshot_name": snapshot.name,
                "exported_at": utcnow().isoformat() + "Z"}
    with _atomic(manifest_path) as f:
        f.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return result


def _check_target(out_path: Path) -> None:
    """InvalidValue when `out_path` (or its manifest's path) exists and is not a regular
    file: the export's rename would replace a device, a pipe or a terminal (`/dev/stdout`)
    with a file (as root, /dev/full became one)."""
    manifest = out_path.with_name(out_path.name.removesuffix(".jsonl") + ".manifest.json")
    for path in (out_path, manifest):
        if path.exists() and not path.is_file():
            raise InvalidValue(f"{path} exists and is not a regular file (a device, pipe or "
                               "folder); an export writes a file: name a new or existing "
                               ".jsonl file")


def _check_format(fmt: str) -> None:
    if fmt not in OUTPUT_FORMATS:
        raise InvalidValue(f"export format {fmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")


def remove_stale_temp_files(directory: Path) -> tuple[Path, ...]:
    """Remove the temporary files that killed exports left in `directory`; return them."""
    try:
        import fcntl
    except ImportError:  # no flock: a live writer cannot be told apart safely
        return ()
    removed = []
    for item in directory.iterdir() if directory.is_dir() else ():
        match = _TEMP_NAME.match(item.name)
        if not match or not item.is_file():
            continue
        try:
            with open(item, "rb") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live export is writing it
                old = time.time() - os.fstat(f.fileno()).st_mtime > STALE_TEMP_SECONDS
                if _alive(int(match.group(1))) and not old:
                    continue  # its writer may have created it and not locked it yet
                item.unlink()
        except OSError:
            continue  # renamed into place or removed meanwhile, or not ours to open
        removed.append(item)
    return tuple(removed)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class _atomic:
    """Write to a locked, recognisable temporary file beside `path`, fsync, then rename it
    over `path`; on an error the temporary file is removed."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}" + TEMP_SUFFIX.format(
            pid=os.getpid(), token=secrets.token_hex(4)))

    def __enter__(self):
        self.f = open(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        try:
            import fcntl

            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        return self.f

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.f.flush()
            os.fsync(self.f.fileno())
            os.replace(self.tmp, self.path)  # before close: the lock covers the rename
        self.f.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
        return False
