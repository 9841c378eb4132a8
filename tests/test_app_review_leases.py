"""AppTest of the Review page with leases: two people in one queue see different examples, an
example someone else holds is read-only, and an annotator submits for review."""

from __future__ import annotations

from curation import leases, queues
from curation.auth import User
from tests.conftest import shown_id, unescaped
from tests.test_app_review import ANN, RITA, click

ROB = User("rob", "reviewer")


def test_two_reviewers_in_the_same_queue_see_different_examples(review_page, seeded_store):
    first, second, third = seeded_store.find()[:3]
    rita = review_page(seeded_store, RITA)
    rob = review_page(seeded_store, ROB)
    assert shown_id(rita) == first.id
    assert shown_id(rob) == second.id
    assert leases.holder(seeded_store, first.id).holder == "rita"
    assert leases.holder(seeded_store, second.id).holder == "rob"
    click(rita, "rv_accept")  # rita's next skips rob's example
    assert shown_id(rita) == third.id
    assert seeded_store.get(first.id).status == "accepted"
    assert leases.holder(seeded_store, first.id) is None
    rob.run()  # a rerun renews rob's lease; his example stays his
    assert shown_id(rob) == second.id and not rob.warning


def test_an_example_someone_else_holds_is_read_only(review_page, seeded_store):
    first = seeded_store.find()[0]
    rita = review_page(seeded_store, RITA)
    assert shown_id(rita) == first.id
    rob = review_page(seeded_store, ROB, id=str(first.id))  # a link to rita's example
    assert shown_id(rob) == first.id
    [notice] = [unescaped(w.value) for w in rob.warning]
    assert "rita is working on example" in notice and "UTC" in notice
    click(rob, "rv_accept")
    assert seeded_store.get(first.id).status == "pending"  # refused: nothing written
    assert any("rita is working on example" in unescaped(e.value) for e in rob.error)
    assert "rv_reload_theirs" not in [b.key for b in rob.button]  # no conflict dialog


def test_an_annotator_submits_for_review_and_a_reviewer_gets_it(review_page, seeded_store):
    first, second = seeded_store.find()[:2]
    ann = review_page(seeded_store, ANN)
    assert shown_id(ann) == first.id
    assert ann.button(key="rv_accept").disabled
    ann.text_area(key=f"rv_e{first.id}_v1_a0").set_value("a better answer")
    click(ann, "rv_submit")
    after = seeded_store.get(first.id)
    assert after.messages[-1]["content"] == "a better answer" and after.status == "pending"
    assert [e["action"] for e in seeded_store.history(first.id)] == ["create", "submit"]
    assert shown_id(ann) == second.id  # on to the next one
    assert queues.queue_size(seeded_store, leases.SUBMITTED) == 1
    rita = review_page(seeded_store, RITA)
    assert not any(b.key == "rv_submit" for b in rita.button)  # reviewers decide instead
    rita.selectbox(key="rv_queue").set_value(leases.SUBMITTED).run()
    assert shown_id(rita) == first.id
    assert any("submitted for review by ann" in t.value for t in rita.text)
    click(rita, "rv_accept")
    assert seeded_store.get(first.id).status == "accepted"
    assert queues.queue_size(seeded_store, leases.SUBMITTED) == 0


def _overview(monkeypatch, store, user: User):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PROJECT_ROOT

    monkeypatch.setenv("CURATE_DB", str(store.path))
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
    at.session_state["user"] = user
    at.run()
    assert not at.exception, at.exception
    return at


def test_overview_shows_admins_who_holds_what(monkeypatch, seeded_store):
    first = seeded_store.find()[0]
    leases.claim_next(seeded_store, RITA, "pending")
    at = _overview(monkeypatch, seeded_store, User("ada", "admin"))
    [frame] = [d.value for d in at.dataframe if "who" in d.value.columns]
    assert list(frame["who"]) == ["rita"] and list(frame["example"]) == [first.id]
    assert list(frame["queue"]) == ["pending"]
    assert any(s.value == "Who is working on what" for s in at.subheader)
    reviewer = _overview(monkeypatch, seeded_store, ROB)  # not for reviewers
    assert not any(s.value == "Who is working on what" for s in reviewer.subheader)
