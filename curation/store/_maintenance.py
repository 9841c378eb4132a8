"""The DuckDB side of keeping the workspace file safe: online copies, checkpoints, giving
blocks back, and probing a file that may be damaged.

`curation.maintenance` decides what to back up, when, and how `doctor` recovers a file; the
statements that do it live here, beside the schema they depend on (which tables to count,
what a Curate workspace has that any DuckDB file lacks).

Design decisions:
- `copy_to` is online and consistent: `ATTACH` a new file and `COPY FROM DATABASE` into it from
  the store's own connection, in one transaction, while other threads keep working.
- A checkpoint truncates free blocks at the end of the file, but it is skipped when nothing
  changed since the last one, so `reclaim_space` commits an empty change (a table created and
  dropped) first.
- `probe_file` and `file_counts` open the file read-only, without a `Store`: they serve
  `doctor`, which runs on a file that may not open as a workspace at all.
- DuckDB replays a log whose first entry (the WAL_VERSION header: entry type, format version,
  the database's identifier, the checkpoint it follows) does not parse as if it were empty,
  without an error: every commit in it is lost, and the first write after opening overwrites
  it. `wal_header_problem` reads that header before DuckDB does (its layout: fields 100-103 of
  DuckDB's binary serializer, each a 2-byte id then LEB128 values, ended by 0xFFFF) and calls
  a damaged one damage, so the store refuses to open and `doctor` sets the log aside instead.
  Only the known prefix is checked: a field a later DuckDB adds after it is accepted, and a
  changed byte inside the identifier cannot be told from a log of another database.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb

from curation.errors import StoreLocked

FILE_HEADERS = 3 * 4096  # DuckDB's main header and its two alternating database headers
COUNTED = ("examples", "events", "snapshots")  # what a workspace holds, in its reports


class MaintenanceQueries:
    """Copies, checkpoints and space of the open workspace (mixed into `Store`)."""

    def copy_to(self, target: Path) -> None:
        """Copy the whole database into the new file `target`, consistently, online."""
        cur = self.cursor()
        source = cur.execute("SELECT current_database()").fetchone()[0]
        alias = f"curate_backup_{os.getpid()}"
        cur.execute(f"ATTACH '{_sql_text(target)}' AS {alias}")
        try:
            cur.execute(f"COPY FROM DATABASE {_sql_name(source)} TO {alias}")
        finally:
            cur.execute(f"DETACH {alias}")

    def checkpoint(self) -> None:
        """Everything in the file, nothing left in the log."""
        self.cursor().execute("CHECKPOINT")

    def reclaim_space(self) -> bool:
        """Give the free blocks at the end of the file back to the file system (after a
        failed or killed import). False when other transactions are running: the blocks are
        then reused by later writes and given back by a later checkpoint."""
        cur = self.cursor()
        try:
            cur.execute("CREATE TABLE _curate_reclaim_space (i INTEGER)")
            cur.execute("DROP TABLE _curate_reclaim_space")
            cur.execute("CHECKPOINT")
        except duckdb.Error:
            return False
        return True

    def block_usage(self) -> tuple[int, int, int]:
        """(block size, blocks in the block map, blocks in use) of the database file."""
        return self.cursor().execute(
            "SELECT block_size, total_blocks, used_blocks FROM pragma_database_size() "
            "WHERE database_name = current_database()").fetchone()


_WAL_VERSION_ENTRY = 98  # DuckDB's WALType::WAL_VERSION


def wal_header_problem(wal: Path) -> str | None:
    """What is wrong with the header of the write-ahead log `wal` (see the module docstring),
    or None when it is absent, empty or parses."""
    try:
        with open(wal, "rb") as f:
            head = f.read(256)
    except FileNotFoundError:
        return None
    if not head:
        return None
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(head) or shift > 63:
                raise ValueError
            byte = head[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def field(number: int) -> bool:
        nonlocal pos
        if head[pos:pos + 2] == number.to_bytes(2, "little"):
            pos += 2
            return True
        return False

    try:
        if not field(100) or varint() != _WAL_VERSION_ENTRY or not field(101) \
                or not 1 <= varint() <= 64:
            raise ValueError
        if field(102) and (varint() != 16 or any(varint() > 255 for _ in range(16))):
            raise ValueError
        if field(103):
            varint()
    except ValueError:
        return (f"{wal}, the write-ahead log of {wal.with_suffix('')}, is damaged: its header "
                f"(the first bytes) does not parse, so DuckDB would ignore the whole log and "
                f"lose the {wal.stat().st_size:,} bytes of commits in it without a word")
    return None


def probe_file(path: Path) -> str | None:
    """None if the file (with its log) opens and every block of every table reads back; else
    what is wrong. Read-only: the probe changes nothing."""
    from curation.store._store import is_damage, store_error

    if problem := wal_header_problem(Path(f"{path}.wal")):
        return problem
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        if re.search(r"Could not set lock|Conflicting lock", str(exc)):
            raise StoreLocked(f"{path} is open in another process (for example the running "
                              "app); stop it, then run curate doctor again") from None
        return str(store_error(path, exc)).split(" Nothing was changed.")[0]
    try:
        block_size, total = con.execute(
            "SELECT block_size, total_blocks FROM pragma_database_size() "
            "WHERE database_name = current_database()").fetchone()
        if path.stat().st_size < FILE_HEADERS + block_size * total:
            return f"{path} is truncated: shorter than its own block map"
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables() "
                                    "WHERE database_name = current_database()").fetchall():
            con.execute(f"SELECT count(*), max(hash(COLUMNS(*))) FROM {_sql_name(table)}")
        if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = "
                           "current_database() AND table_name = 'schema_migrations'").fetchone()[0]:
            return f"{path} is a DuckDB file but not a Curate workspace"
    except duckdb.Error as exc:
        if not is_damage(exc):
            raise
        return str(store_error(path, exc)).split(" Nothing was changed.")[0]
    finally:
        con.close()
    return None


def file_counts(path: Path) -> dict[str, int]:
    """Examples (deleted ones included), audit events and snapshots in a workspace file."""
    with duckdb.connect(str(path), read_only=True) as con:
        return {table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in COUNTED}


def _sql_text(path: Path) -> str:
    return str(path).replace("'", "''")


def _sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
