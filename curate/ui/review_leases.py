"""The Review page's part of work distribution: leases and Submit for review, as widgets.

The page (`curate/ui/review.py`) gets its next example from `Workspace.claim_next`, so two
people in the same queue never get the same example while its lease holds
(`curation.leases`); this module holds what the page shows and checks around that, so the page
itself changes by a few lines.

Design decisions:
- Every rerun that shows an example renews the person's lease on it (`Workspace.hold`), which
  also leases an example opened by link or reached with Previous when nobody holds it. When
  someone else holds it, the page says who and until when and stays viewable: read-only, the
  actions refuse with the same message (`refusal`), so nobody works on top of someone else.
- Submit for review is offered to those who may edit but not decide (annotators); it sends
  the pending edits with it, like a decision, through the page's own action path.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from curate.ui.common import plain
from curate.workspace import Workspace
from curation.leases import Lease


def _held_text(lease: Lease) -> str:
    return (f"{lease.holder} is working on example #{lease.example_id} (lease until "
            f"{lease.expires_at:%H:%M:%S} UTC)")


def show_lease(ws: Workspace, example_id: int, queue: str | None) -> Lease:
    """Lease or renew the example shown for this person; a read-only notice when someone
    else holds it. Returns the live lease."""
    lease = ws.hold(example_id, queue)
    if not lease.held_by(ws.user):
        st.warning(plain(_held_text(lease) + ". You can read it; your actions on it wait "
                         "until the lease is released or expires."), icon=":material/lock:")
    return lease


def refusal(ws: Workspace, example_id: int) -> str | None:
    """Why this person may not act on the example now (someone else holds it), or None."""
    lease = ws.hold(example_id)
    return None if lease.held_by(ws.user) else _held_text(lease) + ": try again later."


def submit_button(ws: Workspace, on_click: Callable, *, key_suffix: str = "") -> None:
    """Submit for review, for a person who may edit but not decide."""
    if ws.user.can("decide"):
        return
    st.button("Submit for review", key=f"rv_submit{key_suffix}", type="primary",
              icon=":material/send:", width="stretch", on_click=on_click, args=("submit",),
              help="Save your edits and send the example to the Submitted queue, where a "
                   "reviewer accepts, rejects or sends it back. Counts as your progress.")


def leases_table(ws: Workspace) -> None:
    """Who holds which example of which queue, until when: for admins, on Overview."""
    if not ws.user.can("manage_users"):
        return
    held = ws.leases()
    with st.container(border=True):
        st.subheader("Who is working on what", anchor=False)
        st.caption(f"Live review leases: a lease lasts {ws.lease_minutes():g} minutes unless "
                   "renewed, and a decision, skip or submission releases it "
                   "(`curate leases --minutes N` changes the length).")
        if not held:
            st.text("Nobody holds a lease now.")
            return
        st.dataframe([{"who": lease.holder, "example": lease.example_id,
                       "queue": lease.queue or "(opened by link)",
                       "since (UTC)": lease.acquired_at, "until (UTC)": lease.expires_at}
                      for lease in held], hide_index=True, key="ov_leases")
