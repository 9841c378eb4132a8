"""Overview: progress at a glance, reviewer activity, and what needs attention next.

Thin labels are counted against the workspace's coverage targets (`thin_labels`, the same
definition as the Coverage page and the check feeding the Thin labels queue), and the line
says when that queue is out of date and how to update it.
"""

import pandas as pd
import streamlit as st

from curation import STATUSES
from curation.checks.coverage import thin_labels
from curate_ui.common import get_store, require_page

require_page("view")
store = get_store()
stats = store.stats()

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

attention = []
if by_status.get("pending"):
    attention.append(f"{by_status['pending']:,} examples wait for a first decision "
                     "(Review page, queue 'Pending first').")
if by_status.get("needs_work"):
    attention.append(f"{by_status['needs_work']:,} examples were sent back as needs work.")
unlabelled = stats["by_label"].get(None, 0)
if unlabelled:
    attention.append(f"{unlabelled:,} examples have no label.")
if "eval" not in stats["by_split"]:
    attention.append("No example is in the eval split: hold some out to evaluate training.")
thin = thin_labels(store)
if thin.gaps:
    named = ", ".join(f"{g.label} ({g.train + g.eval} of {g.want})" for g in thin.gaps[:5])
    more = f" and {len(thin.gaps) - 5} more" if len(thin.gaps) > 5 else ""
    line = (f"{len(thin.gaps)} label(s) are under their coverage target: {named}{more} "
            "(Coverage page).")
    if thin.current:
        line += f" Their {thin.queued:,} examples are in the Review queue 'Thin labels'."
    else:
        line += (" The Review queue 'Thin labels' is out of date"
                 + ("" if thin.run_at else " (the coverage check never ran)")
                 + ": run `curate coverage`, or Update the queue on the Coverage page.")
    attention.append(line)
with st.container(border=True):
    st.subheader("Needs attention")
    for line in attention or ["Nothing: every example is decided."]:
        st.text(f"• {line}")


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
    st.subheader("Reviewer activity, last 7 days")
    activity = pd.DataFrame(store.activity(days=7), columns=["reviewer", "action", "count"])
    if activity.empty:
        st.text("No edits or decisions in the last 7 days.")
    else:
        st.bar_chart(activity, x="reviewer", y="count", color="action", horizontal=True,
                     height=max(160, 40 * activity["reviewer"].nunique()))
with right:
    _bar("label", stats["by_label"])
    _bar("source", stats["by_source"])
