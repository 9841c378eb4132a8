"""The `Store` class: one DuckDB file per workspace, safe for many threads of one process.

This module opens the file and holds the examples, their versions and audit events; the
other tables' queries (snapshots, users, findings...) are mixed in from the sibling modules
(see `curation.store`).

Design decisions:
- One connection per process, one cursor per thread (`Store.cursor()`): Streamlit runs every
  browser session as a thread of one server process, and DuckDB cursors are not shared
  between threads. A second process that opens the file for writing gets `StoreLocked`.
- Optimistic concurrency: every update names the version it was based on. A stale version is
  refused with `VersionConflict` (who changed it, when); so is a write-write race that DuckDB
  detects between two concurrent transactions. Nothing is applied silently.
- Every change writes, in the same transaction, the new row, the row it replaces into
  `example_versions` and exactly one audit event. A refused change writes nothing. The current
  version lives only in `examples` (an import writes each conversation once, not twice);
  a snapshot reads the union of both (`curation.store._snapshots`).
- The workspace folder is made 0700 and the database and its WAL 0600 on open
  (`curation._files`): they hold password hashes and the curated data.
- A damaged file is named on open, never shown as DuckDB's traceback: damage that DuckDB
  reports (bad header, checksum, WAL) and a file shorter than its blocks in use (truncated)
  raise StoreCorrupt, which points to `curate doctor` (`curation.maintenance`); so does a
  write-ahead log whose header does not parse, which DuckDB itself would silently skip
  (`_maintenance.wal_header_problem`). A file longer than its block map holds the blocks of a
  transaction that never committed (a killed import); they are given back on open. Before a
  schema migration the file is backed up.
- "Needs an answer" is the conversation's shape, not a column: it ends with a user turn
  (`Example.needs_answer`; in SQL `_filters.NEEDS_ANSWER`), so the mark can never disagree
  with the text and needs no migration. Only `curate import --unanswered` makes such an
  example; an edit may keep it unanswered (fix the prompt) and answering it (adding the
  assistant turn) ends the mark, but an answered example cannot lose its answer by an edit
  (a revert to a version that had none may). Snapshots, and so export and training, never
  hold one (`curation.store._snapshots`).
- DuckDB's memory is capped (`MEMORY_LIMIT`); past it, DuckDB spills to disk. Measured on a
  100,000-example import: peak RSS 1.5 GB uncapped, 0.87 GB capped at 400 MB, same speed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import orjson

from curation._files import private_file, workspace_dir
from curation.errors import (CurateError, ExampleNotFound, InvalidValue,
                             StoreCorrupt, StoreLocked, StoreUnreadable, VersionConflict)
from curation.formats import (DEFAULT_MAX_FIELD_CHARS, check_conversation, needs_answer,
                              search_text)
from curation.preference import example_hash
from curation.query import SPLITS, STATUSES, ExampleFilter
from curation.store import _schema
from curation.store._batches import BatchQueries
from curation.store._bulk import SUPERSEDE, BulkQueries
from curation.store._comments import CommentQueries
from curation.store._agreement import AgreementQueries
from curation.store._embeddings import EmbeddingQueries
from curation.store._filters import where_clause
from curation.store._findings import FindingQueries
from curation.store._guidelines import CURRENT_GUIDELINES, EVENT_COLUMNS, GuidelineQueries
from curation.store._inserts import ExampleInserts
from curation.store._leases import LeaseQueries
from curation.store._maintenance import FILE_HEADERS, MaintenanceQueries, wal_header_problem
from curation.store._preference import PreferenceQueries
from curation.store._progress import ProgressQueries
from curation.store._queues import QueueQueries
from curation.store._runs import RunQueries
from curation.store._sessions import SessionQueries
from curation.store._suggestions import SuggestionQueries
from curation.store._snapshots import SnapshotQueries
from curation.store._users import UserQueries

DEFAULT_DB = Path("workspace") / "curate.duckdb"
# DuckDB's buffer pool (beyond it, large imports spill to disk); `$CURATE_DUCKDB_MEMORY`
# overrides it. It does not bound an import's memory: see `curation.importer`.
MEMORY_LIMIT = os.environ.get("CURATE_DUCKDB_MEMORY", "400MB")
# DuckDB's words for a damaged file or log, and for another process holding the file.
_DAMAGE = re.compile(r"not a valid DuckDB database|Could not read enough bytes|"
                     r"Corrupt (database|WAL) file|replaying WAL|checksum")
_LOCKED = re.compile(r"Could not set lock|Conflicting lock")
_RECOVER = ("Nothing was changed. Run `curate doctor --db {path}` (with the app stopped): it "
            "sets the damaged files aside, never deleting them, and reopens the workspace from "
            "its last good state.")
EDITABLE = ("messages", "label", "tags", "split", "status", "deleted", "rejected", "desirable")
COLUMNS = ("id, external_id, messages, label, tags, source, split, status, content_hash, "
            "version, created_by, created_at, updated_by, updated_at, deleted, kind, rejected, "
            "desirable")

def utcnow() -> datetime:
    """Naive UTC timestamp, as stored in every TIMESTAMP column."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def default_db_path() -> Path:
    """`$CURATE_DB` when set, else `./workspace/curate.duckdb`."""
    return Path(os.environ.get("CURATE_DB") or DEFAULT_DB)


@dataclass(frozen=True)
class Example:
    """One example as stored: the conversation, its metadata and its version."""

    id: int
    external_id: str | None
    messages: list[dict[str, str]]
    label: str | None
    tags: tuple[str, ...]
    source: str | None
    split: str
    status: str
    content_hash: str
    version: int
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime
    deleted: bool = False
    kind: str = "sft"  # 'sft', 'preference' or 'kto' (`curation.preference`)
    rejected: list[dict[str, str]] | None = None  # a pair's rejected continuation
    desirable: bool | None = None  # a KTO record's flag

    @property
    def needs_answer(self) -> bool:
        """A prompt imported without its answer (`--unanswered`): the last turn is a user
        turn. It is never exported, trained on or evaluated until someone answers it."""
        return needs_answer(self.messages)

    @classmethod
    def from_row(cls, row: tuple) -> "Example":
        values = list(row)
        values[2] = orjson.loads(values[2])
        values[4] = tuple(values[4] or ())
        if len(values) > 16:
            values[15] = values[15] or "sft"
            values[16] = orjson.loads(values[16]) if values[16] else None
        return cls(*values)


class Store(ExampleInserts, SnapshotQueries, UserQueries, EmbeddingQueries, FindingQueries,
            QueueQueries, RunQueries, MaintenanceQueries, SuggestionQueries, SessionQueries,
            BatchQueries, ProgressQueries, GuidelineQueries, CommentQueries, AgreementQueries,
            LeaseQueries, PreferenceQueries, BulkQueries):
    """The workspace's examples, their history and snapshots, and (mixed in) every other
    table's queries."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_db_path()
        workspace_dir(self.path.parent)  # 0700: the file holds password hashes
        wal = self.path.with_name(self.path.name + ".wal")
        # with a log to replay (or the database open in this process already), blocks that are
        # not yet checkpointed legitimately lie beyond the file's end: no size check then
        size_check = not (wal.exists() and wal.stat().st_size > 0)
        if problem := wal_header_problem(wal):  # DuckDB would drop the log without a word
            raise StoreCorrupt(f"{problem}. {_RECOVER.format(path=self.path)}")
        try:
            self._con = duckdb.connect(str(self.path), config={"memory_limit": MEMORY_LIMIT})
        except duckdb.Error as exc:
            if _LOCKED.search(str(exc)):
                raise StoreLocked(f"{self.path} is open for writing in another process "
                                  f"(for example the running app); stop it or use that "
                                  f"process. DuckDB said: {str(exc).splitlines()[0]}") from None
            raise store_error(self.path, exc) from None
        for own in (self.path, self.path.with_name(self.path.name + ".wal")):
            private_file(own)
        self._local = threading.local()
        self._arrivals = 0  # see `arrivals`
        self._arrivals_guard = threading.Lock()
        try:
            _schema.migrate(self.cursor(), utcnow(), before=self._backup_before_migration)
            if size_check:
                self._check_file()
        except BaseException as exc:
            self._con.close()
            if isinstance(exc, duckdb.Error):
                raise store_error(self.path, exc) from None
            raise

    @property
    def arrivals(self) -> int:
        """How many writes through this Store may have put an example into a review queue
        (new examples, and changes that leave an example open: pending or needs work). A
        claim's cached queue window (`curation.leases`) is read again when this moved."""
        return self._arrivals

    def _note_arrival(self) -> None:
        with self._arrivals_guard:
            self._arrivals += 1

    def _backup_before_migration(self, version: int) -> None:
        from curation.maintenance import backup_before_migration

        backup_before_migration(self, version)

    def _check_file(self) -> None:
        """A file with fewer blocks than are in use was truncated (StoreCorrupt; free blocks
        at the end may legitimately be missing, DuckDB cuts them off); a file longer than its
        block map holds the blocks of a transaction that never committed (a killed import):
        give them back. Only valid when no WAL was replayed on open (the caller checks)."""
        if not self.path.is_file():
            return
        block_size, total_blocks, used_blocks = self.block_usage()
        expected = FILE_HEADERS + block_size * total_blocks
        size = self.path.stat().st_size
        needed = FILE_HEADERS + block_size * used_blocks
        if size < needed:  # fewer blocks in the file than are in use: some are cut off
            raise StoreCorrupt(f"{self.path} is damaged: it is {size:,} bytes long, but the "
                               f"blocks in use need at least {needed:,} (the file was "
                               f"truncated). {_RECOVER.format(path=self.path)}")
        if size > expected:
            self.reclaim_space()

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- connections --------------------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's own cursor on the process's one connection."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._con.cursor()
        return cur

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN ... COMMIT on this thread's cursor; ROLLBACK on any exception."""
        cur = self.cursor()
        cur.execute("BEGIN TRANSACTION")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        return _schema.current_version(self.cursor())

    # --- reading ------------------------------------------------------------------------

    def get(self, example_id: int) -> Example:
        return self._get(self.cursor(), example_id)

    def _get(self, cur, example_id: int) -> Example:
        row = cur.execute(f"SELECT {COLUMNS} FROM examples WHERE id = ?",
                          [example_id]).fetchone()
        if row is None:
            raise ExampleNotFound(f"no example has id #{example_id}")
        return Example.from_row(row)

    def find(self, where: ExampleFilter = ExampleFilter(), *, order_by: str = "id",
             limit: int | None = None, offset: int = 0) -> list[Example]:
        """Examples matching a filter, in a stable order; `limit`/`offset` page through them."""
        if order_by.lstrip("-") not in ("id", "updated_at", "created_at", "label", "status"):
            raise InvalidValue(f"cannot order examples by {order_by!r}")
        direction = "DESC" if order_by.startswith("-") else "ASC"
        condition, params = where_clause(where)
        sql = (f"SELECT {COLUMNS} FROM examples WHERE {condition} "
               f"ORDER BY {order_by.lstrip('-')} {direction}, id")
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return [Example.from_row(r) for r in self.cursor().execute(sql, params).fetchall()]

    def example_ids(self, where: ExampleFilter = ExampleFilter()) -> list[int]:
        """The ids of the examples `where` selects, ascending."""
        condition, params = where_clause(where)
        return [r[0] for r in self.cursor().execute(
            f"SELECT id FROM examples WHERE {condition} ORDER BY id", params).fetchall()]

    def count(self, where: ExampleFilter = ExampleFilter()) -> int:
        condition, params = where_clause(where)
        return self.cursor().execute(f"SELECT count(*) FROM examples WHERE {condition}",
                                     params).fetchone()[0]

    def counts_by(self, column: str, where: ExampleFilter = ExampleFilter()) -> dict[Any, int]:
        """{value: count} for status, split, label or source, largest first."""
        if column not in ("status", "split", "label", "source"):
            raise InvalidValue(f"cannot count examples by {column!r}")
        condition, params = where_clause(where)
        rows = self.cursor().execute(
            f"SELECT {column}, count(*) AS n FROM examples WHERE {condition} "
            f"GROUP BY {column} ORDER BY n DESC, {column} NULLS LAST", params).fetchall()
        return dict(rows)

    def stats(self) -> dict[str, Any]:
        """Totals by status, split, label, source and kind (sft, preference, kto): what
        `curate stats` and Overview show."""
        return {"total": self.count(),
                **{f"by_{c}": self.counts_by(c) for c in ("status", "split", "label", "source")},
                "by_kind": self.counts_by_kind()}

    def history(self, example_id: int) -> list[dict[str, Any]]:
        """The audit events of one example, oldest first, each with the guidelines version
        in force when it was written (None: before there were guidelines)."""
        rows = self.cursor().execute(
            "SELECT id, action, actor, occurred_at, version, before, after, reason, "
            "guidelines_version FROM events WHERE example_id = ? ORDER BY id",
            [example_id]).fetchall()
        keys = ("id", "action", "actor", "at", "version", "before", "after", "reason",
                "guidelines_version")
        events = [dict(zip(keys, r)) for r in rows]
        for e in events:
            e["before"] = orjson.loads(e["before"]) if e["before"] else None
            e["after"] = orjson.loads(e["after"]) if e["after"] else None
        return events

    def versions(self, example_id: int) -> list[dict[str, Any]]:
        """Every stored version of an example, oldest first."""
        rows = self.cursor().execute(
            "SELECT version, messages, label, tags, split, status, changed_by, changed_at, "
            "rejected, desirable FROM example_versions WHERE example_id = ? UNION ALL "
            "SELECT version, messages, label, tags, split, status, updated_by, updated_at, "
            "rejected, desirable FROM examples WHERE id = ? ORDER BY version",
            [example_id, example_id]).fetchall()
        if not rows:
            raise ExampleNotFound(f"no example has id #{example_id}")
        keys = ("version", "messages", "label", "tags", "split", "status", "changed_by",
                "changed_at", "rejected", "desirable")
        return [dict(zip(keys, r), messages=orjson.loads(r[1]), tags=tuple(r[3]),
                     rejected=orjson.loads(r[8]) if r[8] else None) for r in rows]

    def version(self, example_id: int, version: int) -> dict[str, Any]:
        """One stored version of an example."""
        for item in self.versions(example_id):
            if item["version"] == version:
                return item
        raise ExampleNotFound(f"example #{example_id} has no version {version}")

    def activity(self, days: int = 7) -> list[tuple[str, str, int]]:
        """(actor, action, count) of review decisions and edits in the last `days` days."""
        return self.cursor().execute(
            "SELECT actor, action, count(*) AS n FROM events WHERE action <> 'create' "
            "AND occurred_at >= ?::TIMESTAMP - to_days(?) GROUP BY actor, action "
            "ORDER BY actor, action", [utcnow(), days]).fetchall()

    def labels(self) -> list[str]:
        """Every label in use, alphabetically."""
        rows = self.cursor().execute("SELECT DISTINCT label FROM examples WHERE label IS NOT "
                                     "NULL ORDER BY label").fetchall()
        return [r[0] for r in rows]

    def tags(self) -> list[str]:
        """Every tag in use, alphabetically."""
        rows = self.cursor().execute("SELECT DISTINCT unnest(tags) AS t FROM examples "
                                     "ORDER BY t").fetchall()
        return [r[0] for r in rows]

    def sources(self) -> list[str]:
        rows = self.cursor().execute("SELECT DISTINCT source FROM examples WHERE source IS NOT "
                                     "NULL ORDER BY source").fetchall()
        return [r[0] for r in rows]

    def setting(self, key: str) -> str | None:
        """A workspace setting (for example `embedding_model`), or None."""
        row = self.cursor().execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def settings(self) -> dict[str, str]:
        return dict(self.cursor().execute("SELECT key, value FROM settings").fetchall())

    def set_setting(self, key: str, value: str | None) -> None:
        if value is None:
            self.cursor().execute("DELETE FROM settings WHERE key = ?", [key])
        else:
            self.cursor().execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", [key, value])

    # --- changing -----------------------------------------------------------------------

    def add(self, messages: list[dict[str, str]], *, actor: str, **fields: Any) -> Example:
        """Store one new example (version 1, a 'create' event) written in the app, in a
        transaction of its own; `fields` as `insert_new` takes them."""
        with self.transaction():
            new_id = self.insert_new(messages, actor=actor, **fields)
        return self.get(new_id)

    def insert_new(self, messages: list[dict[str, str]], *, actor: str,
                   label: str | None = None, tags: tuple[str, ...] = (),
                   source: str | None = None, split: str = "train", status: str = "pending",
                   reason: str | None = None, kind: str = "sft",
                   rejected: list[dict[str, str]] | None = None,
                   desirable: bool | None = None) -> int:
        """Write one new example inside the caller's open transaction (this thread's cursor:
        `add`'s, or an `update`'s `then`); the new example's id. A preference pair
        (`kind='preference'`) comes with its `rejected` continuation, a KTO record
        (`kind='kto'`) with its `desirable` flag."""
        messages = check_conversation_or_invalid(messages)
        changes = self._validated({"label": label, "tags": tags, "split": split,
                                   "status": status})
        kind, rejected, desirable = _preference_fields(messages, kind, rejected, desirable)
        (new_id,) = self.new_example_ids(1)
        self.insert_example(new_id, orjson.dumps(messages).decode(), search_text(messages),
                            changes["label"], example_hash(messages, kind, rejected, desirable),
                            changes["tags"], source=source, split=changes["split"],
                            status=changes["status"], actor=actor, now=utcnow(), reason=reason,
                            preference=(kind, rejected, desirable))
        return new_id

    def update(self, example_id: int, *, base_version: int, actor: str, reason: str | None = None,
               action: str | None = None, batch: str | None = None,
               then: Callable[[Example], Any] | None = None, **changes: Any) -> Example:
        """Change fields of an example that is still at `base_version`.

        Writes the new version, moves the one it replaces into `example_versions` and writes
        one audit event, or nothing:
        a stale `base_version` raises VersionConflict. Changing nothing writes nothing.
        `batch`: the bulk batch the change belongs to (recorded in the same transaction).
        `then(after)`: what else is written with the change, in the same transaction (the
        preference pair an edit of a model's answer records), so both or neither are stored.
        """
        changes = self._validated(changes, unanswered=True)
        try:
            with self.transaction() as cur:
                current = self._get(cur, example_id)
                if current.version != base_version:
                    raise self._conflict(current, base_version)
                if ("messages" in changes and not current.needs_answer
                        and action != "revert"):  # an answer is never edited away
                    check_conversation_or_invalid(changes["messages"])
                if ({"rejected", "desirable"} & set(changes)  # only a pair / KTO has them
                        or ("messages" in changes and current.kind == "preference")):
                    changes["rejected"], changes["desirable"] = _preference_fields(
                        changes.get("messages", current.messages), current.kind,
                        changes.get("rejected", current.rejected),
                        changes.get("desirable", current.desirable))[1:]
                diff = {k: v for k, v in changes.items()
                        if v != _field(current, k)}
                if not diff:
                    return current
                after = self._write(cur, current, diff, actor, reason,
                                    action or _action_for(diff))
                if batch is not None:
                    self._add_to_batch(cur, batch, example_id, after.version)
                if then is not None:
                    then(after)
                return after
        except duckdb.TransactionException:
            raise self._conflict(self.get(example_id), base_version) from None

    def _validated(self, changes: dict[str, Any], *, unanswered: bool = False
                   ) -> dict[str, Any]:
        """The changes checked and normalised; `unanswered`: messages may end with a user
        turn (the caller decides whether that is allowed for this example)."""
        unknown = set(changes) - set(EDITABLE)
        if unknown:
            raise InvalidValue(f"cannot change {', '.join(sorted(unknown))}; editable fields "
                               f"are {', '.join(EDITABLE)}")
        out = dict(changes)
        if "messages" in out:
            out["messages"] = check_conversation_or_invalid(out["messages"],
                                                            unanswered=unanswered)
        if "status" in out and out["status"] not in STATUSES:
            raise InvalidValue(f"status {out['status']!r} is not one of {', '.join(STATUSES)}")
        if "split" in out and out["split"] not in SPLITS:
            raise InvalidValue(f"split {out['split']!r} is not one of {', '.join(SPLITS)}")
        if "label" in out:
            out["label"] = (out["label"] or "").strip() or None
        if "tags" in out:
            out["tags"] = tuple(dict.fromkeys(t.strip() for t in out["tags"] if t.strip()))
        if "deleted" in out:
            out["deleted"] = bool(out["deleted"])
        if out.get("rejected") is not None:  # its shape; `_preference_fields` checks the rest
            check_conversation_or_invalid([{"role": "user", "content": "prompt"},
                                           *out["rejected"]])
        return out

    def _write(self, cur, current: Example, diff: dict[str, Any], actor: str,
               reason: str | None, action: str) -> Example:
        now, version = utcnow(), current.version + 1
        after = dataclasses.replace(current, **diff, version=version, updated_by=actor,
                                    updated_at=now)
        if after.status not in ("accepted", "rejected"):
            self._note_arrival()
        if {"messages", "rejected", "desirable"} & set(diff):
            after = dataclasses.replace(after, content_hash=example_hash(
                after.messages, after.kind, after.rejected, after.desirable))
        columns = {k: _jsonable(v) for k, v in diff.items()}
        if "rejected" in diff:
            columns["rejected"] = (orjson.dumps(after.rejected).decode()
                                   if after.rejected is not None else None)
        if {"messages", "rejected", "desirable"} & set(diff):
            columns["content_hash"] = after.content_hash
        if "messages" in diff:
            columns |= {"messages": orjson.dumps(after.messages).decode(),
                        "text": search_text(after.messages)}
        columns |= {"version": version, "updated_by": actor, "updated_at": now}
        assignments = ", ".join(f"{name} = ?" for name in columns)
        superseded = cur.execute(
            f"{SUPERSEDE} "
            "WHERE id = ? AND version = ? RETURNING version",
            [current.id, current.version]).fetchall()
        if not superseded:
            raise self._conflict(self._get(cur, current.id), current.version)
        updated = cur.execute(
            f"UPDATE examples SET {assignments} WHERE id = ? AND version = ? RETURNING id",
            [*columns.values(), current.id, current.version]).fetchall()
        if not updated:
            raise self._conflict(self._get(cur, current.id), current.version)
        before = {k: _jsonable(_field(current, k)) for k in diff}
        changed = {k: _jsonable(v) for k, v in diff.items()}
        cur.execute(f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (nextval('event_id_seq'), "
                    f"?, ?, ?, ?, ?, ?, ?, ?, ({CURRENT_GUIDELINES}))",
                    [current.id, action, actor, now, version, orjson.dumps(before).decode(),
                     orjson.dumps(changed).decode(), reason])
        return after

    def _conflict(self, current: Example, based_on: int) -> VersionConflict:
        return VersionConflict(current.id, based_on, current.version, current.updated_by,
                               current.updated_at)


def store_error(path: Path, exc: duckdb.Error) -> CurateError:
    """The named error for a DuckDB error about the workspace file itself: StoreCorrupt for
    damage (the file, or its write-ahead log), StoreUnreadable for anything else."""
    said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not _DAMAGE.search(said):
        return StoreUnreadable(f"{path} cannot be opened as a Curate workspace. DuckDB said: "
                               f"{said}")
    damaged = f"{path}.wal, the write-ahead log of {path}," if "WAL" in said else str(path)
    return StoreCorrupt(f"{damaged} is damaged. DuckDB said: {said}. "
                        f"{_RECOVER.format(path=path)}")


def is_damage(exc: BaseException) -> bool:
    """Whether a DuckDB error says that the database file or its log is damaged."""
    return isinstance(exc, duckdb.Error) and bool(_DAMAGE.search(str(exc)))


def check_conversation_or_invalid(messages: Any, *, unanswered: bool = False
                                  ) -> list[dict[str, str]]:
    """Validate edited messages; a broken rule becomes InvalidExample naming the turn.
    `unanswered`: they may end with a user turn (only for an example that needs an answer)."""
    from curation.errors import InvalidExample
    from curation.formats import RecordError

    try:
        return check_conversation(messages, DEFAULT_MAX_FIELD_CHARS, unanswered=unanswered)
    except RecordError as exc:
        raise InvalidExample(exc.message) from None


def _preference_fields(messages: list[dict[str, str]], kind: str,
                       rejected: list[dict[str, str]] | None, desirable: bool | None
                       ) -> tuple[str, list[dict[str, str]] | None, bool | None]:
    """(kind, rejected, desirable) checked against each other and the messages: a pair needs
    a valid rejected continuation of the same prompt, a KTO record its flag, SFT neither."""
    from curation.errors import InvalidExample
    from curation.formats import RecordError
    from curation.preference import KINDS, check_rejected

    if kind not in KINDS:
        raise InvalidValue(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "preference":
        try:
            rejected = check_rejected(messages, rejected, DEFAULT_MAX_FIELD_CHARS)
        except RecordError as exc:
            raise InvalidExample(exc.message) from None
    elif rejected is not None:
        raise InvalidValue(f"only a preference pair has a rejected answer, not a {kind} "
                           "example")
    if kind == "kto" and not isinstance(desirable, bool):
        raise InvalidValue("a KTO example needs desirable: true or false")
    if kind != "kto" and desirable is not None:
        raise InvalidValue(f"only a KTO example has the desirable flag, not a {kind} example")
    return kind, rejected, desirable


def _field(example: Example, name: str) -> Any:
    return getattr(example, name)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _action_for(diff: dict[str, Any]) -> str:
    if set(diff) == {"deleted"}:
        return "delete" if diff["deleted"] else "restore"
    if set(diff) == {"status"}:
        return {"accepted": "accept", "rejected": "reject", "needs_work": "needs_work",
                "pending": "reopen"}[diff["status"]]
    return "edit"
