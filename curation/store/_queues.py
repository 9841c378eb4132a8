"""Review queues as SQL: where each queue's `(example_id, rank, reason)` rows come from, and
the keyset-paged reads over them.

`curation.queues` names the queues and what they are for; each points at a `QueueSource`
here: one of the built-in orders over all examples, or the issues stored by named checks.
A queue therefore cannot read a check it does not name, and a schema change to `findings`
or `examples` touches this file, not the queue registry.

Design decisions (see `curation.queues` for the paging contract):
- Position is a keyset cursor `(rank, id)`: one indexed range scan with LIMIT at any size.
- The positions are picked first, reading only the narrow columns the filter needs; the wide
  columns (the conversation) are read for those `limit` rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from curation.errors import InvalidValue
from curation.store._agreement import ADJUDICATION
from curation.store._filters import NEEDS_ANSWER, where_clause

if TYPE_CHECKING:
    from curation.query import ExampleFilter

_BUILT_IN = {
    "pending": "SELECT id AS example_id, CASE status WHEN 'pending' THEN 0 "
               "WHEN 'needs_work' THEN 1 ELSE 2 END AS rank, NULL AS reason FROM examples "
               "WHERE status IN ('pending', 'needs_work')",
    "all": "SELECT id AS example_id, 0 AS rank, NULL AS reason FROM examples",
    "recent": "SELECT id AS example_id, -epoch(updated_at) AS rank, updated_by AS reason "
              "FROM examples",
    "needs_answer": "SELECT id AS example_id, 0 AS rank, 'needs an answer' AS reason "
                    f"FROM examples WHERE {NEEDS_ANSWER.format(p='')}",
    "adjudication": ADJUDICATION,
}


@dataclass(frozen=True)
class QueueSource:
    """Where a queue's examples come from: a built-in order ("pending": pending, then needs
    work; "all": import order; "recent": last changed first; "needs_answer": the prompts
    imported without an answer, in import order; "adjudication": the examples whose
    independent decisions disagree, oldest first), or ("findings") the issues the
    `checks` stored, worst first, less those whose reason starts with `skip_reason` (and, where
    `statuses` is given, of examples in those statuses now; with `undecided`, of examples
    nobody has recorded a decision on for those checks yet). With `scored`, every example the
    checks scored comes in, flagged or not (lowest score first); with `unchanged`, only
    examples not edited since they were scored."""

    kind: str
    checks: tuple[str, ...] = ()
    skip_reason: str = ""
    statuses: tuple[str, ...] = ()
    undecided: bool = False
    scored: bool = False
    unchanged: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (*_BUILT_IN, "findings"):
            raise InvalidValue(f"queue source {self.kind!r} is not one of "
                             f"{', '.join(_BUILT_IN)}, findings")


def _source(source: QueueSource) -> tuple[str, list]:
    """(SELECT example_id, rank, reason ..., parameters) of a queue source."""
    if source.kind != "findings":
        return _BUILT_IN[source.kind], []
    names = ", ".join("?" * len(source.checks)) or "NULL"
    sql = ("SELECT example_id, min(score) AS rank, string_agg(CASE WHEN is_issue THEN reason "
           "ELSE printf('not flagged (score %.2f)', score) END, '; ') AS reason "
           f"FROM findings f WHERE (? OR is_issue) AND check_name IN ({names}) "
           "AND (? = '' OR NOT starts_with(reason, ?)) AND (len(?::VARCHAR[]) = 0 OR "
           "example_id IN (SELECT id FROM examples WHERE list_contains(?::VARCHAR[], status))) "
           "AND (NOT ? OR example_id::VARCHAR NOT IN (SELECT subject FROM finding_decisions "
           "WHERE list_contains(?::VARCHAR[], check_name))) "
           "AND (NOT ? OR version = (SELECT version FROM examples WHERE id = f.example_id)) "
           "GROUP BY example_id")
    statuses = list(source.statuses)
    return sql, [source.scored, *source.checks, source.skip_reason, source.skip_reason,
                 statuses, statuses, source.undecided, list(source.checks), source.unchanged]


class QueueQueries:
    """Reading review queues (mixed into `Store`)."""

    def queue_rows(self, source: QueueSource, where: ExampleFilter, *,
                   after: tuple[float, int] | None = None,
                   before: tuple[float, int] | None = None, limit: int = 2) -> list[tuple]:
        """The next `limit` (Example, rank, reason) after position `after`
        (or before `before`, nearest first) among the examples `where` selects."""
        from curation.store._store import COLUMNS, Example

        sql, params = _source(source)
        condition, more = where_clause(where, "e")
        params += more
        order = "q.rank, e.id"
        if after is not None:
            condition += " AND (q.rank > ? OR (q.rank = ? AND e.id > ?))"
            params += [after[0], after[0], after[1]]
        elif before is not None:
            condition += " AND (q.rank < ? OR (q.rank = ? AND e.id < ?))"
            params += [before[0], before[0], before[1]]
            order = "q.rank DESC, e.id DESC"
        columns = ", ".join(f"e.{c.strip()}" for c in COLUMNS.split(","))
        rows = self.cursor().execute(
            f"WITH picked AS (SELECT q.example_id, q.rank, q.reason FROM ({sql}) q "
            f"JOIN examples e ON e.id = q.example_id WHERE {condition} ORDER BY {order} "
            f"LIMIT ?) SELECT {columns}, p.rank, p.reason FROM picked p JOIN examples e "
            f"ON e.id = p.example_id ORDER BY {order.replace('q.', 'p.')}",
            [*params, limit]).fetchall()
        return [(Example.from_row(r[:-2]), float(r[-2]), r[-1]) for r in rows]

    def queue_count(self, source: QueueSource, where: ExampleFilter) -> int:
        """How many examples `where` selects are in the queue."""
        sql, params = _source(source)
        condition, more = where_clause(where, "e")
        return self.cursor().execute(
            f"SELECT count(*) FROM ({sql}) q JOIN examples e ON e.id = q.example_id "
            f"WHERE {condition}", [*params, *more]).fetchone()[0]
