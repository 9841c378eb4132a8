"""The Review page's part for overlap for agreement (`curation.agreement`).

Called from `curate/ui/review.py` (not a page of its own):
- `round_panel`: for a reviewer, how far the example's round is ("1 of 2 independent
  decisions recorded"), never which decisions: they decide blind. For an adjudicator on a
  disputed example, every decision side by side (one column per reviewer: decision, label,
  reason, when), with what their own decision does: it settles the example, audited.
- `decision_note`: the toast after a decision that was recorded as a vote (the example did
  not change), instead of "Accepted #N".

Design decisions: decisions and reasons are data, shown as text (`st.text`), never Markdown.
"""

from __future__ import annotations

import streamlit as st

from curate.workspace import Workspace
from curation.store import Example

DECISION_WORDS = {"accept": "accept", "reject": "reject", "needs_work": "needs work"}


def round_panel(ws: Workspace, example: Example) -> None:
    """The example's round of independent decisions, as this user may see it."""
    progress = ws.vote_progress(example.id)
    if progress is None:
        needed = ws.overlap()
        if needed > 1 and example.split == "train" and example.status in ("pending",
                                                                          "needs_work"):
            st.caption(f":material/groups: This example needs {needed} independent "
                       "decisions. Yours is recorded blind: nobody sees it until they agree "
                       "or an admin settles a disagreement.")
        return
    if not progress.disputed:
        st.caption(f":material/groups: {progress.recorded} of {progress.needed} independent "
                   "decisions recorded" + ("; yours is one of them." if progress.mine
                                           else ". Decide blind: the others are hidden."))
        return
    if not ws.user.can("adjudicate"):
        st.caption(":material/gavel: In adjudication: the independent decisions disagree, "
                   "and an admin settles it.")
        return
    votes = ws.votes(example.id)
    with st.container(border=True, key="rv_adjudication"):
        st.caption(f":material/gavel: {len(votes)} independent decisions disagree. Your "
                   "decision below (with the label you set) settles the example; it is "
                   "audited with the decisions it settles.")
        for column, vote in zip(st.columns(len(votes)), votes):
            with column.container(border=True):
                st.caption("Reviewer")
                st.text(vote.reviewer)
                st.caption("Decision")
                st.text(DECISION_WORDS.get(vote.decision, vote.decision))
                st.caption("Label")
                st.text(vote.label or "(no label)")
                st.caption("Reason")
                st.text(vote.reason or "—")
                st.caption(f"On version {vote.version}, {vote.decided_at:%Y-%m-%d %H:%M} UTC")


def decision_note(ws: Workspace, before: Example, after: Example) -> str | None:
    """What a decision did when it was a vote (the example unchanged), else None."""
    if after.version != before.version:
        return None
    progress = ws.vote_progress(before.id)
    if progress is None:
        return None
    if progress.disputed:
        return (f"Recorded your decision on #{before.id}: the decisions disagree, so it goes "
                "to the Adjudication queue.")
    return (f"Recorded your decision on #{before.id} ({progress.recorded} of "
            f"{progress.needed}); it is decided when {progress.needed} agree.")
