"""Bulk changes as set-based SQL: one field of many examples changed in one transaction, and
the undo of such a batch.

`Store.update` changes one example: a read, three statements and a commit, 5 to 60 ms here,
so a bulk action over every one of 100,000 matching examples took minutes that way. A bulk
action changes the same field of every example it selects to a value computed from the row
(a status, a label, a split, the deleted flag, a tag added or removed), so it is written as
five statements over the whole set instead, with exactly what `update` writes per example:
the superseded version in `example_versions`, the new version in `examples`, one audit
event each (same actions, same before/after JSON, the guidelines version in force) and the
batch's `batch_events` rows.

Design decisions:
- The rows to change are read first, in the transaction: (id, version, old value, new
  value) of the selected examples whose value actually changes; examples already in that
  state are reported unchanged and get no version, as with `update`. The later statements
  join on (id, version), so each writes only what was read.
- All or nothing: if another writer changed one of the rows meanwhile (DuckDB reports a
  write-write conflict, or fewer rows were updated than read), the whole transaction is rolled
  back and `BulkConflict` raised; the caller may retry the set on the new versions.
- Accepting leaves out the examples that need an answer (the same SQL test as the filters).
- Undoing a batch is the same write the other way (`bulk_revert`): each example still at the
  version the batch made gets the field's value from before the batch (the `before` of the
  batch's audit event), audited as `revert`; the batch is marked undone in the
  same transaction. Examples changed since are left alone and reported.
"""

from __future__ import annotations

from datetime import datetime
import duckdb
import pyarrow as pa

from curation.errors import BulkConflict, ExampleNotFound
from curation.store._filters import NEEDS_ANSWER
from curation.store._guidelines import CURRENT_GUIDELINES

# field, SQL for its new value from the row and the parameter `$value`
_NEW_VALUE: dict[str, tuple[str, str]] = {
    "accept": ("status", "'accepted'"),
    "reject": ("status", "'rejected'"),
    "set_label": ("label", "$value"),
    "move_split": ("split", "$value"),
    "add_tag": ("tags", "CASE WHEN list_contains(tags, $value) THEN tags "
                        "ELSE list_append(tags, $value) END"),
    "remove_tag": ("tags", "list_filter(tags, lambda t: t <> $value)"),
    "delete": ("deleted", "true"),
    "restore": ("deleted", "false"),
}
# the field's value before a change, from that change's audit event (`ev.before`)
_BEFORE = {"status": "json_extract_string(ev.before, '$.status')",
           "label": "json_extract_string(ev.before, '$.label')",
           "split": "json_extract_string(ev.before, '$.split')",
           "tags": "CAST(json_extract(ev.before, '$.tags') AS VARCHAR[])",
           "deleted": "CAST(json_extract(ev.before, '$.deleted') AS BOOLEAN)"}
_EVENT_ACTION = {"accept": "accept", "reject": "reject", "delete": "delete",
                 "restore": "restore"}  # the rest are edits, as `update` names them
# the current version of examples, copied into example_versions (add a WHERE or a join)
SUPERSEDE = ("INSERT INTO example_versions (example_id, version, messages, label, tags, split, "
             "status, content_hash, changed_by, changed_at, kind, rejected, desirable) "
             "SELECT id, version, messages, label, tags, split, status, content_hash, "
             "updated_by, updated_at, kind, rejected, desirable FROM examples")


class BulkQueries:
    """Set-based bulk changes (mixed into `Store`)."""

    def bulk_write(self, ids: list[int], action: str, value: str | None, *, actor: str,
                   reason: str | None, batch: str, now: datetime
                   ) -> tuple[list[int], list[int], list[int]]:
        """Apply bulk `action` (with `value`) to the examples `ids`, in one transaction:
        (changed ids, unchanged ids, ids left out because they need an answer). Raises
        BulkConflict, having written nothing, when another writer got in the way."""
        field, new_value = _NEW_VALUE[action]
        answered = f"NOT ({NEEDS_ANSWER.format(p='')})" if action == "accept" else "true"
        params = {"ids": list(ids), "value": value}
        if "$value" not in new_value:
            params.pop("value")
        self._note_arrival()
        try:
            with self.transaction() as cur:
                rows = cur.execute(
                    f"SELECT id, version, {field} AS old, {new_value} AS new, {answered} AS ok "
                    "FROM examples WHERE id IN (SELECT unnest($ids::BIGINT[])) ORDER BY id",
                    params).fetchall()
                if len(rows) != len(set(ids)):
                    missing = sorted(set(ids) - {r[0] for r in rows})
                    raise ExampleNotFound(f"no example has id #{missing[0]}")
                left_out = [r[0] for r in rows if not r[4]]
                unchanged = [r[0] for r in rows if r[4] and r[2] == r[3]]
                changes = [r[:4] for r in rows if r[4] and r[2] != r[3]]
                if changes:
                    self._write_bulk(cur, changes, field, _EVENT_ACTION.get(action, "edit"),
                                     actor, reason, now, batch=batch)
            return [r[0] for r in changes], unchanged, left_out
        except duckdb.TransactionException as exc:
            raise BulkConflict(str(exc)) from None

    def bulk_revert(self, batch_id: str, action: str, *, actor: str, reason: str,
                    now: datetime) -> tuple[list[int], list[tuple[int, int]]]:
        """Take back bulk batch `batch_id` (of bulk `action`) in one transaction: every
        example still at the version the batch made goes back to the value of the version
        before it (audited as `revert`), and the batch is marked undone. Returns (restored
        ids, (id, batch version) of the examples changed since, left as they are). Raises
        BulkConflict, having written nothing, when another writer got in the way."""
        field = _NEW_VALUE[action][0]
        try:
            with self.transaction() as cur:
                changes = cur.execute(
                    f"SELECT e.id, e.version, e.{field}, {_BEFORE[field]} FROM batch_events b "
                    "JOIN examples e ON e.id = b.example_id AND e.version = b.version "
                    "JOIN events ev ON ev.example_id = e.id AND ev.version = e.version "
                    "WHERE b.batch_id = ? ORDER BY e.id", [batch_id]).fetchall()
                changed_since = cur.execute(
                    "SELECT b.example_id, b.version FROM batch_events b JOIN examples e "
                    "ON e.id = b.example_id AND e.version <> b.version WHERE b.batch_id = ? "
                    "ORDER BY b.example_id", [batch_id]).fetchall()
                if changes:
                    self._note_arrival()
                    self._write_bulk(cur, changes, field, "revert", actor, reason, now)
                cur.execute("UPDATE batches SET undone_by = ?, undone_at = ? WHERE id = ?",
                            [actor, now, batch_id])
            return [r[0] for r in changes], [tuple(r) for r in changed_since]
        except duckdb.TransactionException as exc:
            raise BulkConflict(str(exc)) from None

    def _write_bulk(self, cur, changes: list[tuple], field: str, event: str, actor: str,
                    reason: str | None, now: datetime, *, batch: str | None = None) -> None:
        """Write `changes` ((id, version, old value, new value) rows) of `field`: the
        superseded versions, the new ones, one `event` each, and the batch's rows."""
        ids, versions, old, new = (list(column) for column in zip(*changes))
        cur.register("bulk_rows", pa.table({"id": pa.array(ids, pa.int64()),
                                            "version": pa.array(versions, pa.int32()),
                                            "old": old, "new": new}))
        try:
            cur.execute(f"{SUPERSEDE} SEMI JOIN bulk_rows b ON examples.id = b.id "
                        "AND examples.version = b.version")
            updated = cur.execute(
                f"UPDATE examples SET {field} = b.new, version = b.version + 1, "
                "updated_by = $actor, updated_at = $now FROM bulk_rows b "
                "WHERE examples.id = b.id AND examples.version = b.version RETURNING examples.id",
                {"actor": actor, "now": now}).fetchall()
            if len(updated) != len(changes):
                raise duckdb.TransactionException("an example changed during the bulk write")
            cur.execute(
                "INSERT INTO events (id, example_id, action, actor, occurred_at, version, "
                "before, after, reason, guidelines_version) "
                "SELECT nextval('event_id_seq'), id, $action, $actor, $now, version + 1, "
                f"json_object('{field}', old)::VARCHAR, json_object('{field}', new)::VARCHAR, "
                f"$reason, ({CURRENT_GUIDELINES}) FROM bulk_rows ORDER BY id",
                {"action": event, "actor": actor, "now": now, "reason": reason})
            if batch is not None:
                cur.execute("INSERT INTO batch_events SELECT $batch, id, version + 1 "
                            "FROM bulk_rows", {"batch": batch})
        finally:
            cur.unregister("bulk_rows")
