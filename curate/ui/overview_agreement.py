"""The Overview page's Agreement section (overlap for agreement, `curation.agreement`).

Called from `curate/ui/overview.py` (not a page of its own). An admin sets how many
independent decisions each train example needs; everyone sees the agreement figures on the
examples with overlap: Cohen's kappa per reviewer pair, Fleiss' kappa over all reviewers and
per label (one-vs-rest), as `curate agreement` computes them (definitions: docs/review.md).

Design decisions: reviewer names and labels are data, shown in tables (text): the pairs, few,
as a plain table whose figures can be read and copied, the labels, many, as a dataframe. The
section is hidden from non-admins while overlap is 1 and nothing was decided with overlap, so
a team that does not use it sees nothing new.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from curate.workspace import Workspace
from curation import CurateError
from curation.agreement import MAX_OVERLAP


def _set_overlap(ws: Workspace) -> None:
    try:
        outcome = ws.set_overlap(int(st.session_state.ov_overlap))
    except CurateError as exc:
        st.session_state.ov_overlap_msg = ("error", str(exc))
        return
    text = f"Each train example now needs {outcome['overlap']} independent decision(s)."
    if outcome["agreed"] or outcome["disputed"]:
        text += (f" {len(outcome['agreed'])} decided by agreeing decisions, "
                 f"{len(outcome['disputed'])} sent to adjudication.")
    st.session_state.ov_overlap_msg = ("success", text)


def _kappa(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def agreement_section(ws: Workspace) -> None:
    """The setting (admins) and the agreement figures."""
    n = ws.overlap()
    figures = ws.agreement()
    admin = ws.user.can("set_overlap")
    if not admin and n == 1 and not figures.items:
        return
    with st.container(border=True, key="ov_agreement"):
        st.subheader("Agreement")
        if admin:
            row = st.container(horizontal=True, vertical_alignment="bottom")
            row.number_input("Independent decisions per example", min_value=1,
                             max_value=MAX_OVERLAP, value=n, step=1, key="ov_overlap",
                             width=260, help="With N > 1 each undecided train example is "
                             "served to N different reviewers, who decide blind; it is decided "
                             "when all N agree (same decision and label), else it goes to the "
                             "Adjudication queue of the Review page, where an admin settles "
                             "it.")
            row.button("Save", key="ov_overlap_save", icon=":material/save:",
                       on_click=_set_overlap, args=(ws,))
            message = st.session_state.pop("ov_overlap_msg", None)
            if message:
                (st.error if message[0] == "error" else st.success)(message[1])
        else:
            st.caption(f"Each train example needs {n} independent decisions (an admin sets "
                       "this).")
        if not figures.items:
            st.text("No example has two independent decisions yet.")
            return
        columns = st.columns(4)
        columns[0].metric("Examples with overlap", f"{figures.items:,}")
        columns[1].metric("All decisions agree", f"{figures.observed:.0%}")
        columns[2].metric("Fleiss' kappa", _kappa(figures.fleiss),
                          help="Over all reviewers and examples with two or more decisions; "
                               "a decision's category is its decision and label together.")
        columns[3].metric("In adjudication", f"{figures.in_adjudication:,}")
        st.caption("Cohen's kappa per reviewer pair (on the examples both decided)")
        st.table(pd.DataFrame(
            [{"reviewer": p.a, "with": p.b, "examples": f"{p.items:,}",
              "agree": f"{p.observed:.0%}", "Cohen's kappa": _kappa(p.kappa)}
             for p in figures.pairs],
            columns=["reviewer", "with", "examples", "agree", "Cohen's kappa"]),
            hide_index=True)
        st.caption("Per label: Fleiss' kappa with the label one-vs-rest; agree is the share "
                   "of the examples where someone gave the label on which everyone did")
        st.dataframe(pd.DataFrame(
            [{"label": lab.label or "(no label)", "examples": lab.items,
              "agree": lab.all_agree, "kappa": lab.kappa} for lab in figures.labels],
            columns=["label", "examples", "agree", "kappa"]),
            hide_index=True, key="ov_agreement_labels",
            column_config={"agree": st.column_config.NumberColumn(format="percent"),
                           "kappa": st.column_config.NumberColumn(format="%.3f")})
