"""Guidelines: the workspace's review guidelines in full, their versions, and label meanings.

Everyone reads; admins edit (`edit_guidelines`, checked again in `curation.guidelines`).

Design decisions:
- The current version is rendered as Markdown after `safe_markdown` (no raw HTML, no image
  fetched); older versions and the diff are shown as code (text), never rendered.
- The editor remembers the version it was opened on (its widget key carries it) and the
  save names that version (`base_version`): if another admin saved meanwhile, the page says
  so and the save is refused with who and when; "Load version N" discards the draft and
  opens theirs. Nothing is overwritten.
- After a change, the page counts the decided examples that were decided under an older
  version and opens Review on them (the "All examples" queue with the "Decided under older
  guidelines" filter), so the re-check starts from here.
- Label descriptions are data (shown as text in a table); an admin sets one per label, an
  empty description removes it.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from curate.ui.common import flash, page_path, page_start, plain, show_error, workspace
from curate.ui.review_guidelines import guidelines_markdown
from curation import CurateError, ExampleFilter

S = st.session_state
ws = workspace("view")
store, user = ws.store, ws.user
can_edit = user.can("edit_guidelines")

st.title("Guidelines")
page_start("guidelines", ws, empty_hint="")

current = ws.guidelines()
versions = ws.guidelines_history()


if current is None:
    st.info("No guidelines yet." + (" Write them under Edit below." if can_edit else
                                    " An admin writes them here."), icon=":material/menu_book:")
else:
    st.caption(plain(f"Version {current.version}, saved {current.saved_at:%Y-%m-%d %H:%M} UTC "
                     f"by {current.saved_by}" + (f": {current.note}" if current.note else "")))
    older = store.count(ExampleFilter(older_guidelines=True))
    if older:
        row = st.container(horizontal=True, vertical_alignment="center")
        row.warning(f"{older:,} decided examples were decided under older guidelines (or "
                    "before there were any).", icon=":material/update:")
        if row.button("Re-check them in Review", key="gl_recheck",
                      icon=":material/rate_review:"):
            S["review_older_guidelines"] = True  # the Review sidebar's filter toggle
            st.switch_page(page_path("review"), query_params={"queue": "all"})

tabs = ["Guidelines", "Label descriptions", "History"] + (["Edit"] if can_edit else [])
read_tab, labels_tab, history_tab, *edit_tab = st.tabs(tabs)

with read_tab:
    if current is not None:
        with st.container(key="gl_text", border=True):
            guidelines_markdown(current.text)
    else:
        st.caption("Nothing to show yet.")

with labels_tab:
    described = ws.label_descriptions()
    labels = sorted(set(store.labels()) | set(described))
    if labels:
        st.dataframe(pd.DataFrame([
            {"label": lab, "means": described[lab].description if lab in described else "",
             "example": (described[lab].example or "") if lab in described else "",
             "by": described[lab].updated_by if lab in described else ""}
            for lab in labels]), hide_index=True, key="gl_labels_table")
    else:
        st.caption("No labels in this workspace yet.")
    if can_edit:
        with st.container(border=True, key="gl_label_editor"):
            st.caption("Describe a label: what it means and one example. An empty "
                       "description removes it.")
            label = st.selectbox("Label", labels, index=None, accept_new_options=True,
                                 placeholder="Choose a label or type one", key="gl_label")
            known = described.get(label) if label else None
            # keyed by label: choosing another label opens its own text, prefilled
            description = st.text_area("What it means", known.description if known else "",
                                       key=f"gl_label_description_{label}",
                                       disabled=not label)
            example = st.text_area("One example", (known.example or "") if known else "",
                                   key=f"gl_label_example_{label}", disabled=not label)
            if st.button("Save description", key="gl_label_save", icon=":material/save:",
                         disabled=not label):
                try:
                    saved = ws.set_label_description(label or "", description, example)
                except CurateError as exc:
                    show_error(exc)
                else:
                    flash("guidelines", f"Description of {label} "
                          + ("saved." if saved else "removed."))
                    st.rerun()
    else:
        st.caption("Admins describe labels here.")

with history_tab:
    if not versions:
        st.caption("No versions yet.")
    else:
        st.dataframe(pd.DataFrame([
            {"version": g.version, "saved by": g.saved_by, "saved at": g.saved_at,
             "note": g.note or "", "characters": len(g.text)} for g in versions]),
            hide_index=True, key="gl_history_table")
        numbers = [g.version for g in versions]
        row = st.container(horizontal=True)
        # keyed by the latest version: a new version starts the comparison over at it
        new = row.selectbox("Compare version", numbers, key=f"gl_diff_new_{numbers[0]}",
                            width=180)
        old = row.selectbox("with the earlier version", [0] + numbers[::-1], width=220,
                            index=max(0, min(new - 1, len(numbers))),
                            key=f"gl_diff_old_{numbers[0]}_{new}",
                            format_func=lambda v: f"{v}" if v else "0 (no guidelines)")
        diff = ws.guidelines_diff(old, new)
        st.code("\n".join(diff) or "(the same text)", language="diff", wrap_lines=True)
        shown = st.selectbox("Read an earlier version as text", numbers,
                             key=f"gl_show_version_{numbers[0]}")
        st.code(ws.guidelines(shown).text, language="markdown", wrap_lines=True)

def _load_current(latest: int, draft_key: str) -> None:
    """Discard the draft and edit the current version."""
    S.pop(draft_key, None)
    S.gl_base = latest


if edit_tab:
    with edit_tab[0]:
        latest = current.version if current else 0
        if S.get("gl_base") is None or S.gl_base > latest:
            S.gl_base = latest
        base = S.gl_base  # the version this draft was opened on: what the save is based on
        key = f"gl_edit_v{base}"
        opened = ws.guidelines(base) if base else None
        if base != latest:
            st.warning(plain(f"You are editing version {base}; {current.saved_by} saved "
                             f"version {latest} since. Saving is refused until you load it."),
                       icon=":material/sync_problem:")
            st.button(f"Load version {latest} (discard my draft)", key="gl_load_latest",
                      icon=":material/refresh:", on_click=_load_current, args=(latest, key))
        text = st.text_area("Guidelines (Markdown)", opened.text if opened else "", key=key,
                            height=400, persist_state="session",
                            help="Markdown. Raw HTML is shown as text and images are not "
                                 "loaded.")
        note = st.text_input("What changed (optional, kept with the version)", key="gl_note")
        if st.toggle("Preview", key="gl_preview"):
            with st.container(border=True, key="gl_preview_box"):
                guidelines_markdown(text)
        if st.button("Save as a new version", key="gl_save", type="primary",
                     icon=":material/save:"):
            try:
                saved = ws.save_guidelines(text, note=note, base_version=base)
            except CurateError as exc:
                show_error(exc)
            else:
                S.pop("gl_note", None)
                S.pop(key, None)
                S.gl_base = saved.version
                flash("guidelines", f"Guidelines version {saved.version} saved.",
                      kind="success")
                st.rerun()
