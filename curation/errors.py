"""Named exceptions of the Curate core.

Every error a user can cause is one of these, with a message that names what went wrong and
where. Pages turn them into an `st.error`, the CLI into one line on stderr and exit status 1.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from datetime import datetime


class CurateError(Exception):
    """Base of every error a user can cause; its message is meant to be shown as is."""


class StoreLocked(CurateError):
    """The DuckDB file is open for writing in another process."""


class StoreCorrupt(CurateError):
    """The DuckDB file or its write-ahead log is damaged; `curate doctor` recovers what it can."""


class StoreUnreadable(CurateError):
    """The DuckDB file cannot be opened for a reason other than damage (permissions, format)."""


class SchemaTooNew(CurateError):
    """The workspace was written by a newer Curate than this one."""


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


class NotUtf8(CurateError):
    """An input file is not valid UTF-8 text."""


class UnreadableFile(CurateError):
    """An input file cannot be read as JSONL, a JSON array or CSV at all."""


class SnapshotNotFound(CurateError):
    """No snapshot has the given id."""
