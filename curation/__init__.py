"""Curate's core: the example store, import, export and (later) the quality checks.

The app and the CLI import only these names. Heavy libraries (torch, transformers,
sentence-transformers, cleanlab) are imported lazily inside the functions that need them,
so `import curation` stays fast.
"""

from curation.auth import User
from curation.errors import (BadCheckpoint, BulkConflict, CurateError, CurveNotFound,
                             EmptyTrainingSet, EvaluationAlreadyActive, EvaluationNotActive,
                             ExampleNotFound,
                             InvalidExample, InvalidValue, LeakageUnresolved, ModelUnavailable,
                             NotUtf8, PermissionDenied, RunAlreadyActive, RunNotActive,
                             RunNotFound, SchemaTooNew, SessionInvalid, SnapshotNotFound,
                             StoreCorrupt, StoreLocked, StoreUnreadable, TooManySignIns,
                             TrainerNotStarted, UnknownUser, UnreadableFile, UploadRejected,
                             VersionConflict, WouldDuplicate)
from curation.exporter import ExportResult, export_jsonl, write_snapshot
from curation.importer import ImportReport, LineError, import_file
from curation.query import SPLITS, STATUSES, ExampleFilter
from curation.store import Example, Snapshot, Store, default_db_path

__all__ = [
    # errors (curation/errors.py), grouped as there
    "CurateError", "StoreLocked", "StoreCorrupt", "StoreUnreadable", "SchemaTooNew",
    "SnapshotNotFound", "ExampleNotFound", "InvalidExample", "InvalidValue", "VersionConflict",
    "BulkConflict", "NotUtf8", "UnreadableFile", "UploadRejected", "WouldDuplicate",
    "PermissionDenied", "UnknownUser", "TooManySignIns", "SessionInvalid", "LeakageUnresolved",
    "RunAlreadyActive", "RunNotFound",
    "CurveNotFound", "TrainerNotStarted", "RunNotActive", "EmptyTrainingSet", "BadCheckpoint",
    "EvaluationAlreadyActive", "EvaluationNotActive", "ModelUnavailable",
    "ExportResult", "export_jsonl", "write_snapshot", "ImportReport", "LineError",
    "import_file", "SPLITS", "STATUSES", "ExampleFilter", "Example", "Snapshot", "Store",
    "default_db_path", "User",
]
