"""Review queues: which examples to show next, in what order, and why.

A queue is a SQL source of `(example_id, rank, reason)` rows; the Review page walks it in
(rank, id) order, within the user's filters. New sources plug in with `register()` without
changing the page: the quality checks add "flagged" and "duplicates" queues this way, with a
severity as rank and the finding as the reason shown beside the example.

Design decisions:
- Position is a keyset cursor `(rank, id)`, not an offset: after a decision the decided
  example may leave the queue, and "the next one" is still well defined and fast (one indexed
  range scan with LIMIT) at any store size.
- `upcoming()` returns the current example and the one after it in one query, so the page
  can prefetch the next example.
- A queue fed by checks names them (`Queue.checks`) and says how to run them
  (`Queue.how_to_run`); `findings_queue` builds its source from exactly those checks' stored
  findings, so a queue cannot read a check it does not name, and `feeds()` tells the page
  when each one last ran. A queue whose check never ran is empty for that reason, not
  because there is nothing to review, and the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from curation.errors import InvalidValue
from curation.query import ExampleFilter
from curation.store import _COLUMNS, Example, Store


@dataclass(frozen=True)
class Queue:
    """A named source of examples to review, with the reason each one is in it."""

    name: str
    title: str
    description: str
    source_sql: str  # SELECT example_id, rank, reason ...
    checks: tuple[str, ...] = ()  # the checks whose findings feed it
    how_to_run: str = ""  # how a person runs those checks


@dataclass(frozen=True)
class Feed:
    """One check feeding a queue, and its last run (None: never run)."""

    check: str
    title: str
    run_at: datetime | None
    run_by: str | None


@dataclass(frozen=True)
class QueueItem:
    example: Example
    rank: float
    reason: str | None

    @property
    def position(self) -> tuple[float, int]:
        return (self.rank, self.example.id)


REGISTRY: dict[str, Queue] = {}


def register(queue: Queue) -> Queue:
    """Add a queue to the registry (the Review page lists the registry)."""
    REGISTRY[queue.name] = queue
    return queue


register(Queue("pending", "Pending first",
               "Examples nobody has decided on yet, then those sent back as needs work, "
               "oldest first.",
               "SELECT id AS example_id, CASE status WHEN 'pending' THEN 0 "
               "WHEN 'needs_work' THEN 1 ELSE 2 END AS rank, NULL AS reason FROM examples "
               "WHERE status IN ('pending', 'needs_work')"))
register(Queue("all", "All examples", "Every example, in the order it was imported.",
               "SELECT id AS example_id, 0 AS rank, NULL AS reason FROM examples"))
register(Queue("recent", "Recently changed",
               "Every example, most recently changed first: to check what others did.",
               "SELECT id AS example_id, -epoch(updated_at) AS rank, updated_by AS reason "
               "FROM examples"))


def findings_queue(name: str, title: str, description: str, checks: tuple[str, ...],
                   how_to_run: str, *, keep: str = "TRUE") -> Queue:
    """A queue of the examples these checks flagged (and `keep` admits), worst first, with
    their findings' reasons."""
    names = ", ".join(f"'{c}'" for c in checks)
    return Queue(name, title, description,
                 "SELECT example_id, min(score) AS rank, string_agg(reason, '; ') AS reason "
                 f"FROM findings WHERE is_issue AND check_name IN ({names}) AND ({keep}) "
                 "GROUP BY example_id", checks, how_to_run)


def feeds(store: Store, queue: str) -> list[Feed]:
    """The checks that feed a queue, each with its last run (none for a plain queue)."""
    from curation.checks import get_check, last_run

    runs = [(name, last_run(store, name)) for name in get_queue(queue).checks]
    return [Feed(name, get_check(name).title, run and run["run_at"], run and run["run_by"])
            for name, run in runs]


def get_queue(name: str) -> Queue:
    if name not in REGISTRY:
        raise InvalidValue(f"no queue is called {name!r}; queues: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def upcoming(store: Store, queue: str, where: ExampleFilter = ExampleFilter(), *,
             after: tuple[float, int] | None = None, before: tuple[float, int] | None = None,
             limit: int = 2) -> list[QueueItem]:
    """The next `limit` items after position `after` (or before `before`, nearest first)."""
    source = get_queue(queue).source_sql
    condition, params = where.where("e")
    order = "q.rank, e.id"
    if after is not None:
        condition += " AND (q.rank > ? OR (q.rank = ? AND e.id > ?))"
        params += [after[0], after[0], after[1]]
    elif before is not None:
        condition += " AND (q.rank < ? OR (q.rank = ? AND e.id < ?))"
        params += [before[0], before[0], before[1]]
        order = "q.rank DESC, e.id DESC"
    columns = ", ".join(f"e.{c.strip()}" for c in _COLUMNS.split(","))
    # Pick the positions first, reading only the narrow columns the filter needs; then read
    # the wide columns (the conversation) for those `limit` rows only.
    rows = store.cursor().execute(
        f"WITH picked AS (SELECT q.example_id, q.rank, q.reason FROM ({source}) q "
        f"JOIN examples e ON e.id = q.example_id WHERE {condition} ORDER BY {order} LIMIT ?) "
        f"SELECT {columns}, p.rank, p.reason FROM picked p JOIN examples e "
        f"ON e.id = p.example_id ORDER BY {order.replace('q.', 'p.')}",
        [*params, limit]).fetchall()
    return [QueueItem(Example.from_row(r[:-2]), float(r[-2]), r[-1]) for r in rows]


def queue_size(store: Store, queue: str, where: ExampleFilter = ExampleFilter()) -> int:
    source = get_queue(queue).source_sql
    condition, params = where.where("e")
    return store.cursor().execute(
        f"SELECT count(*) FROM ({source}) q JOIN examples e ON e.id = q.example_id "
        f"WHERE {condition}", params).fetchone()[0]
