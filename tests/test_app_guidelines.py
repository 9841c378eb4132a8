"""AppTest of the Guidelines page, and of what Review shows of them: the collapsed guidelines,
the chosen label's description, the decided-under-older-guidelines warning and filter, and the
comment thread."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from curation import comments, guidelines, review
from curation.auth import User
from tests.conftest import open_app_page

ADA, RITA, ANN = User("ada", "admin"), User("rita", "reviewer"), User("ann", "annotator")
HOSTILE = ("# House rules\nAnswer **politely**.\n<script>alert('x')</script>\n"
           "![tracker](http://evil.example/pixel.png)\n")


@pytest.fixture
def open_page(monkeypatch):
    """Open page `name` as `user` on `store`, with query parameters."""
    def open_(store, name: str, user: User = ADA, **query: str) -> AppTest:
        return open_app_page(monkeypatch, store, name, user, **query)

    return open_


def markdown_of(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_the_page_renders_the_guidelines_without_html_or_remote_images(open_page,
                                                                      seeded_store):
    guidelines.save(seeded_store, ADA, HOSTILE, note="first")
    at = open_page(seeded_store, "guidelines", RITA)
    assert at.title[0].value == "Guidelines"
    shown = markdown_of(at)
    assert "# House rules" in shown and "Answer **politely**." in shown
    assert "<script" not in shown and "![" not in shown
    assert "&lt;script>" in shown and "[image not shown: tracker]" in shown
    assert any("Version 1" in c.value and "first" in c.value for c in at.caption)
    assert not [t for t in at.text_area if t.key.startswith("gl_edit")]  # reviewers read only


def test_an_admin_saves_a_new_version_and_sees_the_diff(open_page, seeded_store):
    guidelines.save(seeded_store, ADA, "# Rules\nBe precise.\n")
    at = open_page(seeded_store, "guidelines")
    at.text_area(key="gl_edit_v1").set_value("# Rules\nBe precise and kind.\n")
    at.text_input(key="gl_note").set_value("kinder")
    at.button(key="gl_save").click().run()
    assert not at.exception, at.exception
    latest = guidelines.current(seeded_store)
    assert (latest.version, latest.saved_by, latest.note) == (2, "ada", "kinder")
    assert latest.text == "# Rules\nBe precise and kind.\n"
    diff = [c.value for c in at.code if c.language == "diff"]
    assert diff and "-Be precise." in diff[0] and "+Be precise and kind." in diff[0]
    assert at.text_area(key="gl_edit_v2").value == latest.text


def test_a_stale_save_is_refused_and_keeps_the_other_admins_text(open_page, seeded_store):
    guidelines.save(seeded_store, ADA, "v1")
    at = open_page(seeded_store, "guidelines")
    guidelines.save(seeded_store, User("bob", "admin"), "v2 by bob")
    at.text_area(key="gl_edit_v1").set_value("v2 by ada")
    at.button(key="gl_save").click().run()
    assert any("changed by bob" in e.value for e in at.error)
    assert guidelines.current(seeded_store).text == "v2 by bob"
    assert at.text_area(key="gl_edit_v1").value == "v2 by ada"  # the draft is kept
    assert any("saved version 2 since" in w.value for w in at.warning)
    at.button(key="gl_load_latest").click().run()
    assert at.text_area(key="gl_edit_v2").value == "v2 by bob"


def test_an_admin_describes_a_label(open_page, seeded_store):
    guidelines.set_label_description(seeded_store, ADA, "access", "Sign-in problems.",
                                     "I cannot log in")
    at = open_page(seeded_store, "guidelines")
    at.selectbox(key="gl_label").set_value("billing").run()
    at.text_area(key="gl_label_description_billing").set_value("Invoices and charges.")
    at.text_area(key="gl_label_example_billing").set_value("Why was I charged twice?")
    at.button(key="gl_label_save").click().run()
    assert not at.exception, at.exception
    described = guidelines.label_descriptions(seeded_store)["billing"]
    assert (described.description, described.example, described.updated_by) == (
        "Invoices and charges.", "Why was I charged twice?", "ada")
    table = at.dataframe[0].value
    assert list(table["means"]) == ["Sign-in problems.", "Invoices and charges.", ""]
    at.selectbox(key="gl_label").set_value("access").run()  # opens prefilled with its text
    assert at.text_area(key="gl_label_description_access").value == "Sign-in problems."
    assert at.text_area(key="gl_label_example_access").value == "I cannot log in"


def test_review_shows_the_guidelines_collapsed_and_the_labels_meaning(open_page, seeded_store):
    guidelines.save(seeded_store, ADA, HOSTILE)
    guidelines.set_label_description(seeded_store, ADA, "billing", "Invoices and charges.",
                                     "Why was I charged twice?")
    guidelines.set_label_description(seeded_store, ADA, "access", "Sign-in problems.")
    at = open_page(seeded_store, "review", RITA)
    [expander] = [e for e in at.expander if e.label.startswith("Guidelines")]
    assert expander.label == "Guidelines (version 1)"
    inside = "\n".join(m.value for m in expander.markdown)
    assert "# House rules" in inside and "<script" not in inside and "![" not in inside
    texts = [t.value for t in at.text]
    assert "Invoices and charges." in texts and "Why was I charged twice?" in texts
    first = seeded_store.find()[0]
    at.selectbox(key=f"rv_e{first.id}_v1_label").set_value(("label", "access")).run()
    texts = [t.value for t in at.text]
    assert "Sign-in problems." in texts and "Invoices and charges." not in texts


def test_review_warns_about_and_filters_decisions_under_older_guidelines(open_page,
                                                                         seeded_store):
    first, second = seeded_store.find()[:2]
    review.decide(seeded_store, RITA, first.id, "accept", base_version=1)
    guidelines.save(seeded_store, ADA, "v1")
    review.decide(seeded_store, RITA, second.id, "accept", base_version=1)
    at = open_page(seeded_store, "review", RITA, id=str(first.id))
    assert any("under no guidelines" in w.value and "version 1" in w.value
               for w in at.warning)
    at.sidebar.toggle(key="review_older_guidelines").set_value(True).run()
    at.selectbox(key="rv_queue").set_value("all").run()
    assert any("1** in queue" in m.value for m in at.markdown)
    [head] = [s.value for s in at.subheader if s.value.startswith("Example #")]
    assert head == f"Example #{first.id}"


def test_an_annotator_comments_in_review_and_the_thread_is_shown(open_page, seeded_store):
    first = seeded_store.find()[0]
    comments.add_comment(seeded_store, RITA, first.id, "<b>Is</b> this billing?")
    at = open_page(seeded_store, "review", ANN)
    assert any(s.value == "Comments (1)" for s in at.subheader)
    assert "<b>Is</b> this billing?" in [t.value for t in at.text]  # text, not HTML
    at.text_area(key=f"rv_comment_{first.id}").input("Yes: it is about an invoice.")
    at.button(key="rv_add_comment").click().run()
    assert not at.exception, at.exception
    thread = comments.comments(seeded_store, first.id)
    assert [(c.author, c.text) for c in thread][-1] == ("ann", "Yes: it is about an invoice.")
    assert any(s.value == "Comments (2)" for s in at.subheader)
    assert at.text_area(key=f"rv_comment_{first.id}").value == ""


def test_browse_finds_examples_by_comment_text(open_page, seeded_store):
    second = seeded_store.find()[1]
    comments.add_comment(seeded_store, RITA, second.id, "Refund policy unclear")
    at = open_page(seeded_store, "browse", RITA)
    at.sidebar.text_input(key="browse_comment").input("refund").run()
    [table] = at.dataframe
    assert list(table.value["Id"]) == [second.id]


def test_recheck_opens_review_on_the_decisions_under_older_guidelines(open_page, seeded_store):
    first, second = seeded_store.find()[:2]
    review.decide(seeded_store, RITA, first.id, "accept", base_version=1)
    guidelines.save(seeded_store, ADA, "v1")
    review.decide(seeded_store, RITA, second.id, "reject", base_version=1, reason="no")
    at = open_page(seeded_store, "guidelines", RITA)
    assert any("1 decided examples were decided under older guidelines" in w.value
               for w in at.warning)
    at.button(key="gl_recheck").click().run()
    assert not at.exception, at.exception
    assert at.sidebar.toggle(key="review_older_guidelines").value is True
    assert at.selectbox(key="rv_queue").value == "all"
    [head] = [s.value for s in at.subheader if s.value.startswith("Example #")]
    assert head == f"Example #{first.id}"


def test_review_history_names_the_guidelines_version_of_each_event(open_page, seeded_store):
    first = seeded_store.find()[0]
    guidelines.save(seeded_store, ADA, "v1")
    review.decide(seeded_store, RITA, first.id, "accept", base_version=1)
    assert [e["guidelines_version"] for e in seeded_store.history(first.id)] == [None, 1]
    at = open_page(seeded_store, "review", RITA, id=str(first.id))
    [history] = [d.value for d in at.dataframe if "guidelines" in d.value.columns]
    assert list(history["guidelines"]) == ["none", "v1"]
    assert list(history["action"]) == ["create", "accept"]
