"""One-call export of a snapshot to JSONL, with a manifest beside it.

Design decisions:
- Export always goes through a snapshot: the filters select examples, the store creates (or
  reuses) the immutable snapshot of their current versions, and the file is written from the
  snapshot. The manifest names the snapshot, so a training run can be traced to its data.
- Atomic: the file and the manifest are written to temporary names in the target folder and
  renamed into place, so a reader never sees half a file. Both are 0600, wherever they go
  (a missing folder is made 0700): they hold the curated data.
- Each line carries the example's external id (as `id`), label, tags and a `metadata` object
  (Curate id, version, split, status, source); importing the file again gives back the same
  conversations, labels and tags.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from curation._files import open_private, private_dir
from curation.auth import User, require
from curation.errors import InvalidValue
from curation.formats import OUTPUT_FORMATS, WRITERS
from curation.query import ExampleFilter
from curation.store import Snapshot, Store, utcnow

DEFAULT_EXPORT_FILTER = ExampleFilter(status=("accepted",))


@dataclass(frozen=True)
class ExportResult:
    """Where an export went and what it holds."""

    path: Path
    manifest_path: Path
    format: str
    count: int
    file_sha256: str
    snapshot: Snapshot

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "manifest": str(self.manifest_path),
                "format": self.format, "count": self.count, "file_sha256": self.file_sha256,
                "snapshot_id": self.snapshot.id, "snapshot_hash": self.snapshot.content_hash}


def export_jsonl(store: Store, out_path: str | os.PathLike, *, fmt: str = "openai",
                 where: ExampleFilter = DEFAULT_EXPORT_FILTER, user: User,
                 snapshot_name: str | None = None) -> ExportResult:
    """Snapshot what `where` selects (accepted examples by default) and write it as JSONL."""
    require(user, "export")
    _check_format(fmt)
    snapshot = store.snapshot(where, actor=user.name, name=snapshot_name)
    return write_snapshot(store, snapshot.id, out_path, user=user, fmt=fmt)


def write_snapshot(store: Store, snapshot_id: str, out_path: str | os.PathLike, *,
                   user: User, fmt: str = "openai") -> ExportResult:
    """Write an existing snapshot as JSONL plus `<name>.manifest.json`, both atomically."""
    require(user, "export")
    _check_format(fmt)
    snapshot = store.get_snapshot(snapshot_id)
    out_path = Path(out_path)
    private_dir(out_path.parent, tighten=False)
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
    result = ExportResult(out_path, manifest_path, fmt, count, digest.hexdigest(), snapshot)
    manifest = {**result.to_dict(), "filters": snapshot.filters, "snapshot_name": snapshot.name,
                "exported_at": utcnow().isoformat() + "Z"}
    with _atomic(manifest_path) as f:
        f.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return result


def _check_format(fmt: str) -> None:
    if fmt not in OUTPUT_FORMATS:
        raise InvalidValue(f"export format {fmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")


class _atomic:
    """Write to a temporary file beside `path`, fsync, then rename over `path`."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def __enter__(self):
        self.f = open_private(self.tmp)
        return self.f

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.f.flush()
            os.fsync(self.f.fileno())
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False
