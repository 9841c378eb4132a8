"""AppTest of the Browse page on real workspace files.

AppTest cannot click rows of an `st.dataframe`; it can write the table's selection state
into `at.session_state` under the table's key (which the page publishes as
`browse_table_key`), which is what the browser sends when rows are ticked.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from curation import ExampleFilter, import_file
from curation.auth import User
from curation.errors import PermissionDenied
from curation.review import bulk
from tests.conftest import PROJECT_ROOT, admin, chat, page, unescaped, write_jsonl

LABELS = ("zeta", "alpha", "mid")


@pytest.fixture
def browse(monkeypatch):
    def start(store, role: str = "admin", name: str = "ada") -> AppTest:
        monkeypatch.setenv("CURATE_DB", str(store.path))
        monkeypatch.delenv("CURATE_SINGLE_USER", raising=False)
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
        at.session_state["user"] = User(name, role)
        # The page's url path is its file name, so it can be opened on the first run.
        at.switch_page(page("browse")).run()
        assert not at.exception
        assert at.title[0].value == "Browse"
        return at

    return start


@pytest.fixture
def sixty_store(file_store, tmp_path):
    """60 pending examples, ids 1-60, labels cycling zeta, alpha, mid."""
    store = file_store("sixty.duckdb")
    records = [{"id": f"e{i}", "messages": chat(f"question {i}", f"answer {i}"),
                "label": LABELS[i % 3]} for i in range(60)]
    import_file(store, write_jsonl(tmp_path / "sixty.jsonl", records), user=admin("seeder"))
    return store


def ids(at: AppTest) -> list[int]:
    return at.dataframe[0].value["Id"].tolist()


def rows_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Rows "))


def select_rows(at: AppTest, positions: list[int]) -> AppTest:
    key = at.session_state["browse_table_key"]
    at.session_state[key] = {"selection": {"rows": positions, "columns": [], "cells": []}}
    return at.run()


def test_first_page_count_and_pagination(browse, sixty_store):
    at = browse(sixty_store)
    assert rows_caption(at) == "Rows 1–25 of 60"
    assert ids(at) == list(range(1, 26))
    frame = at.dataframe[0].value
    assert list(frame.columns) == ["Id", "External id", "Status", "Split", "Label", "Tags",
                                   "First user turn", "Assistant turn", "Version",
                                   "Updated by", "Updated at"]
    assert frame.iloc[0]["First user turn"] == "question 0"
    assert frame.iloc[0]["Assistant turn"] == "answer 0"
    assert at.pagination[0].num_pages == 3

    at.pagination[0].select(3).run()
    assert rows_caption(at) == "Rows 51–60 of 60"
    assert ids(at) == list(range(51, 61))

    at.selectbox(key="browse_page_size").set_value(50).run()
    assert at.pagination[0].num_pages == 2
    assert rows_caption(at) == "Rows 1–50 of 60"  # a new page size starts at page 1
    assert len(ids(at)) == 50


def test_filters_narrow_the_table(browse, seeded_store):
    at = browse(seeded_store)
    assert len(ids(at)) == 6
    assert not at.pagination  # one page: no pagination control
    at.multiselect(key="browse_label").set_value(["billing"]).run()
    assert rows_caption(at) == "Rows 1–2 of 2"
    assert set(at.dataframe[0].value["Label"]) == {"billing"}
    at.text_input(key="browse_search").set_value("question 1 ").run()
    assert at.dataframe[0].value["External id"].tolist() == ["ext-1"]
    at.multiselect(key="browse_split").set_value(["eval"]).run()
    assert not at.dataframe
    assert "No example matches these filters" in at.info[0].value


def test_sorting_by_label_changes_the_first_row(browse, sixty_store):
    at = browse(sixty_store)
    assert at.dataframe[0].value.iloc[0]["Label"] == "zeta"
    at.selectbox(key="browse_sort").set_value("label").run()
    first = at.dataframe[0].value.iloc[0]
    assert (first["Label"], first["Id"]) == ("alpha", 2)
    at.radio(key="browse_direction").set_value("Descending").run()
    assert at.dataframe[0].value.iloc[0]["Label"] == "zeta"
    at.selectbox(key="browse_sort").set_value("id").run()
    assert ids(at)[0] == 60


def test_bulk_set_label_changes_the_selected_examples_with_one_event_each(browse,
                                                                          seeded_store):
    at = browse(seeded_store)
    at.multiselect(key="browse_label").set_value(["billing"]).run()
    billing = ids(at)
    at = select_rows(at, [0, 1])
    at.selectbox(key="browse_action_live").set_value("set_label").run()
    apply = at.button(key="browse_apply")
    assert apply.disabled  # no label chosen yet
    at.selectbox(key="browse_value_label").set_value("bugs").run()
    at.button(key="browse_apply").click().run()
    assert not at.exception
    assert unescaped(at.success[0].value) == "Set label: 2 changed."
    for example_id in billing:
        example = seeded_store.get(example_id)
        assert (example.label, example.version) == ("bugs", 2)
        events = seeded_store.history(example_id)
        assert [e["action"] for e in events] == ["create", "edit"]
        assert events[-1]["before"] == {"label": "billing"}
        assert events[-1]["after"] == {"label": "bugs"}
        assert events[-1]["actor"] == "ada"
    others = [e for e in seeded_store.find() if e.id not in billing]
    assert len(others) == 4 and all(e.version == 1 for e in others)
    # 'billing' is no longer a label to filter by; the table is new, nothing is selected.
    assert "billing" not in at.multiselect(key="browse_label").options
    assert any(c.value.startswith("0 of 6 rows on this page selected") for c in at.caption)


def test_select_all_and_reject_needs_a_reason(browse, seeded_store):
    at = browse(seeded_store)
    at.checkbox(key="browse_select_all").check().run()
    at.selectbox(key="browse_action_live").set_value("reject").run()
    assert at.button(key="browse_apply").disabled
    assert any("needs a reason" in c.value for c in at.caption)
    at.text_input(key="browse_reason").set_value("off-topic").run()
    assert at.button(key="browse_apply").label == "Reject: 6 selected"
    at.button(key="browse_apply").click().run()
    assert unescaped(at.success[0].value) == "Reject: 6 changed."
    assert {e.status for e in seeded_store.find()} == {"rejected"}
    assert {seeded_store.history(e.id)[-1]["reason"] for e in seeded_store.find()} == {
        "off-topic"}


def test_delete_then_show_deleted_then_restore(browse, seeded_store):
    at = browse(seeded_store)
    target = ids(at)[2]
    at = select_rows(at, [2])
    at.selectbox(key="browse_action_live").set_value("delete").run()
    at.button(key="browse_apply").click().run()
    assert unescaped(at.success[0].value) == "Delete (move to the bin): 1 changed."
    assert seeded_store.get(target).deleted
    assert target not in ids(at) and len(ids(at)) == 5

    at.toggle(key="browse_deleted").set_value(True).run()
    assert ids(at) == [target]
    assert at.selectbox(key="browse_action_bin").options == ["Restore from the bin"]
    at = select_rows(at, [0])
    at.button(key="browse_apply").click().run()
    assert unescaped(at.success[0].value) == "Restore from the bin: 1 changed."
    assert not seeded_store.get(target).deleted
    assert [e["action"] for e in seeded_store.history(target)] == ["create", "delete",
                                                                  "restore"]
    assert "The bin is empty" in at.info[0].value

    at.toggle(key="browse_deleted").set_value(False).run()
    assert target in ids(at)


def test_an_annotator_cannot_delete_or_decide(browse, seeded_store):
    at = browse(seeded_store, role="annotator", name="ann")
    at = select_rows(at, [0])
    at.selectbox(key="browse_action_live").set_value("delete").run()
    assert at.button(key="browse_apply").disabled
    assert any("Your role (annotator) cannot do this" in c.value and "admin role" in c.value
               for c in at.caption)
    at.selectbox(key="browse_action_live").set_value("accept").run()
    assert at.button(key="browse_apply").disabled
    assert any("needs the reviewer role" in c.value for c in at.caption)
    at.selectbox(key="browse_action_live").set_value("move_split").run()
    assert not at.button(key="browse_apply").disabled  # editing is an annotator's job

    target = ids(at)[0]
    with pytest.raises(PermissionDenied):
        bulk(seeded_store, User("ann", "annotator"), [target], "delete")
    assert not seeded_store.get(target).deleted
    assert seeded_store.get(target).version == 1


def test_open_in_review_switches_page_with_the_id(browse, seeded_store):
    at = browse(seeded_store)
    target = ids(at)[3]
    at = select_rows(at, [3])
    picker = next(s for s in at.selectbox if s.label == "Example")
    assert picker.value == target
    at.button(key="browse_open").click().run()
    assert at.query_params.get("id") == str(target)
    assert "Browse" not in [t.value for t in at.title]


def test_an_empty_workspace_says_so(browse, empty_store):
    at = browse(empty_store)
    assert not at.dataframe
    assert "no examples yet" in at.info[0].value


def test_bulk_on_all_matching_rows_asks_with_the_count_then_undo_the_batch(browse,
                                                                          sixty_store):
    at = browse(sixty_store)
    at.sidebar.multiselect(key="browse_label").set_value(["alpha"]).run()
    assert rows_caption(at) == "Rows 1–20 of 20"
    at.selectbox(key="browse_page_size").set_value(25).run()
    at.sidebar.multiselect(key="browse_label").set_value(["alpha", "zeta"]).run()
    assert rows_caption(at) == "Rows 1–25 of 40"  # more than one page
    at.radio(key="browse_scope").set_value("matching").run()
    at.selectbox(key="browse_action_live").set_value("accept").run()
    assert at.button(key="browse_apply").label == "Accept: all 40 rows matching…"
    at.button(key="browse_apply").click().run()
    assert not at.exception
    warning = unescaped(at.warning[0].value)
    assert "all 40 rows" in warning and "label = ['alpha', 'zeta']" in warning
    assert sixty_store.count(ExampleFilter(status=("accepted",))) == 0  # not yet
    assert at.button(key="browse_confirm_apply").label == "Confirm: accept 40 rows"
    at.button(key="browse_confirm_apply").click().run()
    assert unescaped(at.success[0].value) == "Accept: 40 changed."
    assert sixty_store.count(ExampleFilter(status=("accepted",))) == 40
    assert sixty_store.count(ExampleFilter(status=("accepted",), label=("mid",))) == 0
    assert any("Your last bulk action: Accept (all 40 matching" in unescaped(c.value)
               for c in at.caption)
    at.button(key="browse_undo_batch").click().run()
    assert not at.exception
    assert unescaped(at.success[0].value).startswith("Undone: 40 restored")
    assert sixty_store.count(ExampleFilter(status=("accepted",))) == 0
    events = sixty_store.history(1)
    assert [e["action"] for e in events] == ["create", "accept", "revert"]
    assert "browse_undo_batch" not in [b.key for b in at.button]  # undone: nothing to offer


def test_cancel_of_all_matching_changes_nothing(browse, seeded_store):
    at = browse(seeded_store)
    at.radio(key="browse_scope").set_value("matching").run()
    at.selectbox(key="browse_action_live").set_value("accept").run()
    at.button(key="browse_apply").click().run()
    at.button(key="browse_confirm_cancel").click().run()
    assert not at.warning
    assert seeded_store.count(ExampleFilter(status=("accepted",))) == 0
