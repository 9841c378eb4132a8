"""AppTest of the Overview page on a real workspace file."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import PROJECT_ROOT


@pytest.fixture
def app_on(monkeypatch):
    def start(store) -> AppTest:
        monkeypatch.setenv("CURATE_DB", str(store.path))
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
        return at.run()

    return start


def test_overview_shows_counts_from_the_store(app_on, seeded_store):
    ex = seeded_store.find()[0]
    seeded_store.update(ex.id, base_version=1, actor="rev", status="accepted")
    at = app_on(seeded_store)
    assert not at.exception
    assert at.title[0].value == "Overview"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Examples"] == "6"
    assert metrics["Accepted"] == "1" and metrics["Pending"] == "5"
    assert [s.value for s in at.subheader] == ["By status", "By split", "By label", "By source"]


def test_overview_of_an_empty_workspace_says_how_to_start(app_on, empty_store):
    at = app_on(empty_store)
    assert not at.exception
    assert "no examples yet" in at.info[0].value
    assert not at.metric
