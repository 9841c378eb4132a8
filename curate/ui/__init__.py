"""Streamlit pages of the Curate app; each is a thin layer over the `curation` core."""
