"""Named exceptions of Curate: the core, training runs, evaluation and models.

Every error a user can cause is one of these, with a message that names what went wrong and
where. Pages turn them into an `st.error`, the CLI into one line on stderr and exit status 1.
Anything else that escapes is a bug and keeps its traceback.

They all live here, grouped by the part that raises them, so a caller (the CLI, a page, a
script) catches them without importing the module that raises them, and `curation` stays free
of `training`: this module imports nothing of either. Private errors no caller catches by name
(the importer's `_WorkerDied`) stay beside the code that raises them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class CurateError(Exception):
    """Base of every error a user can cause; its message is meant to be shown as is."""


# --- the store ------------------------------------------------------------------------------

class StoreLocked(CurateError):
    """The DuckDB file is open for writing in another process."""


class StoreCorrupt(CurateError):
    """The DuckDB file or its write-ahead log is damaged; `curate doctor` recovers what it can."""


class StoreUnreadable(CurateError):
    """The DuckDB file cannot be opened for a reason other than damage (permissions, format)."""


class SchemaTooNew(CurateError):
    """The workspace was written by a newer Curate than this one."""


class SnapshotNotFound(CurateError):
    """No snapshot has the given id."""


# --- examples, import and upload ------------------------------------------------------------

class ExampleNotFound(CurateError):
    """No example has the given id."""


class InvalidExample(CurateError):
    """An example (or an edit to one) breaks the conversation rules."""


class InvalidValue(CurateError):
    """An argument (status, split, format, mapping, option) has a value we do not accept."""


class VersionConflict(CurateError):
    """An update was based on a version of the example that is no longer current."""

    def __init__(self, example_id: int, based_on: int, current: int, changed_by: str,
                 changed_at: datetime):
        self.example_id = example_id
        self.based_on = based_on
        self.current = current
        self.changed_by = changed_by
        self.changed_at = changed_at
        super().__init__(
            f"example #{example_id} was changed by {changed_by} at "
            f"{changed_at:%Y-%m-%d %H:%M:%S} UTC (now version {current}; your edit was based "
            f"on version {based_on}). Reload it, or overwrite consciously."
        )


class BulkConflict(CurateError):
    """Someone changed some of the examples of a bulk action while it was being written;
    nothing of it was written."""


class NotUtf8(CurateError):
    """An input file is not valid UTF-8 text."""


class UnreadableFile(CurateError):
    """An input file cannot be read as JSONL, a JSON array or CSV at all."""


class UploadRejected(CurateError):
    """An uploaded file is refused before import: empty, or larger than the limit."""


class WouldDuplicate(CurateError):
    """A new example duplicates a stored one (or would leak between train and eval)."""


# --- people ---------------------------------------------------------------------------------

class PermissionDenied(CurateError):
    """The user's role does not allow the action."""


class UnknownUser(CurateError):
    """No account has that name or e-mail address, or the password is wrong."""


class TooManySignIns(CurateError):
    """Too many failed sign-ins for a name or from a client; `.retry_after` is in seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class SessionInvalid(CurateError):
    """A sign-in session token is unknown, tampered with, expired or signed out."""


# --- checks ---------------------------------------------------------------------------------

class LeakageUnresolved(CurateError):
    """Eval examples duplicate train examples of the snapshot; `.leaks` lists the pairs."""

    def __init__(self, message: str, leaks: list[dict[str, Any]]):
        super().__init__(message)
        self.leaks = leaks


# --- training runs --------------------------------------------------------------------------

class RunAlreadyActive(CurateError):
    """A training run is still active in this workspace; only one runs at a time."""


class RunNotFound(CurateError):
    """No run folder has the given id."""


class CurveNotFound(CurateError):
    """No learning curve folder has the given id (or there is none yet)."""


class TrainerNotStarted(CurateError):
    """The trainer process exited before it took the run over; the run is marked failed."""


class RunNotActive(CurateError):
    """The run has already ended, so it cannot be cancelled."""


class EmptyTrainingSet(InvalidValue):
    """The snapshot (or train.jsonl) has no example left to train on."""


class BadCheckpoint(CurateError):
    """A checkpoint is missing a file, is damaged, or holds a pickle, which is not loaded."""


# --- evaluation -----------------------------------------------------------------------------

class EvaluationAlreadyActive(CurateError):
    """An evaluation is still running in this workspace; only one runs at a time."""


class EvaluationNotActive(CurateError):
    """The run has no evaluation queued or running, so there is nothing to cancel."""


# --- models ---------------------------------------------------------------------------------

class ModelUnavailable(CurateError):
    """The base model cannot be found or does not behave like a chat model."""
