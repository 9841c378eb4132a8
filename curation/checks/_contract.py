"""The one contract every curation check follows, and the registry the app and CLI list.

A check reads examples (and, where it needs them, embeddings) and returns a `CheckResult`:
one `Finding` per example it looked at — a score in [0, 1] where lower is worse, an is-issue
flag, and a reason a domain expert understands — plus a summary. Findings that involve other
examples (a duplicate group, the nearest examples of a suggested label) carry them in
`details`, keyed by example id.

Design decisions:
- Checks are plain objects registered by name (`register`), so the Quality page, the CLI and
  the review queues iterate `REGISTRY` without knowing any check in particular
  (cleanlab's `IssueManager` registry is the model).
- A check never writes to the store; `curation.checks.run_check` stores its findings with the
  example version they were computed on and applies the SME's remembered decisions.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from curation.errors import InvalidValue
from curation.messages import search_text
from curation.text import turns_text

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Finding:
    """What one check found about one example."""

    example_id: int
    score: float
    is_issue: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise InvalidValue(f"finding score {self.score} for #{self.example_id} is not in "
                               "[0, 1]")


@dataclass
class CheckResult:
    """A check's findings (one per example it looked at) and a summary for people."""

    check: str
    findings: list[Finding]
    summary: dict[str, Any]

    @property
    def issues(self) -> list[Finding]:
        return sorted((f for f in self.findings if f.is_issue), key=lambda f: f.score)


PairSet = set[tuple[int, int]] | frozenset[tuple[int, int]]


class Check(Protocol):
    """A curation check: a name, a title, a paragraph for the SME, and `run`.

    `run_check` calls `run(table, progress=..., ignore_pairs=...)`: `ignore_pairs` holds the
    example-id pairs (smaller id first) an SME marked "not duplicates", which a check that
    relates examples must not report together; other checks accept and ignore it.
    A check with `answered_only = True` (it reads the answers, or it is about what is trained
    and evaluated) gets only answered examples: never a prompt that still needs an answer."""

    name: str
    title: str
    description: str

    def run(self, table: ExampleTable, progress: Progress | None = None,
            ignore_pairs: PairSet = frozenset()) -> CheckResult:
        ...


@dataclass
class ExampleTable:
    """The columns of the examples a check looks at, in id order (no Example objects)."""

    ids: list[int]
    versions: list[int]
    messages: list[list[dict[str, str]]]
    labels: list[str | None]
    splits: list[str]
    statuses: list[str]
    content_hashes: list[str]
    embed: Callable[..., Any] | None = None  # embed(kind="prompt"|"response") -> (n, d) array
    settings: dict[str, str] = field(default_factory=dict)  # the workspace settings

    def __len__(self) -> int:
        return len(self.ids)

    def prompt(self, i: int) -> str:
        """The user turns of example i, joined: what prompt-only checks compare."""
        return turns_text(self.messages[i])

    def response(self, i: int) -> str:
        return turns_text(self.messages[i], "assistant")

    def text(self, i: int) -> str:
        return search_text(self.messages[i])


REGISTRY: dict[str, Check] = {}


_NAME = re.compile(r"[a-z][a-z0-9_]*")  # names appear in URLs, the CLI and the store


def register(check: Check) -> Check:
    """Add a check to the registry under its name, after making sure it follows the contract
    (as cleanlab's registry refuses what is not an `IssueManager`): a lower-case name, a
    title and a description, and a `run` that takes `progress` and `ignore_pairs`. A second
    check under a name already taken replaces the first, with a warning."""
    for attribute in ("name", "title", "description"):
        value = getattr(check, attribute, None)
        if not isinstance(value, str) or not value.strip():
            raise InvalidValue(f"a check needs a non-empty {attribute}; {check!r} has "
                               f"{value!r}")
    if not _NAME.fullmatch(check.name):
        raise InvalidValue(f"check name {check.name!r} must be lower-case letters, digits "
                           "and underscores, starting with a letter")
    run = getattr(check, "run", None)
    if not callable(run):
        raise InvalidValue(f"check {check.name!r} has no run method")
    parameters = inspect.signature(run).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    missing = [p for p in ("progress", "ignore_pairs") if p not in parameters and not takes_any]
    if missing:
        raise InvalidValue(f"check {check.name!r}: run() must accept {' and '.join(missing)} "
                           "(see curation.checks.Check)")
    if REGISTRY.get(check.name) not in (None, check):
        warnings.warn(f"check {check.name!r} was already registered; the new one replaces "
                      "it", stacklevel=2)
    REGISTRY[check.name] = check
    return check


def get_check(name: str) -> Check:
    if name not in REGISTRY:
        raise InvalidValue(f"no check is called {name!r}; checks: {', '.join(REGISTRY)}")
    return REGISTRY[name]
