"""AppTest of the Overview page on a real workspace file."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from curation.auth import User
from curation.checks import run_check
from curation.checks.coverage import Targets, set_targets
from curation.queues import queue_size
from tests.conftest import PROJECT_ROOT, admin


@pytest.fixture
def app_on(monkeypatch):
    def start(store) -> AppTest:
        monkeypatch.setenv("CURATE_DB", str(store.path))
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
        at.session_state["user"] = User("olga", "annotator")
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
    assert [s.value for s in at.subheader] == [
        "Needs attention", "By status", "By split", "By label", "By source",
        "Decisions per person per day, last 14 days"]
    attention = " ".join(t.value for t in at.text)
    assert "5 examples wait for a first decision" in attention
    assert "3 label(s) are under their coverage target: access (2 of 20)" in attention
    assert "'Thin labels' is out of date (the coverage check never ran)" in attention


def test_thin_labels_follow_the_targets_and_the_queue(app_on, seeded_store):
    """Overview counts thin labels against the saved targets, not a fixed number, and
    points to the Thin labels queue once the coverage check has filled it."""
    set_targets(seeded_store, admin("t"), Targets(default_min=2, per_label={"bugs": 3}))
    attention = " ".join(t.value for t in app_on(seeded_store).text)
    assert "1 label(s) are under their coverage target: bugs (2 of 3)" in attention
    assert "out of date" in attention
    run_check(seeded_store, "coverage", user=admin("t"))
    attention = " ".join(t.value for t in app_on(seeded_store).text)
    assert "Their 2 examples are in the Review queue 'Thin labels'" in attention
    assert queue_size(seeded_store, "coverage") == 2


def test_overview_of_an_empty_workspace_says_how_to_start(app_on, empty_store):
    at = app_on(empty_store)
    assert not at.exception
    assert "no examples yet" in at.info[0].value
    assert not at.metric


def test_sign_in_is_required_and_there_are_no_default_accounts(monkeypatch, seeded_store):
    monkeypatch.setenv("CURATE_DB", str(seeded_store.path))
    monkeypatch.delenv("CURATE_SINGLE_USER", raising=False)
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30).run()
    assert at.title[0].value == "Sign in to Curate"
    assert "no accounts yet" in at.warning[0].value
    assert not at.metric


def test_local_sign_in_with_a_created_account(monkeypatch, seeded_store):
    from curation.auth import add_user

    add_user(seeded_store, admin("t"), "rita", "reviewer", password="correct horse")
    monkeypatch.setenv("CURATE_DB", str(seeded_store.path))
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30).run()
    at.text_input[0].input("rita")
    at.text_input[1].input("wrong password")
    at.button[0].click().run()
    assert "wrong password" in at.error[0].value and not at.metric
    at.text_input[1].input("correct horse")
    at.button[0].click().run()
    assert at.session_state["user"] == User("rita", "reviewer", None)
    assert at.title[0].value == "Overview"


def test_single_user_mode_says_so(monkeypatch, seeded_store):
    monkeypatch.setenv("CURATE_DB", str(seeded_store.path))
    monkeypatch.setenv("CURATE_SINGLE_USER", "1")
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30).run()
    assert "Single-user mode" in at.sidebar.warning[0].value
    assert at.session_state["user"].role == "admin"


def test_decisions_per_person_per_day_leave_out_the_import_actor(app_on, seeded_store):
    ids = [e.id for e in seeded_store.find()]
    seeded_store.update(ids[0], base_version=1, actor="a-reviewer-with-a-long-name",
                        status="accepted")
    seeded_store.update(ids[1], base_version=1, actor="a-reviewer-with-a-long-name",
                        status="rejected")
    seeded_store.update(ids[2], base_version=1, actor="cli:root", status="accepted")
    at = app_on(seeded_store)
    assert not at.exception
    [totals] = [d.value for d in at.dataframe if "person" in d.value.columns]
    assert totals.to_dict("records") == [
        {"person": "a-reviewer-with-a-long-name", "decisions": 2}]
