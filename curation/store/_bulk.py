"""Bulk changes as set-based SQL: one field of many examples changed in one transaction.

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
                    "FROM examples WHERE list_contains($ids::BIGINT[], id) ORDER BY id",
                    params).fetchall()
                if len(rows) != len(set(ids)):
                    missing = sorted(set(ids) - {r[0] for r in rows})
                    raise ExampleNotFound(f"no example has id #{missing[0]}")
                left_out = [r[0] for r in rows if not r[4]]
                unchanged = [r[0] for r in rows if r[4] and r[2] == r[3]]
                changes = [r[:4] for r in rows if r[4] and r[2] != r[3]]
                if changes:
                    self._write_bulk(cur, changes, field, action, actor, reason, batch, now)
            return [r[0] for r in changes], unchanged, left_out
        except duckdb.TransactionException as exc:
            raise BulkConflict(str(exc)) from None

    def _write_bulk(self, cur, changes: list[tuple], field: str, action: str, actor: str,
                    reason: str | None, batch: str, now: datetime) -> None:
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
            event = _EVENT_ACTION.get(action, "edit")
            cur.execute(
                "INSERT INTO events (id, example_id, action, actor, occurred_at, version, "
                "before, after, reason, guidelines_version) "
                "SELECT nextval('event_id_seq'), id, $action, $actor, $now, version + 1, "
                f"json_object('{field}', old)::VARCHAR, json_object('{field}', new)::VARCHAR, "
                f"$reason, ({CURRENT_GUIDELINES}) FROM bulk_rows ORDER BY id",
                {"action": event, "actor": actor, "now": now, "reason": reason})
            cur.execute("INSERT INTO batch_events SELECT $batch, id, version + 1 FROM bulk_rows",
                        {"batch": batch})
        finally:
            cur.unregister("bulk_rows")
