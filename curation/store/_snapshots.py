"""Snapshots: immutable, hashed sets of (example id, version), what training and export read.

The same filters over unchanged data give back the same snapshot instead of a new one (its
id is a hash of the filters and the content). A snapshot reads its examples from every
version ever stored (`_VERSIONS`: the superseded ones in `example_versions`, the current one
in `examples`), so it never changes when an example is edited later.

A snapshot holds answered examples only: an example that needs an answer (its conversation
ends with a user turn, imported with `--unanswered`) is left out whatever the filters say,
because a snapshot is what export writes and training reads. The filters are stored as given
(the same filters give the same snapshot id as before), and `left_out` counts what matched
them but was left out, so the export manifest can say so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from curation.errors import InvalidValue, SnapshotNotFound
from curation.store._filters import where_clause

if TYPE_CHECKING:
    from curation.query import ExampleFilter

# Every version of every example: the superseded ones, and the current one in `examples`.
# A preference pair's rejected answer and a KTO record's flag are part of each version.
_VERSIONS = ("(SELECT example_id, version, messages, label, tags, split, status, content_hash, "
             "changed_by, changed_at, kind, rejected, desirable FROM example_versions "
             "UNION ALL SELECT id, version, messages, label, tags, split, status, content_hash, "
             "updated_by, updated_at, kind, rejected, desirable FROM examples)")


@dataclass(frozen=True)
class Snapshot:
    """An immutable, hashed set of example versions."""

    id: str
    name: str
    created_by: str
    created_at: datetime
    filters: dict[str, Any]
    content_hash: str
    count: int


class SnapshotQueries:
    """The `snapshots` and `snapshot_items` tables (mixed into `Store`)."""

    def snapshot(self, where: ExampleFilter, *, actor: str, name: str | None = None) -> Snapshot:
        """The snapshot of what `where` selects now: reused if one with the same filters and
        content exists, otherwise created."""
        from curation.store._store import utcnow  # _store mixes this class in

        if where.needs_answer:
            raise InvalidValue("a snapshot holds answered examples only: examples that need "
                               "an answer are never exported or trained on")
        filters = orjson.dumps(where.describe(), option=orjson.OPT_SORT_KEYS).decode()
        condition, params = where_clause(replace(where, needs_answer=False))
        with self.transaction() as cur:
            rows = cur.execute(
                f"SELECT id, version, content_hash, label, tags, split FROM examples "
                f"WHERE {condition} ORDER BY id", params).fetchall()
            digest = hashlib.sha256()
            for row in rows:
                digest.update(orjson.dumps(list(row)) + b"\n")
            content = digest.hexdigest()
            snap_id = "snap-" + hashlib.sha256(f"{filters}|{content}".encode()).hexdigest()[:12]
            existing = cur.execute("SELECT id FROM snapshots WHERE id = ?", [snap_id]).fetchone()
            if existing is None:
                now = utcnow()
                cur.execute("INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [snap_id, name or f"{now:%Y-%m-%d %H:%M} {_describe(where)}", actor,
                             now, filters, content, len(rows)])
                cur.execute("INSERT INTO snapshot_items SELECT ?, id, version FROM "
                            f"(SELECT id, version FROM examples WHERE {condition})",
                            [snap_id, *params])
        return self.get_snapshot(snap_id)

    def left_out(self, snapshot_id: str) -> dict[str, int]:
        """What the snapshot's filters select now but a snapshot never holds, by reason:
        {"needs_answer": N} (N may be 0)."""
        from curation.query import ExampleFilter

        filters = self.get_snapshot(snapshot_id).filters
        where = ExampleFilter(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in filters.items()})
        return {"needs_answer": self.count(replace(where, needs_answer=True))}

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        row = self.cursor().execute(
            "SELECT id, name, created_by, created_at, filters, content_hash, count "
            "FROM snapshots WHERE id = ?", [snapshot_id]).fetchone()
        if row is None:
            raise SnapshotNotFound(f"no snapshot has id {snapshot_id!r}")
        return Snapshot(*row[:4], orjson.loads(row[4]), *row[5:])

    def snapshots(self) -> list[Snapshot]:
        ids = self.cursor().execute(
            "SELECT id FROM snapshots ORDER BY created_at DESC, id").fetchall()
        return [self.get_snapshot(i) for (i,) in ids]

    def snapshot_rows(self, snapshot_id: str) -> Iterator[dict[str, Any]]:
        """The exact example versions of a snapshot, by example id, streamed."""
        self.get_snapshot(snapshot_id)
        cur = self._con.cursor()
        cur.execute(
            "SELECT v.example_id, e.external_id, v.version, v.messages, v.label, v.tags, v.split, "
            "v.status, e.source, coalesce(v.kind, 'sft'), v.rejected, v.desirable "
            f"FROM snapshot_items s JOIN {_VERSIONS} v "
            "ON v.example_id = s.example_id AND v.version = s.version "
            "JOIN examples e ON e.id = s.example_id WHERE s.snapshot_id = ? ORDER BY v.example_id",
            [snapshot_id])
        keys = ("id", "external_id", "version", "messages", "label", "tags", "split", "status",
                "source", "kind", "rejected", "desirable")
        try:
            while batch := cur.fetchmany(2048):
                for row in batch:
                    item = dict(zip(keys, row))
                    item["messages"] = orjson.loads(item["messages"])
                    item["tags"] = tuple(item["tags"] or ())
                    if item["rejected"] is not None:
                        item["rejected"] = orjson.loads(item["rejected"])
                    yield item
        finally:
            cur.close()

    def snapshot_pairs(self, before: str, after: str) -> list[tuple]:
        """Every example in either snapshot, as (id, label before, label after, content hash
        before, content hash after); None where the example is not in that snapshot."""
        self.get_snapshot(before)
        self.get_snapshot(after)
        return self.cursor().execute(
            "WITH a AS (SELECT v.example_id, v.label, v.content_hash FROM snapshot_items s "
            f"JOIN {_VERSIONS} v ON v.example_id = s.example_id AND v.version = s.version "
            "WHERE s.snapshot_id = ?), "
            "b AS (SELECT v.example_id, v.label, v.content_hash FROM snapshot_items s "
            f"JOIN {_VERSIONS} v ON v.example_id = s.example_id AND v.version = s.version "
            "WHERE s.snapshot_id = ?) "
            "SELECT coalesce(a.example_id, b.example_id) AS id, a.label, b.label, "
            "a.content_hash, b.content_hash FROM a FULL OUTER JOIN b "
            "ON a.example_id = b.example_id ORDER BY id", [before, after]).fetchall()


def _describe(where: ExampleFilter) -> str:
    parts = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
             for k, v in where.describe().items()]
    return " ".join(parts) or "all examples"
