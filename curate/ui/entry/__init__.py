"""The script `curate app` hands to Streamlit (`curate_app.py`), alone in its folder."""
