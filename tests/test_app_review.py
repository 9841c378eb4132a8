"""AppTest of the Review page on a real workspace file: queue, edits, decisions, conflicts."""

from __future__ import annotations


import pytest
from streamlit.testing.v1 import AppTest

from curation import import_file, review
from curation.auth import User
from curation.errors import PermissionDenied
from tests.conftest import admin, chat, shown_id, unescaped, write_jsonl

RITA = User("rita", "reviewer")
ANN = User("ann", "annotator")


def turns(at: AppTest, role: str) -> list:
    return [t for t in at.text_area if t.label.endswith(role)]


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    return at


def decisions(store, example_id: int) -> list[dict]:
    return [e for e in store.history(example_id) if e["action"] != "create"]


def test_page_shows_the_first_pending_example(review_page, seeded_store):
    first = seeded_store.find()[0]
    at = review_page(seeded_store)
    assert at.title[0].value == "Review"
    assert shown_id(at) == first.id
    assert [t.value for t in turns(at, "User")] == ["question 0 about billing"]
    assert [t.value for t in turns(at, "Assistant")] == ["answer 0"]
    assert at.text_area(key=f"rv_e{first.id}_v1_sys").value == ""
    texts = [t.value for t in at.text]
    assert "ext-0" in texts and "billing" in texts and "seed" in texts
    assert any("6** in queue" in m.value for m in at.markdown)
    assert at.query_params["id"] == str(first.id)
    assert any("a accept" in c.value and "j next" in c.value for c in at.caption)


def test_label_filter_in_the_sidebar_picks_the_examples_shown(review_page, seeded_store):
    at = review_page(seeded_store)
    at.sidebar.multiselect(key="review_label").set_value(["access"]).run()
    assert seeded_store.get(shown_id(at)).label == "access"
    assert turns(at, "User")[0].value == "question 2 about access"
    assert any("2** in queue" in m.value for m in at.markdown)


def test_accept_saves_one_event_and_moves_to_the_next_example(review_page, seeded_store):
    first, second = seeded_store.find()[:2]
    at = review_page(seeded_store)
    click(at, "rv_accept")
    after = seeded_store.get(first.id)
    assert after.status == "accepted" and after.version == 2
    [event] = decisions(seeded_store, first.id)
    assert event["action"] == "accept" and event["actor"] == "rita"
    assert shown_id(at) == second.id
    assert f"Accepted #{first.id}" in unescaped(at.toast[0].value)
    assert any("5** in queue" in m.value for m in at.markdown)


def test_an_edit_saved_with_the_decision_is_one_event(review_page, seeded_store):
    first = seeded_store.find()[0]
    at = review_page(seeded_store)
    turns(at, "Assistant")[0].input("A much better answer.").run()
    assert any("Unsaved edits to messages" in c.value for c in at.caption)
    click(at, "rv_accept")
    [event] = decisions(seeded_store, first.id)
    assert event["action"] == "accept" and event["version"] == 2
    assert event["after"]["messages"] == chat("question 0 about billing",
                                              "A much better answer.")
    assert event["after"]["status"] == "accepted"
    assert seeded_store.get(first.id).messages[1]["content"] == "A much better answer."


def test_reject_without_a_reason_is_refused_and_changes_nothing(review_page, seeded_store):
    first = seeded_store.find()[0]
    at = review_page(seeded_store)
    click(at, "rv_reject")
    assert "reject needs a reason" in at.error[0].value
    assert seeded_store.get(first.id).version == 1
    assert seeded_store.get(first.id).status == "pending"
    assert decisions(seeded_store, first.id) == []
    assert shown_id(at) == first.id


def test_reject_with_a_reason_stores_status_and_reason(review_page, seeded_store):
    first = seeded_store.find()[0]
    at = review_page(seeded_store)
    at.text_input(key=f"rv_e{first.id}_v1_reason").input("answer is off-topic")
    click(at, "rv_reject")
    assert seeded_store.get(first.id).status == "rejected"
    [event] = decisions(seeded_store, first.id)
    assert event["action"] == "reject" and event["reason"] == "answer is off-topic"
    assert not at.error


def test_needs_work_with_a_comment(review_page, seeded_store):
    first = seeded_store.find()[0]
    at = review_page(seeded_store)
    at.text_input(key=f"rv_e{first.id}_v1_reason").input("cite the refund policy")
    click(at, "rv_needs_work")
    assert seeded_store.get(first.id).status == "needs_work"
    assert decisions(seeded_store, first.id)[0]["reason"] == "cite the refund policy"


def test_annotator_cannot_decide_but_can_save_an_edit(review_page, seeded_store):
    first = seeded_store.find()[0]
    at = review_page(seeded_store, ANN)
    for key in ("rv_accept", "rv_reject", "rv_needs_work"):
        assert at.button(key=key).disabled
    assert any("annotator" in c.value and "need a reviewer" in c.value for c in at.caption)
    with pytest.raises(PermissionDenied):
        review.decide(seeded_store, ANN, first.id, "accept", base_version=1)
    click(at, "rv_save")  # nothing to save yet
    assert "Nothing to save" in unescaped(at.toast[0].value)
    assert seeded_store.get(first.id).version == 1
    turns(at, "Assistant")[0].input("Edited by the annotator.").run()
    click(at, "rv_save")
    after = seeded_store.get(first.id)
    assert after.version == 2 and after.status == "pending"
    [event] = decisions(seeded_store, first.id)
    assert event["action"] == "edit" and event["actor"] == "ann"
    assert shown_id(at) == first.id
    assert turns(at, "Assistant")[0].value == "Edited by the annotator."


def test_conflict_shows_their_change_and_overwrite_keeps_both(review_page, seeded_store):
    first = seeded_store.find()[0]
    at = review_page(seeded_store)
    turns(at, "Assistant")[0].input("My better answer.").run()
    seeded_store.update(first.id, base_version=1, actor="other", label="access",
                        messages=chat("question 0 about billing", "Their answer."))
    click(at, "rv_accept")
    assert "other" in at.warning[0].value
    assert shown_id(at) == first.id  # stayed on the example
    theirs = seeded_store.get(first.id)
    assert theirs.version == 2 and theirs.status == "pending" and theirs.label == "access"
    assert any("+    Their answer." in c.value for c in at.code)
    assert turns(at, "Assistant")[0].value == "My better answer."  # my edit is still there
    click(at, "rv_overwrite")
    final = seeded_store.get(first.id)
    assert final.version == 3 and final.status == "accepted"
    assert final.messages[1]["content"] == "My better answer."
    assert final.label == "access"  # I did not touch the label: their change stays
    assert [e["actor"] for e in decisions(seeded_store, first.id)] == ["other", "rita"]
    assert not at.warning


def test_conflict_reload_theirs_discards_my_edits(review_page, seeded_store):
    first = seeded_store.find()[0]
    at = review_page(seeded_store)
    turns(at, "Assistant")[0].input("My answer.").run()
    seeded_store.update(first.id, base_version=1, actor="other", label="bugs")
    click(at, "rv_accept")
    assert at.warning
    click(at, "rv_reload_theirs")
    assert not at.warning
    assert turns(at, "Assistant")[0].value == "answer 0"
    assert "bugs" in [t.value for t in at.text] and "2" in [t.value for t in at.text]
    assert seeded_store.get(first.id).status == "pending"


def test_edits_survive_moving_away_and_back(review_page, seeded_store):
    first, second = seeded_store.find()[:2]
    at = review_page(seeded_store)
    turns(at, "Assistant")[0].input("Not saved yet.").run()
    click(at, "rv_next")
    assert shown_id(at) == second.id and turns(at, "Assistant")[0].value == "answer 1"
    click(at, "rv_prev")
    assert shown_id(at) == first.id
    assert turns(at, "Assistant")[0].value == "Not saved yet."
    assert seeded_store.get(first.id).version == 1


def test_add_move_and_remove_turn_pairs(review_page, seeded_store):
    first = seeded_store.find()[0]
    at = review_page(seeded_store)
    p = f"rv_e{first.id}_v1"
    click(at, f"{p}_add")
    assert len(turns(at, "User")) == 2
    click(at, "rv_save")
    assert "messages[2].content is empty" in unescaped(at.error[0].value)
    assert seeded_store.get(first.id).version == 1
    at.text_area(key=f"{p}_u1").input("follow-up")
    at.text_area(key=f"{p}_a1").input("follow-up answer")
    at.text_area(key=f"{p}_sys").input("Be brief.")
    click(at, f"{p}_up1")
    assert [t.value for t in turns(at, "User")] == ["follow-up", "question 0 about billing"]
    click(at, "rv_save")
    saved = seeded_store.get(first.id)
    assert [m["content"] for m in saved.messages] == [
        "Be brief.", "follow-up", "follow-up answer", "question 0 about billing", "answer 0"]
    p = f"rv_e{first.id}_v2"
    click(at, f"{p}_del0")
    at.text_area(key=f"{p}_sys").input("")
    click(at, "rv_save")
    assert seeded_store.get(first.id).messages == first.messages


def test_label_and_tags_are_edited(review_page, seeded_store):
    first = seeded_store.find()[0]
    at = review_page(seeded_store)
    p = f"rv_e{first.id}_v1"
    at.selectbox(key=f"{p}_label").set_value(("new", None)).run()
    at.text_input(key=f"{p}_newlabel").input("refunds")
    at.multiselect(key=f"{p}_tags").set_value(["seed", "urgent"])
    click(at, "rv_accept")
    saved = seeded_store.get(first.id)
    assert saved.label == "refunds" and saved.tags == ("seed", "urgent")
    [event] = decisions(seeded_store, first.id)
    assert event["after"]["label"] == "refunds" and "messages" not in event["after"]


def test_history_and_diff_tabs(review_page, seeded_store):
    first = seeded_store.find()[0]
    seeded_store.update(first.id, base_version=1, actor="other", label="access",
                        reason="better fit")
    at = review_page(seeded_store)
    history = next(d.value for d in at.dataframe if "who" in d.value.columns)
    assert list(history["action"]) == ["create", "edit"]
    assert list(history["who"]) == ["seeder", "other"]
    assert history["reason"].iloc[1] == "better fit"
    assert history["before → after"].iloc[1] == "label: billing → access"
    assert any("No changes since import" in i.value for i in at.info)


def test_revert_restores_an_earlier_version(review_page, seeded_store):
    first = seeded_store.find()[0]
    seeded_store.update(first.id, base_version=1, actor="other", label="bugs",
                        messages=chat("question 0 about billing", "worse answer"))
    at = review_page(seeded_store)
    assert any("-    answer 0" in c.value and "+    worse answer" in c.value for c in at.code)
    at.selectbox(key=f"rv_e{first.id}_v2_revert_to").set_value(1).run()
    click(at, "rv_revert")
    reverted = seeded_store.get(first.id)
    assert reverted.version == 3 and reverted.messages == first.messages
    assert reverted.label == "billing"
    assert decisions(seeded_store, first.id)[-1]["action"] == "revert"
    assert decisions(seeded_store, first.id)[-1]["actor"] == "rita"
    assert turns(at, "Assistant")[0].value == "answer 0"


def test_annotator_cannot_revert(review_page, seeded_store):
    first = seeded_store.find()[0]
    seeded_store.update(first.id, base_version=1, actor="other", label="bugs")
    at = review_page(seeded_store, ANN)
    assert at.button(key="rv_revert").disabled


def test_link_opens_an_example_and_next_previous_follow_the_queue(review_page, seeded_store):
    ids = [e.id for e in seeded_store.find()]
    at = review_page(seeded_store, id=str(ids[3]))
    assert shown_id(at) == ids[3]
    click(at, "rv_next")
    assert shown_id(at) == ids[4] and at.query_params["id"] == str(ids[4])
    click(at, "rv_prev")
    click(at, "rv_prev")
    assert shown_id(at) == ids[2]


def test_link_to_an_example_outside_the_queue(review_page, seeded_store):
    ids = [e.id for e in seeded_store.find()]
    seeded_store.update(ids[5], base_version=1, actor="other", status="accepted")
    at = review_page(seeded_store, id=str(ids[5]))
    assert shown_id(at) == ids[5]
    assert at.button(key="rv_prev").disabled
    click(at, "rv_next")
    assert shown_id(at) == ids[0]


def test_empty_queue_and_empty_workspace(review_page, seeded_store, file_store):
    for ex in seeded_store.find():
        seeded_store.update(ex.id, base_version=ex.version, actor="other", status="accepted")
    at = review_page(seeded_store)
    assert "Nothing left in this queue" in at.success[0].value
    assert not [s for s in at.subheader if s.value.startswith("Example #")]
    empty = review_page(file_store("empty.duckdb"))
    assert "Import" in empty.info[0].value


def test_example_data_is_shown_as_text_never_markdown(review_page, empty_store, tmp_path):
    script, image = "<script>alert(1)</script>", "![x](http://example.com/a.png)"
    write_jsonl(tmp_path / "bad.jsonl", [
        {"id": f"<b>{image}</b>", "label": f"{image}<img src=x onerror=alert(1)>",
         "tags": [script], "messages": chat(script, f"<img src=x onerror=alert(1)> {image}")}])
    import_file(empty_store, tmp_path / "bad.jsonl", user=admin("<i>importer</i>"))
    at = review_page(empty_store)
    assert turns(at, "User")[0].value == script
    assert turns(at, "Assistant")[0].value == f"<img src=x onerror=alert(1)> {image}"
    texts = [t.value for t in at.text]
    assert f"<b>{image}</b>" in texts and script in texts
    assert f"{image}<img src=x onerror=alert(1)>" in texts
    rendered = [e.value for kind in ("markdown", "caption", "title", "subheader", "warning",
                                     "error", "info", "success", "toast")
                for e in getattr(at, kind)]
    assert not any("<script>" in v or "](http" in v or "<img" in v or "<i>" in v
                   for v in rendered)


def test_every_registered_queue_opens(review_page, seeded_store):
    """Smoke test over the registry (queues added by the checks included): no queue breaks."""
    at = review_page(seeded_store)
    names = at.selectbox(key="rv_queue").options
    assert "Pending first" in names and "All examples" in names
    for index in range(len(names)):
        at.selectbox(key="rv_queue").select_index(index).run()
        assert not at.exception, (names[index], at.exception)
        assert at.success or at.info or shown_id(at)


def test_a_queue_whose_checks_never_ran_says_so_and_how_to_run_them(review_page, seeded_store):
    at = review_page(seeded_store)
    at.selectbox(key="rv_queue").set_value("coverage").run()
    assert any("Thin labels (never run)" in unescaped(c.value) for c in at.caption)
    assert any("never ran" in unescaped(i.value) and "curate coverage" in unescaped(i.value)
               for i in at.info)
    assert not at.success


def test_every_queue_is_fed_by_its_checks_on_the_demo_data(review_page, tmp_path):
    """After `curate dedupe`, `noise` and `coverage` on the demo workspace, every queue the
    Review page offers holds examples, says which checks fed it and when; the Thin labels
    queue holds exactly the examples of the labels under their target."""
    from click.testing import CliRunner

    from curation import Store
    from curation.checks.coverage import store_gaps
    from curate.cli import main
    from curation.demo import load_demo
    from curation.queues import REGISTRY, queue_size, upcoming

    db = tmp_path / "ws" / "curate.duckdb"
    with Store(db) as store:
        load_demo(store, user=admin("demo"))
    for command in ("dedupe", "noise", "coverage"):
        result = CliRunner().invoke(main, [command, "--db", str(db), "--json"])
        assert result.exit_code == 0, result.output
    from curation.failures import QUEUES  # fed by an evaluation: tests/test_failures.py
    from curation.routing import QUEUES as ROUTED  # fed by routing: tests/test_routing.py
    from curation.leases import SUBMITTED  # fed by annotators' submissions: test_leases.py
    from curation.agreement import ADJUDICATION  # fed by disagreements: test_agreement.py

    fed_by_checks = {name: q for name, q in REGISTRY.items()
                     if name not in (*QUEUES, *ROUTED, ADJUDICATION, SUBMITTED)}
    with Store(db) as store:
        for name, queue in fed_by_checks.items():
            assert queue_size(store, name) > 0, name
        thin = {g.label for g in store_gaps(store) if g.shortfall}
        assert thin == {"security_incident"}
        expected = {e.id for e in store.find() if e.label in thin and e.status != "rejected"}
        queued = {i.example.id for i in upcoming(store, "coverage", limit=10_000)}
        assert queued == expected
        at = review_page(store)
        for name, queue in fed_by_checks.items():
            at.selectbox(key="rv_queue").set_value(name).run()
            assert not at.exception, (name, at.exception)
            assert shown_id(at) in {i.example.id for i in upcoming(store, name, limit=10_000)}
            if queue.checks:
                captions = " ".join(unescaped(c.value) for c in at.caption)
                assert captions.count("last run") == len(queue.checks), (name, captions)
                assert "never run" not in captions


def test_u_undoes_my_last_decision_and_shows_the_example_again(review_page, seeded_store):
    first, second = seeded_store.find()[:2]
    at = review_page(seeded_store)
    assert at.button(key="rv_undo").disabled  # nothing to undo yet
    assert at.button(key="rv_undo").proto.shortcut == "u"
    turns(at, "Assistant")[0].input("A better answer.").run()
    click(at, "rv_accept")
    assert shown_id(at) == second.id
    assert any("1 of 6 done in this queue today" in p.proto.text for p in at.get("progress"))
    click(at, "rv_undo")
    assert shown_id(at) == first.id  # the restored example is shown
    restored = seeded_store.get(first.id)
    assert restored.status == "pending" and restored.version == 3
    assert restored.messages == seeded_store.version(first.id, 1)["messages"]
    assert turns(at, "Assistant")[0].value == "answer 0"
    event = decisions(seeded_store, first.id)[-1]
    assert event["action"] == "revert" and event["actor"] == "rita"
    assert "Undone: accept" in unescaped(at.toast[0].value)
    assert any("0 of 6 done in this queue today" in p.proto.text for p in at.get("progress"))
    assert at.button(key="rv_undo").disabled  # the stack is empty again


def test_undo_after_someone_else_changed_it_is_refused(review_page, seeded_store):
    first = seeded_store.find()[0]
    at = review_page(seeded_store)
    click(at, "rv_accept")
    seeded_store.update(first.id, base_version=2, actor="ravi", label="bugs")
    click(at, "rv_undo")
    assert "Could not undo accept" in unescaped(at.error[0].value)
    assert "ravi" in unescaped(at.error[0].value)
    assert seeded_store.get(first.id).label == "bugs"


def test_label_keys_1_to_9_set_the_label_of_the_draft(review_page, seeded_store):
    first = seeded_store.find()[0]  # billing
    at = review_page(seeded_store)
    keys = [at.button(key=f"rv_label_{n}") for n in (1, 2, 3)]
    assert [b.label for b in keys] == ["access", "billing", "bugs"]  # alphabetical
    assert [b.proto.shortcut for b in keys] == ["1", "2", "3"]
    click(at, "rv_label_3")
    assert at.selectbox(key=f"rv_e{first.id}_v1_label").value == ("label", "bugs")
    assert any("Unsaved edits to label" in c.value for c in at.caption)
    click(at, "rv_save")
    assert seeded_store.get(first.id).label == "bugs"
    assert decisions(seeded_store, first.id)[-1]["after"] == {"label": "bugs"}


def test_after_a_reload_u_undoes_my_latest_decision_from_the_audit(review_page, seeded_store):
    first = seeded_store.find()[0]
    review.decide(seeded_store, RITA, first.id, "reject", base_version=1, reason="off")
    at = review_page(seeded_store)  # a new session: nothing on the page's own stack
    assert not at.button(key="rv_undo").disabled
    assert "reject of #1" in at.button(key="rv_undo").help
    click(at, "rv_undo")
    assert shown_id(at) == first.id
    assert seeded_store.get(first.id).status == "pending"
    assert decisions(seeded_store, first.id)[-1]["action"] == "revert"
