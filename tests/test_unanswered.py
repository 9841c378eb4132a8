"""Unanswered prompts: `curate import --unanswered` brings in records without an answer as
pending examples that need one; they are never exported, trained on or evaluated until
someone answers them, and Review, Browse and Overview find them."""

from __future__ import annotations

import csv
import json

import orjson
import pytest
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

from curate import Workspace
from curate.cli import main
from curation import ExampleFilter, Store, export_jsonl, import_file
from curation.auth import User
from curation.checks import run_check
from curation.errors import InvalidExample, InvalidValue
from curation.formats import UNANSWERED_HINT, parse_mapping
from curation.leakage import DEFAULT_TRAIN_FILTER
from curation.queues import queue_size, upcoming
from curation.review import bulk, decide, edit, revert
from tests.conftest import PROJECT_ROOT, chat, page, write_jsonl

ADA = User("ada", "admin")
U = {"role": "user", "content": "Where is my new card?"}

# one answered record and one of each shape of unanswered record
RECORDS = [
    {"messages": chat("Hi", "Hello! How can I help?"), "label": "greeting"},
    {"messages": [U], "label": "card_arrival"},  # chat with only a user turn
    {"instruction": "Reset my PIN", "output": ""},  # Alpaca with an empty output
    {"prompt": "Close my account"},  # prompt without completion
    {"messages": [{"role": "system", "content": "Be brief."}, *chat("a", "b"),
                  {"role": "user", "content": "and then?"}]},  # multi-turn, last user waits
]


def _csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.fixture
def mixed(empty_store, tmp_path) -> Store:
    """The RECORDS imported with --unanswered and status accepted."""
    import_file(empty_store, write_jsonl(tmp_path / "in.jsonl", RECORDS), user=ADA,
                status="accepted", unanswered=True)
    return empty_store


# --- import ---------------------------------------------------------------------------------

def test_without_the_flag_each_is_rejected_and_the_message_names_the_flag(empty_store,
                                                                        tmp_path):
    report = import_file(empty_store, write_jsonl(tmp_path / "in.jsonl", RECORDS), user=ADA)
    assert report.imported == 1 and empty_store.count() == 1
    got = {(e.line, e.code) for e in report.rejected}
    assert got == {(2, "example_missing_assistant_message"), (3, "missing_content"),
                   (4, "missing_field"), (5, "invalid_turn_order")}
    for err in report.rejected:
        assert err.message.endswith(UNANSWERED_HINT) and "--unanswered" in err.message
    assert report.rejected[0].message.startswith("`messages` has no assistant turn")


def test_a_broken_record_gets_no_hint(empty_store, tmp_path):
    """The hint is for records the flag would keep; an empty prompt stays a plain error."""
    report = import_file(empty_store, write_jsonl(tmp_path / "in.jsonl", [
        {"instruction": "  ", "output": ""}]), user=ADA)
    assert report.rejected[0].code == "missing_content"
    assert "--unanswered" not in report.rejected[0].message


def test_with_the_flag_they_come_in_as_pending_and_need_an_answer(mixed):
    examples = mixed.find()
    assert [e.needs_answer for e in examples] == [False, True, True, True, True]
    assert [e.status for e in examples] == ["accepted", "pending", "pending", "pending",
                                            "pending"]
    assert examples[1].messages == [U] and examples[1].label == "card_arrival"
    assert examples[2].messages == [{"role": "user", "content": "Reset my PIN"}]
    assert examples[4].messages[-1] == {"role": "user", "content": "and then?"}
    history = mixed.history(examples[2].id)
    assert [e["action"] for e in history] == ["create"] and history[0]["after"]["status"] \
        == "pending"
    assert mixed.count(ExampleFilter(needs_answer=True)) == 4
    assert mixed.count(ExampleFilter(needs_answer=False)) == 1


def test_report_counts_them_and_a_second_import_adds_nothing(mixed, tmp_path):
    report = import_file(mixed, write_jsonl(tmp_path / "in.jsonl", RECORDS), user=ADA,
                         unanswered=True)
    assert report.imported == 0 and report.needs_answer == 0
    assert len(report.already_in_store) == 5
    fresh = import_file(mixed, write_jsonl(tmp_path / "more.jsonl", [
        {"prompt": "Another question", "completion": None}]), user=ADA, unanswered=True)
    assert fresh.needs_answer == 1 and fresh.to_dict()["needs_answer"] == 1
    assert "1 of them need an answer" in fresh.summary()


def test_csv_mapping_with_a_prompt_and_no_response_column(empty_store, tmp_path):
    path = _csv(tmp_path / "q.csv", [["text", "category"], ["Card not here", "card"],
                                     ["Lost PIN", "pin"]])
    with pytest.raises(InvalidValue, match="--unanswered"):
        parse_mapping("prompt=text,label=category")
    mapping = parse_mapping("prompt=text,label=category", unanswered=True)
    report = import_file(empty_store, path, mapping=mapping, user=ADA, unanswered=True)
    assert report.imported == 2 and report.needs_answer == 2
    assert [(e.messages, e.label) for e in empty_store.find()] == [
        ([{"role": "user", "content": "Card not here"}], "card"),
        ([{"role": "user", "content": "Lost PIN"}], "pin")]


def test_csv_mapping_with_an_empty_response_cell(empty_store, tmp_path):
    path = _csv(tmp_path / "q.csv", [["q", "a"], ["Answered", "Yes."], ["Open", ""]])
    mapping = parse_mapping("prompt=q,response=a")
    plain = import_file(empty_store, path, mapping=mapping, user=ADA)
    assert plain.imported == 1 and plain.rejected[0].code == "missing_content"
    assert plain.rejected[0].message == "column `a` (response) is empty" + UNANSWERED_HINT
    kept = import_file(empty_store, path, mapping=mapping, user=ADA, unanswered=True)
    assert kept.imported == 1 and kept.needs_answer == 1 and len(kept.already_in_store) == 1


def test_a_large_file_parsed_by_workers_keeps_the_marks(empty_store, tmp_path, monkeypatch):
    """The parallel JSONL path carries which lines need an answer as the serial path does."""
    import curation.importer as importer

    monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(importer, "BATCH_ROWS", 3)
    monkeypatch.setenv("CURATE_IMPORT_WORKERS", "2")
    records = [{"messages": [{"role": "user", "content": f"q{i}"}]} if i % 2 else
               {"messages": chat(f"q{i}", f"a{i}")} for i in range(10)]
    report = import_file(empty_store, write_jsonl(tmp_path / "big.jsonl", records), user=ADA,
                         status="accepted", unanswered=True)
    assert report.imported == 10 and report.needs_answer == 5
    assert {e.status for e in empty_store.find(ExampleFilter(needs_answer=True))} \
        == {"pending"}
    assert empty_store.count(ExampleFilter(status=("accepted",))) == 5


# --- never exported, trained on or evaluated ----------------------------------------------

def test_export_leaves_them_out_and_the_manifest_says_so(mixed, tmp_path):
    result = export_jsonl(mixed, tmp_path / "out.jsonl", user=ADA,
                          where=ExampleFilter(status=("accepted", "pending")))
    lines = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert result.count == 1 and [r["curate"]["label"] for r in lines] == ["greeting"]
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["left_out"] == {"needs_answer": 4}
    assert manifest["left_out_note"].startswith("4 examples matching the filters need an "
                                                "answer and were left out")
    clean = export_jsonl(mixed, tmp_path / "acc.jsonl", user=ADA)
    assert clean.left_out == {"needs_answer": 0} and clean.left_out_note is None
    with pytest.raises(InvalidValue, match="answered examples only"):
        mixed.snapshot(ExampleFilter(needs_answer=True), actor="ada")


def test_an_accepted_unanswered_example_is_not_in_the_training_snapshot(mixed):
    """Even accepted by some other path (a revert), a prompt without an answer is never in
    the train snapshot, nor counted as a train example."""
    target = mixed.find(ExampleFilter(needs_answer=True))[0]
    answered = decide(mixed, ADA, target.id, "accept", base_version=target.version,
                      messages=[U, {"role": "assistant", "content": "On its way."}])
    back = revert(mixed, ADA, target.id, 1, base_version=answered.version)
    assert back.needs_answer and back.status == "accepted"
    assert mixed.example_ids(DEFAULT_TRAIN_FILTER) == [mixed.find()[0].id]
    snap = mixed.snapshot(DEFAULT_TRAIN_FILTER, actor="ada")
    assert [r["id"] for r in mixed.snapshot_rows(snap.id)] == [mixed.find()[0].id]
    assert mixed.left_out(snap.id) == {"needs_answer": 1}


def test_launch_writes_a_train_file_without_them(mixed, model_cache, monkeypatch):
    """The real launcher: its train.jsonl and manifest leave the unanswered example out."""
    from training.config import TrainConfig
    from training.launcher import cancel, launch

    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    target = mixed.find(ExampleFilter(needs_answer=True))[0]
    answered = decide(mixed, ADA, target.id, "accept", base_version=target.version,
                      messages=[U, {"role": "assistant", "content": "On its way."}])
    revert(mixed, ADA, target.id, 1, base_version=answered.version)  # accepted, unanswered
    run = launch(mixed, ADA, TrainConfig(r=2, max_seq_length=64, batch_size=2, epochs=1))
    try:
        rows = [orjson.loads(x) for x in (run.dir / "train.jsonl").read_bytes().splitlines()]
        assert [r["curate"]["label"] for r in rows] == ["greeting"] and run.manifest.examples == 1
        manifest = json.loads((run.dir / "train.manifest.json").read_text())
        assert manifest["left_out"] == {"needs_answer": 1}
    finally:
        cancel(ADA, run.dir, timeout=10)


def test_eval_rows_and_answer_reading_checks_skip_them(empty_store, tmp_path):
    from training.eval import eval_rows_from_store

    rows = [{"messages": chat(f"question {i} about cards", f"answer {i}")} for i in range(12)]
    import_file(empty_store, write_jsonl(tmp_path / "e.jsonl", rows + [
        {"messages": [{"role": "user", "content": "eval prompt without answer"}]}]),
        user=ADA, split="eval", unanswered=True)
    unanswered = empty_store.find(ExampleFilter(needs_answer=True))[0]
    assert unanswered.id not in [r["id"] for r in eval_rows_from_store(empty_store)]
    assert len(eval_rows_from_store(empty_store)) == 12
    for name in ("answer_mismatch", "leakage"):
        result = run_check(empty_store, name, user=ADA)
        assert unanswered.id not in {f.example_id for f in result.findings}, name
    assert run_check(empty_store, "answer_mismatch", user=ADA).summary["examples"] == 12
    # a check about prompts still sees it
    exact = run_check(empty_store, "exact_duplicates", user=ADA)
    assert unanswered.id in {f.example_id for f in exact.findings}


# --- answering in Review --------------------------------------------------------------------

def test_answering_one_makes_it_exportable(mixed, tmp_path):
    target = mixed.find(ExampleFilter(needs_answer=True))[0]
    with pytest.raises(InvalidValue, match="needs an answer before it can be accepted"):
        decide(mixed, ADA, target.id, "accept", base_version=target.version)
    fixed = edit(mixed, User("ann", "annotator"), target.id, base_version=target.version,
                 messages=[{"role": "user", "content": "Where is my new card, please?"}])
    assert fixed.needs_answer and fixed.version == 2  # the prompt may be edited unanswered
    answered = edit(mixed, User("ann", "annotator"), target.id, base_version=2,
                    messages=[*fixed.messages, {"role": "assistant", "content": "In 3 days."}])
    assert not answered.needs_answer and answered.version == 3
    assert [e["action"] for e in mixed.history(target.id)] == ["create", "edit", "edit"]
    with pytest.raises(InvalidExample, match="no assistant turn"):  # an answer stays
        edit(mixed, ADA, target.id, base_version=3, messages=fixed.messages)
    decide(mixed, ADA, target.id, "accept", base_version=3)
    result = export_jsonl(mixed, tmp_path / "out.jsonl", user=ADA)
    assert result.count == 2 and result.left_out == {"needs_answer": 0}


def test_bulk_accept_skips_them_and_says_why(mixed):
    ids = mixed.example_ids()
    result = bulk(mixed, ADA, ids, "accept")
    assert sorted(result.needs_answer) == ids[1:] and result.unchanged == ids[:1]
    assert "4 not accepted (they need an answer first)" in result.summary()
    assert mixed.count(ExampleFilter(status=("accepted",))) == 1


# --- finding them ---------------------------------------------------------------------------

def test_needs_answer_queue_and_overview(mixed):
    assert queue_size(mixed, "needs_answer") == 4
    first = upcoming(mixed, "needs_answer", limit=1)[0]
    assert first.example.needs_answer and first.reason == "needs an answer"
    assert queue_size(mixed, "pending") == 4  # still in the normal queues
    ws = Workspace(mixed, ADA)
    assert ws.needs_attention()[0].message.startswith("4 prompts need an answer")
    assert ws.needs_attention()[0].page == "review"


def test_cli_import_unanswered_json_and_export(tmp_path):
    db = tmp_path / "ws" / "c.duckdb"
    path = _csv(tmp_path / "q.csv", [["text"], ["Where is my card?"], ["PIN locked"]])
    runner = CliRunner()
    refused = runner.invoke(main, ["import", str(path), "--db", str(db), "--map", "prompt=text"])
    assert refused.exit_code == 1 and "--unanswered" in refused.output
    done = runner.invoke(main, ["import", str(path), "--db", str(db), "--map", "prompt=text",
                                "--unanswered", "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["imported"] == 2 and data["needs_answer"] == 2
    out = runner.invoke(main, ["export", str(tmp_path / "o.jsonl"), "--db", str(db),
                               "--status", "pending", "--json"])
    exported = json.loads(out.stdout)
    assert exported["count"] == 0 and exported["left_out"] == {"needs_answer": 2}
    stats = json.loads(runner.invoke(main, ["stats", "--db", str(db), "--json"]).stdout)
    assert stats["needs_attention"][0].startswith("2 prompts need an answer")


# --- the pages ------------------------------------------------------------------------------

def _app(store, monkeypatch, name: str) -> AppTest:
    monkeypatch.setenv("CURATE_DB", str(store.path))
    monkeypatch.delenv("CURATE_SINGLE_USER", raising=False)
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
    at.session_state["user"] = ADA
    at.switch_page(page(name)).run()
    assert not at.exception
    return at


def test_import_page_checkbox(empty_store, monkeypatch):
    at = _app(empty_store, monkeypatch, "import_export")
    body = b"text,category\nWhere is my card?,card\nPIN locked,pin\n"
    at.file_uploader[0].set_value(("q.csv", body, "text/csv")).run()
    for target in ("prompt", "label"):
        assert at.selectbox(key=next(s.key for s in at.selectbox
                                     if s.key and s.key.startswith(f"ie_map_{target}")))
    response = next(s for s in at.selectbox if s.key and s.key.startswith("ie_map_response"))
    response.set_value(None).run()
    assert at.button(key="ie_import").disabled
    assert any("Prompts without an answer" in c.value for c in at.caption)
    box = next(c for c in at.checkbox if c.label == "Prompts without an answer")
    box.check().run()
    assert not at.button(key="ie_import").disabled
    at.button(key="ie_import").click().run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Imported"] == "2"
    assert any("2 imported prompts need an answer" in i.value for i in at.info)
    assert empty_store.count(ExampleFilter(needs_answer=True)) == 2


def test_review_shows_the_marker_and_answering_saves_one_edit(mixed, monkeypatch):
    at = _app(mixed, monkeypatch, "review")
    at.selectbox(key="rv_queue").set_value("needs_answer").run()
    assert not at.exception
    assert any(m.value.endswith("needs an answer]") for m in at.markdown)  # the badge
    target = mixed.find(ExampleFilter(needs_answer=True))[0]
    answer = next(t for t in at.text_area if t.label.endswith("Assistant"))
    assert answer.value == "" and "Needs an answer" in (answer.placeholder or "")
    answer.input("It ships in 3 days.").run()
    at.button(key="rv_accept").click().run()
    assert not at.exception
    after = mixed.get(target.id)
    assert not after.needs_answer and after.status == "accepted" and after.version == 2
    assert after.messages[-1] == {"role": "assistant", "content": "It ships in 3 days."}


def test_browse_filter_and_marker(mixed, monkeypatch):
    at = _app(mixed, monkeypatch, "browse")
    at.sidebar.selectbox(key="browse_answer").set_value("needs answer").run()
    shown = next(d.value for d in at.dataframe if "Assistant turn" in d.value.columns)
    assert len(shown) == 4 and set(shown["Assistant turn"]) == {"(needs an answer)"}


def test_review_reject_without_answering_keeps_the_prompt_as_it_is(mixed, monkeypatch):
    """The empty answer box of an unanswered prompt is not sent as an (invalid) empty turn."""
    at = _app(mixed, monkeypatch, "review")
    at.selectbox(key="rv_queue").set_value("needs_answer").run()
    target = mixed.find(ExampleFilter(needs_answer=True))[0]
    at.text_input(key=f"rv_e{target.id}_v1_reason").input("off topic").run()
    at.button(key="rv_reject").click().run()
    assert not at.exception and not at.error
    after = mixed.get(target.id)
    assert after.status == "rejected" and after.messages == target.messages


def test_import_file_checks_a_mapping_given_directly(empty_store, tmp_path):
    """A library caller's mapping without a response column is refused (it used to end in a
    KeyError on the first row), unless unanswered."""
    path = _csv(tmp_path / "q.csv", [["text"], ["Where is my card?"]])
    with pytest.raises(InvalidValue, match="response=COLUMN"):
        import_file(empty_store, path, mapping={"prompt": "text"}, user=ADA)
    assert empty_store.count() == 0
    with pytest.raises(InvalidValue, match="prompt=COLUMN"):
        import_file(empty_store, path, mapping={"label": "text"}, user=ADA, unanswered=True)
