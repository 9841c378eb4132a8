"""AppTest of overlap for agreement on the Review page (blind votes, the adjudication view)
and the Overview page (the admin's setting, the kappa figures), on a real workspace file."""

from __future__ import annotations

import pytest
from sklearn.metrics import cohen_kappa_score
from streamlit.testing.v1 import AppTest

from curation import ExampleFilter, review
from curation.agreement import overlap, set_overlap
from curation.auth import User
from tests.conftest import PROJECT_ROOT, page, unescaped
from tests.conftest import shown_id
from tests.test_app_review import click

ADA = User("ada", "admin")
RITA, BOB = User("rita", "reviewer"), User("bob", "reviewer")


def page_text(at: AppTest) -> str:
    return " ".join(unescaped(e.value) for kind in ("text", "caption", "markdown")
                    for e in getattr(at, kind))


def vote(store, user, example_id, decision, label=None, reason=None):
    changes = {"label": label} if label else {}
    return review.decide(store, user, example_id, decision,
                         base_version=store.get(example_id).version, reason=reason, **changes)


@pytest.fixture
def overlap2(seeded_store):
    set_overlap(seeded_store, ADA, 2)
    return seeded_store


def test_a_decision_is_a_blind_vote_and_the_next_reviewer_still_gets_the_example(
        review_page, overlap2):
    store = overlap2
    first, second = store.find(ExampleFilter(split=("train",)))[:2]
    at = review_page(store, RITA)
    assert shown_id(at) == first.id
    assert "needs 2 independent decisions" in page_text(at)
    click(at, "rv_accept")
    assert store.get(first.id).status == "pending"  # nothing changed: a vote
    assert f"Recorded your decision on #{first.id} (1 of 2)" in unescaped(at.toast[0].value)
    assert shown_id(at) == second.id
    bob = review_page(store, BOB)
    assert shown_id(bob) == first.id  # still served to a reviewer who has not decided
    assert "1 of 2 independent decisions recorded" in page_text(bob)
    assert "rita" not in page_text(bob)  # blind: not who, not what
    click(bob, "rv_accept")
    assert store.get(first.id).status == "accepted"
    assert f"Accepted #{first.id}" in unescaped(bob.toast[0].value)


def test_adjudication_view_shows_the_decisions_side_by_side_and_settles(
        review_page, overlap2):
    store = overlap2
    first = store.find(ExampleFilter(split=("train",)))[0]
    vote(store, RITA, first.id, "accept", label="refunds", reason="asks for money back")
    vote(store, BOB, first.id, "reject", reason="off topic")
    reviewer = review_page(store, RITA, queue="adjudication")
    assert not [s for s in reviewer.subheader if s.value.startswith("Example #")]
    at = review_page(store, ADA, queue="adjudication")
    assert shown_id(at) == first.id
    panel = [t.value for t in at.text]
    for shown in ("rita", "bob", "accept", "reject", "refunds", "asks for money back",
                  "off topic"):
        assert shown in panel
    assert "2 independent decisions disagree" in page_text(at)
    at.text_input(key=f"rv_e{first.id}_v1_reason").input("refund request").run()
    click(at, "rv_accept")
    after = store.get(first.id)
    assert after.status == "accepted" and after.updated_by == "ada"
    [event] = [e for e in store.history(first.id) if e["action"] != "create"]
    assert event["reason"].startswith("adjudicated (rita: accept · refunds; bob: reject")
    assert event["reason"].endswith(": refund request")
    assert "Nothing left in this queue" in " ".join(s.value for s in at.success)


def test_a_reviewer_opening_a_disputed_example_cannot_settle_it(review_page, overlap2):
    store = overlap2
    first = store.find(ExampleFilter(split=("train",)))[0]
    vote(store, RITA, first.id, "accept")
    vote(store, BOB, first.id, "reject", reason="no")
    at = review_page(store, User("carl", "reviewer"), id=str(first.id))
    assert shown_id(at) == first.id
    assert "In adjudication" in page_text(at) and "rita" not in page_text(at)
    click(at, "rv_accept")
    assert "'adjudicate' needs the admin role" in unescaped(" ".join(e.value for e in at.error))
    assert store.get(first.id).status == "pending"


@pytest.fixture
def overview(monkeypatch):
    def start(store, user: User) -> AppTest:
        monkeypatch.setenv("CURATE_DB", str(store.path))
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
        at.session_state["user"] = user
        at.switch_page(page("overview")).run()
        assert not at.exception, at.exception
        return at

    return start


def test_overview_admin_sets_overlap_and_sees_kappa(overview, seeded_store):
    store = seeded_store
    at = overview(store, ADA)
    at.number_input(key="ov_overlap").set_value(2).run()
    at.button(key="ov_overlap_save").click().run()
    assert not at.exception, at.exception
    assert overlap(store) == 2
    assert "now needs 2 independent decision" in " ".join(s.value for s in at.success)
    ids = [e.id for e in store.find(ExampleFilter(split=("train",)))]
    given = {"rita": ["billing", "billing", "access", "access"],
             "bob": ["billing", "access", "access", "access"]}
    for user in (RITA, BOB):
        for example_id, label in zip(ids, given[user.name]):
            vote(store, user, example_id, "accept", label=label)
    at = overview(store, ADA)
    [pairs] = [t.value for t in at.table if "Cohen's kappa" in t.value.columns]
    expected = cohen_kappa_score([f"accept · {x}" for x in given["bob"]],
                                 [f"accept · {x}" for x in given["rita"]])
    assert pairs.iloc[0]["Cohen's kappa"] == f"{expected:.3f}"
    assert (pairs.iloc[0]["reviewer"], pairs.iloc[0]["with"]) == ("bob", "rita")
    assert {m.label: m.value for m in at.metric}["In adjudication"] == "1"


def test_overview_hides_agreement_from_non_admins_without_overlap(overview, seeded_store):
    at = overview(seeded_store, RITA)
    assert not [s for s in at.subheader if s.value == "Agreement"]
    set_overlap(seeded_store, ADA, 2)
    at = overview(seeded_store, RITA)
    assert [s for s in at.subheader if s.value == "Agreement"]
    assert "needs 2 independent decisions (an admin sets this)" in page_text(at)
