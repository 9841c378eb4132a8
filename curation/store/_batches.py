"""Bulk batches and single events, as undo reads them (`batches`, `batch_events`).

A bulk action is one batch: a row in `batches` (what, by whom, over which rows) and, for every
example it changed, one row in `batch_events` naming the audit event it wrote by
(example id, version): an update writes exactly one event per new version, so that pair is the
event. The row is written in the same transaction as the change (`Store.update(batch=...)`),
so a batch never holds a change that did not happen, nor misses one that did.

Design decision: the batch id lives in its own table beside `events` rather than as a new
column of it, so the one insert path of events (`Store._write`) and every reader of `events`
stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

BATCH_KEYS = ("id", "action", "value", "reason", "scope", "actor", "created_at", "undone_by",
              "undone_at", "changed")


class BatchQueries:
    """The `batches` and `batch_events` tables, and single events by version (mixed into
    `Store`)."""

    def create_batch(self, batch_id: str, *, action: str, value: str | None,
                     reason: str | None, scope: str, actor: str, now: datetime) -> None:
        self.cursor().execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                              [batch_id, action, value, reason, scope, actor, now])

    def _add_to_batch(self, cur, batch_id: str, example_id: int, version: int) -> None:
        """Inside `Store._write`'s transaction: the event of this version belongs to the
        batch."""
        cur.execute("INSERT INTO batch_events VALUES (?, ?, ?)", [batch_id, example_id, version])

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """One batch with the number of examples it changed, or None."""
        rows = self._batches("WHERE b.id = ?", [batch_id])
        return rows[0] if rows else None

    def batches(self, actor: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
        """The latest batches (of `actor`, or everyone's), newest first."""
        if actor is None:
            return self._batches("", [], limit)
        return self._batches("WHERE b.actor = ?", [actor], limit)

    def _batches(self, where: str, params: list, limit: int = 1) -> list[dict[str, Any]]:
        rows = self.cursor().execute(
            "SELECT b.id, b.action, b.value, b.reason, b.scope, b.actor, b.created_at, "
            "b.undone_by, b.undone_at, (SELECT count(*) FROM batch_events i "
            f"WHERE i.batch_id = b.id) FROM batches b {where} "
            "ORDER BY b.created_at DESC, b.id DESC LIMIT ?", [*params, limit]).fetchall()
        return [dict(zip(BATCH_KEYS, r)) for r in rows]

    def latest_standing_change(self, actor: str, since: datetime, actions: Sequence[str]
                               ) -> tuple[int, int, str] | None:
        """(example id, version, action) of `actor`'s latest event since `since` among
        `actions` that nothing has followed (the example is still at that version) and that
        no bulk batch wrote; None if there is none."""
        return self.cursor().execute(
            "SELECT ev.example_id, ev.version, ev.action FROM events ev JOIN examples e "
            "ON e.id = ev.example_id AND e.version = ev.version WHERE ev.actor = ? "
            "AND ev.occurred_at >= ? AND list_contains(?::VARCHAR[], ev.action) "
            "AND NOT EXISTS (SELECT 1 FROM batch_events b WHERE b.example_id = ev.example_id "
            "AND b.version = ev.version) ORDER BY ev.id DESC LIMIT 1",
            [actor, since, list(actions)]).fetchone()

    def event_at(self, example_id: int, version: int) -> dict[str, Any] | None:
        """The audit event that made `version` of an example (action, actor, when, fields
        before and after), or None."""
        row = self.cursor().execute(
            "SELECT action, actor, occurred_at, before, after, reason FROM events "
            "WHERE example_id = ? AND version = ? ORDER BY id DESC LIMIT 1",
            [example_id, version]).fetchone()
        if row is None:
            return None
        return {"action": row[0], "actor": row[1], "at": row[2],
                "before": orjson.loads(row[3]) if row[3] else {},
                "after": orjson.loads(row[4]) if row[4] else {}, "reason": row[5]}
