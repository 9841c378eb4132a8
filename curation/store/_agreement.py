"""Independent review decisions (overlap for agreement) as SQL: the `review_votes` table.

`curation.agreement` decides what a decision means (a vote, agreement, a dispute, an
adjudication); this module only stores and reads the rows. A row is one person's decision on
one example in one *round* (the decisions that settle the example once); its `state` is
`open` (waiting for more decisions), `disputed` (the round's decisions disagree: the example
is in the Adjudication queue), `agreed` or `adjudicated` (the round settled the example).

Design decisions:
- The serving condition (`OPEN_TO`, used by `ExampleFilter.open_to`) reads the overlap
  setting inside the SQL, so any queue read with the filter (the Review page's, a leased
  `claim_next`) serves each example only to people who have not decided on it yet, and only
  until it has its N decisions.
- Recording a decision checks the example's version in the same transaction: a decision on a
  stale version is refused (`VersionConflict`) like any other change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from curation.errors import InvalidValue

OVERLAP_KEY = "review_overlap"  # the workspace setting: decisions each example needs
_OVERLAP = ("(SELECT coalesce(max(TRY_CAST(value AS INTEGER)), 1) FROM settings "
            f"WHERE key = '{OVERLAP_KEY}')")
# Examples still open to reviewer ? (one parameter): none in adjudication, none they have an
# open decision on, none that already has the workspace's N open decisions.
OPEN_TO = ("{p}id NOT IN (SELECT example_id FROM review_votes WHERE state = 'disputed' OR "
           "(state = 'open' AND reviewer = ?)) AND {p}id NOT IN (SELECT example_id FROM "
           f"review_votes WHERE state = 'open' GROUP BY example_id HAVING count(*) >= {_OVERLAP})")
# The Adjudication queue's source: disputed examples, oldest dispute first.
ADJUDICATION = ("SELECT example_id, min(epoch(decided_at)) AS rank, "
                "printf('%d independent decisions disagree', count(*)) AS reason "
                "FROM review_votes WHERE state = 'disputed' GROUP BY example_id")
_COLUMNS = ("example_id", "round", "reviewer", "decision", "label", "reason", "version",
            "decided_at", "state", "settled_by", "settled_at")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM review_votes"


def _rows(rows: list[tuple]) -> list[dict[str, Any]]:
    return [dict(zip(_COLUMNS, r)) for r in rows]


class AgreementQueries:
    """The `review_votes` table (mixed into `Store`)."""

    def record_vote(self, example_id: int, *, base_version: int, reviewer: str, decision: str,
                    label: str | None, reason: str | None, now: datetime
                    ) -> list[dict[str, Any]]:
        """Record `reviewer`'s decision on the example at `base_version`; the round's
        decisions after it (theirs included). VersionConflict on a stale version,
        InvalidValue when they already have an open decision on it or it is disputed."""
        with self.transaction() as cur:
            current = self._get(cur, example_id)
            if current.version != base_version:
                raise self._conflict(current, base_version)
            unsettled = _rows(cur.execute(
                f"{_SELECT} WHERE example_id = ? AND state IN ('open', 'disputed') "
                "ORDER BY decided_at", [example_id]).fetchall())
            if any(v["state"] == "disputed" for v in unsettled):
                raise InvalidValue(f"example #{example_id} is in adjudication: its decisions "
                                   "disagree")
            if any(v["reviewer"] == reviewer for v in unsettled):
                raise InvalidValue(f"{reviewer} has already decided on example #{example_id}; "
                                   "it waits for other reviewers' decisions")
            if unsettled:
                round_ = unsettled[0]["round"]
            else:
                round_ = cur.execute("SELECT coalesce(max(round), 0) + 1 FROM review_votes "
                                     "WHERE example_id = ?", [example_id]).fetchone()[0]
            cur.execute("INSERT INTO review_votes VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', "
                        "NULL, NULL)", [example_id, round_, reviewer, decision, label, reason,
                                        base_version, now])
            return _rows(cur.execute(f"{_SELECT} WHERE example_id = ? AND round = ? "
                                     "ORDER BY decided_at", [example_id, round_]).fetchall())

    def unsettled_votes(self, example_id: int) -> list[dict[str, Any]]:
        """The example's open or disputed decisions, oldest first."""
        return _rows(self.cursor().execute(
            f"{_SELECT} WHERE example_id = ? AND state IN ('open', 'disputed') "
            "ORDER BY decided_at", [example_id]).fetchall())

    def settle_votes(self, example_id: int, round_: int, state: str, *,
                     by: str | None = None, at: datetime | None = None) -> None:
        """Mark a round's decisions `state` (disputed, agreed or adjudicated)."""
        self.cursor().execute(
            "UPDATE review_votes SET state = ?, settled_by = ?, settled_at = ? "
            "WHERE example_id = ? AND round = ?", [state, by, at, example_id, round_])

    def examples_with_open_votes(self, at_least: int) -> list[int]:
        """Examples with `at_least` open (undisputed, unsettled) decisions."""
        return [r[0] for r in self.cursor().execute(
            "SELECT example_id FROM review_votes WHERE state = 'open' GROUP BY example_id "
            "HAVING count(*) >= ? ORDER BY example_id", [at_least]).fetchall()]

    def has_unsettled_votes(self) -> bool:
        return self.cursor().execute(
            "SELECT count(*) FROM review_votes WHERE state IN ('open', 'disputed')"
        ).fetchone()[0] > 0

    def disputed_count(self) -> int:
        """How many examples are in adjudication."""
        return self.cursor().execute("SELECT count(DISTINCT example_id) FROM review_votes "
                                     "WHERE state = 'disputed'").fetchone()[0]

    def rated_rounds(self) -> list[dict[str, Any]]:
        """Every decision in a round with two or more, by example and round (the examples
        with overlap), of examples not deleted."""
        columns = ", ".join(f"v.{c}" for c in _COLUMNS)
        return _rows(self.cursor().execute(
            f"SELECT {columns} FROM review_votes v JOIN (SELECT example_id, round FROM "
            "review_votes GROUP BY example_id, round HAVING count(*) >= 2) r "
            "ON r.example_id = v.example_id AND r.round = v.round JOIN examples e "
            "ON e.id = v.example_id WHERE NOT e.deleted "
            "ORDER BY v.example_id, v.round, v.decided_at").fetchall())
