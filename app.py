"""Streamlit entry point in a checkout: `streamlit run app.py` (the app itself is `curate.ui`).

`curate app` is the usual way in: it runs the installed `curate/ui/entry/curate_app.py` with
Curate's Streamlit settings (`curate/ui/streamlit_config.toml`, which `.streamlit/config.toml` links to
for this entry), headless, on 127.0.0.1 by default.
"""

from curate.ui.main import run_app

run_app()
