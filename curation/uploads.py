"""Uploaded files, safely on disk: size-checked, saved under a generated name inside the
workspace, sniffed by content, previewed, and removed after the import.

The Import / Export page calls these functions; they hold no Streamlit code, so a script or a
test can do the same.

Design decisions:
- The file the browser sends is written to `<workspace>/uploads/<timestamp>-<random>.upload`.
  The name the user gave is never part of a path (a name like `../../etc/passwd` cannot escape
  the workspace); it is only used as the default `source` of the imported examples.
- The neutral `.upload` suffix means `importer.sniff_kind` decides by content alone: a CSV
  called `data.jsonl` is read as CSV, a JSONL file called `notes.txt` as JSONL.
- The size limit is enforced here, on the server, while copying: the browser's own limit
  (`st.file_uploader(max_upload_size=...)`) can be bypassed by a forged request. A refused or
  failed copy leaves no partial file behind.
- Uploads left behind by a session that ended before importing are removed by
  `remove_stale_uploads` after a day; only our own generated names are touched.
- Export file names come from the snapshot name through `safe_stem`: letters, digits, dot,
  dash and underscore only, so no name can point outside `<workspace>/exports`.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from curation._files import private_dir
from curation.auth import User, require
from curation.errors import UnreadableFile, UploadRejected
from curation.formats import MAPPING_TARGETS, RecordError, detect_format
from curation.importer import (LineError, _json_array_records, _jsonl_records, _utf8_text,
                               csv_rows, sniff_kind)
from curation.store import utcnow

MAX_UPLOAD_MB = 200
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
UPLOADS_DIR = "uploads"
EXPORTS_DIR = "exports"
IMPORT_REPORTS_DIR = "import-reports"
PREVIEW_RECORDS = 5
STALE_UPLOAD_SECONDS = 24 * 3600
_CHUNK = 1 << 20
_UPLOAD_NAME = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{16}\.upload$")

# Column names we guess for each mapping target, in order of preference (lower case).
_GUESSES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "question", "instruction", "input", "query", "text", "user"),
    "response": ("response", "answer", "output", "completion", "reply", "assistant"),
    "system": ("system", "system_prompt"),
    "label": ("label", "category", "intent", "class", "topic"),
    "id": ("id", "external_id", "uid", "key"),
    "tags": ("tags", "tag"),
}


def save_upload(user: User, workspace_dir: str | os.PathLike, data: bytes | BinaryIO, *,
                max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
    """Copy uploaded bytes (or a binary file object) to a new file in `<workspace>/uploads`.

    The name is generated; the caller's file name plays no part. Raises UploadRejected when
    the data is empty or exceeds `max_bytes` (nothing is left on disk then).
    """
    require(user, "import")
    directory = private_dir((Path(workspace_dir) / UPLOADS_DIR).resolve())
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    declared = getattr(stream, "size", None)
    if isinstance(declared, int) and declared > max_bytes:
        raise UploadRejected(_too_large(declared, max_bytes))
    if hasattr(stream, "seek"):
        stream.seek(0)
    target = directory / f"{utcnow():%Y%m%dT%H%M%S}-{secrets.token_hex(8)}.upload"
    assert target.parent == directory  # generated name: never a path of the caller's choosing
    written = 0
    try:
        with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            while chunk := stream.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise UploadRejected(_too_large(written, max_bytes, at_least=True))
                out.write(chunk)
        if written == 0:
            raise UploadRejected("the uploaded file is empty")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def _too_large(size: int, max_bytes: int, at_least: bool = False) -> str:
    return (f"the file is {'more than ' if at_least else ''}{size / 1024 / 1024:,.1f} MB; "
            f"the limit is {max_bytes / 1024 / 1024:,.0f} MB. Split it, or import it with "
            "`curate import FILE`, which has no size limit.")


def discard_upload(workspace_dir: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Delete a file made by `save_upload`; anything outside `<workspace>/uploads` is left
    alone. Returns whether a file was deleted."""
    directory = (Path(workspace_dir) / UPLOADS_DIR).resolve()
    target = Path(path).resolve()
    if target.parent != directory or not _UPLOAD_NAME.match(target.name):
        return False
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    return True


def remove_stale_uploads(workspace_dir: str | os.PathLike,
                         older_than_s: float = STALE_UPLOAD_SECONDS) -> int:
    """Delete uploads that sessions left behind more than `older_than_s` seconds ago."""
    directory = Path(workspace_dir) / UPLOADS_DIR
    if not directory.is_dir():
        return 0
    cutoff, removed = time.time() - older_than_s, 0
    for item in directory.iterdir():
        if _UPLOAD_NAME.match(item.name) and item.is_file() and item.stat().st_mtime < cutoff:
            removed += discard_upload(workspace_dir, item)
    return removed


# --- preview ---------------------------------------------------------------------------------

@dataclass
class Preview:
    """The first records of a file as parsed, and what the import will make of them.

    `detected_format` is the input format of the first record (for CSV: of the header), or
    None when it matches no known format and the import needs a column mapping."""

    kind: str
    records: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    detected_format: str | None = None

    @property
    def needs_mapping(self) -> bool:
        return self.detected_format is None


def preview_file(path: str | os.PathLike, n: int = PREVIEW_RECORDS) -> Preview:
    """Parse the first `n` records of a JSONL, JSON-array or CSV file (kind sniffed from its
    content). Raises NotUtf8 or UnreadableFile when the file cannot be read at all."""
    path = Path(path)
    kind = sniff_kind(path)
    preview = Preview(kind=kind)
    if kind == "csv":
        header, rows, errors = _csv_head(path, n)
        preview.columns, preview.records, preview.errors = header, rows, errors
        preview.detected_format = _format_of(dict.fromkeys(header, ""))
        return preview
    reader = _jsonl_records if kind == "jsonl" else _json_array_records
    for _line, record, _offset in reader(path, "auto", None):
        if isinstance(record, LineError):
            preview.errors.append(record)
        elif isinstance(record, dict):
            preview.records.append(record)
        else:
            preview.errors.append(LineError(_line, "data_type", "the record is not an object"))
        if len(preview.records) + len(preview.errors) >= n:
            break
    preview.columns = list(dict.fromkeys(k for r in preview.records for k in r))
    preview.detected_format = _format_of(preview.records[0]) if preview.records else None
    return preview


def _format_of(record: dict) -> str | None:
    try:
        return detect_format(record)
    except RecordError:
        return None


def _csv_head(path: Path, n: int) -> tuple[list[str], list[dict[str, Any]],
                                          list[LineError]]:
    """The header, the first `n` rows as dicts and the rows the import would reject."""
    rows: list[dict[str, Any]] = []
    errors: list[LineError] = []
    with _utf8_text(path, newline="") as f:
        header, reader = csv_rows(f, path)
        if not header:
            raise UnreadableFile("the CSV file has no header row")
        for _line, values in reader:
            if isinstance(values, LineError):
                errors.append(values)
            else:
                rows.append(dict(zip(header, values)))
            if len(rows) + len(errors) >= n:
                break
    return header, rows, errors


def suggest_mapping(columns: list[str]) -> dict[str, str]:
    """A first guess of {target: column} from common column names; each column used once."""
    by_lower = {c.strip().lower(): c for c in columns}
    mapping: dict[str, str] = {}
    for target in MAPPING_TARGETS:
        for guess in _GUESSES[target]:
            column = by_lower.get(guess)
            if column is not None and column not in mapping.values():
                mapping[target] = column
                break
    return mapping


def preview_cell(value: Any, limit: int = 200) -> str:
    """One preview value as a single line of text (JSON for lists and objects), shortened."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- exports ---------------------------------------------------------------------------------

def safe_stem(name: str, limit: int = 60) -> str:
    """A file-name stem from free text: letters, digits, '.', '-', '_' only, no leading dot."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_name))
    return stem.strip(".-_")[:limit].strip(".-_")


def export_target(workspace_dir: str | os.PathLike, snapshot_name: str | None = None) -> Path:
    """A new `.jsonl` path in `<workspace>/exports`, named after the snapshot name when one
    is given (made safe), else after the time; never an existing file."""
    directory = Path(workspace_dir) / EXPORTS_DIR
    stamp = f"{utcnow():%Y%m%dT%H%M%S}"
    stem = safe_stem(snapshot_name or "") or f"export-{stamp}"
    target = directory / f"{stem}.jsonl"
    if target.exists():
        target = directory / f"{stem}-{stamp}-{secrets.token_hex(3)}.jsonl"
    return target
