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
  instead of reading the queue again. If the example changed between the read and the lease
  (someone decided it just before releasing it), it is checked to be still in the queue, or
  released and passed over.
- The common case is served from a shared **window** instead (`_Window`): the Pending and
  Needs answer queues, with filters on the examples' own fields, for people who may decide.
  There an example leaves the queue only by a change of its version, so a window of the
  next `_WINDOW_ROWS` items and the live leases, read once (by one claimer while the others
  wait) and shared by every claimer of the process, can serve each claim with one write:
  the lease, taken only if the example is still at the version read (`take_lease` with
  `at_version`, which also releases the claimer's other leases; one commit). Claimers
  reserve items of the window under a lock, so two of them never race for one example in
  this process; one that loses an item in the database passes it over. A window
  is read again after `_WINDOW_SECONDS`, when the claimer's position is past it, or when
  this Store wrote something that may have put an example into a queue (`Store.arrivals`:
  new examples, an example sent back or reopened), so what one process adds is served at
  once; what another process adds, within the 2 seconds. Measured at 100,000 examples
  with 8 reviewers, this took the claim from a queue read, two point reads and a write to
  one write (docs/benchmarks.md).
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
import weakref
from dataclasses import dataclass, field
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
_WINDOW_ROWS = 48  # queue rows one shared window reads (beyond the examples others hold)
_WINDOW_SECONDS = 2.0  # how long a window serves claims before the queue is read again
_WINDOW_SOURCES = ("pending", "needs_answer")  # leaving these queues changes the version
_PASSED_OVER = ""  # a window's holder for an example lost to a race or changed since its read


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


@dataclass
class _Window:
    """A stretch of a queue read once and shared by every claimer in this process: the
    items after `start`, who held which of them, and the lease length, as of `read_at`."""

    start: tuple[float, int] | None
    items: list[QueueItem]
    holders: dict[int, str]  # example id -> holder; claims through the window add theirs
    minutes: float
    arrivals: int  # `Store.arrivals` when it was read
    read_at: datetime  # the claim's `now` (UTC) when it was read
    complete: bool  # the queue ends within the window
    guard: threading.Lock = field(default_factory=threading.Lock)

    def serves(self, store: Store, after: tuple[float, int] | None, now: datetime) -> bool:
        """Whether a claim after `after` at `now` can be served from this window."""
        return (timedelta(0) <= now - self.read_at < timedelta(seconds=_WINDOW_SECONDS)
                and store.arrivals == self.arrivals
                and (self.start is None or (after is not None and after >= self.start))
                and (self.complete or after is None or after < self.items[-1].position))

    def reserve(self, user: User, after: tuple[float, int] | None) -> QueueItem | None:
        """The first item after `after` nobody else holds or is taking, marked as `user`'s:
        a claimer that loses it in the database does not hand it to anyone else."""
        with self.guard:
            for item in self.items:
                if after is not None and item.position <= after:
                    continue
                if self.holders.get(item.example.id, user.name) != user.name:
                    continue
                self.holders[item.example.id] = user.name
                return item
        return None

    def pass_over(self, item: QueueItem) -> None:
        """Nobody takes `item` from this window: someone else won it in the database, or it
        changed since the window was read."""
        with self.guard:
            self.holders[item.example.id] = _PASSED_OVER


# per Store object (its `arrivals` count is its own), then per (queue, filter)
_WINDOWS: weakref.WeakKeyDictionary[Store, dict[tuple, _Window]] = weakref.WeakKeyDictionary()
_WINDOWS_GUARD = threading.Lock()


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
    if _windowed(queue, where, user):
        return _claim_from_window(store, user, queue, where, after, now)
    until = now + timedelta(minutes=lease_minutes(store))
    item = _claim(store, user, queue, where, after, now, until)
    if item is None and after is not None and where.open_to:
        item = _claim(store, user, queue, where, None, now, until)
    return item


def _windowed(queue: str, where: ExampleFilter, user: User) -> bool:
    """Whether claims on this queue can be served from a shared window: an example leaves the
    queue only by a change of version, which the lease write checks (a built-in status queue
    with filters on the example's own fields), and the claimer may take what it lists."""
    return (queues.get_queue(queue).source.kind in _WINDOW_SOURCES and user.can("decide")
            and not (where.comment or where.older_guidelines or where.open_to))


def _claim_from_window(store: Store, user: User, queue: str, where: ExampleFilter,
                       after: tuple[float, int] | None, now: datetime) -> QueueItem | None:
    windows = _WINDOWS.setdefault(store, {})
    key = (queue, where)
    for _ in range(_MAX_ROUNDS):
        window = windows.get(key)
        if window is None or not window.serves(store, after, now):
            with _WINDOWS_GUARD:  # one claimer reads it; the others wait for that read
                window = windows.get(key)
                if window is None or not window.serves(store, after, now):
                    window = windows[key] = _read_window(store, queue, where, after, now)
        until = now + timedelta(minutes=window.minutes)
        while (item := window.reserve(user, after)) is not None:
            if store.take_lease(item.example.id, user.name, queue, now, until,
                                release_others=True, at_version=item.example.version):
                return item
            window.pass_over(item)
        if window.complete:
            store.drop_leases(user.name)
            return None
        # everything listed after `after` is taken: read on from the window's end
        after = max(after, window.items[-1].position) if after else window.items[-1].position
    return None


def _read_window(store: Store, queue: str, where: ExampleFilter,
                 after: tuple[float, int] | None, now: datetime) -> _Window:
    """Read the queue after `after`, with every live lease, in one snapshot."""
    arrivals = store.arrivals
    with store.transaction():
        holders, expired = store.live_holders(now)
        minutes = lease_minutes(store)
        limit = _WINDOW_ROWS + len(holders)
        items = queues.upcoming(store, queue, where, after=after, limit=limit)
    if expired:
        store.drop_expired(now)
    return _Window(after, items, holders, minutes, arrivals, now,
                   complete=len(items) < limit)


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
    from curation.preference import edit_pair_hook

    before = store.get(example_id) if "messages" in changes else None
    after = store.record_submission(example_id, base_version=base_version, actor=user.name,
                                    reason=(reason or "").strip() or None, changes=changes,
                                    source=SUBMITTED, now=now or utcnow(),
                                    then=edit_pair_hook(store, user, before))
    store.drop_leases(user.name, example_id=example_id)
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
