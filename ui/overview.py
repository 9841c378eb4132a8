"""Overview: progress at a glance, from the store's counts."""

import pandas as pd
import streamlit as st

from curation import STATUSES
from ui.common import get_store

store = get_store()
stats = store.stats()

st.title("Overview")
st.caption(f"Workspace `{store.path}`")

if stats["total"] == 0:
    st.info("This workspace has no examples yet. Import a JSONL, JSON or CSV file with "
            "`curate import FILE`, or start the demo with `curate init --demo`.")
    st.stop()

by_status = stats["by_status"]
columns = st.columns(len(STATUSES) + 1)
columns[0].metric("Examples", f"{stats['total']:,}")
for column, status in zip(columns[1:], STATUSES):
    count = by_status.get(status, 0)
    column.metric(status.replace("_", " ").capitalize(), f"{count:,}",
                  f"{count / stats['total']:.0%}", delta_color="off")

reviewed = stats["total"] - by_status.get("pending", 0)
st.progress(reviewed / stats["total"],
            text=f"Reviewed {reviewed:,} of {stats['total']:,} ({reviewed / stats['total']:.0%})")


def _bar(title: str, counts: dict) -> None:
    frame = pd.DataFrame({title: [str(k) if k is not None else "(none)" for k in counts],
                          "examples": list(counts.values())})
    st.subheader(f"By {title}")
    st.bar_chart(frame, x=title, y="examples", horizontal=True, height=max(160, 28 * len(frame)))


left, right = st.columns(2)
with left:
    _bar("status", by_status)
    _bar("split", stats["by_split"])
with right:
    _bar("label", stats["by_label"])
    _bar("source", stats["by_source"])
