"""What Review shows of the guidelines, the chosen label's description and the comments.

Kept out of `review.py` so the page gains two calls: `beside(...)` in the column beside the
example and `comments(...)` under it.

Design decisions:
- The guidelines sit in a collapsed expander (a reviewer reads them when in doubt, the
  example stays in view); its title carries the version, and an example decided under an
  older version says so, with the versions, so the re-check after a change is visible.
- The guidelines are rendered as Markdown only after `curation.guidelines.safe_markdown`
  (no raw HTML, no image fetched from anywhere); everything else here (label descriptions,
  comments, names) is data and is shown as text (`st.text`, captions through `plain`).
- The label description follows the label chosen in the edit box, not the stored one, so
  choosing a label shows what it means before the decision.
- A comment is added with a form that clears on submit; the thread is re-read on every run,
  so a comment added by someone else shows on the next rerun.
"""

from __future__ import annotations

import streamlit as st

from curate.ui.common import page_path, plain, show_error
from curate.workspace import Workspace
from curation import CurateError, Example
from curation.guidelines import safe_markdown


def guidelines_markdown(text: str) -> None:
    """Guidelines text rendered as Markdown, with raw HTML and images neutralised."""
    st.markdown(safe_markdown(text), unsafe_allow_html=False)


def beside(ws: Workspace, ex: Example, label: str | None) -> None:
    """The guidelines (collapsed), the decision's guidelines version, the label's meaning."""
    current = ws.guidelines()
    title = (f"Guidelines (version {current.version})" if current
             else "Guidelines (none yet)")
    with st.expander(title, icon=":material/menu_book:", expanded=False):
        if current is None:
            st.caption("No guidelines yet. An admin writes them on the Guidelines page.")
        else:
            st.caption(plain(f"Saved {current.saved_at:%Y-%m-%d %H:%M} UTC by "
                             f"{current.saved_by}"))
            with st.container(key="rv_guidelines_text"):
                guidelines_markdown(current.text)
        st.page_link(page_path("guidelines"), label="Open the Guidelines page",
                     icon=":material/open_in_new:")
    decided = ws.decided_under(ex.id)
    if decided is not None and decided.outdated:
        under = (f"version {decided.version}" if decided.version
                 else "no guidelines (before there were any)")
        st.warning(plain(f"Last decided ({decided.action.replace('_', ' ')}) by "
                         f"{decided.actor} under {under}; the guidelines are now at version "
                         f"{decided.current}. Check it against the current ones."),
                   icon=":material/update:")
    if label:
        meaning = ws.label_descriptions().get(label)
        with st.container(border=True, key="rv_label_description"):
            st.caption(":material/label: What the chosen label means")
            st.text(label)  # data: as text, never Markdown
            if meaning is None:
                st.caption("No description of this label yet (an admin adds one on the "
                           "Guidelines page).")
            else:
                st.text(meaning.description)
                if meaning.example:
                    st.caption("Example")
                    st.text(meaning.example)


def _add(ws: Workspace, example_id: int, key: str) -> None:
    try:
        ws.add_comment(example_id, st.session_state.get(key, ""))
    except CurateError as exc:
        st.session_state["rv_comment_error"] = (example_id, str(exc))
        return
    st.session_state["rv_comment_error"] = None
    st.session_state[key] = ""
    st.toast("Comment added", icon=":material/comment:")


def comments(ws: Workspace, ex: Example) -> None:
    """The example's comment thread (who, when, text) and a box to add to it."""
    thread = ws.comments(ex.id)
    st.subheader(f"Comments ({len(thread)})", anchor=False)
    with st.container(key="rv_comments"):
        for comment in thread:
            with st.container(border=True):
                st.caption(plain(f"{comment.author} · {comment.at:%Y-%m-%d %H:%M} UTC"))
                st.text(comment.text)
        if not thread:
            st.caption("No comments yet.")
    key = f"rv_comment_{ex.id}"
    st.text_area("Add a comment", key=key, height=68, max_chars=2000,
                 placeholder="A question or note for the others reviewing this example")
    st.button("Add comment", key="rv_add_comment", icon=":material/add_comment:",
              on_click=_add, args=(ws, ex.id, key))
    error = st.session_state.get("rv_comment_error")
    if error and error[0] == ex.id:
        show_error(CurateError(error[1]))
