"""Leakage into a train set: eval examples that duplicate examples about to be trained on.

Design decisions:
- A data question, answered by the core: the `leakage` check finds eval examples that
  duplicate train examples (its stored findings are reused when nothing changed);
  `find_leakage` keeps those whose train side is in the set a filter selects (the set a run
  would snapshot), naming the closest such train example by the strongest method that links
  them (exact, then near, then semantic).
- Two kinds of leak (`BLOCKING_METHODS`): an exact or near (lexical) copy is the same
  question, so the evaluation would overstate the model; a same-meaning match (a paraphrase,
  common in intent data) is how a real user asks again, so it is a warning, not a refusal.
  What to do is the caller's: the training launcher refuses a blocking leak with
  `LeakageUnresolved` unless the user overrides, and records the paraphrases.
- `lexical_copies` is the same exact and near test on two lists of conversations, for the
  evaluation's "no train copy" subset: pure and fast (no embeddings), so the evaluator process
  needs no store and no embedding model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from curation.auth import User
from curation.query import ExampleFilter
from curation.store import Store

if TYPE_CHECKING:
    from curation.checks import Progress

# what a run trains on: never an example that still needs an answer
DEFAULT_TRAIN_FILTER = ExampleFilter(status=("accepted",), split=("train",), needs_answer=False)
BLOCKING_METHODS = ("exact", "near")  # what refuses a launch; "semantic" only warns
_STRENGTH = {"exact": 0, "near": 1, "semantic": 2}


def find_leakage(store: Store, user: User, *, where: ExampleFilter = DEFAULT_TRAIN_FILTER,
                 progress: Progress | None = None) -> list[dict[str, Any]]:
    """Unresolved leakage into the train set `where` selects: one dict per leaked eval
    example, {"eval_id", "train_id", "method", "similarity"}, the train example being the one
    of the set linked by the strongest method (exact, near, semantic; the closest by that
    method). Runs the leakage check (or reuses its stored findings)."""
    from curation.checks import run_check

    train_ids = set(store.example_ids(where))
    leaks = []
    for finding in run_check(store, "leakage", user=user, progress=progress).findings:
        if not finding.is_issue:
            continue
        details = finding.details
        # findings stored before `train_methods` name one method for every train example
        methods = {int(t): m for t, m in (details.get("train_methods") or {}).items()} or \
            {t: details["method"] for t in details.get("train_ids", [details["train_id"]])}
        in_set = {t: m for t, m in methods.items() if t in train_ids}
        if not in_set:
            continue
        method = min(in_set.values(), key=_STRENGTH.__getitem__)
        if details["train_id"] in in_set and in_set[details["train_id"]] == method:
            closest, similarity = details["train_id"], details["similarity"]
        else:  # the closest of the strongest method is outside the set: no similarity known
            closest = min(t for t, m in in_set.items() if m == method)
            similarity = 1.0 if method == "exact" else None
        leaks.append({"eval_id": finding.example_id, "train_id": closest, "method": method,
                      "similarity": similarity})
    return leaks


def blocking(leaks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leaks that refuse a launch: exact and near copies."""
    return [leak for leak in leaks if leak["method"] in BLOCKING_METHODS]


def paraphrases(leaks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leaks that only warn: same-meaning matches with no exact or near copy."""
    return [leak for leak in leaks if leak["method"] not in BLOCKING_METHODS]


def lexical_copies(queries: Sequence[Sequence[dict[str, str]]],
                   references: Sequence[Sequence[dict[str, str]]]) -> dict[int, dict[str, Any]]:
    """Which `queries` (conversations) have a prompt that is an exact or near (lexical)
    duplicate of a prompt in `references`, by the duplicate checks' own tests (normalised
    equality; MinHash candidates verified by edit similarity or one word apart): {query
    index: {"reference": index, "method": "exact" | "near", "similarity"}}, the strongest
    match of each."""
    from curation.checks import ExampleTable
    from curation.checks.duplicates import exact_groups, near_pairs

    messages = [list(m) for m in queries] + [list(m) for m in references]
    n = len(queries)
    table = ExampleTable(ids=list(range(len(messages))), versions=[1] * len(messages),
                         messages=messages, labels=[None] * len(messages),
                         splits=["eval"] * n + ["train"] * (len(messages) - n),
                         statuses=["accepted"] * len(messages),
                         content_hashes=[""] * len(messages))
    found: dict[int, dict[str, Any]] = {}
    for rows in exact_groups(table, "prompt"):
        first = next((r for r in rows if r >= n), None)
        for q in rows:
            if q < n and first is not None:
                found[q] = {"reference": first - n, "method": "exact", "similarity": 1.0}
    for (a, b), similarity in sorted(near_pairs(table, "prompt").items()):
        for q, r in ((a, b), (b, a)):
            if q < n <= r and (q not in found or (found[q]["method"] == "near" and
                                                  found[q]["similarity"] < similarity)):
                found[q] = {"reference": r - n, "method": "near",
                            "similarity": round(similarity, 4)}
    return found


__all__ = ["BLOCKING_METHODS", "DEFAULT_TRAIN_FILTER", "blocking", "find_leakage",
           "lexical_copies", "paraphrases"]
