"""An `ExampleFilter` as a parameterised SQL WHERE clause over `examples`.

`curation.query.ExampleFilter` is the user-facing description (CLI options, snapshot
definitions, the app's filters); turning it into SQL is the store's job, so the columns it
names live next to the schema. Values always travel as SQL parameters, never spliced into the
SQL text. A regular expression is checked by the engine that runs it (DuckDB's RE2, which has
no look-arounds, back-references or repeats over 1000), not by Python's `re`, which accepts
patterns RE2 refuses: a refused pattern is an InvalidValue saying why, never a DuckDB error.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import duckdb

from curation.errors import InvalidValue
from curation.store._agreement import OPEN_TO

if TYPE_CHECKING:
    from curation.query import ExampleFilter

# An example that needs an answer: its conversation ends with a user turn (see `_store`).
NEEDS_ANSWER = "json_extract_string({p}messages, '$[#-1].role') = 'user'"
# Decided under older guidelines: the example's latest decision event (`_guidelines`) was
# written under an earlier guidelines version than the current one (NULL: before any).
OLDER_GUIDELINES = (
    "{p}status IN ('accepted', 'rejected', 'needs_work') AND {p}id IN (SELECT example_id "
    "FROM events WHERE action IN ('accept', 'reject', 'needs_work') GROUP BY example_id "
    "HAVING arg_max(coalesce(guidelines_version, 0), id) < "
    "(SELECT coalesce(max(version), 0) FROM guidelines))")
_RE2 = duckdb.connect()  # in memory: only compiles patterns
_RE2_LOCK = threading.Lock()


def where_clause(where: ExampleFilter, alias: str = "") -> tuple[str, list]:
    """(SQL condition, parameters) selecting the examples `where` describes."""
    p = f"{alias}." if alias else ""
    clauses, params = [f"{p}deleted = ?"], [where.deleted]
    for column in ("status", "split", "label", "source"):
        values = getattr(where, column)
        if values:
            clauses.append(f"{p}{column} IN ({', '.join('?' * len(values))})")
            params += list(values)
    if where.tag:
        clauses.append(f"list_has_any({p}tags, ?::VARCHAR[])")
        params.append(list(where.tag))
    if where.search:
        if where.regex:
            clauses.append(f"regexp_matches({p}text, ?)")
        else:
            clauses.append(f"contains(lower({p}text), lower(?))")
        params.append(where.search)
    if where.needs_answer is not None:
        clauses.append(("" if where.needs_answer else "NOT ") + NEEDS_ANSWER.format(p=p))
    if where.comment.strip() == "*":
        clauses.append(f"{p}id IN (SELECT example_id FROM comments)")
    elif where.comment.strip():
        clauses.append(f"{p}id IN (SELECT example_id FROM comments "
                       "WHERE contains(lower(text), lower(?)))")
        params.append(where.comment.strip())
    if where.older_guidelines:
        clauses.append(OLDER_GUIDELINES.format(p=p))
    if where.open_to is not None:
        clauses.append(OPEN_TO.format(p=p))
        params.append(where.open_to)
    if where.ids is not None:
        clauses.append(f"list_contains(?::BIGINT[], {p}id)")
        params.append(list(where.ids))
    return " AND ".join(clauses), params


def check_pattern(pattern: str) -> None:
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
