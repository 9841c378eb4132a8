"""The Overview page's Preference data section (`curation.preference`).

Called from `curate/ui/overview.py`. It shows how many examples are preference pairs and KTO
records, how many pairs came from SME edits of a model's answer, and lets a reviewer or
admin turn those edit pairs on or off (`Workspace.set_edit_pairs`, the workspace setting
`preference_pairs_from_edits`, also `curate edit-pairs on|off`).

Design decision: the section is shown to everyone who can change the setting, and to others
only once the workspace holds preference data, so a team that only does SFT sees nothing new.
"""

from __future__ import annotations

import streamlit as st

from curate.workspace import Workspace
from curation import CurateError, ExampleFilter
from curation.preference import EDIT_PAIR_SOURCE


def _save(ws: Workspace) -> None:
    try:
        on = ws.set_edit_pairs(bool(st.session_state.ov_edit_pairs))
    except CurateError as exc:
        st.session_state.ov_edit_pairs_msg = ("error", str(exc))
        return
    st.session_state.ov_edit_pairs_msg = (
        "success", "Pairs from SME edits are " + ("on." if on else "off."))


def preference_section(ws: Workspace) -> None:
    """Counts by kind and the pairs-from-edits setting."""
    kinds = ws.store.counts_by_kind()
    pairs, kto = kinds.get("preference", 0), kinds.get("kto", 0)
    can_set = ws.user.can("set_targets")
    if not can_set and not pairs and not kto:
        return
    with st.container(border=True, key="ov_preference"):
        st.subheader("Preference data")
        columns = st.columns(3)
        columns[0].metric("Preference pairs", f"{pairs:,}")
        from_edits = ws.store.count(ExampleFilter(source=(EDIT_PAIR_SOURCE,)))
        columns[1].metric("From SME edits", f"{from_edits:,}",
                          help="Pairs recorded when a reviewer edited a model's answer: the "
                               "edited answer chosen, the model's rejected.")
        columns[2].metric("KTO records", f"{kto:,}")
        if can_set:
            st.toggle("Record a preference pair when a reviewer edits a model's answer",
                      value=ws.edit_pairs_enabled(), key="ov_edit_pairs",
                      on_change=_save, args=(ws,),
                      help="A model's answer: a draft (source draft), an accepted model "
                           "suggestion, or an import marked as model output. Same as "
                           "`curate edit-pairs on|off`.")
            message = st.session_state.pop("ov_edit_pairs_msg", None)
            if message:
                (st.error if message[0] == "error" else st.success)(message[1])
        else:
            st.caption("Pairs from SME edits are "
                       + ("on" if ws.edit_pairs_enabled() else "off")
                       + " (a reviewer sets this).")
