"""Curate's Streamlit entry point: page navigation over the workspace named by $CURATE_DB.

Run it with `curate app` (or `bash scripts/dev.sh app` for the demo). Pages live in `ui/`
and stay thin: they gather input, call `curation`, and render the result.
"""

import streamlit as st

st.set_page_config(page_title="Curate", page_icon=":material/fact_check:", layout="wide")

pages = {
    "Workspace": [
        st.Page("ui/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    ],
}
st.navigation(pages).run()
