"""Filling coverage gaps: new examples written by an SME, or drafted by the base model.

Design decisions:
- Every new example is checked before it is saved: against train for exact and near
  duplicates, and against eval for leakage (a new train example that copies an eval one, or
  the reverse). A hit is refused with `WouldDuplicate` naming the example, unless the SME
  saves it anyway, consciously (`force=True`).
- Drafts written by the base model are training's (`training.drafts`); they are saved here
  like any new example, as `pending` with source `draft`.
"""

from __future__ import annotations

from curation.auth import User, require
from curation.checks.duplicates import normalize
from curation.errors import WouldDuplicate
from curation.query import ExampleFilter
from curation.store import Example, Store
from curation.text import turns_text

NEAR_SIMILARITY = 0.9


def find_clashes(store: Store, messages: list[dict[str, str]], split: str) -> list[str]:
    """Why saving these messages in `split` would duplicate or leak; empty when it is fine."""
    from rapidfuzz import process
    from rapidfuzz.distance import Indel

    new = normalize(turns_text(messages))
    clashes = []
    for other_split in ("train", "eval"):
        stored = store.find(ExampleFilter(split=(other_split,)))
        prompts = {e.id: normalize(turns_text(e.messages)) for e in stored
                   if e.status != "rejected"}
        match = process.extractOne(new, prompts, scorer=Indel.normalized_similarity,
                                   score_cutoff=NEAR_SIMILARITY)
        if match is None:
            continue
        _, similarity, example_id = match
        kind = "the same prompt as" if similarity >= 1.0 else "nearly the same prompt as"
        if other_split == split:
            clashes.append(f"{kind} {other_split} example #{example_id}")
        else:
            clashes.append(f"leakage: {kind} {other_split} example #{example_id}")
    return clashes


def add_example(store: Store, user: User, messages: list[dict[str, str]], *,
                label: str | None, tags: tuple[str, ...] = (), split: str = "train",
                source: str = "manual", force: bool = False) -> Example:
    """Save a new pending example after the duplicate and leakage checks."""
    require(user, "edit")
    clashes = find_clashes(store, messages, split)
    if clashes and not force:
        raise WouldDuplicate("not saved: it has " + "; ".join(clashes) +
                             ". Change it, or save anyway if the difference matters.")
    reason = ("saved despite: " + "; ".join(clashes)) if clashes else None
    return store.add(messages, actor=user.name, label=label, tags=tags, source=source,
                     split=split, status="pending", reason=reason)
