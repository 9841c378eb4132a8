"""Filters over examples, turned into a parameterised SQL WHERE clause.

One `ExampleFilter` serves the CLI (`export --status accepted --split train`), the snapshot
definition and the app's queues and tables, so every surface selects examples the same way.
Values always travel as SQL parameters, never spliced into the SQL text.
A regular expression is checked by the engine that runs it (DuckDB's RE2, which has no
look-arounds, back-references or repeats over 1000), not by Python's `re`, which accepts
patterns RE2 refuses: a refused pattern is an InvalidValue saying why, never a DuckDB error.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field

import duckdb

from curation.errors import InvalidValue

STATUSES: tuple[str, ...] = ("pending", "accepted", "rejected", "needs_work")
SPLITS: tuple[str, ...] = ("train", "eval")


@dataclass(frozen=True)
class ExampleFilter:
    """Which examples to select; an empty filter selects every example not deleted.

    `deleted=True` selects the soft-deleted examples instead (the Browse page's bin)."""

    status: tuple[str, ...] = ()
    split: tuple[str, ...] = ()
    label: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    tag: tuple[str, ...] = ()
    search: str = ""
    regex: bool = False
    ids: tuple[int, ...] | None = field(default=None)
    deleted: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("status", STATUSES), ("split", SPLITS)):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad:
                raise InvalidValue(f"{name} {bad[0]!r} is not one of {', '.join(allowed)}")
        if self.regex and self.search:
            _check_pattern(self.search)

    def where(self, alias: str = "") -> tuple[str, list]:
        """(SQL condition, parameters) selecting the examples this filter describes."""
        p = f"{alias}." if alias else ""
        clauses, params = [f"{p}deleted = ?"], [self.deleted]
        for column in ("status", "split", "label", "source"):
            values = getattr(self, column)
            if values:
                clauses.append(f"{p}{column} IN ({', '.join('?' * len(values))})")
                params += list(values)
        if self.tag:
            clauses.append(f"list_has_any({p}tags, ?::VARCHAR[])")
            params.append(list(self.tag))
        if self.search:
            if self.regex:
                clauses.append(f"regexp_matches({p}text, ?)")
                params.append(self.search)
            else:
                clauses.append(f"contains(lower({p}text), lower(?))")
                params.append(self.search)
        if self.ids is not None:
            clauses.append(f"list_contains(?::BIGINT[], {p}id)")
            params.append(list(self.ids))
        return " AND ".join(clauses), params

    def describe(self) -> dict:
        """The non-empty criteria, as stored with snapshots and export manifests."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if v not in ((), "", False, None)}


_RE2 = duckdb.connect()  # in memory: only compiles patterns
_RE2_LOCK = threading.Lock()


def _check_pattern(pattern: str) -> None:
    """InvalidValue, with RE2's reason, if DuckDB cannot run `pattern`."""
    with _RE2_LOCK:
        try:
            _RE2.execute("SELECT regexp_matches('', ?)", [pattern]).fetchone()
        except duckdb.Error as exc:
            reason = str(exc).splitlines()[0].removeprefix("Invalid Input Error: ")
            raise InvalidValue(f"search pattern {pattern!r} is not a regular expression the "
                               f"search engine (RE2) supports: {reason}. RE2 has no "
                               "look-arounds or back-references, and repeats at most 1000 "
                               "times.") from None
