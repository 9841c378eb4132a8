"""Filters over examples: which ones to select, as the user describes it.

One `ExampleFilter` serves the CLI (`export --status accepted --split train`), the snapshot
definition and the app's queues and tables, so every surface selects examples the same way.
The store turns a filter into SQL (`curation.store._filters`, beside the schema); a regular
expression is checked by the engine that runs it (DuckDB's RE2) when the filter is made, so a
pattern it refuses is an InvalidValue saying why, never a DuckDB error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from curation.errors import InvalidValue

STATUSES: tuple[str, ...] = ("pending", "accepted", "rejected", "needs_work")
SPLITS: tuple[str, ...] = ("train", "eval")


@dataclass(frozen=True)
class ExampleFilter:
    """Which examples to select; an empty filter selects every example not deleted.

    `deleted=True` selects the soft-deleted examples instead (the Browse page's bin).
    `needs_answer`: True selects only the prompts that need an answer (imported with
    `--unanswered`, not answered yet), False only answered examples, None both.
    `comment`: examples with a comment containing this text (any case; `*`: any comment).
    `older_guidelines`: decided examples (accepted, rejected, needs work) whose latest
    decision was made under an earlier guidelines version than the current one, or before
    there were guidelines (`curation.guidelines`).
    `open_to`: a reviewer's name: with overlap (`curation.agreement`), only the examples still
    open to their independent decision (not in adjudication, not decided by them in the
    current round, not already holding the workspace's N decisions). It is a serving
    condition, not a criterion of the data: `describe()` leaves it out."""

    status: tuple[str, ...] = ()
    split: tuple[str, ...] = ()
    label: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    tag: tuple[str, ...] = ()
    search: str = ""
    regex: bool = False
    ids: tuple[int, ...] | None = field(default=None)
    deleted: bool = False
    needs_answer: bool | None = None
    comment: str = ""
    older_guidelines: bool = False
    open_to: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("status", STATUSES), ("split", SPLITS)):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad:
                raise InvalidValue(f"{name} {bad[0]!r} is not one of {', '.join(allowed)}")
        if self.regex and self.search:
            from curation.store._filters import check_pattern

            check_pattern(self.search)

    def describe(self) -> dict:
        """The non-empty criteria, as stored with snapshots and export manifests."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()
                if v not in ((), "", False, None) and k != "open_to"}

