"""Overview: progress at a glance, reviewer activity, what needs attention next, and (for
admins) who holds which example of a review queue (`curate/ui/review_leases.py`).

What needs attention comes from `Workspace.needs_attention` (the CLI's and the pages' one
definition): thin labels are counted against the workspace's coverage targets, and the line
says when the Thin labels queue is out of date and how to update it.

Decisions per person per day (`curation.progress.decisions_per_day`) are a stacked bar per
UTC day with one colour per person, so names are in the legend and never cut off on an axis;
the system's own actors (the CLI's import, the model's auto-accepts) are left out.
The Agreement section (`overview_agreement`) sets the review overlap and shows kappa; the
Preference data section (`overview_preference`) counts pairs and KTO records and turns pairs
from SME edits on or off.
"""

import pandas as pd
import streamlit as st

from curate.ui import review_leases
from curate.ui.common import single_user_mode, workspace
from curate.ui.overview_agreement import agreement_section
from curate.ui.overview_preference import preference_section
from curation import STATUSES

ws = workspace("view")
store = ws.store
stats = ws.stats()

st.title("Overview")
st.caption("Workspace file:")
st.code(str(store.path), language=None)

if stats["total"] == 0:
    st.info("This workspace has no examples yet. An admin imports a JSONL, JSON or CSV file on "
            "the Import / Export page or with `curate import FILE`; `curate init --demo` loads "
            "the demo data.", icon=":material/inbox:")
    st.stop()

by_status = stats["by_status"]
columns = st.columns(len(STATUSES) + 1)
columns[0].metric("Examples", f"{stats['total']:,}")
for column, status in zip(columns[1:], STATUSES):
    count = by_status.get(status, 0)
    column.metric(status.replace("_", " ").capitalize(), f"{count:,}",
                  f"{count / stats['total']:.0%}", delta_color="off", delta_arrow="off")

reviewed = stats["total"] - by_status.get("pending", 0)
st.progress(reviewed / stats["total"],
            text=f"Reviewed {reviewed:,} of {stats['total']:,} ({reviewed / stats['total']:.0%})")

attention = ws.needs_attention()
with st.container(border=True):
    st.subheader("Needs attention")
    for item in attention:
        st.text(f"• {item.message}")
    if not attention:
        st.text("• Nothing: every example is decided.")

agreement_section(ws)  # overlap for agreement: the setting (admins) and kappa
preference_section(ws)  # preference pairs, KTO records, pairs from SME edits (setting)


def _bar(title: str, counts: dict) -> None:
    frame = pd.DataFrame({title: [str(k) if k is not None else "(none)" for k in counts],
                          "examples": list(counts.values())})
    st.subheader(f"By {title}")
    st.bar_chart(frame, x=title, y="examples", horizontal=True, sort="-examples",
                 height=max(160, 40 * len(frame) + 60))


left, right = st.columns(2)
with left:
    _bar("status", by_status)
    _bar("split", stats["by_split"])
with right:
    _bar("label", stats["by_label"])
    _bar("source", stats["by_source"])

st.subheader("Decisions per person per day, last 14 days")
per_day = pd.DataFrame(ws.decisions_per_day(14), columns=["day", "person", "decisions"])
if per_day.empty:
    st.text("No decisions in the last 14 days.")
else:  # days along x, one colour per person: names sit in the legend, never cut off
    per_day["day"] = [f"{day:%Y-%m-%d}" for day in per_day["day"]]  # a bar per day, ISO order
    st.bar_chart(per_day, x="day", y="decisions", color="person", stack=True, height=280,
                 x_label="day (UTC)", y_label="decisions")
    totals = per_day.groupby("person", as_index=False)["decisions"].sum()
    st.dataframe(totals.sort_values(["decisions", "person"], ascending=[False, True]),
                 hide_index=True, column_config={"person": st.column_config.TextColumn(
                     "person", width="large")})
st.caption("Accept, reject and needs work by people; the system's own actors (the "
           "command line's import, the model's auto-accepts) are left out.")

review_leases.leases_table(ws)  # admins: who holds which example
if ws.user.can("manage_users") and not single_user_mode():
    with st.container(border=True):
        st.subheader("Signed in", anchor=False)
        signed_in = ws.open_sessions()
        st.caption("App sessions not signed out or expired (12 hours from sign-in). "
                   "`curate user sign-out NAME` ends every session of an account.")
        if signed_in:
            st.dataframe([{"who": row["user"], "since (UTC)": row["started"],
                           "until (UTC)": row["expires"]} for row in signed_in],
                         hide_index=True, key="ov_sessions")
        else:
            st.text("Nobody is signed in with a password session now.")
