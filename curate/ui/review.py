"""Review: walk a queue one example at a time, edit it, and accept, reject or send it back.

The page only gathers input and calls `curation.queues` (what comes next) and
`curation.review` (what happens to an example); the core checks roles and versions.

Design decisions:
- Position is the queue's keyset cursor `(rank, id)`, kept in session state with the current
  item. The next example comes from `Workspace.claim_next`: the first one after the position
  that nobody else holds a lease on, leased to this person, so two people in one queue never
  get the same example (`curation.leases`; the page's lease widgets and Submit for review live
  in `curate/ui/review_leases.py`). `?id=N` opens an example directly (leased too if free) and
  the URL follows the current one.
  The queue and the filters are query parameters too (`curate.ui.url_state`), so a reload
  or a shared link opens the same example in the same queue with the same filters.
- The example shown is the version that was loaded, not re-read on every rerun: its version is
  the `base_version` of every change, so a change made meanwhile by someone else surfaces as a
  `VersionConflict` (with their diff and an explicit choice) instead of being overwritten.
- Edits live in widgets keyed by example id and version, with `persist_state="session"`, so
  moving to another example (or page) and back keeps unsaved work; the order of turn pairs is
  kept beside them. A decision sends the pending edits with it: one version, one audit event.
- Actions run as button callbacks, so a decision and the move to the next example happen in
  one rerun; their outcome (toast, error, conflict) is left in session state for the page.
- Data from examples is only ever shown as text (widget values, `st.text`, `st.code`,
  dataframes). The few messages that must mix our words with data (errors, the conflict
  warning) go through `_plain`, which escapes Markdown.
- A conversation with tool calls, tool replies, text parts, names or weights is shown turn
  by turn by `review_rich` (texts editable, the tool structure read-only, said on the page)
  instead of the pair editor, and its draft is the stored messages with the edited texts.
- A prompt imported without an answer (`--unanswered`) carries a "needs an answer" badge and
  an empty assistant box at its last turn; left empty, that turn is not sent (so deciding on
  it without answering changes nothing else), and typing an answer there answers it: one
  edit, after which it can be exported and trained on. The queue "Needs answer" lists them.
- A queue fed by checks says under the selector which checks feed it, when each last ran,
  and how to run one that never did (`queues.feeds`), so an empty queue is never mistaken
  for a finished one.
- An eval failure (of the latest evaluated run) shows the model's answer beside the
  reference and the nearest training examples as evidence, whichever queue it is reached
  from; the evidence is computed on display from cached embeddings, never stored, so it
  follows edits to the training examples. The Expected impact queue states its rule and has
  Rank again, for examples imported since the last evaluation.
- A model suggestion (`curate predict` or Pre-label on the Evaluation page) for the version
  shown is shown as text with its confidence and band; it is never put into the edit boxes.
  Accept suggestion (m) accepts the example with it as the answer (and label), together with
  the pending edits, as one change. Below the low threshold no answer is offered (routing
  leaves those examples to people).
- On an example of the QA sample (the model's auto-accepted band), Accept confirms the
  model's answer and any other decision or an edited answer marks it wrong
  (`Workspace.decide` records the verdict); the queue's reason says so.
- The guidelines (collapsed), the chosen label's description and the comment thread come
  from `review_guidelines`, so this page only places them.
- With overlap (N independent decisions per example), the queue is read through
  `Workspace.serving_filter` (each reviewer is served only what they have not decided yet),
  and `review_adjudication` shows the round's progress, or to an adjudicator the disputed
  decisions side by side.
- Shortcuts are single keys, which Streamlit ignores while a text box has focus; leaving the
  box (Tab) commits its text before the key acts. Reject is `x` because Streamlit reserves `r`
  and `c`; Save is `e`, not Ctrl+S, because a modifier shortcut fires inside a text box before
  the box has sent its text, and would save without the last typing. `curate.ui.keys` adds
  the "shortcuts paused" hint while a field has focus, `Esc` to leave it and `Ctrl+Enter`,
  which leaves the field first and then clicks Save.
- Undo (`u`) takes back the person's own latest change made on this page in this session
  (a stack of (id, version) in session state; `curation.undo`): the exact version before
  comes back as a new version, audited as a revert, and the page shows that example. Pressed
  again, it takes back the change before. With an empty stack (after a reload) it takes
  back their latest decision or edit of today that still stands, read from the audit.
- Label keys `1`-`9` set the label of the draft to one of the workspace's first nine labels
  (alphabetical, listed beside the label box); a decision or Save saves it, as for the box.
- A preference pair shows its chosen and rejected answer side by side, both editable, and
  Swap (`w`) saves them exchanged as one edit; a KTO record shows its desirable flag
  (`curate/ui/review_preference.py`).
- Progress above the example: this person's decisions today in this queue, of how many
  (`curation.progress` defines it).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from curate.ui import review_guidelines, review_leases, review_preference, review_rich
from curate.ui.common import (ERROR_ICON, NEEDS_ANSWER_MARK, filter_form, filter_keys, flash,
                              page_path, page_start, plain, workspace)
from curate.ui.keys import shortcut_help
from curate.ui.review_adjudication import decision_note, round_panel
from curate.ui.url_state import saved_views_panel
from curation import CurateError, ExampleFilter, VersionConflict, queues, review
from curation.failures import IMPACT, IMPACT_RULE
from curation.messages import is_rich
from curation.queues import QueueItem
from curation.suggestions import LABEL_METHOD
from curation.store import Example

SHORTCUTS = {"accept": "a", "reject": "x", "needs_work": "n", "skip": "s", "next": "j",
             "previous": "k", "save": "e", "accept_suggestion": "m", "undo": "u",
             "swap": review_preference.SWAP_KEY}
LABEL_KEYS = 9  # 1-9 set one of the first nine labels
DECISION_WORDS = {"accept": "Accepted", "reject": "Rejected", "needs_work": "Sent back",
                  "submit": "Submitted for review"}
STATUS_BADGE = {"pending": "gray", "accepted": "green", "rejected": "red", "needs_work": "orange"}
S = st.session_state
ws = workspace("view")
store, user = ws.store, ws.user


# --- position in the queue -----------------------------------------------------------------

def _ctx() -> tuple[str, ExampleFilter]:
    return S.rvq_ctx


def _show(current: QueueItem | None, nxt: QueueItem | None, in_queue: bool = True) -> None:
    S.rvq_cur, S.rvq_next = current, nxt
    if current is not None:
        S.rvq_pos = current.position if in_queue else None
    S.rvq_error = None
    S.rvq_conflict = None


def _first() -> None:
    queue, where = _ctx()
    item = ws.claim_next(queue, where)  # leased to this user: nobody else is served it
    _show(item, None)
    if item is None:
        S.rvq_pos = None


def _next() -> None:
    queue, where = _ctx()
    if S.rvq_pos is None:  # an example opened by link, outside the queue: start the queue
        _first()
    else:
        _show(ws.claim_next(queue, where, after=S.rvq_pos), None)


def _previous() -> None:
    queue, where = _ctx()
    if S.rvq_pos is None:
        return
    items = ws.upcoming(queue, where, before=S.rvq_pos, limit=1)
    if not items:
        flash("review", "This is the first example in the queue.", ":material/first_page:")
        return
    _show(items[0], S.rvq_cur)


def _open(example_id: int) -> None:
    """Open one example directly (a link); its place in the queue, if it has one, is kept."""
    queue, where = _ctx()
    found = ws.upcoming(queue, ExampleFilter(ids=(example_id,)), limit=1)
    if found:
        more = ws.upcoming(queue, where, after=found[0].position, limit=1)
        _show(found[0], more[0] if more else None)
        return
    try:
        example = store.get(example_id)
    except CurateError as exc:
        flash("review", str(exc), ":material/error:")
        return
    _show(QueueItem(example, 0.0, None), None, in_queue=False)


# --- the draft: edits kept per example id and version -------------------------------------

def _prefix(ex: Example) -> str:
    return f"rv_e{ex.id}_v{ex.version}"


def _split_turns(messages: list[dict[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    has_system = bool(messages) and messages[0]["role"] == "system"
    system = messages[0]["content"] if has_system else ""
    turns = [m["content"] for m in messages[1 if has_system else 0:]]
    turns += [""] * (len(turns) % 2)
    return system, [(turns[i], turns[i + 1]) for i in range(0, len(turns), 2)]


def _layout(ex: Example) -> dict[str, Any]:
    """The order of turn pairs of this draft: ids into the original pairs, new ones after."""
    layouts = S.setdefault("rvq_layouts", {})
    p = _prefix(ex)
    if p not in layouts:
        n = len(_split_turns(ex.messages)[1])
        layouts[p] = {"pairs": list(range(n)), "next": n}
    return layouts[p]


def _label_options(ex: Example) -> list[tuple[str, str | None]]:
    labels = sorted(set(store.labels()) | ({ex.label} if ex.label else set()))
    return [("none", None)] + [("label", lab) for lab in labels] + [("new", None)]


def _label_text(option: tuple[str, str | None]) -> str:
    kind, value = option
    return {"none": "(no label)", "new": "New label…"}.get(kind, value or "")


def _draft(ex: Example) -> tuple[list[dict[str, str]], str | None, list[str]]:
    """Messages, label and tags as they stand in the widgets (or as stored, if untouched)."""
    p = _prefix(ex)
    messages = review_rich.draft(ex, p) if is_rich(ex.messages) else _pairs_draft(ex, p)
    kind, value = S.get(f"{p}_label", ("label", ex.label) if ex.label else ("none", None))
    if kind == "new":
        value = S.get(f"{p}_newlabel", "").strip() or ex.label
    tags = list(S.get(f"{p}_tags", list(ex.tags)))
    return messages, value, tags


def _pairs_draft(ex: Example, p: str) -> list[dict[str, str]]:
    """The messages of a plain text chat as they stand in the pair editor."""
    system, pairs = _split_turns(ex.messages)
    messages = []
    system_now = S.get(f"{p}_sys", system)
    if system_now.strip():
        messages.append({"role": "system", "content": system_now})
    order = _layout(ex)["pairs"]
    for index, uid in enumerate(order):
        user_text, answer = pairs[uid] if uid < len(pairs) else ("", "")
        messages.append({"role": "user", "content": S.get(f"{p}_u{uid}", user_text)})
        answer = S.get(f"{p}_a{uid}", answer)
        if not (ex.needs_answer and index == len(order) - 1 and not answer.strip()):
            messages.append({"role": "assistant", "content": answer})  # else: still unanswered
    return messages


def _changes(ex: Example) -> dict[str, Any]:
    """Only the fields the user changed, as `review.decide`/`edit` take them."""
    messages, label, tags = _draft(ex)
    changes: dict[str, Any] = {}
    if messages != ex.messages:
        changes["messages"] = messages
    if label != ex.label:
        changes["label"] = label
    if tuple(tags) != ex.tags:
        changes["tags"] = tags
    changes |= review_preference.changes(ex, _prefix(ex))  # a pair's rejected answer, KTO flag
    return changes


def _forget(ex: Example) -> None:
    """Drop the draft of this version (after it was saved or discarded)."""
    p = _prefix(ex)
    S.get("rvq_layouts", {}).pop(p, None)
    for key in [k for k in S if isinstance(k, str) and k.startswith(p + "_")]:
        del S[key]


def _move_pair(ex: Example, index: int, delta: int) -> None:
    pairs = _layout(ex)["pairs"]
    pairs[index], pairs[index + delta] = pairs[index + delta], pairs[index]


def _remove_pair(ex: Example, index: int) -> None:
    _layout(ex)["pairs"].pop(index)


def _add_pair(ex: Example) -> None:
    layout = _layout(ex)
    layout["pairs"].append(layout["next"])
    layout["next"] += 1


# --- actions (button callbacks) ------------------------------------------------------------

def _act(kind: str, decision: str | None = None, to_version: int | None = None) -> None:
    item: QueueItem = S.rvq_cur
    ex = item.example
    if (refused := review_leases.refusal(ws, ex.id)) is not None:
        S.rvq_error = (ex.id, refused)
        return
    op = {"kind": kind, "decision": decision, "to_version": to_version,
          "reason": S.get(f"{_prefix(ex)}_reason", ""),
          "changes": _changes(ex) if kind in ("decide", "edit", "suggestion", "submit", "swap")
          else {}}
    if kind == "edit" and not op["changes"]:
        flash("review", "Nothing to save: no edits.", ":material/info:")
        return
    _submit(op, ex.version)


def _submit(op: dict[str, Any], base_version: int) -> None:
    item: QueueItem = S.rvq_cur
    ex = item.example
    S.rvq_error = None
    try:
        if op["kind"] == "decide":
            after = ws.decide(ex.id, op["decision"], base_version=base_version,
                              reason=op["reason"], **op["changes"])
        elif op["kind"] == "suggestion":
            after = ws.accept_suggestion(ex.id, base_version=base_version,
                                         reason=op["reason"], **op["changes"])
        elif op["kind"] == "edit":
            after = ws.edit(ex.id, base_version=base_version, **op["changes"])
        elif op["kind"] == "swap":
            after = ws.swap(ex.id, base_version=base_version, **op["changes"])
        elif op["kind"] == "submit":
            after = ws.submit(ex.id, base_version=base_version, reason=op["reason"],
                              **op["changes"])
        else:
            after = ws.revert(ex.id, op["to_version"], base_version=base_version)
    except VersionConflict as exc:
        S.rvq_conflict = {"example_id": ex.id, "current": exc.current, "message": str(exc),
                          "op": op}
        return
    except CurateError as exc:
        S.rvq_error = (ex.id, str(exc))
        return
    S.rvq_conflict = None
    _forget(ex)
    if after.version > ex.version:  # a change was written: `u` can take it back
        S.setdefault("rvq_undo", []).append((ex.id, after.version, op["decision"] or op["kind"]))
    if op["kind"] in ("decide", "suggestion", "submit"):
        flash("review", decision_note(ws, ex, after)
              or f"{DECISION_WORDS[op['decision'] or op['kind']]} #{ex.id} (version "
                 f"{after.version})", ":material/check_circle:")
        _next()
    else:
        what = {"edit": "Saved", "swap": "Swapped chosen and rejected:"}.get(
            op["kind"], f"Reverted to version {op['to_version']}:")
        flash("review", f"{what} #{ex.id} is now version {after.version}", ":material/save:")
        S.rvq_cur = QueueItem(after, item.rank, item.reason)


def _overwrite() -> None:
    """Submit my change again on top of theirs, with any edits made since the conflict."""
    conflict, ex = S.rvq_conflict, S.rvq_cur.example
    op = dict(conflict["op"])
    if op["kind"] != "revert":
        op["changes"] = _changes(ex)
        op["reason"] = S.get(f"{_prefix(ex)}_reason", op["reason"])
    _submit(op, conflict["current"])


def _reload_theirs() -> None:
    item: QueueItem = S.rvq_cur
    _forget(item.example)
    S.rvq_cur = QueueItem(store.get(item.example.id), item.rank, item.reason)
    S.rvq_conflict = S.rvq_error = None


def _rank() -> None:
    """Rank the pending examples again by expected impact, and start the queue over."""
    flash("review", f"{ws.rank_by_impact():,} pending examples ranked by expected impact.")
    _first()


def _undo() -> None:
    """Take back my latest change on this page (`u`) and show the example as it is again."""
    stack = S.get("rvq_undo") or []
    last = stack.pop() if stack else ws.last_change()  # after a reload: from the audit
    if last is None:
        flash("review", "Nothing to undo: no decision or edit of yours today still stands.",
              ":material/info:")
        return
    example_id, version, what = last
    try:
        restored = ws.undo(example_id, version)
    except CurateError as exc:
        flash("review", f"Could not undo {what.replace('_', ' ')} of #{example_id}: {exc}",
              ERROR_ICON)
        return
    flash("review", f"Undone: {what.replace('_', ' ')} of #{example_id}; it is back as it "
          f"was before (now version {restored.version})", ":material/undo:")
    _open(example_id)


def _set_label(ex: Example, label: str) -> None:
    """A label key (1-9): choose this label in the draft's label box."""
    S[f"{_prefix(ex)}_label"] = ("label", label)


def _skip() -> None:
    flash("review", f"Skipped #{S.rvq_cur.example.id}", ":material/skip_next:")
    ws.release(S.rvq_cur.example.id)
    _next()


# --- rendering -----------------------------------------------------------------------------

def _fields(pairs: list[tuple[str, str]]) -> None:
    """Metadata as caption + plain text, two to a row (values are data: never Markdown)."""
    for start in range(0, len(pairs), 2):
        for column, (name, value) in zip(st.columns(2, gap="small"), pairs[start:start + 2]):
            column.caption(name)
            column.text(value or "—")


def _header(item: QueueItem) -> None:
    ex = item.example
    with st.container(border=True):
        top = st.container(horizontal=True, vertical_alignment="center")
        top.subheader(f"Example #{ex.id}", anchor=False, width="content")
        top.badge(ex.status.replace("_", " "), color=STATUS_BADGE.get(ex.status, "gray"))
        top.badge(ex.split, color="blue")
        if ex.deleted:
            top.badge("deleted", color="red", icon=":material/delete:")
        if ex.needs_answer:
            top.badge(NEEDS_ANSWER_MARK, color="orange", icon=":material/edit_note:")
        if kind := review_preference.badge(ex):
            top.badge(kind, color="violet", icon=":material/compare_arrows:")
        _fields([("External id", ex.external_id or ""), ("Source", ex.source or ""),
                 ("Label", ex.label or ""), ("Tags", ", ".join(ex.tags)),
                 ("Version", str(ex.version)),
                 ("Last changed", f"{ex.updated_at:%Y-%m-%d %H:%M} UTC by {ex.updated_by}")])
        if item.reason:
            st.caption(":material/flag: In this queue because")
            st.text(str(item.reason))


def _eval_failure(ex: Example) -> None:
    """For an eval failure of the latest evaluated run: the fine-tuned model's answer beside
    the reference, and the nearest training examples as evidence, each a link to Review."""
    evidence = ws.failure_evidence(ex.id)
    if evidence is None:
        return
    with st.container(border=True, key="rv_failure"):
        st.caption(f":material/error: The fine-tuned model of run {evidence.run_id} got this "
                   f"eval example wrong (score {evidence.score:.2f})")
        answer, reference = st.columns(2)
        answer.caption("Model answer")
        answer.text(evidence.answer or "(empty)")
        reference.caption("Reference")
        reference.text(evidence.reference or "(empty)")
        st.caption("Why it may have failed")
        st.text(evidence.summary[0].upper() + evidence.summary[1:] + ".")
        for n in evidence.neighbours:
            st.page_link(page_path("review"), label=plain(
                f"#{n.example_id} {n.label or '(no label)'}, similarity {n.similarity:.2f}"),
                icon=":material/rate_review:", query_params={"id": n.example_id})
            st.text(n.prompt[:300])
            for flag in n.flags:
                st.text(f"flagged as {flag}")


def _suggestion(ex: Example) -> None:
    """The model's suggestion for this version of the example (pre-labelling), as text, with
    its confidence and band, and Accept suggestion (m); below the low threshold the answer
    is not offered, only the fact that the model was unsure."""
    from curation.suggestions import band, band_name

    suggestion = ws.suggestion(ex.id)
    if suggestion is None:
        return
    high, low = ws.thresholds()
    name = band(suggestion.confidence, high, low)
    if name == "low":
        st.caption(f":material/smart_toy: The answer of run {suggestion.run_id} has confidence "
                   f"{suggestion.confidence:.2f}, below the low threshold {low:g}, so it is not "
                   "suggested.")
        return
    with st.container(border=True, key="rv_suggestion"):
        st.caption(f":material/smart_toy: Suggestion of run {suggestion.run_id}, confidence "
                   f"{suggestion.confidence:.2f} ({suggestion.method}), {name} band "
                   f"({band_name(name, high, low)})")
        st.text(suggestion.answer or "(empty)")
        if ex.status == "pending" or ex.status == "needs_work":
            st.button("Accept suggestion", key="rv_accept_suggestion",
                      icon=":material/done_all:", shortcut=SHORTCUTS["accept_suggestion"],
                      disabled=not user.can("decide"), on_click=_act,
                      args=("suggestion", "accept"),
                      help="Accept the example with this answer"
                           + (" and label" if suggestion.method == LABEL_METHOD else "")
                           + ", with your other edits: one change.")


def _conversation(ex: Example) -> None:
    p = _prefix(ex)
    if is_rich(ex.messages):  # tool calls, text parts, weights: turn by turn
        review_rich.conversation(ex, p)
        return
    system, pairs = _split_turns(ex.messages)
    st.text_area("System prompt", system, key=f"{p}_sys", height="content",
                 persist_state="session", placeholder="No system prompt",
                 help="Leave empty for a conversation without a system turn.")
    order = _layout(ex)["pairs"]
    for index, uid in enumerate(order):
        user_text, answer = pairs[uid] if uid < len(pairs) else ("", "")
        with st.container(border=True):
            head = st.container(horizontal=True, vertical_alignment="center")
            head.caption(f"Turn pair {index + 1} of {len(order)}")
            head.space("stretch")
            head.button("", key=f"{p}_up{uid}", icon=":material/arrow_upward:", type="tertiary",
                        help="Move this pair up", disabled=index == 0,
                        on_click=_move_pair, args=(ex, index, -1))
            head.button("", key=f"{p}_down{uid}", icon=":material/arrow_downward:",
                        type="tertiary", help="Move this pair down",
                        disabled=index == len(order) - 1,
                        on_click=_move_pair, args=(ex, index, 1))
            head.button("", key=f"{p}_del{uid}", icon=":material/delete:", type="tertiary",
                        help="Remove this user + assistant pair", disabled=len(order) == 1,
                        on_click=_remove_pair, args=(ex, index))
            st.text_area(":material/person: User", user_text, key=f"{p}_u{uid}",
                         height="content", persist_state="session")
            unanswered = ex.needs_answer and index == len(order) - 1
            if ex.kind == "preference" and index == len(order) - 1:  # chosen | rejected
                review_preference.answers(ex, p, f"{p}_a{uid}", answer, _act, ("swap",))
                continue
            st.text_area(":material/smart_toy: Assistant", answer, key=f"{p}_a{uid}",
                         height="content", persist_state="session",
                         placeholder="Needs an answer: write the assistant's reply"
                         if unanswered else None,
                         help="This prompt was imported without an answer; it is not "
                              "exported or trained on until this box is filled and saved."
                         if unanswered else None)
            if ex.kind == "kto" and index == len(order) - 1:
                review_preference.kto_flag(ex, p)
    st.button("Add a user + assistant pair", key=f"{p}_add", icon=":material/add:",
              on_click=_add_pair, args=(ex,))


def _label_and_tags(ex: Example) -> None:
    p = _prefix(ex)
    options = _label_options(ex)
    current = ("label", ex.label) if ex.label else ("none", None)
    label_column, tags_column = st.columns([1, 2])
    choice = label_column.selectbox("Label", options, index=options.index(current),
                                    format_func=_label_text, key=f"{p}_label",
                                    persist_state="session")
    if choice and choice[0] == "new":
        label_column.text_input("New label", key=f"{p}_newlabel", persist_state="session",
                                placeholder="type the new label")
    keyed = store.labels()[:LABEL_KEYS]
    if keyed:
        keys = st.container(horizontal=True, gap="small", vertical_alignment="center",
                            key="rv_label_keys")
        keys.caption("Label keys", width="content")
        for number, label in enumerate(keyed, start=1):
            keys.button(plain(label), key=f"rv_label_{number}", shortcut=str(number),
                        type="tertiary", on_click=_set_label, args=(ex, label),
                        help=f"Key {number}: set this label (saved with a decision or Save)")
    chosen = S.get(f"{p}_tags", list(ex.tags))
    tags_column.multiselect("Tags", sorted(set(store.tags()) | set(ex.tags) | set(chosen)),
                            default=list(ex.tags), key=f"{p}_tags", accept_new_options=True,
                            persist_state="session", placeholder="add tags; type to create one")


def _decision_panel(item: QueueItem, changes: dict[str, Any]) -> None:
    ex = item.example
    p = _prefix(ex)
    can_decide = user.can("decide")
    with st.container(border=True):
        if changes:
            st.caption(":material/edit_note: Unsaved edits to " + ", ".join(changes)
                       + ": a decision or Save saves them.")
        st.text_input("Reason or comment", key=f"{p}_reason", persist_state="session",
                      placeholder="needed to reject or send back",
                      help="Required for Reject and Needs work; optional for Accept.")
        st.button("Accept", key="rv_accept", type="primary", icon=":material/check:",
                  shortcut=SHORTCUTS["accept"], disabled=not can_decide, width="stretch",
                  on_click=_act, args=("decide", "accept"))
        row = st.container(horizontal=True, gap="small")
        row.button("Reject", key="rv_reject", icon=":material/close:",
                   shortcut=SHORTCUTS["reject"], disabled=not can_decide, width="stretch",
                   on_click=_act, args=("decide", "reject"))
        row.button("Needs work", key="rv_needs_work", icon=":material/build:",
                   shortcut=SHORTCUTS["needs_work"], disabled=not can_decide, width="stretch",
                   on_click=_act, args=("decide", "needs_work"))
        if not can_decide:
            st.caption(f"Your role ({user.role}) may edit and save, not decide: accept, reject "
                       "and needs work need a reviewer.")
        row = st.container(horizontal=True, gap="small")
        row.button("Save edit", key="rv_save", icon=":material/save:", width="stretch",
                   shortcut=SHORTCUTS["save"], on_click=_act, args=("edit",),
                   help="Save the edits without a decision.")
        row.button("Skip", key="rv_skip", icon=":material/skip_next:", width="stretch",
                   shortcut=SHORTCUTS["skip"], on_click=_skip)
        row = st.container(horizontal=True, gap="small")
        row.button("Previous", key="rv_prev", icon=":material/chevron_left:", width="stretch",
                   shortcut=SHORTCUTS["previous"], disabled=S.rvq_pos is None,
                   on_click=_previous)
        row.button("Next", key="rv_next", icon=":material/chevron_right:", width="stretch",
                   icon_position="right", shortcut=SHORTCUTS["next"], on_click=_next)
        undo = (S.get("rvq_undo") or [None])[-1] or ws.last_change()
        st.button("Undo my last change", key="rv_undo", icon=":material/undo:",
                  width="stretch", shortcut=SHORTCUTS["undo"], on_click=_undo,
                  disabled=undo is None,
                  help=(f"Take back your {undo[2].replace('_', ' ')} of #{undo[0]}: the "
                        "version before comes back, audited as a revert."
                        if undo else "No decision or edit of yours today still stands."))
        st.caption("Shortcuts: a accept · x reject · n needs work · s skip · j next · "
                   "k previous · e save edit · m accept the model's suggestion · u undo · "
                   "w swap a pair's answers · "
                   "1-9 label · Esc leave a text box · Ctrl+Enter save the edit")
        error = S.get("rvq_error")
        if error and error[0] == ex.id:
            st.error(plain(error[1]), icon=":material/error:")


def _conflict_panel(ex: Example) -> None:
    conflict = S.rvq_conflict
    with st.container(border=True):
        st.warning(plain(conflict["message"]), icon=":material/sync_problem:")
        st.caption("What they changed since the version you were editing; your edits are "
                   "still below.")
        theirs = store.get(ex.id)
        diff = review.diff_lines(store.version(ex.id, ex.version)["messages"], theirs.messages)
        if diff:
            st.code("\n".join(diff), language="diff", wrap_lines=True)
        fields = [(name, getattr(ex, name), getattr(theirs, name))
                  for name in ("label", "tags", "split", "status")
                  if getattr(ex, name) != getattr(theirs, name)]
        if fields:
            st.dataframe(pd.DataFrame(
                [{"field": n, "yours was": _show_value(a), "now": _show_value(b)}
                 for n, a, b in fields]), hide_index=True)
        row = st.container(horizontal=True)
        row.button("Reload theirs (discard my edits)", key="rv_reload_theirs",
                   icon=":material/refresh:", on_click=_reload_theirs)
        row.button("Overwrite with mine", key="rv_overwrite", type="primary",
                   icon=":material/upload:", on_click=_overwrite)


def _show_value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], dict):
            return f"{len(value)} turns"
        return ", ".join(map(str, value)) or "(none)"
    return str(value)


def _history_rows(example_id: int) -> pd.DataFrame:
    rows = []
    for event in store.history(example_id):
        before, after = event["before"] or {}, event["after"] or {}
        change = "; ".join(
            f"{k}: {_show_value(before.get(k))} → {_show_value(after[k])}"
            + (" (edited)" if k == "messages" and k in before else "")
            for k in after) if before else "created"
        rows.append({"when": event["at"], "who": event["actor"], "action": event["action"],
                     "version": event["version"], "reason": event["reason"] or "",
                     "guidelines": (f"v{event['guidelines_version']}"
                                    if event["guidelines_version"] else "none"),
                     "before → after": change})
    return pd.DataFrame(rows)


def _details(ex: Example, changes: dict[str, Any]) -> None:
    diff_tab, history_tab, versions_tab = st.tabs(
        [":material/difference: Changes vs original", ":material/history: History",
         ":material/layers: Versions"])
    with diff_tab:
        diff = review.diff_lines(store.version(ex.id, 1)["messages"], ex.messages)
        if diff:
            st.code("\n".join(diff), language="diff", wrap_lines=True)
        else:
            st.info("No changes since import.", icon=":material/check:")
        if "messages" in changes:
            st.caption("Your unsaved edits to the conversation:")
            st.code("\n".join(review.diff_lines(ex.messages, changes["messages"])),
                    language="diff", wrap_lines=True)
    with history_tab:
        st.dataframe(_history_rows(ex.id), hide_index=True,
                     column_config={"when": st.column_config.DatetimeColumn(
                         "when (UTC)", format="YYYY-MM-DD HH:mm:ss")})
    with versions_tab:
        versions = store.versions(ex.id)
        st.dataframe(pd.DataFrame([
            {"version": v["version"], "status": v["status"], "label": v["label"] or "",
             "tags": ", ".join(v["tags"]), "split": v["split"], "turns": len(v["messages"]),
             "changed by": v["changed_by"], "changed at": v["changed_at"]}
            for v in versions]), hide_index=True)
        earlier = [v["version"] for v in versions if v["version"] != ex.version]
        if not earlier:
            st.caption("Only one version so far.")
            return
        row = st.container(horizontal=True, vertical_alignment="bottom")
        to = row.selectbox("Version", earlier[::-1], key=f"{_prefix(ex)}_revert_to", width=140)
        row.button(f"Revert to version {to}", key="rv_revert", icon=":material/undo:",
                   disabled=not user.can("revert"), on_click=_act,
                   args=("revert", None, to))
        if not user.can("revert"):
            st.caption("Reverting needs the reviewer role.")
        st.caption(f"Version {to} compared with the current version:")
        old = store.version(ex.id, to)["messages"]
        st.code("\n".join(review.diff_lines(old, ex.messages)) or "(same conversation)",
                language="diff", wrap_lines=True)


# --- the page ------------------------------------------------------------------------------

st.title("Review")
page_start("review", ws)

if st.query_params.get("queue") in queues.REGISTRY:  # a link from another page: ?queue=flagged
    S.rv_queue = st.query_params.pop("queue")
top = st.container(horizontal=True, vertical_alignment="bottom")
queue = top.selectbox("Queue", list(queues.REGISTRY), key="rv_queue", width=280,
                      bind="query-params", persist_state="session",
                      format_func=lambda name: queues.REGISTRY[name].title,
                      help="\n\n".join(f"**{q.title}**: {q.description}"
                                       for q in queues.REGISTRY.values()))
where = ws.serving_filter(queue, filter_form(store, "review"))  # overlap: blind, N people
saved_views_panel(ws, "review", {"rv_queue": next(iter(queues.REGISTRY)),
                                 **filter_keys("review")})
if S.get("rvq_ctx") != (queue, where):
    S.rvq_ctx = (queue, where)
    _first()

linked = st.query_params.get("id")
if linked and linked != S.get("rvq_linked"):
    S.rvq_linked = linked
    if linked.isdigit():
        _open(int(linked))
    else:
        st.error("The link's example id must be a number.")

size = queues.queue_size(store, queue, where)
top.markdown(f"**{size:,}** in queue" + (" (with your filters)" if where.describe() else ""))
progress = ws.queue_progress(queue, where)
st.progress(progress.done / progress.total if progress.total else 0.0, text=progress.text())
feeds = queues.feeds(store, queue)
never = [f.title for f in feeds if f.run_at is None]
if feeds:
    st.caption(plain("Fed by " + "; ".join(
        f"{f.title} (" + (f"last run {f.run_at:%Y-%m-%d %H:%M} UTC by {f.run_by}"
                          if f.run_at else "never run") + ")" for f in feeds)
        + (f". Run it with {queues.REGISTRY[queue].how_to_run}." if never else ".")),
        help=queues.REGISTRY[queue].description)

if queue == IMPACT:
    rule = st.container(horizontal=True, vertical_alignment="center")
    rule.caption(IMPACT_RULE)
    if user.can("check"):
        rule.button("Rank again", key="rv_rank", icon=":material/refresh:", on_click=_rank,
                    help="Rank the pending train examples again (examples imported since the "
                         "last evaluation are ranked too).")

item: QueueItem | None = S.rvq_cur
if item is None:
    st.query_params.pop("id", None)
    S.rvq_linked = None
    if feeds and len(never) == len(feeds):
        st.info(plain(f"This queue is empty because {', '.join(never)} never ran: run it with "
                      f"{queues.REGISTRY[queue].how_to_run}."), icon=":material/hourglass_empty:")
    else:
        st.success("Nothing left in this queue. Pick another queue or change the filters.",
                   icon=":material/task_alt:")
    if size:
        st.caption(f"{size:,} examples you skipped or moved past are still in it.")
    row = st.container(horizontal=True)
    row.button("Start over from the first", key="rv_restart", icon=":material/restart_alt:",
               on_click=_first, disabled=not size)
    row.button("Previous", key="rv_prev", icon=":material/chevron_left:",
               shortcut=SHORTCUTS["previous"], on_click=_previous, disabled=S.rvq_pos is None)
    row.button("Undo my last change", key="rv_undo", icon=":material/undo:",
               shortcut=SHORTCUTS["undo"], on_click=_undo,
               disabled=not S.get("rvq_undo") and ws.last_change() is None)
    st.stop()

example = item.example
if st.query_params.get("id") != str(example.id):
    st.query_params["id"] = str(example.id)
S.rvq_linked = str(example.id)
review_leases.show_lease(ws, example.id, queue if S.rvq_pos is not None else None)
if S.rvq_pos is None:
    st.caption(":material/link: Opened by link; this example is not in the queue. Next goes "
               "to the start of the queue.")

conflict = S.get("rvq_conflict")
if conflict and conflict["example_id"] == example.id:
    _conflict_panel(example)

left, right = st.columns([3, 2], gap="medium")
with left:
    _label_and_tags(example)
    _conversation(example)
    review_guidelines.comments(ws, example)
with right:
    _header(item)
    round_panel(ws, example)
    _eval_failure(example)
    _suggestion(example)
    review_preference.edit_pairs_note(ws, example)
    pending = _changes(example)
    _decision_panel(item, pending)
    review_leases.submit_button(ws, _act)
    review_guidelines.beside(ws, example, _draft(example)[1])
_details(example, pending)
shortcut_help("rv_save")
