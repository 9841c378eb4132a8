"""What every page shares: the process-wide store and small rendering helpers."""

from __future__ import annotations

import streamlit as st

from curation import Store, default_db_path


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    return Store(path)


def get_store() -> Store:
    """The one Store of this server process (each session thread gets its own cursor)."""
    return _open_store(str(default_db_path().resolve()))
