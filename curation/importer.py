"""Validated, atomic, idempotent import of JSONL, JSON arrays and CSV into the store.

Design decisions:
- Streaming: records are read one at a time and staged in batches of `BATCH_ROWS` into a
  temporary DuckDB table, so Python never holds more than one batch, whatever the file size.
- Atomic: staging, duplicate detection and the inserts into `examples`, `example_versions` and
  `events` run in one transaction. A crash or `kill -9` before COMMIT leaves the store as it was.
- Idempotent: a conversation whose content hash is already stored is skipped and reported;
  a repeat of an earlier line of the same file is reported as `duplicate_in_file`.
- A bad record never aborts the rest: it becomes a `LineError` (line, code, message, field).
  A file that is not UTF-8 is refused whole (`NotUtf8`), since its text cannot be trusted.
- Fast path: orjson parses the bytes of a line; only a line orjson refuses goes through the
  standard library to tell NaN, lone surrogates and plain syntax errors apart.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from curation.errors import InvalidValue, NotUtf8, UnreadableFile
from curation.formats import (DEFAULT_MAX_FIELD_CHARS, INPUT_FORMATS, Draft, RecordError,
                              content_hash, detect_format, search_text, to_draft)
from curation.query import SPLITS, STATUSES
from curation.store import Store, utcnow

BATCH_ROWS = 10_000
Progress = Callable[[int, int], None]
_STAGING_SCHEMA = pa.schema([("line", pa.int64()), ("external_id", pa.string()),
                             ("messages", pa.string()), ("text", pa.string()),
                             ("label", pa.string()), ("tags", pa.list_(pa.string())),
                             ("content_hash", pa.string())])


@dataclass(frozen=True)
class LineError:
    """A rejected record: its line number (1-based), error code, message and field."""

    line: int
    code: str
    message: str
    field: str | None = None


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

    def summary(self) -> str:
        parts = [f"{self.imported:,} imported", f"{len(self.rejected):,} rejected"]
        if self.already_in_store:
            parts.append(f"{len(self.already_in_store):,} already in the store")
        if self.duplicates_in_file:
            parts.append(f"{len(self.duplicates_in_file):,} repeated within the file")
        return f"{self.path}: {self.lines:,} records read; " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rejected": [asdict(e) for e in self.rejected],
                "duplicates_in_file": [{"line": a, "first_line": b}
                                       for a, b in self.duplicates_in_file]}

    def save(self, directory: Path) -> Path:
        """Write the full report as JSON into `directory`; return its path."""
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{utcnow():%Y%m%dT%H%M%S%f}-{Path(self.path).name}.json"
        target.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))
        return target


def import_file(store: Store, path: str | os.PathLike, *, fmt: str = "auto",
                mapping: dict[str, str] | None = None, split: str = "train",
                status: str = "pending", source: str | None = None, tags: tuple[str, ...] = (),
                actor: str, max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
                progress: Progress | None = None) -> ImportReport:
    """Import every valid record of a file in one transaction; report every other one."""
    if fmt not in INPUT_FORMATS:
        raise InvalidValue(f"format {fmt!r} is not one of {', '.join(INPUT_FORMATS)}")
    if split not in SPLITS:
        raise InvalidValue(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if status not in STATUSES:
        raise InvalidValue(f"status {status!r} is not one of {', '.join(STATUSES)}")
    if mapping:
        fmt = "mapped"
    elif fmt == "mapped":
        raise InvalidValue("format 'mapped' needs a column mapping, e.g. prompt=text,"
                           "response=answer")
    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"{path}: no such file")
    kind = sniff_kind(path)
    report = ImportReport(path=str(path), file_kind=kind)
    records = {"jsonl": _jsonl_records, "json": _json_array_records, "csv": _csv_records}[kind]
    extra_tags = tuple(t for t in tags if t)
    total = path.stat().st_size

    with store.transaction() as cur:
        cur.execute("CREATE OR REPLACE TEMP TABLE staging (line BIGINT, external_id VARCHAR, "
                    "messages VARCHAR, text VARCHAR, label VARCHAR, tags VARCHAR[], "
                    "content_hash VARCHAR)")
        batch: list[tuple] = []
        for line, record, offset in records(path, fmt, mapping):
            report.lines += 1
            if isinstance(record, LineError):
                report.rejected.append(record)
                continue
            try:
                draft = to_draft(record, fmt, mapping, max_field_chars)
            except RecordError as err:
                report.rejected.append(LineError(line, err.code, err.message, err.field))
                continue
            batch.append(_row(line, draft, extra_tags))
            if len(batch) >= BATCH_ROWS:
                _stage(cur, batch)
                batch = []
                if progress:
                    progress(offset, total)
        _stage(cur, batch)
        _adopt(cur, report, split=split, status=status, source=source or path.name, actor=actor)
        if progress:
            progress(total, total)
    return report


def _row(line: int, draft: Draft, extra_tags: tuple[str, ...]) -> tuple:
    tags = list(dict.fromkeys(draft.tags + extra_tags))
    return (line, draft.external_id, orjson.dumps(draft.messages).decode(),
            search_text(draft.messages), draft.label, tags, content_hash(draft.messages))


def _stage(cur, batch: list[tuple]) -> None:
    if not batch:
        return
    columns = list(zip(*batch))
    staged = pa.Table.from_arrays([pa.array(c, type=f.type)
                                   for c, f in zip(columns, _STAGING_SCHEMA)],
                                  schema=_STAGING_SCHEMA)
    cur.register("staged_batch", staged)
    cur.execute("INSERT INTO staging SELECT * FROM staged_batch")
    cur.unregister("staged_batch")


def _adopt(cur, report: ImportReport, *, split: str, status: str, source: str,
           actor: str) -> None:
    """Move staged rows into the store: skip known conversations and repeats in the file.

    Only narrow tables (line, hash, id) are built on the side; the wide columns go straight
    from `staging` into the store, once each, so DuckDB never holds extra copies of the text.
    """
    cur.execute("CREATE OR REPLACE TEMP TABLE staged_first AS SELECT line, content_hash, "
                "min(line) OVER (PARTITION BY content_hash) AS first_line FROM staging")
    report.duplicates_in_file = [tuple(r) for r in cur.execute(
        "SELECT line, first_line FROM staged_first WHERE line <> first_line ORDER BY line"
    ).fetchall()]
    report.already_in_store = [r[0] for r in cur.execute(
        "SELECT line FROM staged_first WHERE line = first_line AND content_hash IN "
        "(SELECT content_hash FROM examples) ORDER BY line").fetchall()]
    now = utcnow()
    cur.execute("CREATE OR REPLACE TEMP TABLE adopted AS SELECT nextval('example_id_seq') AS id, "
                "line FROM (SELECT line FROM staged_first WHERE line = first_line AND "
                "content_hash NOT IN (SELECT content_hash FROM examples) ORDER BY line)")
    new_rows = "FROM adopted a JOIN staging s USING (line) ORDER BY a.id"
    cur.execute("INSERT INTO examples (id, external_id, messages, text, label, tags, source, "
                "split, status, content_hash, version, created_by, created_at, updated_by, "
                "updated_at, deleted) SELECT a.id, s.external_id, s.messages, s.text, s.label, "
                "s.tags, ?, ?, ?, s.content_hash, 1, ?, ?, ?, ?, false " + new_rows,
                [source, split, status, actor, now, actor, now])
    cur.execute("INSERT INTO example_versions SELECT a.id, 1, s.messages, s.label, s.tags, ?, ?, "
                "s.content_hash, ?, ? " + new_rows, [split, status, actor, now])
    cur.execute("INSERT INTO events SELECT nextval('event_id_seq'), a.id, 'create', ?, ?, 1, "
                "NULL, json_object('source', ?, 'split', ?, 'status', ?, 'label', s.label, "
                "'line', a.line)::VARCHAR, NULL " + new_rows,
                [actor, now, source, split, status])
    report.imported = cur.execute("SELECT count(*) FROM adopted").fetchone()[0]
    cur.execute("DROP TABLE adopted; DROP TABLE staged_first; DROP TABLE staging")


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
        except orjson.JSONDecodeError:
            return "json"
        return "jsonl" if rest.strip() else "json"
    if head.startswith(b"{") or path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if not head:
        raise UnreadableFile(f"{path} is empty")
    return "csv"


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


def _diagnose(raw: bytes, number: int, path: Path) -> Any:
    """A line orjson refused: not UTF-8 (the whole file is refused), or a LineError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8(f"{path} is not UTF-8 text (line {number}, byte {exc.start + 1} of the "
                      f"line is {raw[exc.start:exc.start + 1]!r}); save it as UTF-8 and import "
                      "again. Nothing was imported.") from None
    try:
        record = json.loads(text, parse_constant=float)
    except json.JSONDecodeError as exc:
        return LineError(number, "invalid_json", f"{exc.msg} at column {exc.colno}")
    problem = _scan(record)
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
            start_line, index, need_comma = line, index + 1, True
            line += buf.count("\n", pos, end)
            pos = end
            problem = _scan(record)
            item = LineError(start_line, *problem) if problem else record
            yield start_line, item, f.buffer.tell()


def _csv_records(path: Path, fmt: str, mapping) -> Iterator[Record]:
    with _utf8_text(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
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
        start = reader.line_num + 1
        for values in reader:
            if values:
                if len(values) != len(header):
                    yield start, LineError(start, "wrong_type", f"line {start} has "
                                           f"{len(values)} fields where the header has "
                                           f"{len(header)}"), 0
                else:
                    yield start, dict(zip(header, values)), f.buffer.tell()
            start = reader.line_num + 1


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
            raise NotUtf8(f"{self.path} is not UTF-8 text (byte {exc.start + 1} of a block "
                          "cannot be decoded); save it as UTF-8 and import again. Nothing was "
                          "imported.") from None
        return False
