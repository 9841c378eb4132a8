"""AppTest: filters, queue and sort as query parameters (and back), and saved views per person,
on Review and Browse. Cookies cannot be seeded in AppTest: the sign-in cookie is tested in
tests/e2e/test_session_in_browser.py."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from curation.auth import User, add_user
from curation.sessions import end_session, resume_session, save_view, saved_views
from tests.conftest import PROJECT_ROOT, admin, page

RITA = User("rita", "reviewer")


@pytest.fixture
def open_page(monkeypatch):
    """Open page `name` as `user` on `store`, with query parameters."""
    def open_(store, name: str, user: User = RITA, **query) -> AppTest:
        monkeypatch.setenv("CURATE_DB", str(store.path))
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
        at.session_state["user"] = user
        at.query_params.update(query)
        at.switch_page(page(name)).run()
        assert not at.exception, at.exception
        return at

    return open_


def shown_id(at: AppTest) -> int:
    [head] = [s.value for s in at.subheader if s.value.startswith("Example #")]
    return int(head.removeprefix("Example #"))


def test_review_filters_and_queue_are_bound_to_query_parameters(open_page, seeded_store):
    """The browser writes a bound widget's value into the URL (AppTest does not play the
    browser's part: tests/e2e checks the URL itself); here, that each is bound, by its key."""
    at = open_page(seeded_store, "review")
    keys = ["review_search", "review_status", "review_split", "review_label",
            "review_source", "review_tag"]
    widgets = [at.sidebar.text_input(key=keys[0])] + [at.sidebar.multiselect(key=k)
                                                         for k in keys[1:]]
    assert [w.proto.query_param_key for w in widgets] == keys
    assert at.sidebar.toggle(key="review_regex").proto.query_param_key == "review_regex"
    assert at.selectbox(key="review_answer").proto.query_param_key == "review_answer"
    assert at.selectbox(key="rv_queue").proto.query_param_key == "rv_queue"
    at.sidebar.multiselect(key="review_label").set_value(["access"]).run()
    assert seeded_store.get(shown_id(at)).label == "access"
    assert at.query_params["id"] == str(shown_id(at))


def test_review_opens_with_the_filters_and_example_of_its_url(open_page, seeded_store):
    access = [e.id for e in seeded_store.find() if e.label == "access"]
    at = open_page(seeded_store, "review", review_label="access", id=str(access[1]))
    assert at.sidebar.multiselect(key="review_label").value == ["access"]
    assert shown_id(at) == access[1]
    assert any("2** in queue" in m.value for m in at.markdown)


def test_browse_opens_with_the_filters_sort_and_page_of_its_url(open_page, seeded_store):
    at = open_page(seeded_store, "browse")
    for key in ("browse_label", "browse_sort", "browse_page_size", "browse_direction"):
        widget = (at.sidebar.multiselect(key=key) if key == "browse_label"
                  else at.radio(key=key) if key == "browse_direction"
                  else at.selectbox(key=key))
        assert widget.proto.query_param_key == key
    again = open_page(seeded_store, "browse", browse_label=["bugs", "access"],
                      browse_sort="Label", browse_direction="Descending")
    assert again.sidebar.multiselect(key="browse_label").value == ["bugs", "access"]
    assert again.selectbox(key="browse_sort").value == "label"
    assert list(again.dataframe[0].value["Label"]) == ["bugs", "bugs", "access", "access"]


def test_a_saved_view_is_saved_and_opened_per_person(open_page, seeded_store):
    add_user(seeded_store, admin("setup"), "rita", "reviewer", password="long-enough-1")
    at = open_page(seeded_store, "review")
    at.sidebar.multiselect(key="review_label").set_value(["bugs"]).run()
    at.text_input(key="review_view_name").set_value("Bugs").run()
    at.button(key="review_view_save").click().run()
    assert not at.exception, at.exception
    [view] = saved_views(seeded_store, RITA, "review")
    assert (view.name, view.params) == ("Bugs", {"review_label": ["bugs"]})
    assert saved_views(seeded_store, User("ravi", "reviewer")) == []

    save_view(seeded_store, RITA, "review", "Access", {"review_label": ["access"],
                                                       "rv_queue": "all"})
    at = open_page(seeded_store, "review")
    assert at.sidebar.multiselect(key="review_label").value == []
    at.selectbox(key="review_view_pick").set_value("Access").run()
    at.button(key="review_view_open").click().run()
    assert not at.exception, at.exception
    assert at.sidebar.multiselect(key="review_label").value == ["access"]
    assert at.selectbox(key="rv_queue").value == "all"
    assert seeded_store.get(shown_id(at)).label == "access"


def test_sign_in_starts_a_session_and_sign_out_revokes_it(monkeypatch, seeded_store):
    add_user(seeded_store, admin("setup"), "rita", "reviewer", password="long-enough-1")
    monkeypatch.setenv("CURATE_DB", str(seeded_store.path))
    monkeypatch.delenv("CURATE_SINGLE_USER", raising=False)
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30).run()
    at.text_input[0].input("rita")
    at.text_input[1].input("long-enough-1")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Overview"
    sessions = "SELECT user_name, revoked_at IS NULL FROM sessions"
    assert seeded_store.cursor().execute(sessions).fetchall() == [("rita", True)]
    token = at.session_state["curate_session"][0]
    assert resume_session(seeded_store, token) == RITA

    end_session(seeded_store, token)  # signed out in another tab: this one follows
    at.run()
    assert at.title[0].value == "Sign in to Curate"
    assert "signed out" in at.info[0].value
    at.run()  # and stays so: the tab's user went with its session
    assert at.title[0].value == "Sign in to Curate"

    at.text_input[0].input("rita")
    at.text_input[1].input("long-enough-1")
    at.button[0].click().run()
    assert at.title[0].value == "Overview"
    at.sidebar.button[0].click().run()  # Sign out
    assert at.title[0].value == "Sign in to Curate"
    assert seeded_store.cursor().execute(sessions).fetchall() == [("rita", False)] * 2
