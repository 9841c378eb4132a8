"""What a signed-in person does to examples: edit, decide, revert, bulk actions.

Every function takes the acting `User` and checks the role first (`auth.require`), so the rule
holds whatever page, form or forged request calls it. Each change is one `Store.update`: one
new version and one audit event, or a `VersionConflict` and nothing.

Design decisions:
- An edit saved together with a decision is one change (one version, one event named after
  the decision), so "edit the answer, press a" leaves a single audit row.
- Reject needs a reason and needs-work a comment: the annotator who picks the example up next
  must know why.
- A bulk action is one set-based write (`Store.bulk_write`: one transaction however many
  examples, so all 100,000 matching rows take seconds, not minutes), on each example's
  current version; it reports the examples already in the wanted state and those it left
  out. If someone changes one of them during the write, nothing is written and it is tried
  once more on the new versions. Each bulk action is one batch (its id recorded beside every
  event it wrote), which `curation.undo.undo_batch` takes back as a whole. `bulk_matching`
  applies one to every example a filter selects, after checking that the count the person
  confirmed still holds.
- A prompt that needs an answer (imported with `--unanswered`) cannot be accepted until it
  has one: accepting says "this is right to train on", and there is nothing to train on yet.
  Accepting it together with the edit that writes the answer is one change; bulk accept
  skips it and says why. Reject and needs-work stay open to it.
- An edit (or a decision saved with an edit) of an answer a model wrote records a preference
  pair in the same transaction (`curation.preference.edit_pair_hook`), when the workspace
  has that on.
- With overlap (a workspace needing N > 1 independent decisions per example), `decide` on an
  undecided train example records one blind vote, or settles a disputed one: the rules are
  in `curation.agreement`, the one branch into it is here.
"""

from __future__ import annotations

import difflib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from curation import agreement, preference
from curation.auth import User, require
from curation.errors import BulkConflict, InvalidValue
from curation.formats import needs_answer
from curation.messages import message_text, tool_calls
from curation.query import ExampleFilter
from curation.store import Example, Store, check_conversation_or_invalid, utcnow

Decision = Literal["accept", "reject", "needs_work"]
DECISION_STATUS = {"accept": "accepted", "reject": "rejected", "needs_work": "needs_work"}
BULK_ACTIONS: tuple[str, ...] = ("accept", "reject", "set_label", "add_tag", "remove_tag",
                                 "move_split", "delete", "restore")
BULK_PERMISSION = {action: {"accept": "decide", "reject": "decide", "delete": "delete",
                            "restore": "delete"}.get(action, "edit") for action in BULK_ACTIONS}


def edit(store: Store, user: User, example_id: int, *, base_version: int,
         reason: str | None = None, **changes: Any) -> Example:
    """Save changes to the conversation, label, tags or split (not the status)."""
    require(user, "edit")
    if "status" in changes or "deleted" in changes:
        raise InvalidValue("use decide() to change the status and bulk() to delete")
    before = store.get(example_id) if "messages" in changes else None
    return store.update(example_id, base_version=base_version, actor=user.name, reason=reason,
                        then=preference.edit_pair_hook(store, user, before), **changes)


def decide(store: Store, user: User, example_id: int, decision: Decision, *,
           base_version: int, reason: str | None = None, **changes: Any) -> Example:
    """Accept, reject (with a reason) or send back (with a comment), with any pending edits."""
    require(user, "decide")
    if decision not in DECISION_STATUS:
        raise InvalidValue(f"decision {decision!r} is not one of {', '.join(DECISION_STATUS)}")
    if decision in ("reject", "needs_work") and not (reason or "").strip():
        what = "a reason" if decision == "reject" else "a comment"
        raise InvalidValue(f"{decision.replace('_', ' ')} needs {what}")
    if "deleted" in changes:
        raise InvalidValue("use bulk() to delete")
    current = store.get(example_id)
    if decision == "accept":
        _refuse_unanswered(current, changes.get("messages"))
    if agreement.applies(store, current):  # overlap: a blind vote, or settling a dispute
        return agreement.decide(store, user, current, decision, base_version=base_version,
                                reason=(reason or "").strip() or None, changes=changes)
    return store.update(example_id, base_version=base_version, actor=user.name,
                        reason=(reason or "").strip() or None, action=decision,
                        status=DECISION_STATUS[decision],
                        then=preference.edit_pair_hook(
                            store, user, current if "messages" in changes else None),
                        **changes)


def revert(store: Store, user: User, example_id: int, to_version: int, *,
           base_version: int) -> Example:
    """Make an earlier version's conversation, label, tags and split current again."""
    require(user, "revert")
    old = store.version(example_id, to_version)
    return store.update(example_id, base_version=base_version, actor=user.name,
                        reason=f"revert to version {to_version}", action="revert",
                        messages=old["messages"], label=old["label"], tags=old["tags"],
                        split=old["split"], rejected=old["rejected"],
                        desirable=old["desirable"])


@dataclass
class BulkResult:
    """How a bulk action went: changed ids, unchanged ids, and what was left out, by id."""

    changed: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    needs_answer: dict[int, str] = field(default_factory=dict)  # not accepted: no answer yet
    batch: str | None = None  # the batch id: `curation.undo.undo_batch` takes it back

    def summary(self) -> str:
        text = f"{len(self.changed)} changed"
        if self.unchanged:
            text += f", {len(self.unchanged)} already so"
        if self.needs_answer:
            text += f", {len(self.needs_answer)} not accepted (they need an answer first)"
        return text

    def skipped(self) -> dict[int, str]:
        """Every example left as it was, and why."""
        return dict(self.needs_answer)


def bulk(store: Store, user: User, ids: list[int], action: str, value: str | None = None,
         reason: str | None = None, *, scope: str | None = None) -> BulkResult:
    """Apply one action to many examples, each on its current version, as one batch;
    `scope` says which rows were meant (kept with the batch; default "N selected")."""
    if action not in BULK_ACTIONS:
        raise InvalidValue(f"bulk action {action!r} is not one of {', '.join(BULK_ACTIONS)}")
    require(user, BULK_PERMISSION[action])
    if action in ("set_label", "add_tag", "remove_tag", "move_split") and not (value or "").strip():
        raise InvalidValue(f"{action.replace('_', ' ')} needs a value")
    if action == "reject" and not (reason or "").strip():
        raise InvalidValue("reject needs a reason")
    result = BulkResult(batch=f"b{utcnow():%Y%m%d%H%M%S}-{secrets.token_hex(4)}")
    store.create_batch(result.batch, action=action, value=(value or "").strip() or None,
                       reason=reason, scope=scope or f"{len(ids)} selected", actor=user.name,
                       now=utcnow())
    for attempt in range(2):  # once more on the new versions if someone got in the way
        try:
            changed, unchanged, unanswered = store.bulk_write(
                ids, action, (value or "").strip() or None, actor=user.name, reason=reason,
                batch=result.batch, now=utcnow())
            break
        except BulkConflict:
            if attempt:
                raise
    result.changed.extend(changed)
    result.unchanged.extend(unchanged)
    result.needs_answer.update({i: _NEEDS_ANSWER.format(id=i) for i in unanswered})
    return result


def bulk_matching(store: Store, user: User, where: ExampleFilter, action: str, *,
                  expected: int, value: str | None = None, reason: str | None = None
                  ) -> BulkResult:
    """Apply one action to every example `where` selects (not only a page of them), as one
    batch. `expected` is the count the person confirmed: if the filter now selects a different
    number, nothing is changed and InvalidValue says so, for them to confirm again."""
    ids = store.example_ids(where)
    if len(ids) != expected:
        raise InvalidValue(f"{len(ids):,} examples match the filter now, not the {expected:,} "
                           "you confirmed (someone changed some meanwhile): nothing was "
                           "changed; confirm again with the new count")
    scope = f"all {len(ids)} matching " + (json.dumps(where.describe(), ensure_ascii=False)
                                           if where.describe() else "(no filter)")
    return bulk(store, user, ids, action, value, reason, scope=scope)


_NEEDS_ANSWER = ("example #{id} needs an answer before it can be accepted: write the "
                 "assistant's answer in Review (or reject it)")


def _refuse_unanswered(current: Example, messages: list[dict[str, str]] | None) -> None:
    """InvalidValue when accepting would leave the example without an answer."""
    if messages is not None:  # the edit saved with the decision (a broken one is refused)
        messages = check_conversation_or_invalid(messages, unanswered=True)
    if needs_answer(messages) if messages is not None else current.needs_answer:
        raise InvalidValue(_NEEDS_ANSWER.format(id=current.id))


def _bulk_changes(ex: Example, action: str, value: str) -> dict[str, Any]:
    return {
        "accept": lambda: {"status": "accepted"},
        "reject": lambda: {"status": "rejected"},
        "set_label": lambda: {"label": value},
        "add_tag": lambda: {"tags": ex.tags + (value,)},
        "remove_tag": lambda: {"tags": tuple(t for t in ex.tags if t != value)},
        "move_split": lambda: {"split": value},
        "delete": lambda: {"deleted": True},
        "restore": lambda: {"deleted": False},
    }[action]()


def diff_lines(before: list[dict[str, str]], after: list[dict[str, str]]) -> list[str]:
    """A unified diff of two conversations, one block per turn, as plain text lines."""
    def render(messages: list[dict[str, str]]) -> list[str]:
        lines = []
        for i, m in enumerate(messages):
            lines.append(f"[{i}] {m['role']}")
            lines += [f"    {line}" for line in message_text(m).split("\n")]
            lines += [f"    -> {name}({args})" for _, name, args in tool_calls(m)]
        return lines

    return list(difflib.unified_diff(render(before), render(after), "original", "current",
                                     lineterm="", n=2))
