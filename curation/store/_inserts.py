"""One path for new examples into the store: `Store.add` (one, written in the app) and the
importer (chunks of thousands) both write through the same two statements (`_insert_new`):
the importer's rows as a registered Arrow table (`insert_examples`), one example of the app
as a row of parameters (`insert_example`).

The importer's Arrow table is its column buffers as they are (no copy, no per-row Python);
either way the rows have the columns `id` (from `new_example_ids`; a row with id 0 is
skipped), `line` (the file line, null for an example written in the app), `external_id`,
`messages` (JSON), `text` (search text), `label` (`''` stands for none in these three),
`content_hash`, `tags`, `label_conflict` (the message of a label conflict, `''` for
none), and the preference columns `kind` (`''` for 'sft'), `rejected` (JSON, `''` for none)
and `desirable` (`'true'`, `'false'`, `''` for none). Each row becomes version 1 in
`examples` and one 'create' event carrying source, split, status, label, the line, and the
label conflict when there is one: in the caller's transaction, so a failed import or add
writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    import pyarrow as pa

_EVENT = "json_object('source', ?::VARCHAR, 'split', ?::VARCHAR, 'status', ?::VARCHAR, " \
         "'label', nullif(label, ''){})"
_APP_EVENT, _FILE_EVENT = _EVENT.format(""), _EVENT.format(", 'line', line")
# One example as the relation `_insert_new` reads, from parameters.
_ONE_ROW = ("(VALUES (?::BIGINT, ?::BIGINT, ?::VARCHAR, ?::VARCHAR, ?::VARCHAR, ?::VARCHAR, "
            "?::VARCHAR, ?::VARCHAR[], ?::VARCHAR, ?::VARCHAR, ?::VARCHAR, ?::VARCHAR)) "
            "AS new_examples(id, line, external_id, messages, text, label, content_hash, tags, "
            "label_conflict, kind, rejected, desirable)")


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
                        actor: str, now: datetime) -> None:
        """Write each row of `rows` with an id > 0 as a new example (version 1) with its
        'create' event; call it inside a transaction."""
        cur = self.cursor()
        cur.register("new_examples", rows)
        try:
            self._insert_new("new_examples", [], source=source, split=split, status=status,
                             actor=actor, now=now, reason=None)
        finally:
            cur.unregister("new_examples")

    def insert_example(self, example_id: int, messages: str, text: str, label: str | None,
                       content_hash: str, tags: tuple[str, ...], *, source: str | None,
                       split: str, status: str, actor: str, now: datetime,
                       reason: str | None = None,
                       preference: tuple[str, list | None, bool | None] = ("sft", None, None)
                       ) -> None:
        """Write one new example (messages as JSON text), written in the app, with its
        'create' event; call it inside a transaction. The same statements as
        `insert_examples`, over one row of parameters (an Arrow scan costs 2 ms a statement,
        too much for one row)."""
        kind, rejected, desirable = preference
        self._insert_new(_ONE_ROW, [example_id, None, "", messages, text, label or "",
                                    content_hash, list(tags), "", kind,
                                    orjson.dumps(rejected).decode() if rejected else "",
                                    "" if desirable is None else str(desirable).lower()],
                         source=source, split=split, status=status, actor=actor, now=now,
                         reason=reason)

    def _insert_new(self, rows: str, row_params: list, *, source: str | None, split: str,
                    status: str, actor: str, now: datetime, reason: str | None) -> None:
        """The two statements every new example goes through, reading the relation `rows`
        (with `row_params`, when it holds parameters)."""
        self._note_arrival()
        cur = self.cursor()
        cur.execute(
            "INSERT INTO examples (id, external_id, messages, text, label, tags, source, "
            "split, status, content_hash, version, created_by, created_at, updated_by, "
            "updated_at, deleted, kind, rejected, desirable) SELECT id, "
            "nullif(external_id, ''), messages, text, "
            "nullif(label, ''), tags, ?, ?, ?, content_hash, 1, ?, ?, ?, ?, false, "
            "coalesce(nullif(kind, ''), 'sft'), nullif(rejected, ''), "
            "CASE desirable WHEN 'true' THEN true WHEN 'false' THEN false END "
            f"FROM {rows} WHERE id > 0",
            [source, split, status, actor, now, actor, now, *row_params]).fetchall()
        event = [source, split, status]
        cur.execute(
            "INSERT INTO events (id, example_id, action, actor, occurred_at, version, before, "
            "after, reason) SELECT nextval('event_id_seq'), id, 'create', ?, ?, 1, "
            "NULL, CASE WHEN label_conflict = '' THEN event ELSE json_merge_patch(event, "
            "json_object('label_conflict', label_conflict)) END::VARCHAR, ? FROM "
            f"(SELECT *, CASE WHEN line IS NULL THEN {_APP_EVENT} ELSE {_FILE_EVENT} "
            f"END AS event FROM {rows} WHERE id > 0)",
            [actor, now, reason, *event, *event, *row_params]).fetchall()
