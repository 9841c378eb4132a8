"""Progress: "12 of 296 done in this queue today", and decisions per person per day.

Definitions (the Review page and Overview show exactly these):
- A **decision** is an audited accept, reject or needs-work (`DECISIONS`); an edit, a skip or
  an undo is not. Days are UTC days, as every timestamp in the store.
- **Done today in a queue**, for one person: the examples whose latest event by that person
  today is a decision (so an undone decision no longer counts), that match the page's filters
  (their status criterion aside: a decided example has a new status), and that belong to the
  queue: those it holds now, or held before the decision took them out, judged by the
  queue's source without its status conditions. For the queues an example leaves when it is
  decided regardless of findings (Pending first, Needs answer), that is every decision of the
  person today on an example matching the filters.
- **Total** is done plus the examples the queue holds now (within the filters) that the
  person has not decided today: "done of total" grows as they work, and total stays put
  unless others decide or new examples arrive.
- **Per person per day** counts decision events by actor and UTC day, leaving out the
  system's own actors: the CLI's default actor (`cli:<login>`, who imports and loads the
  demo) and the model's (`model:<run>`, auto-accepts). People are whoever signed in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from curation.query import ExampleFilter
from curation.queues import get_queue
from curation.store import QueueSource, Store, utcnow

DECISIONS: tuple[str, ...] = ("accept", "reject", "needs_work")
SYSTEM_ACTORS: tuple[str, ...] = ("cli:", "model:")  # name prefixes of actors that are no one


@dataclass(frozen=True)
class QueueProgress:
    """A person's decisions today in a queue, and the queue's size for them."""

    done: int
    total: int

    def text(self) -> str:
        return f"{self.done:,} of {self.total:,} done in this queue today"


def start_of_day(now: datetime | None = None) -> datetime:
    """Midnight UTC of `now`'s day (naive, as stored)."""
    now = now or utcnow()
    return datetime(now.year, now.month, now.day)


def _held(source: QueueSource) -> QueueSource | None:
    """The source without its status conditions: what the queue held before decisions
    (None: any example, for the built-in queues)."""
    if source.kind == "findings":
        return replace(source, statuses=(), undecided=False)
    return None


def queue_progress(store: Store, queue: str, actor: str, where: ExampleFilter | None = None,
                   *, now: datetime | None = None) -> QueueProgress:
    """How many examples of `queue` (within `where`) `actor` decided today, of how many."""
    where = where or ExampleFilter()
    source = get_queue(queue).source
    done, total = store.queue_progress(source, _held(source), where, replace(where, status=()),
                                       actor=actor, since=start_of_day(now),
                                       decisions=DECISIONS)
    return QueueProgress(done, total)


def decisions_per_day(store: Store, days: int = 14, *, now: datetime | None = None
                      ) -> list[tuple[date, str, int]]:
    """(UTC day, person, decisions) over the last `days` days (today included), people only."""
    since = start_of_day(now) - timedelta(days=days - 1)
    return store.decisions_per_day(since, DECISIONS, SYSTEM_ACTORS)
