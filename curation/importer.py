"""Validated, atomic, idempotent import of JSONL, JSON arrays and CSV into the store.

Design decisions:
- Streaming, in chunks of at most `BATCH_ROWS` records (or `CHUNK_BYTES` bytes): each chunk
  is parsed, validated and hashed into column buffers, then written straight into `examples`
  and `events`, so Python holds only a few chunks. Memory still grows with the file, because
  the whole file is one transaction: measured peak (process tree, docs/benchmarks.md) 0.87 GB
  for a 100 MB file, 1.25 GB for 300 MB, 2.85 GB for 1 GB (main process 2.55 GB, while
  DuckDB's buffer pool stays under its 400 MB cap). Plan about 3x the file size.
- A JSONL file of more than `PARALLEL_MIN_BYTES` is parsed by worker processes, one per CPU
  (fork, so they start in milliseconds and import nothing): the main process only cuts the
  file into chunks by line, hands out (offset, length, first line number) and writes the
  results in file order, so line numbers, error codes and ids are exactly those of a serial
  import. A worker whose parent dies (kill -9) reads EOF on its pipe and exits.
  `$CURATE_IMPORT_WORKERS=0` parses in the main process (for a host where fork is unwelcome).
- Atomic: every chunk is written inside one transaction. A crash or `kill -9` before COMMIT
  leaves the store as it was.
- Idempotent and lossless: a record that is the same example as a stored one (the exact
  conversation, the label, and no other external id; see `_Writer`) is skipped and reported;
  a repeat of an earlier line of the same file is reported as `duplicate_in_file`. Nothing
  else is skipped: the same conversation with another label is imported and reported as a
  `LabelConflict`. The hashes seen in the file are kept in a dict in the main process (about
  130 bytes per record, more for a record with a label or an id).
- CSV: the csv module's limits and errors never end an import. Its field limit is raised to
  `CSV_FIELD_LIMIT` (fields up to it are checked against `max_field_chars` like any text), and
  every `csv.Error` or NUL character becomes one rejected row with its line number.
- A file with no records at all (empty, blank lines only, `[]`, a CSV header alone) is an
  error (`UnreadableFile`), whatever its kind. A failed import gives the blocks its rolled-back
  rows took back to the file system (`Store.reclaim_space`).
- Unanswered prompts (`unanswered=True`, `curate import --unanswered`): records without an
  answer are imported as conversations ending with their user turn (`curation.formats`), and
  always as `pending`, whatever `status` says for the answered ones: an example that needs an
  answer has nothing to accept yet. The report counts them (`needs_answer`). Without the flag
  they are rejected, and the message says that the flag would keep them.
- Preference pairs and KTO records (`curation.preference`) travel in three more columns
  (kind, rejected answer, desirable flag); a pair's content hash covers its rejected answer,
  so only the same pair again is "already in the store". `model_output=True`
  (`--model-output`) tags every example `model-output`: its answers are a model's, and an
  SME's edit of one records a preference pair.
- A bad record never aborts the rest: it becomes a `LineError` (line, code, message, field).
  A file that is not UTF-8 is refused whole (`NotUtf8`), since its text cannot be trusted.
- Fast path: orjson parses the bytes of a line; only a line orjson refuses goes through the
  standard library to tell NaN, lone surrogates and plain syntax errors apart. Column buffers
  are built by hand (`_Columns`) and handed to DuckDB as Arrow arrays without `pa.array`,
  which would import pandas (a quarter of a second) for nothing.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import sys
from array import array
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from curation._files import open_private, private_dir
from curation.auth import User, require
from curation.errors import CurateError, InvalidValue, NotUtf8, UnreadableFile
from curation.formats import (DEFAULT_ALPACA_SEPARATOR, DEFAULT_MAX_FIELD_CHARS, INPUT_FORMATS,
                              RecordError, check_mapping, detect_format, needs_answer,
                              search_text, to_draft)
from curation.preference import MODEL_OUTPUT_TAG, hash_bytes
from curation.query import SPLITS, STATUSES
from curation.store import Store, utcnow

BATCH_ROWS = 10_000
CHUNK_BYTES = 16 << 20
PARALLEL_MIN_BYTES = 4 << 20  # smaller files are parsed in the main process
_READ_BYTES = 1 << 22
# The longest CSV field read (the csv module's default is 131,072): longer ones are
# `field_too_long` rows, shorter ones are checked against `max_field_chars` like any text.
CSV_FIELD_LIMIT = 16 << 20
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LineError:
    """A rejected record: its line number (1-based), error code, message and field."""

    line: int
    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True)
class LabelConflict:
    """An imported record whose conversation is also stored, or earlier in the file, with
    another label: both are kept, and the SME decides which label is right."""

    line: int
    label: str | None
    other_label: str | None
    other_line: int | None = None  # the earlier line of the file, or
    other_example: int | None = None  # the stored example

    @property
    def message(self) -> str:
        where = (f"line {self.other_line}" if self.other_line is not None
                 else f"example #{self.other_example}")
        return (f"same conversation as {where}, labelled {self.other_label!r} there and "
                f"{self.label!r} here; both are kept: decide which label is right")


@dataclass
class ImportReport:
    """What an import did, line by line where something was not imported."""

    path: str
    file_kind: str
    lines: int = 0
    imported: int = 0
    already_in_store: list[int] = field(default_factory=list)
    duplicates_in_file: list[tuple[int, int]] = field(default_factory=list)
    rejected: list[LineError] = field(default_factory=list)
    label_conflicts: list[LabelConflict] = field(default_factory=list)
    needs_answer: int = 0  # of the imported: prompts without an answer (`unanswered=True`)

    def summary(self) -> str:
        imported = f"{self.imported:,} imported"
        if self.needs_answer:
            imported += f" ({self.needs_answer:,} of them need an answer, stored as pending)"
        parts = [imported, f"{len(self.rejected):,} rejected"]
        if self.already_in_store:
            parts.append(f"{len(self.already_in_store):,} already in the store")
        if self.duplicates_in_file:
            parts.append(f"{len(self.duplicates_in_file):,} repeated within the file")
        if self.label_conflicts:
            parts.append(f"{len(self.label_conflicts):,} imported with a conflicting label")
        return f"{self.path}: {self.lines:,} records read; " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rejected": [asdict(e) for e in self.rejected],
                "duplicates_in_file": [{"line": a, "first_line": b}
                                       for a, b in self.duplicates_in_file],
                "label_conflicts": [{**asdict(c), "message": c.message}
                                    for c in self.label_conflicts]}

    def save(self, directory: Path) -> Path:
        """Write the full report as JSON into `directory`; return its path."""
        private_dir(directory)
        target = directory / f"{utcnow():%Y%m%dT%H%M%S%f}-{Path(self.path).name}.json"
        with open_private(target) as f:
            f.write(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))
        return target


def import_file(store: Store, path: str | os.PathLike, *, fmt: str = "auto",
                mapping: dict[str, str] | None = None, split: str = "train",
                status: str = "pending", source: str | None = None, tags: tuple[str, ...] = (),
                user: User, max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
                unanswered: bool = False, model_output: bool = False,
                progress: Progress | None = None, drop_media: bool = False,
                alpaca_separator: str = DEFAULT_ALPACA_SEPARATOR) -> ImportReport:
    """Import every valid record of a file in one transaction; report every other one.
    `unanswered`: records without an answer are imported too, as pending examples that need
    an answer. `model_output`: the answers were written by a model (tag `model-output`), so
    an SME's edit of one records a preference pair (`curation.preference`). `drop_media`:
    records with images, videos or audio are imported as their text (media and
    `<image>`-style placeholders removed) instead of refused (`unsupported_modality`).
    `alpaca_separator` joins an Alpaca `instruction` and a non-blank `input`."""
    require(user, "import")
    if model_output:
        tags = (*tags, MODEL_OUTPUT_TAG)
    if fmt not in INPUT_FORMATS:
        raise InvalidValue(f"format {fmt!r} is not one of {', '.join(INPUT_FORMATS)}")
    if split not in SPLITS:
        raise InvalidValue(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if status not in STATUSES:
        raise InvalidValue(f"status {status!r} is not one of {', '.join(STATUSES)}")
    if isinstance(max_field_chars, bool) or not isinstance(max_field_chars, int) \
            or max_field_chars < 1:  # 0 or less rejected every line, one by one
        raise InvalidValue(f"max_field_chars must be a whole number of at least 1; got "
                           f"{max_field_chars!r}")
    if mapping:
        check_mapping(mapping, unanswered=unanswered)
        fmt = "mapped"
    elif fmt == "mapped":
        raise InvalidValue("format 'mapped' needs a column mapping, e.g. prompt=text,"
                           "response=answer")
    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"{path}: no such file")
    kind = sniff_kind(path)
    report = ImportReport(path=str(path), file_kind=kind)
    total = path.stat().st_size
    job = _Job(str(path), fmt, mapping, max_field_chars,
               tuple(dict.fromkeys(t for t in tags if t)), unanswered, drop_media,
               alpaca_separator)

    workers = _Workers(job, _worker_count()) if kind == "jsonl" and \
        total >= PARALLEL_MIN_BYTES and _worker_count() > 1 else None
    try:
        chunks = (_jsonl_chunks(job, workers) if kind == "jsonl"
                  else _record_chunks(job, kind))
        with store.transaction():
            writer = _Writer(store, report, split=split, status=status,
                             source=source or path.name, actor=user.name)
            pending = None  # progress is reported for a chunk once the next one is read
            for chunk in chunks:
                if pending is not None and progress:
                    progress(pending, total)
                writer.write(chunk)
                pending = chunk.offset
            if workers is not None:  # done: their memory is free before COMMIT needs some
                workers, done = None, workers
                done.close()
            if progress:
                progress(total, total)
            if not report.lines:
                raise _no_records(path)
    except BaseException:
        store.reclaim_space()  # the rolled-back rows' blocks go back to the file system
        raise
    finally:
        if workers is not None:
            workers.close()
    return report


# --- one chunk of records: parse, validate, hash into column buffers -------------------------

@dataclass(frozen=True)
class _Job:
    """What every chunk of one import needs to know (sent once to each worker)."""

    path: str
    fmt: str
    mapping: dict[str, str] | None
    max_chars: int
    extra_tags: tuple[str, ...]
    unanswered: bool = False
    drop_media: bool = False
    alpaca_separator: str = DEFAULT_ALPACA_SEPARATOR


@dataclass
class _Chunk:
    """The records of one chunk: counts, rejected lines and the valid rows' column buffers."""

    records: int
    errors: list[LineError]
    columns: tuple[bytes, ...]
    offset: int = 0  # bytes of the file read up to the end of this chunk
    unanswered: tuple[int, ...] = ()  # lines of the valid rows that need an answer


class _Columns:
    """Valid rows as Arrow buffers (offsets + UTF-8 data per string column), built in plain
    Python and pickled as bytes: cheap to send between processes and to hand to DuckDB."""

    _STRINGS = ("external_id", "messages", "text", "label", "content_hash",
                "kind", "rejected", "desirable")  # the last three: `curation.preference`

    def __init__(self) -> None:
        self.lines = array("q")
        self.strings: dict[str, list[bytes]] = {name: [] for name in self._STRINGS}
        self.tag_counts = array("i")
        self.tags: list[bytes] = []
        self.unanswered: list[int] = []  # lines of rows that need an answer

    def add(self, line: int, record: Any, job: _Job) -> LineError | None:
        try:
            draft = to_draft(record, job.fmt, job.mapping, job.max_chars,
                             unanswered=job.unanswered, drop_media=job.drop_media,
                             alpaca_separator=job.alpaca_separator)
        except RecordError as err:
            return LineError(line, err.code, err.message, err.field)
        messages = draft.messages
        if job.unanswered and needs_answer(messages):
            self.unanswered.append(line)
        tags = tuple(dict.fromkeys(draft.tags + job.extra_tags)) if job.extra_tags \
            else draft.tags
        self.lines.append(line)
        s = self.strings
        s["external_id"].append((draft.external_id or "").encode())
        blob = orjson.dumps(messages)  # as stored: its hash is content_hash()
        s["messages"].append(blob)
        s["text"].append(search_text(messages).encode())
        s["label"].append((draft.label or "").encode())
        if draft.kind == "sft":
            s["content_hash"].append(hashlib.sha256(blob).hexdigest().encode())
        else:  # a pair's hash covers its rejected answer (`curation.preference`)
            s["content_hash"].append(hash_bytes(blob, draft.kind, draft.rejected,
                                                draft.desirable).encode())
        s["kind"].append(draft.kind.encode())
        s["rejected"].append(orjson.dumps(draft.rejected) if draft.rejected else b"")
        s["desirable"].append(b"" if draft.desirable is None
                              else str(draft.desirable).lower().encode())
        self.tag_counts.append(len(tags))
        self.tags.extend(t.encode() for t in tags)
        return None

    def pack(self) -> tuple[bytes, ...]:
        out = [self.lines.tobytes()]
        for name in self._STRINGS:
            out += _string_buffers(self.strings[name])
        out.append(array("i", accumulate(self.tag_counts, initial=0)).tobytes())
        out += _string_buffers(self.tags)
        return tuple(out)


_HASH_DATA = 2 + 2 * _Columns._STRINGS.index("content_hash")  # index in _Columns.pack()


def _string_buffers(values: list[bytes]) -> list[bytes]:
    return [array("q", accumulate(map(len, values), initial=0)).tobytes(), b"".join(values)]


def _arrow(columns: tuple[bytes, ...]) -> pa.Table:
    """The Arrow table of packed columns ('' stands for NULL in external_id and label)."""
    lines, rest = columns[0], columns[1:]
    n = len(lines) // 8
    arrays = [pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(lines)])]
    for i in range(len(_Columns._STRINGS)):
        offsets, data = rest[2 * i], rest[2 * i + 1]
        arrays.append(pa.Array.from_buffers(pa.large_string(), n,
                                            [None, pa.py_buffer(offsets), pa.py_buffer(data)]))
    tag_offsets, tag_value_offsets, tag_data = rest[-3:]
    values = pa.Array.from_buffers(pa.large_string(), len(tag_value_offsets) // 8 - 1,
                                   [None, pa.py_buffer(tag_value_offsets),
                                    pa.py_buffer(tag_data)])
    arrays.append(pa.ListArray.from_arrays(
        pa.Array.from_buffers(pa.int32(), n + 1, [None, pa.py_buffer(tag_offsets)]), values))
    return pa.Table.from_arrays(arrays, names=["line", *_Columns._STRINGS, "tags"])


def _parse_lines(job: _Job, start: int, length: int, first_line: int) -> _Chunk:
    """Parse and validate the JSONL lines in bytes [start, start + length) of the file."""
    with open(job.path, "rb") as f:
        f.seek(start)
        data = f.read(length)
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    del data
    columns, errors, records = _Columns(), [], 0
    path = Path(job.path)
    for number, raw in enumerate(lines, start=first_line):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue
        records += 1
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            record = _diagnose(raw, number, path)
            if isinstance(record, LineError):
                errors.append(record)
                continue
        if error := columns.add(number, record, job):
            errors.append(error)
    return _Chunk(records, errors, columns.pack(), start + length, tuple(columns.unanswered))


def _jsonl_chunks(job: _Job, workers: _Workers | None) -> Iterator[_Chunk]:
    bounds = _line_chunks(job.path)
    if workers is None:
        for start, length, first_line in bounds:
            yield _parse_lines(job, start, length, first_line)
    else:
        yield from workers.map(bounds)


def _line_chunks(path: str) -> Iterator[tuple[int, int, int]]:
    """(offset, length, first line number) of chunks of whole lines: at most BATCH_ROWS lines
    (blank ones included) and, unless a single line is longer, at most CHUNK_BYTES bytes."""
    with open(path, "rb") as f:
        buf, base, pos, first_line, eof = b"", 0, 0, 1, False  # buf[0] is at file offset base
        while True:
            end, lines = pos, 0
            while lines < BATCH_ROWS:
                newline = buf.find(b"\n", end)
                if newline < 0 and not eof:
                    block = f.read(_READ_BYTES)
                    eof = not block
                    buf, base, end, pos = buf[pos:] + block, base + pos, end - pos, 0
                    continue
                if newline < 0:  # end of file: the last line has no newline, or is done
                    newline = len(buf) - 1 if end < len(buf) else -1
                if newline < 0 or (lines and newline + 1 - pos > CHUNK_BYTES):
                    break
                end, lines = newline + 1, lines + 1
            if not lines:
                return
            yield base + pos, end - pos, first_line
            first_line, pos = first_line + lines, end


def _record_chunks(job: _Job, kind: str) -> Iterator[_Chunk]:
    """Chunks of a JSON array or CSV file, read by the streaming readers below."""
    records = {"json": _json_array_records, "csv": _csv_records}[kind]
    columns, errors, count, offset = _Columns(), [], 0, 0
    for line, record, offset in records(Path(job.path), job.fmt, job.mapping):
        count += 1
        error = record if isinstance(record, LineError) else columns.add(line, record, job)
        if error:
            errors.append(error)
        if count == BATCH_ROWS:
            yield _Chunk(count, errors, columns.pack(), offset, tuple(columns.unanswered))
            columns, errors, count = _Columns(), [], 0
    if count:
        yield _Chunk(count, errors, columns.pack(), offset, tuple(columns.unanswered))


# --- worker processes ------------------------------------------------------------------------

def _worker_count() -> int:
    """Parse processes for a large JSONL file: one per CPU (at most 4), on Linux only;
    `$CURATE_IMPORT_WORKERS` overrides it (0 or 1: parse in the main process)."""
    if os.environ.get("CURATE_IMPORT_WORKERS", "").strip().isdigit():
        return int(os.environ["CURATE_IMPORT_WORKERS"])
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(cpus, 4) if sys.platform.startswith("linux") else 1  # fork: Linux only


# Private, so it stays here rather than in curation/errors.py: callers see it only as the
# CurateError it is (one message, import rolled back); no one catches it by name.
class _WorkerDied(CurateError):
    """A parsing process ended without an answer (killed, or out of memory)."""


def _worker_main(conn, job: _Job, inherited: list) -> None:
    for other in inherited:  # the parent's ends of the pipes: EOF here once the parent dies
        other.close()
    try:
        while (task := conn.recv()) is not None:
            try:
                chunk = _parse_lines(job, *task)
            except BaseException as exc:  # noqa: BLE001 (sent back and raised in the parent)
                conn.send(exc)
                continue
            # the buffers one by one, not pickled together: no second copy of the chunk
            buffers, chunk.columns = chunk.columns, ()
            conn.send(chunk)
            for buffer in buffers:
                conn.send_bytes(buffer)
            del buffers
    except (EOFError, OSError):
        pass


class _Workers:
    """Processes that parse chunks of a JSONL file; `map` gives results in chunk order."""

    DEPTH = 2  # chunks queued per worker: one parsed while the other waits

    def __init__(self, job: _Job, n: int):
        ctx = multiprocessing.get_context("fork")
        self.conns, self.procs = [], []
        self.n_buffers = len(_Columns().pack())
        gc.freeze()  # the collector in a worker then leaves the parent's objects (and pages) be
        for _ in range(n):
            parent, child = ctx.Pipe()
            self.conns.append(parent)
            proc = ctx.Process(target=_worker_main, args=(child, job, list(self.conns)),
                               daemon=True, name="curate-import")
            proc.start()
            child.close()
            self.procs.append(proc)
        gc.unfreeze()

    def map(self, tasks: Iterator[tuple[int, int, int]]) -> Iterator[_Chunk]:
        n, sent, received = len(self.conns), 0, 0
        tasks = iter(tasks)
        more = True
        while True:
            while more and sent - received < n * self.DEPTH:
                task = next(tasks, None)
                if task is None:
                    more = False
                    break
                self.conns[sent % n].send(task)
                sent += 1
            if received == sent:
                return
            try:
                conn = self.conns[received % n]
                result = conn.recv()
                if isinstance(result, _Chunk):
                    result.columns = tuple(conn.recv_bytes() for _ in range(self.n_buffers))
            except (EOFError, OSError):
                raise _WorkerDied("an import worker process ended unexpectedly; nothing "
                                  "was imported") from None
            received += 1
            if isinstance(result, BaseException):
                raise result
            yield result

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()


# --- writing chunks into the store -----------------------------------------------------------

class _Writer:
    """Writes chunks in file order: skips repeats within the file and examples already stored,
    gives each new example the next id and writes it with its 'create' event.

    An example is the same as another when its conversation (exactly, `content_hash`) and its
    label are equal and their external ids do not differ (a record without an id matches one
    with any id); tags, split and status are not part of it. Only such a repeat is skipped,
    since skipping it loses nothing the store would keep apart. The same conversation with
    another label is imported, and reported as a `LabelConflict` (also recorded in the create
    event), because dropping it would silently decide which label is right.
    """

    def __init__(self, store: Store, report: ImportReport, *, split: str, status: str,
                 source: str, actor: str):
        self.store, self.report = store, report
        # content hash -> (first line, label, external id) of each variant seen in the file
        # (the line alone for a record without label and id; a list once there are several)
        self.seen: dict[bytes, int | tuple | list[tuple]] = {}
        self.labels: dict[str, str] = {}  # one string object per distinct label
        self.store_empty = not store.has_examples()
        self.example = {"source": source, "split": split, "status": status, "actor": actor,
                        "now": utcnow()}

    def _in_file(self, key: bytes, line: int, label: str, ext: str
                 ) -> tuple[int | None, LabelConflict | None]:
        """For a conversation seen before: (the earlier line this record repeats, or None;
        a label conflict, or None)."""
        first = self.seen[key]
        variants = first if isinstance(first, list) else \
            [(first, "", "") if isinstance(first, int) else first]
        for other_line, other_label, other_ext in variants:
            if _repeats(label, ext, other_label, other_ext):
                return other_line, None
        variants.append((line, self.labels.setdefault(label, label), ext))
        self.seen[key] = variants
        other = next((v for v in variants if v[1] != label), None)
        if other is None:
            return None, None
        return None, LabelConflict(line, label or None, other[1] or None, other_line=other[0])

    def write(self, chunk: _Chunk) -> None:
        report = self.report
        report.lines += chunk.records
        report.rejected.extend(chunk.errors)
        table = _arrow(chunk.columns)
        n = table.num_rows
        if not n:
            return
        lines = array("q")
        lines.frombytes(chunk.columns[0])
        hashes = chunk.columns[_HASH_DATA]  # 64 hex characters per row
        labels = table.column("label").to_pylist()  # '' for none, as external_id
        exts = table.column("external_id").to_pylist()
        candidates, conflicts = [], {}
        seen, intern = self.seen, self.labels.setdefault
        for i, line in enumerate(lines):
            key = hashes[64 * i:64 * i + 64]
            if key not in seen:  # the common case, inline; the line alone without label or id
                label, ext = labels[i], exts[i]
                seen[key] = (line, intern(label, label), ext) if label or ext else line
                candidates.append(i)
                continue
            first, conflict = self._in_file(key, line, labels[i], exts[i])
            if first is not None:
                report.duplicates_in_file.append((line, first))
                continue
            candidates.append(i)
            if conflict:
                conflicts[i] = conflict
        store = self.store
        if candidates and not self.store_empty:
            stored = store.stored_matches(table)
            keep = []
            for i in candidates:
                same, other_id, other_label = stored.get(lines[i], (False, None, None))
                if same:
                    report.already_in_store.append(lines[i])
                    conflicts.pop(i, None)
                    continue
                keep.append(i)
                if other_id is not None and i not in conflicts:
                    conflicts[i] = LabelConflict(lines[i], labels[i] or None,
                                                 other_label or None, other_example=other_id)
            candidates = keep
        report.label_conflicts.extend(conflicts[i] for i in sorted(conflicts))
        if not candidates:
            return
        id_column = array("q", bytes(8 * n))
        for i, new_id in zip(candidates, store.new_example_ids(len(candidates))):
            id_column[i] = new_id
        notes = pa.array([conflicts[i].message if i in conflicts else "" for i in range(n)],
                         pa.large_string())
        unanswered = set(chunk.unanswered)
        if unanswered and self.example["status"] != "pending":  # those go in as pending
            rows = {line: i for i, line in enumerate(lines)}
            pending = array("q", bytes(8 * n))
            for line in unanswered:
                i = rows[line]
                pending[i], id_column[i] = id_column[i], 0
            self._insert(table, pending, notes, status="pending")
        self._insert(table, id_column, notes)
        report.imported += len(candidates)
        report.needs_answer += sum(lines[i] in unanswered for i in candidates)

    def _insert(self, table: pa.Table, ids: array, notes: pa.Array, **override) -> None:
        """Write the rows of `table` whose id in `ids` is not 0."""
        self.store.insert_examples(table.append_column("id", pa.Array.from_buffers(
            pa.int64(), table.num_rows, [None, pa.py_buffer(ids.tobytes())])).append_column(
            "label_conflict", notes), **{**self.example, **override})


def _repeats(label: str, ext: str, first_label: str, first_ext: str) -> bool:
    """Whether a record repeats an earlier record of the same conversation in the file ('' is
    none): the same label, and no external id or the earlier record's. A record with an id
    does not repeat one without: skipped, its id would be lost (and the next record with
    another id would repeat nothing that keeps the first)."""
    return label == first_label and (not ext or ext == first_ext)


# --- reading files ---------------------------------------------------------------------------

Record = tuple[int, Any, int]  # (line number, parsed record or LineError, bytes read so far)


def sniff_kind(path: Path) -> str:
    """'jsonl', 'json' (an array) or 'csv', from the file's first bytes, not its name."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).lstrip(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"["):
        first_line, _, rest = head.partition(b"\n")
        try:
            orjson.loads(first_line)
        except orjson.JSONDecodeError:  # broken, or nested too deeply for orjson to read
            return "jsonl" if rest.strip() and _closes(first_line) else "json"
        return "jsonl" if rest.strip() else "json"
    if not head:
        raise _no_records(path)
    if head.startswith(b"{") or path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    return "csv"


def _closes(line: bytes) -> bool:
    """Whether the brackets opened on `line` (outside strings) all close by its end: a whole
    value on one line, as a JSONL record is, whether or not it is valid JSON."""
    depth, in_string, escaped = 0, False, False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return depth == 0 and not in_string


def _no_records(path: Path) -> UnreadableFile:
    """Every kind of file alike: empty, only blank lines, `[]`, a CSV header alone."""
    return UnreadableFile(f"{path} holds no records (it is empty, blank, an empty JSON array "
                          "or a CSV header alone); nothing was imported")


def _jsonl_records(path: Path, fmt: str, mapping) -> Iterator[Record]:
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            offset += len(raw)
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                yield number, orjson.loads(raw), offset
            except orjson.JSONDecodeError:
                yield number, _diagnose(raw, number, path), offset


_TOO_DEEP = "nested too deeply to read (JSON arrays or objects inside each other ~1,000 deep)"


def _diagnose(raw: bytes, number: int, path: Path) -> Any:
    """A line orjson refused: not UTF-8 (the whole file is refused), or a LineError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, number, raw, exc) from None
    try:
        record = json.loads(text, parse_constant=float)
        problem = _scan(record)
    except json.JSONDecodeError as exc:
        return LineError(number, "invalid_json", f"{exc.msg} at column {exc.colno}")
    except RecursionError:  # Python's decoder (and _scan) recurse once per level of nesting
        return LineError(number, "invalid_json", _TOO_DEEP)
    return LineError(number, *problem) if problem else record


def _scan(value: Any, where: str = "") -> tuple[str, str, str | None] | None:
    """The first NaN/Infinity or lone surrogate in a parsed record, as (code, message, field)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan_value", f"{where or 'the record'} is {value}", where or None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "lone_surrogate", f"{where or 'a string'} contains a lone surrogate", where
        return None
    if isinstance(value, dict):
        children = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        children = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for child_where, child in children:
        if found := _scan(child, child_where):
            return found
    return None


def _json_array_records(path: Path, fmt: str, mapping) -> Iterator[Record]:
    """Stream the elements of a top-level JSON array, with the line each one starts on."""
    decoder = json.JSONDecoder(parse_constant=float)
    with _utf8_text(path) as f:
        buf, pos, line, eof, index = "", 0, 1, False, 0

        def fill() -> bool:
            nonlocal buf, pos, eof
            chunk = f.read(1 << 20)
            buf, pos = buf[pos:] + chunk, 0
            eof = not chunk
            return bool(chunk)

        def skip_space() -> str:
            nonlocal pos, line
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    line += buf[pos] == "\n"
                    pos += 1
                if pos < len(buf) or not fill():
                    return buf[pos] if pos < len(buf) else ""

        if skip_space() != "[":
            raise UnreadableFile(f"{path} does not start with a JSON array")
        pos += 1
        need_comma = False
        while True:
            ch = skip_space()
            if ch == "]":
                pos += 1
                if skip_space():
                    yield line, LineError(line, "invalid_json", "unexpected data after the end "
                                          "of the JSON array; it was not read"), 0
                return
            if need_comma:
                if ch != ",":
                    yield line, LineError(line, "invalid_json", f"expected ',' or ']' after "
                                          f"item {index}; the rest of the array cannot be "
                                          "read"), 0
                    return
                pos, need_comma = pos + 1, False
                ch = skip_space()
            if ch == "" or ch == "]":
                yield line, LineError(line, "invalid_json", "the JSON array is not closed"
                                      if ch == "" else "a trailing ',' before ']'"), 0
                return
            try:
                record, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                if not eof and fill():
                    continue
                yield line, LineError(line, "invalid_json",
                                      f"item {index + 1}: {exc.msg}; the rest of the array "
                                      "cannot be read"), 0
                return
            except RecursionError:  # Python's decoder recurses once per level of nesting
                yield line, LineError(line, "invalid_json", f"item {index + 1}: {_TOO_DEEP}; "
                                      "the rest of the array cannot be read"), 0
                return
            start_line, index, need_comma = line, index + 1, True
            line += buf.count("\n", pos, end)
            pos = end
            try:
                problem = _scan(record)
            except RecursionError:
                problem = ("invalid_json", _TOO_DEEP, None)
            item = LineError(start_line, *problem) if problem else record
            yield start_line, item, f.buffer.tell()


def _csv_records(path: Path, fmt: str, mapping) -> Iterator[Record]:
    with _utf8_text(path, newline="") as f:
        header, rows = csv_rows(f, path)
        missing = [c for c in (mapping or {}).values() if c not in header]
        if missing:
            raise InvalidValue(f"{path}: mapped column(s) {', '.join(missing)} not in the CSV "
                               f"header ({', '.join(header)})")
        if not mapping:
            try:
                detect_format(dict.fromkeys(header, ""))
            except RecordError:
                raise InvalidValue(f"{path}: CSV columns {', '.join(header)} need a mapping, "
                                   "for example --map prompt=COLUMN,response=COLUMN") from None
        for start, values in rows:
            if isinstance(values, LineError):
                yield start, values, 0
            elif len(values) != len(header):
                yield start, LineError(start, "wrong_type", f"line {start} has "
                                       f"{len(values)} fields where the header has "
                                       f"{len(header)}"), 0
            else:
                yield start, dict(zip(header, values)), f.buffer.tell()


class _CsvLines:
    """The physical lines of a CSV file as `csv.reader` reads them: counts them and keeps the
    lines of the row being read, so that after a `csv.Error` the rest of a broken row (a quoted
    field left open) is skipped rather than read as rows of its own."""

    def __init__(self, f: io.TextIOBase):
        self.f, self.count, self.record = f, 0, []

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = next(self.f)
        self.count += 1
        self.record.append(line)
        return line

    def skip_open_quote(self) -> None:
        """Read on to the line that closes a quoted field the broken row left open."""
        quoted, start = False, True
        lines, self.record = self.record, []
        for line in lines:
            quoted, start = _csv_scan(line, quoted, start)
        while quoted:
            try:
                line = next(self.f)
            except StopIteration:
                return
            self.count += 1
            quoted, start = _csv_scan(line, quoted, start)


_CSV_FIELD_END = re.compile(r"[,\r\n]")


def _csv_scan(line: str, quoted: bool, start: bool) -> tuple[bool, bool]:
    """Whether a quoted field is open after `line`, and whether a field starts there, given
    the same two facts before it (the csv module's dialect: `"` quotes only a whole field,
    `""` inside one is a quote)."""
    i, n = 0, len(line)
    while i < n:
        if quoted:
            j = line.find('"', i)
            if j < 0:
                return True, False
            if line.startswith('"', j + 1):
                i = j + 2
                continue
            quoted, start, i = False, False, j + 1
        elif start and line[i] == '"':
            quoted, start, i = True, False, i + 1
        else:
            found = _CSV_FIELD_END.search(line, i)
            if found is None:
                return False, False
            i, start = found.end(), True
    return quoted, start


def csv_rows(f: io.TextIOBase, path: Path) -> tuple[list[str], Iterator[tuple[int, Any]]]:
    """The header of a CSV file and its rows as (first line, list of values or LineError).

    Every `csv.Error` becomes a rejected row, never the end of the file: a field longer than
    `CSV_FIELD_LIMIT` characters is `field_too_long`, a NUL character or any other error the
    reader raises is `invalid_csv`; reading goes on at the row after it. A header that cannot
    be read, or that names a column twice, refuses the file (UnreadableFile).
    """
    csv.field_size_limit(CSV_FIELD_LIMIT)  # always the same value: no race between threads
    source = _CsvLines(f)
    reader = csv.reader(source)
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise UnreadableFile(f"{path}: the CSV header (line 1) cannot be read: "
                             f"{_csv_problem(exc)[1]}") from None
    if any("\x00" in name for name in header):
        raise UnreadableFile(f"{path}: the CSV header (line 1) contains NUL characters; the file "
                             "is not CSV text (binary, or UTF-16?). Nothing was imported.")
    repeated = [name for name in dict.fromkeys(header) if header.count(name) > 1]
    if repeated:  # a dict of the row would keep the last of them and drop the others silently
        name = repeated[0]
        columns = [str(i + 1) for i, n in enumerate(header) if n == name]
        raise UnreadableFile(f"{path}: the CSV header (line 1) names the column {name!r} more "
                             f"than once (columns {', '.join(columns)}); rename one so that "
                             "each column has its own name. Nothing was imported.")

    def rows() -> Iterator[tuple[int, Any]]:
        while True:
            start, source.record = source.count + 1, []
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                source.skip_open_quote()
                yield start, LineError(start, *_csv_problem(exc))
                continue
            if any("\x00" in v for v in values):
                yield start, LineError(start, "invalid_csv", f"line {start} contains a NUL "
                                       "character; CSV text cannot hold one (binary data?)")
            elif values:
                yield start, values

    return header, rows()


def _csv_problem(exc: csv.Error) -> tuple[str, str]:
    """(code, message) for an error of the csv reader."""
    if "field limit" in str(exc):
        return "field_too_long", (f"a field has more than {CSV_FIELD_LIMIT:,} characters, the "
                                  "most a CSV field may hold")
    return "invalid_csv", f"not valid CSV: {exc}"


class _utf8_text:
    """Open a file as strict UTF-8 text (BOM dropped); a decoding error becomes NotUtf8."""

    def __init__(self, path: Path, newline: str | None = None):
        self.path, self.newline = path, newline

    def __enter__(self) -> io.TextIOWrapper:
        self.f = open(self.path, encoding="utf-8-sig", newline=self.newline)
        return self.f

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.f.close()
        if isinstance(exc, UnicodeDecodeError):
            raise _first_bad_byte(self.path) from None
        return False


def _not_utf8(path: Path, number: int, raw: bytes, exc: UnicodeDecodeError) -> NotUtf8:
    """NotUtf8 naming where: line `number` (its bytes `raw`), at `exc`'s byte."""
    return NotUtf8(f"{path} is not UTF-8 text (line {number}, byte {exc.start + 1} of the line "
                   f"is {raw[exc.start:exc.start + 1]!r}); save it as UTF-8 and import again. "
                   "Nothing was imported.")


def _first_bad_byte(path: Path) -> NotUtf8:
    """NotUtf8 naming the line and byte of the file's first byte that is not UTF-8, as a
    JSONL line's says it (`_diagnose`). Read line by line: a large file is not held whole."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:  # a newline is never inside a character
                return _not_utf8(path, number, raw, exc)
    raise AssertionError(f"{path}: a decoding error, yet every line decodes")
