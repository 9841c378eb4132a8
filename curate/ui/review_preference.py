"""Review of preference data: a pair's chosen and rejected answer side by side, a KTO
record's flag, and the one-key swap.

`curate.ui.review` calls `answers` in place of the last assistant box of a preference
example (and `kto_flag` under it for a KTO record), and adds `changes` to the edits it
sends. Both answers are plain text areas (data is never rendered as HTML or Markdown),
editable like any turn and saved with a decision or Save as one version; the pair's earlier
answers come back with Revert and Undo like the rest of the example.

Design decisions:
- Swap (`w`, free on the page: `r` and `c` are Streamlit's) saves at once, as one edit
  audited with the reason "swapped the chosen and the rejected answer" (`Workspace.swap`),
  the pending edits of both boxes swapped along: a swap is a judgement, so it is recorded as
  one, and it never leaves the draft half-swapped.
- A rejected continuation of more than one turn (possible only with richer turn kinds) is
  shown read-only as its turns, since two boxes cannot hold it: edit it by import or revert.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from curation.store import Example

SWAP_KEY = "w"
S = st.session_state


def _rejected_text(ex: Example) -> str | None:
    """The rejected answer as one editable text, or None when it is not a single turn."""
    rejected = ex.rejected or []
    return rejected[0]["content"] if len(rejected) == 1 else None


def answers(ex: Example, prefix: str, chosen_key: str, chosen: str,
            on_swap: Callable[..., None], swap_args: tuple) -> None:
    """The chosen and the rejected answer side by side, both editable, and Swap (w)."""
    left, right = st.columns(2, gap="small")
    left.text_area(":material/thumb_up: Chosen answer", chosen, key=chosen_key,
                   height="content", persist_state="session",
                   help="The answer preferred: trained towards (DPO), and the answer an SFT "
                        "export of this example carries.")
    text = _rejected_text(ex)
    if text is None:
        right.caption(":material/thumb_down: Rejected continuation (several turns, read-only)")
        for turn in ex.rejected or []:
            right.text(f"{turn['role']}: {turn.get('content', '')}")
    else:
        right.text_area(":material/thumb_down: Rejected answer", text, key=f"{prefix}_rej",
                        height="content", persist_state="session",
                        help="The answer not preferred: trained away from (DPO).")
    st.button("Swap chosen and rejected", key="rv_swap", icon=":material/swap_horiz:",
              shortcut=SWAP_KEY, on_click=on_swap, args=swap_args,
              help=f"Key {SWAP_KEY}: exchange the two answers (with your edits to them) and "
                   "save at once, audited as an edit.")


def kto_flag(ex: Example, prefix: str) -> None:
    """A KTO record's flag: is this answer desirable?"""
    st.toggle("Desirable answer (KTO)", value=bool(ex.desirable), key=f"{prefix}_desirable",
              help="KTO trains towards desirable answers and away from undesirable ones.")


def changes(ex: Example, prefix: str) -> dict[str, Any]:
    """The preference fields the reviewer changed, as `Workspace.edit`/`decide` take them."""
    out: dict[str, Any] = {}
    text = _rejected_text(ex)
    if ex.kind == "preference" and text is not None:
        now = S.get(f"{prefix}_rej", text)
        if now != text:
            out["rejected"] = [{**ex.rejected[0], "content": now}]
    if ex.kind == "kto":
        flag = S.get(f"{prefix}_desirable", ex.desirable)
        if flag != ex.desirable:
            out["desirable"] = bool(flag)
    return out


def badge(ex: Example) -> str | None:
    """The kind of a non-SFT example, as a short label for the header."""
    if ex.kind == "preference":
        return "preference pair"
    if ex.kind == "kto":
        return "KTO: " + ("desirable" if ex.desirable else "undesirable")
    return None


def edit_pairs_note(ws, ex: Example) -> None:
    """Which preference pairs were recorded from edits of this example, if any."""
    pairs = ws.edit_pairs_of(ex.id)
    if pairs:
        st.caption(":material/compare_arrows: Preference pairs recorded from edits of this "
                   "example's model answer: " + ", ".join(f"#{i}" for i in pairs)
                   + " (pending, in the review queues like any example).")
