"""Undo: take back one change (the Review page's `u`) or a whole bulk batch (Browse).

An undo is an ordinary audited change: one new version whose fields are those of the version
before the change, written as a 'revert' event by the person undoing, with a reason naming
what was undone. Nothing is deleted from the history.

Design decisions:
- A change is named by (example id, version it made): every update writes exactly one version
  and one event, so the pair is the event. Its `before` holds every field the change touched
  (content, label, tags, split, status, deleted), so restoring `before` gives back the exact
  previous version, status included (`curation.review.revert` restores content only).
- Undo only applies on top of the change itself: if anyone changed the example since, the
  undo is refused (`VersionConflict`, who and when) instead of overwriting their work; a
  batch undo skips those examples and says which. A batch undo is one set-based write
  (`Store.bulk_revert`), so taking back 100,000 changes costs about what the batch did. One
  exception makes `u`, `u` walk back:
  when the example is now exactly as that change left it (a later change was undone), the
  undo applies on top of the current version.
- Who may undo: one's own change, with the permission that change needed (an annotator may
  undo their own edit; a decision needs the decide right). Someone else's change or batch
  needs the revert right as well (reviewers may revert anyone's example anyway).
- The Review page keeps the person's own changes of the session as a stack of
  (id, version) pairs (session state, not stored): `u` undoes the latest, then the one
  before; this module does not need to know about sessions. When the stack is empty (a new
  session: the browser was reloaded), `last_change` reads the audit instead: the person's
  latest decision or edit of today that still stands (the example is still at the version it
  made) and that no bulk batch wrote (a batch is undone as a whole, on Browse).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from curation.auth import User, require
from curation.errors import BulkConflict, ExampleNotFound, InvalidValue, VersionConflict
from curation.review import BULK_PERMISSION
from curation.store import Example, Store, utcnow

UNDOABLE = ("accept", "reject", "needs_work", "edit")  # what `last_change` finds in the audit

# the right each audited action needed: an undo of it needs the same
ACTION_PERMISSION = {"accept": "decide", "reject": "decide", "needs_work": "decide",
                     "reopen": "decide", "revert": "revert", "delete": "delete",
                     "restore": "delete"}


def undo_change(store: Store, user: User, example_id: int, version: int) -> Example:
    """Take back the change that made `version` of an example: the example gets the fields of
    the version before it again (as a new version, audited as a revert by `user`)."""
    event = store.event_at(example_id, version)
    if event is None:
        raise ExampleNotFound(f"example #{example_id} has no version {version} to undo")
    if not event["before"]:
        raise InvalidValue(f"version {version} of example #{example_id} is its import: "
                           "there is nothing before it to go back to (delete it instead)")
    require(user, ACTION_PERMISSION.get(event["action"], "edit"))
    if event["actor"] != user.name:
        require(user, "revert")
    current = store.get(example_id)
    base = version
    if current.version != version and _same(store.version(example_id, version), current):
        base = current.version  # only undone since (back to this very state): undo further
    return store.update(example_id, base_version=base, actor=user.name, action="revert",
                        reason=f"undo {event['action']} (version {version}) by "
                               f"{event['actor']}", **event["before"])


def _same(version: dict, example: Example) -> bool:
    return all(version[f] == getattr(example, f) for f in _FIELDS)


_FIELDS = ("messages", "label", "tags", "split", "status", "rejected", "desirable")


@dataclass
class UndoResult:
    """How a batch undo went: ids restored, and ids left as they are, with why."""

    batch: str
    restored: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"{len(self.restored)} restored to their version before batch {self.batch}"
        if self.skipped:
            text += (f", {len(self.skipped)} left as they are (changed since the batch, "
                     "by someone or by a later action)")
        return text


def undo_batch(store: Store, user: User, batch_id: str) -> UndoResult:
    """Take back every change of a bulk batch: each example goes back to its version before
    the batch, unless it was changed since (skipped, with who changed it)."""
    batch = store.batch(batch_id)
    if batch is None:
        raise InvalidValue(f"no bulk batch has id {batch_id!r}")
    require(user, BULK_PERMISSION.get(batch["action"], "edit"))
    if batch["actor"] != user.name:
        require(user, "revert")
    if batch["undone_at"] is not None:
        raise InvalidValue(f"batch {batch_id} was undone already, by {batch['undone_by']} at "
                           f"{batch['undone_at']:%Y-%m-%d %H:%M} UTC")
    reason = f"undo batch {batch_id} ({batch['action']})"
    for attempt in range(2):  # once more if someone changed one of them during the write
        try:
            restored, changed_since = store.bulk_revert(batch_id, batch["action"],
                                                        actor=user.name, reason=reason,
                                                        now=utcnow())
            break
        except BulkConflict:
            if attempt:
                raise
    result = UndoResult(batch_id, restored=restored)
    for example_id, version in changed_since:
        current = store.get(example_id)
        result.skipped[example_id] = str(VersionConflict(
            example_id, version, current.version, current.updated_by, current.updated_at))
    return result


def last_batch(store: Store, user: User) -> dict | None:
    """The person's latest bulk batch, if it is not undone yet (what Browse offers to undo)."""
    latest = store.batches(user.name, limit=1)
    return latest[0] if latest and latest[0]["undone_at"] is None else None


def last_change(store: Store, user: User, *, now=None) -> tuple[int, int, str] | None:
    """(example id, version, action) of the person's latest decision or edit today (UTC)
    that still stands and is not part of a bulk batch: what `u` undoes after a reload."""
    now = now or utcnow()
    return store.latest_standing_change(user.name, datetime(now.year, now.month, now.day),
                                        UNDOABLE)
