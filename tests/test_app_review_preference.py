"""AppTest of the Review page on preference data: chosen and rejected side by side, both
editable, the one-key swap, and a KTO record's flag."""

from __future__ import annotations

from curation import import_file
from curation.auth import User
from tests.conftest import admin, shown_id, write_jsonl

RITA = User("rita", "reviewer")
USER = {"role": "user", "content": "What colour is the sky?"}
BLUE = {"role": "assistant", "content": "Blue."}
GREEN = {"role": "assistant", "content": "Green."}


def _store(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": [USER], "chosen": [BLUE], "rejected": [GREEN]},
        {"prompt": "Rain?", "completion": "Purple.", "label": False}]), user=admin("t"))
    return store


def test_a_pair_shows_both_answers_side_by_side_and_saves_both(review_page, empty_store,
                                                               tmp_path):
    store = _store(empty_store, tmp_path)
    at = review_page(store)
    assert shown_id(at) == 1
    p = "rv_e1_v1"
    assert at.text_area(key=f"{p}_a0").label.endswith("Chosen answer")
    assert at.text_area(key=f"{p}_a0").value == "Blue."
    assert at.text_area(key=f"{p}_rej").value == "Green."
    assert not [t for t in at.text_area if t.label.endswith("Assistant")]  # replaced
    assert any("preference pair" in m.value for m in at.markdown)  # the header's badge
    assert any("w swap" in c.value for c in at.caption)
    at.text_area(key=f"{p}_rej").input("Green, obviously.").run()
    at.button(key="rv_save").click().run()
    assert not at.exception, at.exception
    ex = store.get(1)
    assert ex.version == 2 and ex.rejected == [{"role": "assistant",
                                                "content": "Green, obviously."}]
    assert ex.messages == [USER, BLUE]
    assert store.history(1)[-1]["after"] == {"rejected": ex.rejected}


def test_w_swaps_the_answers_with_pending_edits_as_one_edit(review_page, empty_store,
                                                            tmp_path):
    store = _store(empty_store, tmp_path)
    at = review_page(store)
    assert at.button(key="rv_swap").proto.shortcut == "w"
    at.text_area(key="rv_e1_v1_a0").input("Blue, by day.").run()
    at.button(key="rv_swap").click().run()
    assert not at.exception, at.exception
    ex = store.get(1)
    assert ex.messages == [USER, GREEN]
    assert ex.rejected == [{"role": "assistant", "content": "Blue, by day."}]
    event = store.history(1)[-1]
    assert (event["action"], event["reason"], event["version"]) == (
        "edit", "swapped the chosen and the rejected answer", 2)
    assert at.text_area(key="rv_e1_v2_a0").value == "Green."  # the page shows the new version
    assert at.text_area(key="rv_e1_v2_rej").value == "Blue, by day."


def test_a_kto_record_shows_its_flag_and_saves_a_change(review_page, empty_store, tmp_path):
    store = _store(empty_store, tmp_path)
    at = review_page(store, id="2")
    assert shown_id(at) == 2
    flag = at.toggle(key="rv_e2_v1_desirable")
    assert flag.value is False
    flag.set_value(True).run()
    at.button(key="rv_save").click().run()
    assert not at.exception, at.exception
    assert store.get(2).desirable is True and store.get(2).version == 2


def test_overview_counts_pairs_and_turns_edit_pairs_off(monkeypatch, empty_store, tmp_path):
    from tests.conftest import open_app_page

    store = _store(empty_store, tmp_path)
    at = open_app_page(monkeypatch, store, "overview", RITA)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Preference pairs"] == "1" and metrics["KTO records"] == "1"
    assert metrics["From SME edits"] == "0"
    toggle = at.toggle(key="ov_edit_pairs")
    assert toggle.value is True
    toggle.set_value(False).run()
    assert not at.exception, at.exception
    assert store.setting("preference_pairs_from_edits") == "off"
    annotator = open_app_page(monkeypatch, store, "overview", User("ann", "annotator"))
    assert not [t for t in annotator.toggle if t.key == "ov_edit_pairs"]
    assert any("Pairs from SME edits are off" in c.value for c in annotator.caption)


def test_saving_an_edit_of_a_draft_records_a_pair_the_page_names(review_page, empty_store):
    draft = empty_store.add([{"role": "user", "content": "Reset my password"},
                             {"role": "assistant", "content": "Contact support."}],
                            actor="t", source="draft")
    at = review_page(empty_store, id=str(draft.id))
    at.text_area(key=f"rv_e{draft.id}_v1_a0").input("Use 'Forgot password'.").run()
    at.button(key="rv_save").click().run()
    assert not at.exception, at.exception
    [pair] = [e for e in empty_store.find() if e.kind == "preference"]
    assert pair.rejected == [{"role": "assistant", "content": "Contact support."}]
    assert pair.messages[-1]["content"] == "Use 'Forgot password'."
    assert any(f"#{pair.id}" in c.value and "Preference pairs recorded" in c.value
               for c in at.caption)
