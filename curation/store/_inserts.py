"""One path for new examples into the store: `Store.add` (one, written in the app) and the
importer (chunks of thousands) both write through `insert_examples`.

Rows arrive as an Arrow table, the importer's column buffers as they are (no copy, no
per-row Python): `id` (from `new_example_ids`; a row with id 0 is skipped), `line` (the file
line, null for an example written in the app), `external_id`, `messages` (JSON), `text`
(search text), `label` (`''` stands for none in these three), `content_hash`, `tags`, and
`label_conflict` (the message of a label conflict, `''` for none). Each row becomes version 1
in `examples` and one 'create' event carrying source, split, status, label, the line, and
the label conflict when there is one: in the caller's transaction, so a failed import or add
writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

_EVENT = "json_object('source', ?::VARCHAR, 'split', ?::VARCHAR, 'status', ?::VARCHAR, " \
         "'label', nullif(label, ''){})"
_APP_EVENT, _FILE_EVENT = _EVENT.format(""), _EVENT.format(", 'line', line")


class ExampleInserts:
    """Writing new examples (mixed into `Store`)."""

    def has_examples(self) -> bool:
        """Whether the store holds any example at all (deleted ones included)."""
        return self.cursor().execute("SELECT count(*) FROM examples").fetchall()[0][0] > 0

    def new_example_ids(self, n: int) -> list[int]:
        """`n` fresh example ids, ascending."""
        return sorted(r[0] for r in self.cursor().execute(
            "SELECT nextval('example_id_seq') FROM range(?)", [n]).fetchall())

    def stored_matches(self, rows: pa.Table) -> dict[int, tuple[bool, int | None, str | None]]:
        """For each `line` of `rows` whose conversation is stored: (whether a stored example
        has the same label and no other external id, the lowest id of one with another
        label, that example's label ('' for none))."""
        cur = self.cursor()
        cur.register("incoming", rows)
        try:
            return {line: (same, other_id, other_label)
                    for line, same, other_id, other_label in cur.execute(
                        "SELECT c.line, bool_or(coalesce(e.label, '') = c.label AND "
                        "(e.external_id IS NULL OR c.external_id = '' OR "
                        "e.external_id = c.external_id)), "
                        "min(e.id) FILTER (coalesce(e.label, '') <> c.label), "
                        "arg_min(coalesce(e.label, ''), e.id) FILTER (coalesce(e.label, '') <> "
                        "c.label) FROM incoming c JOIN examples e "
                        "ON e.content_hash = c.content_hash GROUP BY c.line").fetchall()}
        finally:
            cur.unregister("incoming")

    def insert_examples(self, rows: pa.Table, *, source: str | None, split: str, status: str,
                        actor: str, now: datetime, reason: str | None = None) -> None:
        """Write each row with an id > 0 as a new example (version 1) with its 'create'
        event; call it inside a transaction."""
        cur = self.cursor()
        cur.register("new_examples", rows)
        try:
            cur.execute(
                "INSERT INTO examples (id, external_id, messages, text, label, tags, source, "
                "split, status, content_hash, version, created_by, created_at, updated_by, "
                "updated_at, deleted) SELECT id, nullif(external_id, ''), messages, text, "
                "nullif(label, ''), tags, ?, ?, ?, content_hash, 1, ?, ?, ?, ?, false "
                "FROM new_examples WHERE id > 0",
                [source, split, status, actor, now, actor, now]).fetchall()
            event = [source, split, status]
            cur.execute(
                "INSERT INTO events SELECT nextval('event_id_seq'), id, 'create', ?, ?, 1, "
                "NULL, CASE WHEN label_conflict = '' THEN event ELSE json_merge_patch(event, "
                "json_object('label_conflict', label_conflict)) END::VARCHAR, ? FROM "
                f"(SELECT *, CASE WHEN line IS NULL THEN {_APP_EVENT} ELSE {_FILE_EVENT} "
                "END AS event "
                "FROM new_examples WHERE id > 0)",
                [actor, now, reason, *event, *event]).fetchall()
        finally:
            cur.unregister("new_examples")
