"""Work distribution: each person walking a queue gets their own next example, under a lease.

A lease says "this person is working on this example until this time" (the workspace setting
`review_lease_minutes`, 5 minutes by default). `claim_next` hands out the next example of a
queue that nobody else holds a live lease on and leases it in the same step; `hold` renews
the lease while the person works on it (the Review page calls it on every rerun for the
example, and for an example opened by link, which it leases too if it is free; it writes
only once less than half of the lease is left, so most reruns cost a read); a decision, a
submission, a skip (`release`) or moving on to the next example releases it, and a lease
nobody renews simply expires: an expired row is ignored, and replaced by the next claim.
`leases` lists who holds what, for admins (Overview, `curate leases`).

Design decisions:
- The lease is taken by one atomic upsert on the `leases` table's primary key
  (`Store.take_lease`): of two people claiming the same example at the same instant, on two
  threads or cursors of the one connection, or two connections, exactly one gets it; the
  other moves on to the next free example. That alone is correct; but under load a lost race
  costs a write (a commit, tens of ms on a loaded machine) and often a new read of the queue,
  and with 8 people claiming together most claims lost one (p95 3.7 s at 100,000 examples on
  a loaded 2-core machine). So inside the process (the app's sessions are threads of one
  process) a claimer skips an example another thread is leasing at this moment (a set of
  in-flight ids, held for microseconds, no lock around the database work) and one whose lease
  was committed since its read (a point read before the write): claimers spread over the
  next free examples instead of racing for the first; the primary key settles what is left.
- The queue and its leases are read in one transaction (one snapshot). Read apart, a slow
  queue read could list an example that someone decided and released meanwhile, which then
  looked free: measured, nearly every claim under 8 busy reviewers took such a stale example
  first and had to let it go.
- `claim_next` reads the queue through its normal source (`queues.upcoming`, with the
  person's filters and position), so whatever decides what a queue serves (its source, an
  overlap filter) applies unchanged. It asks for a few more rows (`_SPARE`) than there are
  live leases held by others, so free examples are among them whatever the others hold, skips
  the leased ones, and who loses the race for the first free one tries the next at once
  instead of reading the queue again. If the example changed between the read and the lease (someone decided it just
  before releasing it), it is checked to be still in the queue, or released and passed over.
- One person holds one example at a time: claiming the next one releases the others they
  hold (a second browser tab of the same person shares their lease).
- Leases are workspace state, not audit: taking and renewing one writes no event. Times are
  naive UTC, as every timestamp in the store; `now` is injectable for tests.
- Submit for review: a person who may edit but not decide (an annotator) records their work
  with `submit`, one audited change (action `submit`, their edits included; a new version even
  without edits, so it counts as their progress in the audit). It also stores a finding of the
  stored source `submitted` on that new version, which feeds the **Submitted** queue: a
  findings queue with `unchanged=True`, so an example leaves it as soon as anyone changes it
  (a reviewer's decision, as usual; or a further edit, which needs a new submission). No new
  status: `pending`/`needs_work` keep meaning what they meant, and a reviewer who sends the
  example back (needs work) puts it back in the Pending queue for annotators. Until then,
  `claim_next` serves a submitted example to no one who cannot decide, in any queue: it
  waits for a reviewer (reviewers meet it in Submitted, and in the other queues too).
- With overlap (N independent decisions per example, `curation.agreement`), the queue is
  served blind per person (`where.open_to`) and an example leased by one reviewer is passed
  over by the others for now, behind their position; so a claim that finds nothing after the
  position starts over from the head of the queue, where what the others have since decided
  waits for this reviewer's own decision.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from curation import queues
from curation.auth import User, require
from curation.errors import InvalidValue
from curation.query import ExampleFilter
from curation.queues import QueueItem
from curation.store import Example, Store, utcnow

LEASE_SETTING = "review_lease_minutes"
DEFAULT_LEASE_MINUTES = 5.0
SUBMITTED = "submitted"  # the Submitted queue, and the stored source that feeds it
_MAX_ROUNDS = 20  # claim attempts before giving up on a queue everyone is racing for
_SPARE = 4  # free candidates read beyond the first: who loses a race tries the next at once
_IN_FLIGHT: set[tuple[str, int]] = set()  # (database file, example id) being leased now
_IN_FLIGHT_GUARD = threading.Lock()


@dataclass(frozen=True)
class Lease:
    """Who holds an example, from which queue, since when and until when (UTC)."""

    example_id: int
    holder: str
    queue: str | None
    acquired_at: datetime
    expires_at: datetime

    def held_by(self, user: User) -> bool:
        return self.holder == user.name

    def to_dict(self) -> dict[str, Any]:
        return {"example_id": self.example_id, "holder": self.holder, "queue": self.queue,
                "acquired_at": self.acquired_at.isoformat(timespec="seconds"),
                "expires_at": self.expires_at.isoformat(timespec="seconds")}


def lease_minutes(store: Store) -> float:
    """How long a lease lasts without renewal (the workspace setting, default 5 minutes)."""
    value = store.setting(LEASE_SETTING)
    return float(value) if value is not None else DEFAULT_LEASE_MINUTES


def set_lease_minutes(store: Store, user: User, minutes: float) -> float:
    """Set how long a lease lasts without renewal (admins; between 0.5 and 240 minutes)."""
    require(user, "manage_users")
    if not 0.5 <= minutes <= 240:
        raise InvalidValue(f"a lease lasts between 0.5 and 240 minutes, not {minutes:g}")
    store.set_setting(LEASE_SETTING, f"{minutes:g}")
    return minutes


def claim_next(store: Store, user: User, queue: str, where: ExampleFilter = ExampleFilter(),
               *, after: tuple[float, int] | None = None,
               now: datetime | None = None) -> QueueItem | None:
    """The next example of `queue` (within `where`, after position `after`) that nobody else
    holds a live lease on, leased to `user`; None when there is none. `user`'s other leases
    are released. A queue served blind per person (overlap: `where.open_to`) starts over
    from its head when nothing is left after `after`."""
    require(user, "edit")
    now = now or utcnow()
    until = now + timedelta(minutes=lease_minutes(store))
    item = _claim(store, user, queue, where, after, now, until)
    if item is None and after is not None and where.open_to:
        item = _claim(store, user, queue, where, None, now, until)
    return item


def _claim(store: Store, user: User, queue: str, where: ExampleFilter,
           after: tuple[float, int] | None, now: datetime, until: datetime
           ) -> QueueItem | None:
    for _ in range(_MAX_ROUNDS):
        with store.transaction():  # one snapshot: the queue and its leases as of one instant
            others, mine, expired = store.lease_counts(user.name, now)
            limit = others + 1 + _SPARE + len(_IN_FLIGHT)
            items = queues.upcoming(store, queue, where, after=after, limit=limit)
            ids = [i.example.id for i in items]
            taken = store.leased_ids(ids, user.name, now) if others else set()
            if not user.can("decide") and queue != SUBMITTED:  # done, awaiting a reviewer
                taken |= store.awaiting_review(ids, SUBMITTED)
        if expired:
            store.drop_expired(now)
        free = [i for i in items if i.example.id not in taken]
        if not free and len(items) == limit and len(taken) > others:
            after = items[-1].position  # a run of submitted examples: walk past it
            continue
        if not free and len(items) < limit:  # the rest of the queue is leased, or empty
            if mine:
                store.drop_leases(user.name)
            return None
        for item in free:
            if not _take(store, user, item, queue, now, until, bool(mine)):
                continue  # someone claimed or decided it since the read
            mine = 0  # released together with the take
            fresh = _still_in_queue(store, queue, where, item)
            if fresh is not None:
                return fresh
            store.drop_leases(user.name, example_id=item.example.id)
    return None


def _take(store: Store, user: User, item: QueueItem, queue: str, now: datetime,
          until: datetime, release_others: bool) -> bool:
    """Lease one example unless another thread of this process is leasing it right now,
    someone holds it or it changed since the queue was read (all cheap to see: no write);
    the primary key settles any race left."""
    example_id = item.example.id
    key = (str(store.path), example_id)
    with _IN_FLIGHT_GUARD:
        if key in _IN_FLIGHT:
            return False
        _IN_FLIGHT.add(key)
    try:
        version, holder, expires_at = store.version_and_lease(example_id)
        if holder is not None and holder != user.name and expires_at > now:
            return False  # taken since the queue was read
        if version != item.example.version:
            return False  # decided (and released) since the queue was read
        return store.take_lease(example_id, user.name, queue, now, until,
                                release_others=release_others)
    finally:
        with _IN_FLIGHT_GUARD:
            _IN_FLIGHT.discard(key)


def _still_in_queue(store: Store, queue: str, where: ExampleFilter,
                    item: QueueItem) -> QueueItem | None:
    """The item as it is now, or None if it left the queue between the read and the lease."""
    if store.version_and_lease(item.example.id)[0] == item.example.version:
        return item
    found = queues.upcoming(store, queue, dataclasses.replace(where, ids=(item.example.id,)),
                            limit=1)
    return found[0] if found else None


def hold(store: Store, user: User, example_id: int, queue: str | None = None, *,
         now: datetime | None = None) -> Lease:
    """Lease `example_id` to `user` if it is free (or renew their lease once less than half of
    it is left) and return the live lease: theirs, or the one someone else holds (then
    nothing changes)."""
    require(user, "edit")
    now = now or utcnow()
    length = timedelta(minutes=lease_minutes(store))
    for _ in range(2):  # a second try if it was released between the write and the read
        lease = holder(store, example_id, now=now)
        if lease is not None and (not lease.held_by(user) or lease.expires_at - now > length / 2):
            return lease  # someone else's, or mine and fresh: a read, no write
        store.take_lease(example_id, user.name, queue, now, now + length)
        lease = holder(store, example_id, now=now)
        if lease is not None:
            return lease
    return Lease(example_id, user.name, queue, now, now)


def holder(store: Store, example_id: int, *, now: datetime | None = None) -> Lease | None:
    """The live lease on an example, or None if nobody holds it."""
    row = store.lease_row(example_id)
    if row is None or row[4] <= (now or utcnow()):
        return None
    return Lease(*row)


def release(store: Store, user: User, example_id: int | None = None) -> int:
    """Release `user`'s lease on `example_id` (all of their leases if None); how many."""
    require(user, "edit")
    return store.drop_leases(user.name, example_id=example_id)


def leases(store: Store, user: User, *, now: datetime | None = None) -> list[Lease]:
    """Every live lease, by holder: who holds what, until when (admins)."""
    require(user, "manage_users")
    return [Lease(*row) for row in store.live_lease_rows(now or utcnow())]


def submit(store: Store, user: User, example_id: int, *, base_version: int,
           reason: str | None = None, now: datetime | None = None, **changes: Any) -> Example:
    """Submit an example for review with the pending edits: one audited change (action
    `submit`) that puts it in the Submitted queue, and releases `user`'s lease on it."""
    require(user, "edit")
    if "status" in changes or "deleted" in changes:
        raise InvalidValue("a submission carries edits, not a status: a reviewer decides")
    before = store.get(example_id) if "messages" in changes else None
    after = store.record_submission(example_id, base_version=base_version, actor=user.name,
                                    reason=(reason or "").strip() or None, changes=changes,
                                    source=SUBMITTED, now=now or utcnow())
    store.drop_leases(user.name, example_id=example_id)
    if before is not None:  # an edited model answer becomes a preference pair
        from curation.preference import record_edit_pair

        record_edit_pair(store, user, before, after)
    return after


def _register_queue() -> None:
    queues.register_stored(
        SUBMITTED, "Submitted",
        "Examples annotators submitted for review (with their edits), oldest first: accept, "
        "reject or send back as usual. An example leaves this queue when anyone changes it.",
        feed_title="Submit for review (annotators)",
        how_to_run="Submit for review on the Review page (annotators)", unchanged=True)


_register_queue()

__all__ = [
    "DEFAULT_LEASE_MINUTES",
    "LEASE_SETTING",
    "SUBMITTED",
    "Lease",
    "claim_next",
    "hold",
    "holder",
    "lease_minutes",
    "leases",
    "release",
    "set_lease_minutes",
    "submit",
]
