"""Filters over examples, turned into a parameterised SQL WHERE clause.

One `ExampleFilter` serves the CLI (`export --status accepted --split train`), the snapshot
definition and the app's queues and tables, so every surface selects examples the same way.
Values always travel as SQL parameters, never spliced into the SQL text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

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
            try:
                re.compile(self.search)
            except re.error as exc:
                raise InvalidValue(f"search pattern {self.search!r} is not a valid regular "
                                   f"expression: {exc}") from None

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
