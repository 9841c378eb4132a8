"""Curate's core: the example store, import, export and (later) the quality checks.

The app and the CLI import only these names. Heavy libraries (torch, transformers,
sentence-transformers, cleanlab) are imported lazily inside the functions that need them,
so `import curation` stays fast.
"""

from curation.auth import PermissionDenied, User
from curation.errors import (CurateError, ExampleNotFound, InvalidExample, InvalidValue,
                             NotUtf8, SchemaTooNew, SnapshotNotFound, StoreLocked,
                             UnreadableFile, VersionConflict)
from curation.exporter import ExportResult, export_jsonl, write_snapshot
from curation.importer import ImportReport, LineError, import_file
from curation.query import SPLITS, STATUSES, ExampleFilter
from curation.store import Example, Snapshot, Store, default_db_path

__all__ = [
    "CurateError", "ExampleNotFound", "InvalidExample", "InvalidValue", "NotUtf8",
    "SchemaTooNew", "SnapshotNotFound", "StoreLocked", "UnreadableFile", "VersionConflict",
    "ExportResult", "export_jsonl", "write_snapshot", "ImportReport", "LineError",
    "import_file", "SPLITS", "STATUSES", "ExampleFilter", "Example", "Snapshot", "Store",
    "default_db_path", "PermissionDenied", "User",
]
