"""Guidelines versions, per-label descriptions and the guidelines version of decisions.

`curation.guidelines` decides who may write what; this module only reads and writes rows.

Design decisions:
- Every save of the guidelines is a new row of `guidelines` (version 1, 2, ...), never an
  update: the history and any diff between two versions come from the rows themselves.
  A save names the version it was based on (`if_current`); the check and the insert are one
  transaction, so two admins saving at once cannot both make "version 3".
- Every audit event written by `Store.update` records, in the same statement, the guidelines
  version in force when it was written (`events.guidelines_version`, NULL before any
  guidelines existed). A decision therefore carries the guidelines it was made under, with
  nothing for the caller to pass or forget.
- "Decided under older guidelines" (`_filters.OLDER_GUIDELINES`) looks at each example's
  latest decision event (accept, reject, needs work) and compares its version with the
  current one; examples imported as accepted were never decided here and do not match.
- Label descriptions are one row per label (the latest text), not versioned: they are short
  reference text beside the guidelines, and who changed them last is kept on the row.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

EVENT_COLUMNS = ("id, example_id, action, actor, occurred_at, version, before, after, reason, "
                 "guidelines_version")
# The guidelines version in force now (NULL when there are none), as a scalar subquery.
CURRENT_GUIDELINES = "SELECT max(version) FROM guidelines"
DECISION_ACTIONS = ("accept", "reject", "needs_work")
_VERSION_COLUMNS = "version, saved_by, saved_at, note, text"


class GuidelineQueries:
    """The `guidelines` and `label_descriptions` tables (mixed into `Store`)."""

    def guidelines_version(self) -> int:
        """The current guidelines version; 0 when none were ever saved."""
        return self.cursor().execute(
            "SELECT coalesce(max(version), 0) FROM guidelines").fetchone()[0]

    def guidelines_row(self, version: int | None = None) -> tuple | None:
        """(version, saved_by, saved_at, note, text) of one version (default the current
        one), or None when there is no such version."""
        if version is None:
            return self.cursor().execute(
                f"SELECT {_VERSION_COLUMNS} FROM guidelines ORDER BY version DESC LIMIT 1"
            ).fetchone()
        return self.cursor().execute(f"SELECT {_VERSION_COLUMNS} FROM guidelines "
                                     "WHERE version = ?", [version]).fetchone()

    def guidelines_rows(self) -> list[tuple]:
        """(version, saved_by, saved_at, note, text) of every version, newest first."""
        return self.cursor().execute(
            f"SELECT {_VERSION_COLUMNS} FROM guidelines ORDER BY version DESC").fetchall()

    def add_guidelines_version(self, text: str, saved_by: str, saved_at: datetime,
                               note: str | None, *, if_current: int | None = None
                               ) -> tuple[int, int]:
        """Store `text` as the next version; (new version, 0), or (0, the current version)
        without writing anything when `if_current` is given and is not the current one, or
        when another session saves the same version number at the same moment."""
        try:
            with self.transaction() as cur:
                current = cur.execute("SELECT coalesce(max(version), 0) FROM guidelines"
                                      ).fetchone()[0]
                if if_current is not None and if_current != current:
                    return 0, current
                cur.execute("INSERT INTO guidelines VALUES (?, ?, ?, ?, ?)",
                            [current + 1, text, saved_by, saved_at, note])
        except (duckdb.ConstraintException, duckdb.TransactionException):
            # another session is saving the same version number (maybe not committed yet)
            return 0, current + 1
        return current + 1, 0

    def last_decision_row(self, example_id: int) -> tuple | None:
        """(action, actor, occurred_at, guidelines version) of the latest decision on an
        example (accept, reject, needs work), or None."""
        return self.cursor().execute(
            "SELECT action, actor, occurred_at, guidelines_version FROM events "
            f"WHERE example_id = ? AND action IN ({', '.join('?' * len(DECISION_ACTIONS))}) "
            "ORDER BY id DESC LIMIT 1", [example_id, *DECISION_ACTIONS]).fetchone()

    def event_guidelines_versions(self, example_id: int) -> dict[int, int | None]:
        """{event id: guidelines version it was written under} of one example's events."""
        return dict(self.cursor().execute(
            "SELECT id, guidelines_version FROM events WHERE example_id = ? ORDER BY id",
            [example_id]).fetchall())

    # --- label descriptions ---------------------------------------------------------------

    def label_description_rows(self) -> list[tuple]:
        """(label, description, example, updated_by, updated_at) of every label, by label."""
        return self.cursor().execute(
            "SELECT label, description, example, updated_by, updated_at "
            "FROM label_descriptions ORDER BY label").fetchall()

    def put_label_description(self, label: str, description: str, example: str | None,
                              updated_by: str, updated_at: datetime) -> None:
        self.cursor().execute("INSERT OR REPLACE INTO label_descriptions VALUES (?, ?, ?, ?, ?)",
                              [label, description, example, updated_by, updated_at])

    def delete_label_description(self, label: str) -> bool:
        """Remove a label's description; whether there was one."""
        return bool(self.cursor().execute(
            "DELETE FROM label_descriptions WHERE label = ? RETURNING label",
            [label]).fetchall())
