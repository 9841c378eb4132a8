"""Preference data: pairs and KTO records at import, stored with both answers, edited,
swapped, reverted, snapshotted, exported for TRL and OpenAI, checked like any example, and
recorded from SME edits of a model's answer (`curation.preference`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import pytest

from curate.workspace import Workspace
from curation import InvalidExample, InvalidValue, User, import_file
from curation import suggestions as SG
from curation.exporter import write_snapshot
from curation.formats import RecordError, detect_format, to_draft
from curation.preference import EDIT_PAIR_SOURCE, PreferencePair, preference_pairs, record_edit_pair
from curation.query import ExampleFilter
from curation.undo import undo_change
from tests.conftest import admin, chat, write_jsonl

RITA = User("rita", "reviewer")
USER = {"role": "user", "content": "What colour is the sky?"}
BLUE = {"role": "assistant", "content": "Blue."}
GREEN = {"role": "assistant", "content": "Green."}

# Every preference shape, each the same pair (built from the formats' public docs).
SHAPES = {
    "trl_explicit_conversational": {"prompt": [USER], "chosen": [BLUE], "rejected": [GREEN]},
    "trl_explicit_standard": {"prompt": USER["content"], "chosen": "Blue.",
                              "rejected": "Green."},
    "trl_implicit_conversational": {"chosen": [USER, BLUE], "rejected": [USER, GREEN]},
    "openai_dpo": {"input": {"messages": [USER], "tools": [], "parallel_tool_calls": True},
                   "preferred_output": [BLUE], "non_preferred_output": [GREEN]},
    "llamafactory_sharegpt": {"conversations": [{"from": "human", "value": USER["content"]}],
                              "chosen": {"from": "gpt", "value": "Blue."},
                              "rejected": {"from": "gpt", "value": "Green."}},
    "llamafactory_alpaca": {"instruction": USER["content"], "input": "", "chosen": "Blue.",
                            "rejected": "Green."},
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_preference_shape_is_read_as_the_same_pair(shape):
    record = SHAPES[shape]
    assert detect_format(record) == "preference"
    draft = to_draft(record)
    assert (draft.kind, draft.messages, draft.rejected) == ("preference", [USER, BLUE], [GREEN])


def test_trl_implicit_text_is_split_where_the_two_first_differ():
    draft = to_draft({"chosen": "The sky is blue.", "rejected": "The sky is green."})
    assert draft.messages == [{"role": "user", "content": "The sky is"},
                              {"role": "assistant", "content": " blue."}]
    assert draft.rejected == [{"role": "assistant", "content": " green."}]


def test_a_system_turn_and_earlier_turns_stay_in_the_prompt():
    system = {"role": "system", "content": "Be brief."}
    draft = to_draft({"prompt": [system, USER, BLUE, USER], "chosen": [BLUE],
                      "rejected": [GREEN]})
    assert draft.messages == [system, USER, BLUE, USER, BLUE] and draft.rejected == [GREEN]


@pytest.mark.parametrize("record,kind_flag", [
    ({"prompt": "Is it raining?", "completion": "Yes, bring a coat.", "label": True}, True),
    ({"prompt": [USER], "completion": [GREEN], "label": False}, False),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
      "kto_tag": False}, False),
])
def test_kto_records_are_their_own_kind_with_the_flag(record, kind_flag):
    assert detect_format(record) == "kto"
    draft = to_draft(record)
    assert (draft.kind, draft.desirable, draft.rejected, draft.label) == (
        "kto", kind_flag, None, None)
    assert draft.messages[-1]["role"] == "assistant"


@pytest.mark.parametrize("record,code,field", [
    ({"prompt": [USER], "chosen": [BLUE], "rejected": [BLUE]}, "missing_content", "rejected"),
    ({"prompt": [USER], "chosen": [BLUE], "rejected": []}, "missing_content", "prompt+rejected"),
    ({"prompt": [USER], "chosen": [BLUE], "rejected": "Green."}, "wrong_type", "rejected"),
    ({"chosen": [USER, BLUE], "rejected": [GREEN]}, "missing_content", "chosen"),
    ({"prompt": [USER], "chosen": [BLUE, BLUE], "rejected": [GREEN]}, "invalid_turn_order",
     None),
    ({"input": {"messages": [USER]}, "preferred_output": [BLUE]}, "missing_field",
     "non_preferred_output"),
    ({"prompt": "q", "completion": "a", "kto_tag": "yes", "conversations": []},
     "missing_messages_list", "conversations"),
])
def test_a_broken_pair_is_refused_with_a_code_and_where(record, code, field):
    with pytest.raises(RecordError) as err:
        to_draft(record)
    assert err.value.code == code
    if field is not None:
        assert err.value.field == field


def test_an_explicit_format_reads_only_its_shape():
    assert to_draft(SHAPES["openai_dpo"], "preference").kind == "preference"
    for key, record in (("prompt", {"messages": chat("q", "a"), "label": True}),
                        ("completion", {"prompt": "q", "label": True})):
        with pytest.raises(RecordError) as err:  # as alpaca and prompt_completion say it
            to_draft(record, "kto")
        assert (err.value.code, err.value.field) == ("missing_field", key)
    with pytest.raises(RecordError):
        to_draft({"messages": chat("q", "a")}, "preference")


# --- storage -----------------------------------------------------------------------------------

def _import(store, tmp_path, records, name="pairs.jsonl", **options):
    return import_file(store, write_jsonl(tmp_path / name, records), user=admin("t"), **options)


def test_import_stores_the_chosen_conversation_and_the_rejected_answer(empty_store, tmp_path):
    report = _import(empty_store, tmp_path, [
        SHAPES["trl_explicit_conversational"],
        {"prompt": [USER], "chosen": [BLUE], "rejected": [{"role": "assistant",
                                                           "content": "Red."}]},
        {"prompt": "Rain?", "completion": "Yes", "label": True},
        {"messages": chat("q", "a")}])
    assert report.imported == 4 and not report.rejected
    pair, other, kto, sft = empty_store.find()
    assert (pair.kind, pair.messages, pair.rejected) == ("preference", [USER, BLUE], [GREEN])
    assert other.rejected == [{"role": "assistant", "content": "Red."}]  # not a repeat
    assert (kto.kind, kto.desirable, kto.rejected) == ("kto", True, None)
    assert (sft.kind, sft.rejected, sft.desirable) == ("sft", None, None)
    assert pair.content_hash != other.content_hash  # the rejected answer is part of the pair
    again = _import(empty_store, tmp_path, [SHAPES["openai_dpo"]], name="same.jsonl")
    assert again.imported == 0 and again.already_in_store == [1]


def test_an_edit_of_the_rejected_answer_is_versioned_snapshotted_and_reverted(empty_store,
                                                                             tmp_path):
    _import(empty_store, tmp_path, [SHAPES["trl_explicit_conversational"]])
    ex = empty_store.find()[0]
    before = empty_store.snapshot(ExampleFilter(), actor="t")
    red = [{"role": "assistant", "content": "Red."}]
    after = Workspace(empty_store, RITA).edit(ex.id, base_version=1, rejected=red)
    assert (after.version, after.rejected, after.messages) == (2, red, [USER, BLUE])
    assert empty_store.history(ex.id)[-1]["after"] == {"rejected": red}
    assert [v["rejected"] for v in empty_store.versions(ex.id)] == [[GREEN], red]
    now = empty_store.snapshot(ExampleFilter(), actor="t")
    assert now.id != before.id
    assert preference_pairs(empty_store, before.id) == [
        PreferencePair(ex.id, (USER,), (BLUE,), (GREEN,), "train")]
    assert preference_pairs(empty_store, now.id)[0].rejected == tuple(red)
    reverted = Workspace(empty_store, RITA).revert(ex.id, 1, base_version=2)
    assert reverted.rejected == [GREEN] and reverted.version == 3
    undone = undo_change(empty_store, RITA, ex.id, 3)
    assert undone.rejected == red


def test_a_rejected_answer_is_checked_like_a_conversation(empty_store, tmp_path):
    _import(empty_store, tmp_path, [SHAPES["trl_explicit_conversational"],
                                    {"messages": chat("q", "a")}])
    pair, sft = empty_store.find()
    ws = Workspace(empty_store, RITA)
    with pytest.raises(InvalidExample):
        ws.edit(pair.id, base_version=1, rejected=[{"role": "assistant", "content": "  "}])
    with pytest.raises(InvalidExample):
        ws.edit(pair.id, base_version=1, rejected=[USER])
    with pytest.raises(InvalidValue, match="only a preference pair"):
        ws.edit(sft.id, base_version=1, rejected=[GREEN])
    assert empty_store.get(pair.id).version == 1 and empty_store.get(sft.id).version == 1


def test_swap_exchanges_the_answers_in_one_audited_edit(empty_store, tmp_path):
    _import(empty_store, tmp_path, [SHAPES["trl_explicit_conversational"],
                                    {"messages": chat("q", "a")}])
    pair, sft = empty_store.find()
    ws = Workspace(empty_store, RITA)
    swapped = ws.swap(pair.id, base_version=1)
    assert (swapped.messages, swapped.rejected, swapped.version) == ([USER, GREEN], [BLUE], 2)
    event = empty_store.history(pair.id)[-1]
    assert (event["action"], event["actor"], event["reason"]) == (
        "edit", "rita", "swapped the chosen and the rejected answer")
    edited = ws.swap(pair.id, base_version=2,
                     messages=[USER, {"role": "assistant", "content": "Grey."}])
    assert edited.messages == [USER, BLUE]  # pending edits are swapped along
    assert edited.rejected == [{"role": "assistant", "content": "Grey."}]
    with pytest.raises(InvalidValue, match="not a preference pair"):
        ws.swap(sft.id, base_version=1)


# --- export ------------------------------------------------------------------------------------

@pytest.fixture
def mixed(empty_store, tmp_path):
    """Two pairs (one with a system turn), a KTO record and an SFT example, all accepted."""
    system = {"role": "system", "content": "Be brief."}
    _import(empty_store, tmp_path, [
        {**SHAPES["trl_explicit_conversational"], "label": "sky", "id": "p1"},
        {"prompt": [system, {"role": "user", "content": "2+2?"}],
         "chosen": [{"role": "assistant", "content": "4"}],
         "rejected": [{"role": "assistant", "content": "5"}], "tags": ["math"]},
        {"prompt": "Rain?", "completion": "Yes", "label": True},
        {"messages": chat("q", "a")}], status="accepted")
    return empty_store


@pytest.mark.parametrize("fmt", ["trl_preference", "openai_dpo"])
def test_preference_exports_import_back_to_the_same_pairs(mixed, file_store, tmp_path, fmt):
    snap = mixed.snapshot(ExampleFilter(), actor="t")
    out = tmp_path / f"{fmt}.jsonl"
    result = write_snapshot(mixed, snap.id, out, user=admin("t"), fmt=fmt)
    assert result.count == 2 and result.left_out["not_preference"] == 2
    assert "2 examples of the snapshot are not a preference pair (SFT or KTO)" in \
        result.left_out_note
    manifest = orjson.loads(result.manifest_path.read_bytes())
    assert manifest["left_out"]["not_preference"] == 2
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    if fmt == "trl_preference":
        assert lines[0]["prompt"] == [USER] and lines[0]["chosen"] == [BLUE]
        assert lines[0]["rejected"] == [GREEN]
    else:
        assert lines[0]["input"] == {"messages": [USER]}
        assert lines[0]["preferred_output"] == [BLUE]
        assert lines[0]["non_preferred_output"] == [GREEN]
    other = file_store("back.duckdb")
    assert import_file(other, out, user=admin("t")).imported == 2
    pairs = lambda store: [(p.prompt, p.chosen, p.rejected) for p in preference_pairs(
        store, store.snapshot(ExampleFilter(), actor="t").id)]
    assert pairs(other) == pairs(mixed)
    assert [(e.label, e.tags, e.external_id) for e in other.find()] == [
        ("sky", (), "p1"), (None, ("math",), None)]


@pytest.mark.parametrize("fmt", ["openai", "alpaca", "prompt_completion", "bedrock", "vertex"])
def test_an_sft_export_never_writes_an_answer_flagged_undesirable(mixed, tmp_path, fmt):
    _import(mixed, tmp_path, [{"prompt": "Hail?", "completion": "Purple.", "label": False}],
            name="more.jsonl",
            status="accepted")
    snap = mixed.snapshot(ExampleFilter(), actor="t")
    out = tmp_path / f"{fmt}.jsonl"
    result = write_snapshot(mixed, snap.id, out, user=admin("t"), fmt=fmt)
    assert result.count == 4 and result.left_out["undesirable"] == 1  # 2 pairs, KTO yes, SFT
    assert result.left_out_note == ("1 KTO record of the snapshot is flagged undesirable and "
                                    "was left out: an SFT file teaches every answer it holds")
    assert orjson.loads(result.manifest_path.read_bytes())["left_out"]["undesirable"] == 1
    text = out.read_text()
    assert "Purple." not in text and "Hail?" not in text
    assert "Rain?" in text and "Blue." in text and "Green." not in text  # pair: chosen only


def test_evaluation_takes_no_undesirable_answer_as_a_reference(empty_store, tmp_path):
    from training.eval import eval_rows_from_store

    _import(empty_store, tmp_path, [
        {"prompt": "Hail?", "completion": "Purple.", "label": False},
        {"prompt": "Rain?", "completion": "Yes", "label": True},
        {"messages": chat("q", "a")}], status="accepted", split="eval")
    rows = eval_rows_from_store(empty_store)
    assert [r["messages"][-1]["content"] for r in rows] == ["Yes", "a"]


def test_the_trl_preference_file_loads_in_datasets_and_trl(mixed, tmp_path):
    import datasets
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from training.models import cached_default_model

    snap = mixed.snapshot(ExampleFilter(), actor="t")
    out = tmp_path / "trl.jsonl"
    write_snapshot(mixed, snap.id, out, user=admin("t"), fmt="trl_preference")
    data = datasets.load_dataset("json", data_files=str(out), split="train",
                                 cache_dir=str(tmp_path / "hf"))
    assert data.num_rows == 2 and {"prompt", "chosen", "rejected"} <= set(data.column_names)
    row = data[1]
    assert is_conversational(row)
    # the packaged SmolLM2's tokenizer, offline ($CURATE_MODEL_CACHE, as training loads it)
    tokenizer = AutoTokenizer.from_pretrained(
        cached_default_model(Path(os.environ.get("CURATE_MODEL_CACHE") or tmp_path / "m")))
    applied = maybe_apply_chat_template(
        {k: row[k] for k in ("prompt", "chosen", "rejected")}, tokenizer)
    assert applied["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert applied["prompt"].endswith("<|im_start|>assistant\n")
    assert applied["chosen"].startswith("4") and applied["rejected"].startswith("5")


def test_openai_dpo_file_loads_in_datasets(mixed, tmp_path):
    import datasets

    snap = mixed.snapshot(ExampleFilter(), actor="t")
    out = tmp_path / "dpo.jsonl"
    write_snapshot(mixed, snap.id, out, user=admin("t"), fmt="openai_dpo")
    data = datasets.load_dataset("json", data_files=str(out), split="train",
                                 cache_dir=str(tmp_path / "hf"))
    assert data[0]["input"]["messages"] == [USER]
    assert data[0]["non_preferred_output"] == [GREEN]


# --- checks ------------------------------------------------------------------------------------

def test_duplicates_and_leakage_see_preference_examples(empty_store, tmp_path):
    from curation.checks import run_check
    from curation.leakage import find_leakage

    pair = {"prompt": [{"role": "user", "content": "How do I reset my router password?"}],
            "chosen": [{"role": "assistant", "content": "Hold the reset button for 10 s."}],
            "rejected": [{"role": "assistant", "content": "Buy a new router."}]}
    _import(empty_store, tmp_path, [pair, {"messages": [
        {"role": "user", "content": "How do I reset my router password?"},
        {"role": "assistant", "content": "Hold the reset button for 10 s."}]}],
        status="accepted")
    _import(empty_store, tmp_path, [{**pair, "rejected": [{"role": "assistant",
                                                           "content": "No idea."}]}],
            name="eval.jsonl", split="eval")
    result = run_check(empty_store, "exact_duplicates", user=admin("t"))
    flagged = {f.example_id for f in result.findings if f.is_issue}
    assert {1, 2} <= flagged  # the pair's conversation is the SFT example's
    leaks = find_leakage(empty_store, admin("t"))
    assert any(leak["eval_id"] == 3 and leak["method"] == "exact" for leak in leaks)


# --- pairs from SME edits ----------------------------------------------------------------------

def _answer(text):
    return {"role": "assistant", "content": text}


def test_editing_a_drafts_answer_records_a_pair(empty_store):
    ws = Workspace(empty_store, RITA)
    draft = ws.add_example(chat("Reset my password", "Contact support."), label="access",
                           source="draft")
    assert ws.edit_pairs_enabled()
    edited = ws.edit(draft.id, base_version=1,
                     messages=chat("Reset my password", "Use 'Forgot password' on sign-in."))
    (pair_id,) = ws.edit_pairs_of(draft.id)
    pair = empty_store.get(pair_id)
    assert (pair.kind, pair.status, pair.source, pair.label, pair.split) == (
        "preference", "pending", EDIT_PAIR_SOURCE, "access", "train")
    assert pair.messages == edited.messages
    assert pair.rejected == [_answer("Contact support.")]
    assert "pair from the edit of example #1 (version 2)" in \
        empty_store.history(pair_id)[0]["reason"]
    # a second edit changes the SME's own text: no pair (its rejected side is not a model's)
    ws.edit(draft.id, base_version=2, messages=chat("Reset my password", "Use the link."))
    assert ws.edit_pairs_of(draft.id) == [pair_id]


def test_a_decision_with_an_edit_of_a_model_output_import_records_a_pair(empty_store,
                                                                        tmp_path):
    _import(empty_store, tmp_path, [{"messages": chat("Where is my order?", "No idea.")},
                                    ], model_output=True)
    _import(empty_store, tmp_path, [{"messages": chat("Refund?", "Never.")}], name="human.jsonl")
    model, human = empty_store.find()
    assert "model-output" in model.tags
    ws = Workspace(empty_store, RITA)
    ws.decide(model.id, "accept", base_version=1,
              messages=chat("Where is my order?", "Track it under Orders."))
    ws.decide(human.id, "accept", base_version=1, messages=chat("Refund?", "Within 30 days."))
    (pair_id,) = ws.edit_pairs_of(model.id)
    assert empty_store.get(pair_id).rejected == [_answer("No idea.")]
    assert ws.edit_pairs_of(human.id) == []  # a person's answer: no pair
    assert empty_store.counts_by_kind() == {"preference": 1, "sft": 2}


def test_editing_an_accepted_suggestion_records_a_pair(empty_store):
    ws = Workspace(empty_store, RITA)
    ex = empty_store.add([{"role": "user", "content": "Card declined, why?"},
                          _answer("?")], actor="t")
    SG.record_suggestions(empty_store, admin("t"), [SG.Suggestion(
        ex.id, 1, "run-1", "Your bank blocked it.", 0.8, SG.TEXT_METHOD)])
    accepted = ws.accept_suggestion(ex.id, base_version=1)
    assert accepted.messages[-1] == _answer("Your bank blocked it.")
    assert ws.edit_pairs_of(ex.id) == []  # accepting is not an edit of the model's answer
    ws.edit(ex.id, base_version=accepted.version,
            messages=[accepted.messages[0], _answer("The card has expired.")])
    (pair_id,) = ws.edit_pairs_of(ex.id)
    assert empty_store.get(pair_id).rejected == [_answer("Your bank blocked it.")]


def test_the_workspace_setting_turns_edit_pairs_off(empty_store):
    ws = Workspace(empty_store, RITA)
    assert ws.set_edit_pairs(False) is False and not ws.edit_pairs_enabled()
    draft = ws.add_example(chat("q", "model text"), label=None, source="draft")
    ws.edit(draft.id, base_version=1, messages=chat("q", "SME text"))
    assert ws.edit_pairs_of(draft.id) == [] and empty_store.count() == 1
    with pytest.raises(Exception, match="reviewer"):
        Workspace(empty_store, User("ann", "annotator")).set_edit_pairs(True)
    ws.set_edit_pairs(True)
    assert ws.edit_pairs_enabled()


def test_a_pair_is_not_recorded_when_the_prompt_changed_too(empty_store):
    draft = empty_store.add(chat("q", "model text"), actor="t", source="draft")
    after = empty_store.update(draft.id, base_version=1, actor="rita",
                               messages=chat("another q", "SME text"))
    assert record_edit_pair(empty_store, RITA, draft, after) is None


_KILLED_EDIT = """
import os, signal, sys
from curation import Store, User
from curation.review import edit

store = Store(sys.argv[1])
write = store.insert_new

def write_then_die(*args, **kwargs):  # the pair is written, the edit's COMMIT not yet run
    write(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

store.insert_new = write_then_die
edit(store, User("rita", "reviewer"), 1, base_version=1,
     messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "SME text"}])
"""


def test_an_edit_and_its_pair_are_stored_together_or_not_at_all(tmp_path):
    """kill -9 after the pair is written but before the edit's transaction commits: the
    workspace holds neither; the same edit then stores both."""
    import subprocess
    import sys

    from curation import Store

    path = tmp_path / "ws" / "curate.duckdb"
    store = Store(path)
    draft = store.add(chat("q", "model text"), actor="t", source="draft")
    store.close()
    killed = subprocess.run([sys.executable, "-c", _KILLED_EDIT, str(path)],
                            cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert killed.returncode == -9
    store = Store(path)
    try:
        assert store.get(draft.id).version == 1 and store.count() == 1
        ws = Workspace(store, RITA)
        ws.edit(draft.id, base_version=1, messages=chat("q", "SME text"))
        (pair_id,) = ws.edit_pairs_of(draft.id)
        assert store.get(pair_id).rejected == [_answer("model text")]
    finally:
        store.close()


# --- the CLI -----------------------------------------------------------------------------------

def test_cli_imports_model_output_sets_edit_pairs_and_exports_pairs(tmp_path):
    from click.testing import CliRunner

    from curate.cli import main
    from curation import Store

    db = tmp_path / "ws" / "curate.duckdb"

    def invoke(*args):
        result = CliRunner().invoke(main, [*args, "--db", str(db)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    answers = write_jsonl(tmp_path / "model.jsonl", [{"messages": chat("q", "model a")}])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [SHAPES["trl_explicit_standard"]])
    invoke("init")
    invoke("import", str(answers), "--model-output", "--status", "accepted")
    invoke("import", str(pairs), "--status", "accepted")
    assert "Pairs from SME edits are on." in invoke("edit-pairs")
    assert "Pairs from SME edits are off." in invoke("edit-pairs", "off")
    assert json.loads(invoke("edit-pairs", "--json")) == {"edit_pairs": False}
    assert json.loads(invoke("edit-pairs", "on", "--json")) == {"edit_pairs": True}
    assert json.loads(invoke("edit-pairs", "off", "--json")) == {"edit_pairs": False}
    out = invoke("export", str(tmp_path / "dpo.jsonl"), "--format", "openai_dpo")
    assert "1 example of the snapshot is not a preference pair (SFT or KTO) and was left out" \
        in out
    assert "wrote 1 examples" in out
    with Store(db) as store:
        assert store.setting("preference_pairs_from_edits") == "off"
        assert "model-output" in store.get(1).tags and "model-output" not in store.get(2).tags
