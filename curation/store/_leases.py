"""Review leases and submissions as SQL: the `leases` table, and the "submitted" findings.

`curation.leases` decides what a lease means (who may claim what, for how long); this module
only stores them. A lease is one row per example (`example_id` is the primary key): the
person holding it, the queue it was claimed from, when it was taken and when it expires.

Design decisions:
- Taking a lease is one statement, `INSERT ... ON CONFLICT DO UPDATE ... WHERE` (the row is
  free, expired or already mine), with `RETURNING`: it is atomic on its own. Two claimers of
  the same example, on two threads (cursors) of one connection, meet at the primary key: the
  second gets a constraint or write-write conflict error from DuckDB, or a row still held by
  the first; either way `take_lease` answers "not yours" and the caller tries the next one.
- Expired rows are not cleaned up by a timer: every read compares `expires_at` with the
  caller's `now`, and taking an expired row replaces it. `drop_expired` trims the table when a
  claim finds stale rows, so it stays as small as the number of people at work.
- A write costs a commit (about 10 ms on a loaded 2-core machine, and commits queue behind
  each other), so a claim writes only what `lease_counts` says it must: the lease itself,
  and a delete only when there are expired rows or the claimer holds another example.
- A submission is an ordinary audited change (`_write`: one new version, one event, action
  `submit`, with the annotator's edits), written even when nothing else changed, plus one
  finding of the stored source `submitted` on the new version, in the same transaction; the
  Submitted queue lists the findings whose example is still at that version (see
  `curation.leases`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb

_EPOCH = datetime(1970, 1, 1)
LEASE_COLUMNS = ("example_id", "holder", "queue", "acquired_at", "expires_at")
_ON_CONFLICT = (
    " ON CONFLICT (example_id) DO UPDATE SET "
    "holder = excluded.holder, queue = coalesce(excluded.queue, leases.queue), "
    "acquired_at = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > "
    "excluded.acquired_at THEN leases.acquired_at ELSE excluded.acquired_at END, "
    "expires_at = excluded.expires_at "
    "WHERE leases.holder = excluded.holder OR leases.expires_at <= excluded.acquired_at "
    "RETURNING holder")
_TAKE = "INSERT INTO leases VALUES (?, ?, ?, ?, ?)" + _ON_CONFLICT


class LeaseQueries:
    """The `leases` table and the submissions' findings (mixed into `Store`)."""

    def take_lease(self, example_id: int, holder: str, queue: str | None, now: datetime,
                   until: datetime, *, release_others: bool = False,
                   at_version: int | None = None) -> bool:
        """Lease `example_id` to `holder` until `until` if it is free, expired or already
        theirs (then renewed); whether `holder` holds it now. With `release_others`, the
        holder's other leases are released in the same transaction (one commit, not two);
        with `at_version`, the lease is taken only while the example is still at that version
        (read in the same transaction). Never raises on a lost race."""
        params = [example_id, holder, queue, now, until]
        try:
            if not release_others and at_version is None:
                rows = self.cursor().execute(_TAKE, params).fetchall()
                return bool(rows) and rows[0][0] == holder
            with self.transaction() as tx:
                if at_version is not None:
                    current = tx.execute("SELECT version FROM examples WHERE id = ?",
                                         [example_id]).fetchone()
                    if current is None or current[0] != at_version:
                        return False
                rows = tx.execute(_TAKE, params).fetchall()
                won = bool(rows) and rows[0][0] == holder
                if won and release_others:
                    tx.execute("DELETE FROM leases WHERE holder = ? AND example_id <> ?",
                               [holder, example_id])
            return won
        except (duckdb.ConstraintException, duckdb.TransactionException):
            return False  # another claimer took it in the same instant

    def live_holders(self, now: datetime) -> tuple[dict[int, str], int]:
        """({example id: holder} of every live lease at `now`, how many leases expired)."""
        rows = self.cursor().execute("SELECT example_id, holder, expires_at > ? FROM leases",
                                     [now]).fetchall()
        return {r[0]: r[1] for r in rows if r[2]}, sum(1 for r in rows if not r[2])

    def lease_row(self, example_id: int) -> tuple | None:
        """(example_id, holder, queue, acquired_at, expires_at) of an example, live or not."""
        return self.cursor().execute(f"SELECT {', '.join(LEASE_COLUMNS)} FROM leases "
                                     "WHERE example_id = ?", [example_id]).fetchone()

    def version_and_lease(self, example_id: int) -> tuple:
        """(the example's current version or None, the lease's holder and expiry or None):
        one point read, what a claim checks just before and after it writes its lease."""
        return self.cursor().execute(
            "SELECT (SELECT version FROM examples WHERE id = $1), "
            "(SELECT holder FROM leases WHERE example_id = $1), "
            "(SELECT expires_at FROM leases WHERE example_id = $1)", [example_id]).fetchone()

    def live_lease_rows(self, now: datetime, *, holder: str | None = None) -> list[tuple]:
        """Every lease not expired at `now` (only `holder`'s, if given), by holder and age."""
        return self.cursor().execute(
            f"SELECT {', '.join(LEASE_COLUMNS)} FROM leases WHERE expires_at > ? "
            "AND (? IS NULL OR holder = ?) ORDER BY holder, acquired_at, example_id",
            [now, holder, holder]).fetchall()

    def lease_counts(self, holder: str, now: datetime) -> tuple[int, int, int]:
        """(live leases of people other than `holder`, leases of `holder`, expired leases)
        at `now`, in one read: a claim writes only what these say it must."""
        return self.cursor().execute(
            "SELECT count(*) FILTER (expires_at > ? AND holder <> ?), "
            "count(*) FILTER (holder = ?), count(*) FILTER (expires_at <= ?) FROM leases",
            [now, holder, holder, now]).fetchone()

    def leased_ids(self, ids: list[int], holder: str, now: datetime) -> set[int]:
        """Which of `ids` someone other than `holder` holds a live lease on."""
        rows = self.cursor().execute(
            "SELECT example_id FROM leases WHERE expires_at > ? AND holder <> ? AND "
            "list_contains(?::BIGINT[], example_id)", [now, holder, list(ids)]).fetchall()
        return {r[0] for r in rows}

    def drop_leases(self, holder: str, *, example_id: int | None = None,
                    keep: int | None = None) -> int:
        """Release `holder`'s lease on `example_id` (or all of theirs, but `keep`); how many."""
        return len(self.cursor().execute(
            "DELETE FROM leases WHERE holder = ? AND (? IS NULL OR example_id = ?) "
            "AND (? IS NULL OR example_id <> ?) RETURNING example_id",
            [holder, example_id, example_id, keep, keep]).fetchall())

    def drop_expired(self, now: datetime) -> int:
        """Delete the leases expired at `now`; how many."""
        try:
            return len(self.cursor().execute("DELETE FROM leases WHERE expires_at <= ? "
                                             "RETURNING example_id", [now]).fetchall())
        except duckdb.TransactionException:  # someone is taking one of them over right now
            return 0

    def record_submission(self, example_id: int, *, base_version: int, actor: str,
                          reason: str | None, changes: dict[str, Any], source: str,
                          now: datetime, then: Callable[[Any], Any] | None = None):
        """Write the submission of an example at `base_version` (with `changes`): one new
        version and one `submit` event even when nothing else changed, and the finding of
        `source` on the new version that puts it in the Submitted queue. VersionConflict on a
        stale version; nothing is written then. `then(after)` writes in the same transaction,
        as in `Store.update`."""
        changes = self._validated(changes, unanswered=True)
        try:
            with self.transaction() as cur:
                current = self._get(cur, example_id)
                if current.version != base_version:
                    raise self._conflict(current, base_version)
                if "messages" in changes and not current.needs_answer:
                    from curation.store._store import check_conversation_or_invalid

                    check_conversation_or_invalid(changes["messages"])
                diff = ({k: v for k, v in changes.items() if v != getattr(current, k)}
                        or {"status": current.status})  # nothing edited: still one version
                after = self._write(cur, current, diff, actor, reason, "submit")
                cur.execute("DELETE FROM findings WHERE check_name = ? AND example_id = ?",
                            [source, example_id])
                cur.execute("INSERT INTO findings VALUES (?, ?, ?, ?, true, ?, '{}')",
                            [source, example_id, after.version, (now - _EPOCH).total_seconds(),
                             f"submitted for review by {actor} at {now:%Y-%m-%d %H:%M} UTC"
                             + (f": {reason}" if reason else "")])
                cur.execute("INSERT OR REPLACE INTO check_runs VALUES (?, '', '{}', ?, ?)",
                            [source, actor, now])
                if then is not None:
                    then(after)
                return after
        except duckdb.TransactionException:
            raise self._conflict(self.get(example_id), base_version) from None

    def awaiting_review(self, ids: list[int], source: str) -> set[int]:
        """Which of `ids` are submitted for review (a finding of `source` on their current
        version)."""
        rows = self.cursor().execute(
            "SELECT f.example_id FROM findings f JOIN examples e ON e.id = f.example_id "
            "AND e.version = f.version WHERE f.check_name = ? AND "
            "list_contains(?::BIGINT[], f.example_id)", [source, list(ids)]).fetchall()
        return {r[0] for r in rows}
