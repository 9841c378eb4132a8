"""Progress counts read from the audit events: a person's decisions today in a queue, and
decisions per person per day. `curation.progress` defines what counts; this is its SQL.

Design decision: an example counts as decided by a person when their latest event on it in
the period is a decision. An undo writes a 'revert' event after the decision, so an undone
decision stops counting without any bookkeeping of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING

from curation.store._filters import where_clause
from curation.store._queues import QueueSource, _source

if TYPE_CHECKING:
    from curation.query import ExampleFilter


class ProgressQueries:
    """Counts over `events` for progress (mixed into `Store`)."""

    def queue_progress(self, source: QueueSource, held: QueueSource | None,
                       where: ExampleFilter, done_where: ExampleFilter, *, actor: str,
                       since: datetime, decisions: Sequence[str]) -> tuple[int, int]:
        """(done, total): done, the examples `done_where` selects whose latest event by
        `actor` since `since` is one of `decisions` and that `held` holds (the queue
        source without its status conditions; None: any example) or `source` holds; total,
        those plus the examples `where` selects that are in `source` and not done."""
        queue_sql, queue_params = _source(source)
        condition, params = where_clause(where, "e")
        done_condition, done_params = where_clause(done_where, "e")
        member, member_params = "", []
        if held is not None:
            held_sql, member_params = _source(held)
            member = (f" AND (d.example_id IN (SELECT example_id FROM ({held_sql}) h) "
                      "OR d.example_id IN (SELECT example_id FROM q))")
        done, left = self.cursor().execute(
            "WITH mine AS (SELECT example_id, arg_max(action, id) AS last FROM events "
            "WHERE actor = ? AND occurred_at >= ? AND example_id IS NOT NULL "
            "GROUP BY example_id), "
            "done AS (SELECT example_id FROM mine WHERE list_contains(?::VARCHAR[], last)), "
            f"q AS ({queue_sql}) "
            "SELECT (SELECT count(*) FROM done d JOIN examples e ON e.id = d.example_id "
            f"WHERE {done_condition}{member}), "
            "(SELECT count(*) FROM q JOIN examples e ON e.id = q.example_id "
            f"WHERE {condition} AND q.example_id NOT IN (SELECT example_id FROM done))",
            [actor, since, list(decisions), *queue_params, *done_params, *member_params,
             *params]).fetchone()
        return done, done + left

    def decisions_per_day(self, since: datetime, decisions: Sequence[str],
                          skip_prefixes: Sequence[str] = ()) -> list[tuple[date, str, int]]:
        """(UTC day, actor, decisions) since `since`, leaving out actors whose name starts
        with one of `skip_prefixes`; by day, then actor."""
        skip = "".join(" AND NOT starts_with(actor, ?)" for _ in skip_prefixes)
        return self.cursor().execute(
            "SELECT occurred_at::DATE AS day, actor, count(*) FROM events "
            f"WHERE occurred_at >= ? AND list_contains(?::VARCHAR[], action){skip} "
            "GROUP BY day, actor ORDER BY day, actor",
            [since, list(decisions), *skip_prefixes]).fetchall()
