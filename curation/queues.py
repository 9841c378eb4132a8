"""Review queues: which examples to show next, in what order, and why.

A queue is a source of `(example_id, rank, reason)` rows (a `QueueSource`, which the store
turns into SQL: `curation.store._queues`); the Review page walks it in
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
from curation.store import Example, QueueSource, Store


@dataclass(frozen=True)
class Queue:
    """A named source of examples to review, with the reason each one is in it."""

    name: str
    title: str
    description: str
    source: QueueSource  # where its (example_id, rank, reason) rows come from
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
FEED_TITLES: dict[str, str] = {}  # titles of stored sources that are not checks (eval failures)


def register(queue: Queue) -> Queue:
    """Add a queue to the registry (the Review page lists the registry)."""
    REGISTRY[queue.name] = queue
    return queue


register(Queue("pending", "Pending first",
               "Examples nobody has decided on yet, then those sent back as needs work, "
               "oldest first.", QueueSource("pending")))
register(Queue("all", "All examples", "Every example, in the order it was imported.",
               QueueSource("all")))
register(Queue("recent", "Recently changed",
               "Every example, most recently changed first: to check what others did.",
               QueueSource("recent")))
register(Queue("needs_answer", "Needs answer",
               "Prompts imported without an answer (`--unanswered`), in import order: write "
               "the assistant's answer to make them exportable and trainable.",
               QueueSource("needs_answer")))
register(Queue("adjudication", "Adjudication",
               "Examples whose independent decisions disagree (overlap for agreement, "
               "`curate overlap`), oldest first: an admin sees every decision side by side "
               "and settles it.", QueueSource("adjudication")))


def register_stored(name: str, title: str, description: str, *, feed_title: str,
                    how_to_run: str, **source) -> Queue:
    """Register a queue fed by a stored source that is not a check (eval failures, routing):
    its findings are stored under `name`, which feeds the queue; `feed_title` says what
    stored them, `source` holds `QueueSource` options (statuses, undecided)."""
    FEED_TITLES[name] = feed_title
    return register(Queue(name, title, description, QueueSource("findings", (name,), **source),
                          (name,), how_to_run))


def findings_queue(name: str, title: str, description: str, checks: tuple[str, ...],
                   how_to_run: str, *, skip_reason: str = "") -> Queue:
    """A queue of the examples these checks flagged (less the findings whose reason starts
    with `skip_reason`), worst first, with their findings' reasons."""
    return Queue(name, title, description, QueueSource("findings", checks, skip_reason),
                 checks, how_to_run)


def feeds(store: Store, queue: str) -> list[Feed]:
    """The checks that feed a queue, each with its last run (none for a plain queue)."""
    from curation.checks import get_check, last_run

    runs = [(name, last_run(store, name)) for name in get_queue(queue).checks]
    return [Feed(name, FEED_TITLES[name] if name in FEED_TITLES else get_check(name).title,
                 run and run["run_at"], run and run["run_by"]) for name, run in runs]


def get_queue(name: str) -> Queue:
    if name not in REGISTRY:
        raise InvalidValue(f"no queue is called {name!r}; queues: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def upcoming(store: Store, queue: str, where: ExampleFilter = ExampleFilter(), *,
             after: tuple[float, int] | None = None, before: tuple[float, int] | None = None,
             limit: int = 2) -> list[QueueItem]:
    """The next `limit` items after position `after` (or before `before`, nearest first)."""
    rows = store.queue_rows(get_queue(queue).source, where, after=after, before=before,
                            limit=limit)
    return [QueueItem(*row) for row in rows]


def queue_size(store: Store, queue: str, where: ExampleFilter = ExampleFilter()) -> int:
    return store.queue_count(get_queue(queue).source, where)
