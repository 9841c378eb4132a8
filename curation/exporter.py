"""One-call export of a snapshot to JSONL, with a manifest beside it.

Design decisions:
- Export always goes through a snapshot: the filters select examples, the store creates (or
  reuses) the immutable snapshot of their current versions, and the file is written from the
  snapshot. The manifest names the snapshot, so a training run can be traced to its data.
- Atomic: the file and the manifest are written to temporary names in the target folder and
  renamed into place, so a reader never sees half a file. Over an earlier export, its
  manifest is removed just before the new file is renamed into place, and the new manifest
  follows: a kill between the steps leaves a file without a manifest, never one whose
  manifest describes other data. The database (the workspace's, or any DuckDB file) and the
  folder's `dataset_info.json` are refused as targets. A target that exists and is not a
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
- A preference format (`trl_preference`, `openai_dpo`; `curation.preference` writes them)
  writes the snapshot's preference pairs only; its SFT and KTO examples are counted in
  `left_out` (`not_preference`) and the note says so.
- An SFT format (every other one) never writes a KTO record flagged undesirable: an SFT file
  teaches every answer it holds, and a training run's `train.jsonl` is such an export. They
  are counted in `left_out` (`undesirable`, when there are any) and the note says so. A pair
  writes its chosen conversation, a desirable KTO record its conversation.
- Each line carries Curate's fields under one key, `curate` (external id, label, tags, Curate
  id, version, split, status, source), never at top level: TRL reserves `label` and OpenAI's
  schema has no `metadata`. Importing the file again gives back the same conversations,
  external ids, labels and tags. `plain=True` leaves the object out: only the keys the
  format's consumer documents (for uploads to OpenAI, Bedrock or Vertex AI).
- LLaMA-Factory reads a dataset through a `dataset_info.json` in its folder. An openai or
  alpaca export adds (or replaces) its entry there, named after the file, so the folder is a
  ready LLaMA-Factory `dataset_dir`; the other entries are kept. The file is read before the
  export is written (one that is not a JSON object refuses the export: nothing is written),
  and rewritten atomically under a lock on the folder, so two exports into one folder both
  keep their entries. The manifest names the file and the entry. Lines that LLaMA-Factory's
  reading skips (tool calls, tool replies, a developer turn, content parts: valid for OpenAI
  and TRL) are counted (`llama_factory_skips`) and said (`llama_factory_note`).
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

from curation import preference
from curation._files import private_dir, process_alive
from curation.auth import User, require
from curation.errors import InvalidValue
from curation.formats import EXPORT_FORMATS, WRITERS, llama_factory_entry, llama_factory_reads
from curation.query import ExampleFilter
from curation.store import Snapshot, Store, utcnow

DEFAULT_EXPORT_FILTER = ExampleFilter(status=("accepted",))
TEMP_SUFFIX = ".curate-export-{pid}-{token}.tmp"
STALE_TEMP_SECONDS = 60  # a free temp file of a live pid (reused by another process) is stale
_TEMP_NAME = re.compile(r"^\..+\.curate-export-(\d+)-[0-9a-f]{8}\.tmp$")
DATASET_INFO = "dataset_info.json"  # LLaMA-Factory's list of the datasets in a folder


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
    plain: bool = False  # Curate's fields left out
    dataset_info: Path | None = None  # the LLaMA-Factory dataset_info.json holding its entry
    dataset_name: str | None = None  # the name of that entry
    llama_factory_skips: int = 0  # lines of the file LLaMA-Factory's reading of it skips

    @property
    def llama_factory_note(self) -> str | None:
        """A sentence on the lines LLaMA-Factory will skip, or None when it reads them all."""
        n = self.llama_factory_skips
        if not n or self.dataset_name is None:
            return None
        return (f"{n:,} line{'s' if n != 1 else ''} of this file "
                f"{'hold' if n != 1 else 'holds'} tool calls, tool replies, a developer turn "
                "or content parts, which LLaMA-Factory's sharegpt reading cannot take (OpenAI "
                "and TRL read them)")

    @property
    def left_out_note(self) -> str | None:
        """A sentence on the examples left out, or None when there are none."""
        n = (self.left_out or {}).get("needs_answer", 0)
        notes = [preference.left_out_note(self.left_out or {})]  # not pairs, if it is one
        if n:
            notes.insert(0, f"{n:,} example{'s' if n != 1 else ''} matching the filters "
                            f"{'need' if n != 1 else 'needs'} an answer and "
                            f"{'were' if n != 1 else 'was'} left out (answer them in Review "
                            "first)")
        return "; ".join(filter(None, notes)) or None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "manifest": str(self.manifest_path),
                "format": self.format, "count": self.count, "file_sha256": self.file_sha256,
                "snapshot_id": self.snapshot.id, "snapshot_hash": self.snapshot.content_hash,
                "snapshot_name": self.snapshot.name, "snapshot_reused": self.snapshot_reused,
                "note": self.note, "left_out": self.left_out,
                "left_out_note": self.left_out_note, "plain": self.plain,
                "dataset_info": str(self.dataset_info) if self.dataset_info else None,
                "dataset_name": self.dataset_name,
                "llama_factory_skips": self.llama_factory_skips,
                "llama_factory_note": self.llama_factory_note}


def export_jsonl(store: Store, out_path: str | os.PathLike, *, fmt: str = "openai",
                 where: ExampleFilter = DEFAULT_EXPORT_FILTER, user: User,
                 snapshot_name: str | None = None, plain: bool = False) -> ExportResult:
    """Snapshot what `where` selects (accepted examples by default) and write it as JSONL.
    `plain`: without Curate's fields (the `curate` object)."""
    require(user, "export")
    _check_format(fmt)
    _check_target(Path(out_path), store)
    if llama_factory_entry(fmt, Path(out_path).name) is not None:
        _read_dataset_info(Path(out_path).parent / DATASET_INFO)  # before the snapshot
    started = utcnow()
    snapshot = store.snapshot(where, actor=user.name, name=snapshot_name)
    note = None
    if snapshot.created_at < started:  # the store gave back an existing snapshot
        note = f"same content as snapshot {snapshot.name} ({snapshot.id}): reused"
        if snapshot_name and snapshot_name.strip() != snapshot.name:
            note += f"; it keeps its name, not {snapshot_name.strip()!r}"
    return write_snapshot(store, snapshot.id, out_path, user=user, fmt=fmt, note=note,
                          plain=plain)


def write_snapshot(store: Store, snapshot_id: str, out_path: str | os.PathLike, *,
                   user: User, fmt: str = "openai", note: str | None = None,
                   plain: bool = False) -> ExportResult:
    """Write an existing snapshot as JSONL plus `<name>.manifest.json`, both atomically, and
    (openai, alpaca) its entry in the folder's LLaMA-Factory `dataset_info.json`.
    `note` (set by `export_jsonl` when it reused a snapshot) goes into the result and the
    manifest; `plain`: without Curate's fields."""
    require(user, "export")
    _check_format(fmt)
    snapshot = store.get_snapshot(snapshot_id)
    out_path = Path(out_path)
    _check_target(out_path, store)
    private_dir(out_path.parent, tighten=False)
    entry = llama_factory_entry(fmt, out_path.name)
    if entry is not None:
        _read_dataset_info(out_path.parent / DATASET_INFO)  # refused before anything is written
    removed = remove_stale_temp_files(out_path.parent)
    stem = out_path.name.removesuffix(".jsonl")
    manifest_path = out_path.with_name(stem + ".manifest.json")
    writer = WRITERS.get(fmt)
    digest, count = hashlib.sha256(), 0
    not_pairs = 0  # a preference format writes pairs only (`curation.preference`)
    undesirable = 0  # an SFT format never writes an answer flagged undesirable (KTO)
    skips = 0  # lines LLaMA-Factory's reading (the entry written below) skips
    with _atomic(out_path) as f:
        for row in store.snapshot_rows(snapshot_id):
            try:
                if fmt in preference.OUTPUT_FORMATS:
                    if row["kind"] != "preference":
                        not_pairs += 1
                        continue
                    # the id, label, tags and metadata every format carries, as openai's
                    common = {k: v for k, v in WRITERS["openai"](
                        [], external_id=row["external_id"], label=row["label"],
                        tags=row["tags"], metadata=_metadata(row), plain=plain).items()
                        if k != "messages"}
                    record = preference.WRITERS[fmt](row, common)
                elif preference.undesirable(row["kind"], row["desirable"]):
                    undesirable += 1
                    continue
                else:
                    record = writer(row["messages"], external_id=row["external_id"],
                                    label=row["label"], tags=row["tags"],
                                    metadata=_metadata(row), plain=plain)
                    if entry is not None and not llama_factory_reads(row["messages"]):
                        skips += 1
            except InvalidValue as exc:  # a turn the format cannot hold: nothing is written
                raise InvalidValue(f"example #{row['id']}: {exc}") from None
            line = orjson.dumps(record) + b"\n"
            f.write(line)
            digest.update(line)
            count += 1
        # an earlier export's manifest goes before the new file replaces its file: killed
        # between the two renames, the file stands without a manifest, never beside one
        # that describes other data
        manifest_path.unlink(missing_ok=True)
    info_path = None
    if entry is not None:
        info_path = out_path.parent / DATASET_INFO
        _add_dataset_info(info_path, stem, entry)
    left_out = store.left_out(snapshot_id)
    if fmt in preference.OUTPUT_FORMATS:
        left_out["not_preference"] = not_pairs
    elif undesirable:
        left_out["undesirable"] = undesirable
    result = ExportResult(out_path, manifest_path, fmt, count, digest.hexdigest(), snapshot,
                          note is not None, note, removed, left_out,
                          plain, info_path, stem if entry is not None else None, skips)
    manifest = {**result.to_dict(), "filters": snapshot.filters, "snapshot_name": snapshot.name,
                "exported_at": utcnow().isoformat() + "Z"}
    with _atomic(manifest_path) as f:
        f.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return result


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    return {"curate_id": row["id"], "version": row["version"], "split": row["split"],
            "status": row["status"], "source": row["source"]}


def _read_dataset_info(path: Path) -> dict[str, Any]:
    """The entries of a LLaMA-Factory dataset_info.json ({} when there is none); InvalidValue
    when the file is not a JSON object, which an export will not overwrite."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InvalidValue(f"{path} cannot be read as LLaMA-Factory's dataset list ({exc}); "
                           "fix or move it, then export again (nothing was written)") from None
    if not isinstance(data, dict):
        raise InvalidValue(f"{path} is not a JSON object (LLaMA-Factory's dataset list); "
                           "fix or move it, then export again (nothing was written)")
    return data


def _add_dataset_info(path: Path, name: str, entry: dict[str, Any]) -> None:
    """Add or replace the entry `name` in `path`, keeping the others; under a lock on the
    folder (where `fcntl` exists), so concurrent exports do not lose each other's entry."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(folder, fcntl.LOCK_EX)
        entries = {**_read_dataset_info(path), name: entry}
        with _atomic(path) as f:
            f.write(orjson.dumps(entries, option=orjson.OPT_INDENT_2) + b"\n")
    finally:
        os.close(folder)  # closing releases the lock


def _check_target(out_path: Path, store: Store) -> None:
    """InvalidValue when the export (or its manifest) would replace what is not an export:
    - a path that exists and is not a regular file: the rename would replace a device, a
      pipe or a terminal (`/dev/stdout`) with a file (as root, /dev/full became one);
    - the workspace's own database or its write-ahead log, or any DuckDB database (another
      workspace, a backup): replaced by JSONL, it is gone;
    - the folder's `dataset_info.json`, which the export itself keeps (LLaMA-Factory's list
      of the folder's datasets)."""
    manifest = out_path.with_name(out_path.name.removesuffix(".jsonl") + ".manifest.json")
    own = [store.path, store.path.with_name(store.path.name + ".wal")]
    for path in (out_path, manifest):
        if path.exists() and not path.is_file():
            raise InvalidValue(f"{path} exists and is not a regular file (a device, pipe or "
                               "folder); an export writes a file: name a new or existing "
                               ".jsonl file")
        if any(path.exists() and mine.exists() and path.samefile(mine) for mine in own):
            raise InvalidValue(f"{path} is this workspace's database; an export would "
                               "replace it: name a new .jsonl file")
        if _is_duckdb(path):
            raise InvalidValue(f"{path} is a DuckDB database (a workspace or a backup), not "
                               "an export; an export would replace it: name a new .jsonl file")
    if out_path.name == DATASET_INFO:
        raise InvalidValue(f"{out_path} is LLaMA-Factory's list of the datasets in its folder "
                           "(an export keeps its entry there); name the export another .jsonl "
                           "file")


def _is_duckdb(path: Path) -> bool:
    """Whether `path` is a DuckDB database file: its magic bytes `DUCK` at offset 8."""
    try:
        with open(path, "rb") as f:
            return f.read(12)[8:12] == b"DUCK"
    except OSError:  # missing, or not ours to read: nothing an export would lose to us
        return False


def _check_format(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise InvalidValue(f"export format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")


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
                if process_alive(int(match.group(1))) and not old:
                    continue  # its writer may have created it and not locked it yet
                item.unlink()
        except OSError:
            continue  # renamed into place or removed meanwhile, or not ours to open
        removed.append(item)
    return tuple(removed)


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
