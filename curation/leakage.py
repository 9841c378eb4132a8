"""Leakage into a train set: eval examples that duplicate examples about to be trained on.

Design decisions:
- A data question, answered by the core: the `leakage` check finds eval examples that
  duplicate train examples (its stored findings are reused when nothing changed);
  `find_leakage` keeps those whose train side is in the set a filter selects (the set a run
  would snapshot), naming the closest such train example.
- What to do about it is the caller's: the training launcher refuses to start with
  `LeakageUnresolved` unless the user overrides, since the evaluation would then overstate
  the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from curation.auth import User
from curation.query import ExampleFilter
from curation.store import Store

if TYPE_CHECKING:
    from curation.checks import Progress

# what a run trains on: never an example that still needs an answer
DEFAULT_TRAIN_FILTER = ExampleFilter(status=("accepted",), split=("train",), needs_answer=False)


def find_leakage(store: Store, user: User, *, where: ExampleFilter = DEFAULT_TRAIN_FILTER,
                 progress: Progress | None = None) -> list[dict[str, Any]]:
    """Unresolved leakage into the train set `where` selects: one dict per leaked eval
    example, {"eval_id", "train_id", "method", "similarity"}, the train example being the
    closest of those in the set. Runs the leakage check (or reuses its stored findings)."""
    from curation.checks import run_check

    train_ids = set(store.example_ids(where))
    leaks = []
    for finding in run_check(store, "leakage", user=user, progress=progress).findings:
        if not finding.is_issue:
            continue
        details = finding.details
        in_set = [t for t in details.get("train_ids", [details["train_id"]]) if t in train_ids]
        if in_set:
            closest = details["train_id"] if details["train_id"] in in_set else in_set[0]
            leaks.append({"eval_id": finding.example_id, "train_id": closest,
                          "method": details["method"], "similarity": details["similarity"]})
    return leaks


__all__ = ["DEFAULT_TRAIN_FILTER", "find_leakage"]
