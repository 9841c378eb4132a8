"""Queries for preference data (`curation.preference`), mixed into `Store`.

The pair columns themselves (`kind`, `rejected`, `desirable`) live on `examples` and
`example_versions` and are read and written with the rest of an example; this module holds
the few lookups that only preference logic needs: the answers models suggested for an
example (to tell a model's answer from a person's), the pairs recorded from edits of an
example, and counts by kind.
"""

from __future__ import annotations


class PreferenceQueries:
    """Lookups for preference pairs (mixed into `Store`)."""

    def suggested_answers(self, example_id: int) -> set[str]:
        """Every answer a model suggested for any version of the example."""
        return {r[0] for r in self.cursor().execute(
            "SELECT DISTINCT answer FROM suggestions WHERE example_id = ?",
            [example_id]).fetchall()}

    def created_with_reason(self, pattern: str) -> list[int]:
        """The ids of the examples whose create event's reason is LIKE `pattern`."""
        return [r[0] for r in self.cursor().execute(
            "SELECT example_id FROM events WHERE action = 'create' AND reason LIKE ? "
            "ORDER BY example_id", [pattern]).fetchall()]

    def counts_by_kind(self) -> dict[str, int]:
        """{kind: count} of the examples not deleted."""
        return dict(self.cursor().execute(
            "SELECT coalesce(kind, 'sft'), count(*) FROM examples WHERE NOT deleted "
            "GROUP BY ALL ORDER BY 1").fetchall())
