"""Model suggestions (pre-labels) as the store keeps them (`suggestions`).

A suggestion is a run's answer to one example version with its confidence. It is kept beside
the example, never in it: accepting it is a person's edit. Predicting again for the same
example version and run replaces the earlier suggestion; the current one is the newest for
the example's current version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SUGGESTION_COLUMNS = ("example_id", "version", "run_id", "answer", "confidence", "method",
                      "created_by", "created_at")


class SuggestionQueries:
    """The `suggestions` table (mixed into `Store`)."""

    def save_suggestions(self, rows: Sequence[tuple[int, int, str, str, float, str]], *,
                         actor: str) -> int:
        """Store suggestions, one (example_id, version, run_id, answer, confidence, method)
        each, replacing any of the same example version and run, in one transaction."""
        if not rows:
            return 0
        with self.transaction() as tx:
            tx.executemany("DELETE FROM suggestions WHERE example_id = ? AND version = ? "
                           "AND run_id = ?", [list(r[:3]) for r in rows])
            tx.executemany("INSERT INTO suggestions VALUES (?, ?, ?, ?, ?, ?, ?, "
                           "current_timestamp)", [[*r, actor] for r in rows])
        return len(rows)

    def current_suggestion(self, example_id: int) -> dict[str, Any] | None:
        """The newest suggestion for the example's current version (None: none, or only for
        earlier versions), a dict of `SUGGESTION_COLUMNS`."""
        row = self.cursor().execute(
            "SELECT s.* FROM suggestions s JOIN examples e "
            "ON e.id = s.example_id AND e.version = s.version WHERE s.example_id = ? "
            "ORDER BY s.created_at DESC, s.run_id DESC LIMIT 1", [example_id]).fetchone()
        return dict(zip(SUGGESTION_COLUMNS, row)) if row else None

    def suggestion_count(self) -> int:
        """How many examples have a suggestion for their current version."""
        return self.cursor().execute(
            "SELECT count(DISTINCT s.example_id) FROM suggestions s JOIN examples e "
            "ON e.id = s.example_id AND e.version = s.version").fetchone()[0]

    def routable_suggestions(self, run_id: str) -> list[tuple[int, int, str, float, str]]:
        """(example_id, version, answer, confidence, method) of the run's suggestion for each
        pending train example (not deleted) whose current version it answers, by id."""
        return self.cursor().execute(
            "SELECT s.example_id, s.version, s.answer, s.confidence, s.method "
            "FROM suggestions s JOIN examples e ON e.id = s.example_id "
            "AND e.version = s.version WHERE s.run_id = ? AND e.status = 'pending' "
            "AND e.split = 'train' AND NOT e.deleted ORDER BY s.example_id",
            [run_id]).fetchall()

    def last_changed_by(self, actor: str) -> list[tuple[int, int]]:
        """(example_id, version) of the examples whose current version `actor` wrote, by id."""
        return self.cursor().execute(
            "SELECT id, version FROM examples WHERE updated_by = ? ORDER BY id",
            [actor]).fetchall()
