"""OpenAI's chat extras, LLaMA-Factory's glaive ShareGPT and multimodal rows: imported
losslessly (or refused with their code), exported unchanged, searchable, trained on with
`weight: 0` turns masked, and chat-template tokens in the text found by a check.

Every record here is written from the formats' public documentation (OpenAI's fine-tuning
guide and API reference, LLaMA-Factory's data/README), not copied from a file.
"""

from __future__ import annotations

import random

import orjson
import pytest

from curation.auth import User
from curation.checks.special_tokens import BASE_MODEL_TOKENS, SPECIAL_TOKENS_CHECK
from curation.exporter import export_jsonl
from curation.formats import RecordError, content_hash, search_text, to_draft, to_openai
from curation.importer import import_file
from curation.query import ExampleFilter
from curation.text import first_turn, turns_text
from tests.conftest import write_jsonl

ADMIN = User("ada", "admin")

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def tool_call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# The shapes OpenAI documents as valid fine-tuning lines, one per extra (and all together).
OPENAI_SHAPES = {
    "weight": {"messages": [
        {"role": "system", "content": "Marv is a sarcastic chatbot."},
        {"role": "user", "content": "What's the capital of France?"},
        {"role": "assistant", "content": "Paris", "weight": 0},
        {"role": "user", "content": "Can you be more sarcastic?"},
        {"role": "assistant", "content": "Paris, as if everyone doesn't know that already.",
         "weight": 1}]},
    "name": {"messages": [
        {"role": "user", "content": "Hi, I am Bob.", "name": "bob"},
        {"role": "assistant", "content": "Hello Bob.", "name": "helper"}]},
    "developer": {"messages": [
        {"role": "developer", "content": "Answer in one word."},
        {"role": "user", "content": "Colour of the sky?"},
        {"role": "assistant", "content": "Blue."}]},
    "tool_calls": {"messages": [
        {"role": "user", "content": "What is the weather in San Francisco?"},
        {"role": "assistant", "tool_calls": [
            tool_call("call_id", "get_weather", '{"city": "San Francisco"}')]},
        {"role": "tool", "tool_call_id": "call_id", "content": '{"temp_c": 18}'},
        {"role": "assistant", "content": "It is 18 °C in San Francisco."}],
        "tools": [WEATHER_TOOL]},
    "ends_with_tool_call": {"messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None,
         "tool_calls": [tool_call("c9", "get_weather", '{"city": "Oslo"}')]}],
        "tools": [WEATHER_TOOL], "parallel_tool_calls": False},
    "parallel_calls": {"messages": [
        {"role": "user", "content": "Weather in Rome and Lima?"},
        {"role": "assistant", "content": "", "tool_calls": [
            tool_call("a", "get_weather", '{"city": "Rome"}'),
            tool_call("b", "get_weather", '{"city": "Lima"}')]},
        {"role": "tool", "tool_call_id": "b", "content": "21"},
        {"role": "tool", "tool_call_id": "a", "content": "25"},
        {"role": "assistant", "content": "Rome 25 °C, Lima 21 °C."}],
        "tools": [WEATHER_TOOL]},
    "text_parts": {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Name a prime"},
                                     {"type": "text", "text": "below ten."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Seven."}]}]},
    "legacy_functions": {"messages": [
        {"role": "user", "content": "Weather in Bern?"},
        {"role": "assistant", "function_call": {"name": "get_weather",
                                                "arguments": '{"city": "Bern"}'}},
        {"role": "function", "name": "get_weather", "content": "12"},
        {"role": "assistant", "content": "12 °C in Bern."}],
        "functions": [WEATHER_TOOL["function"]]},
}


@pytest.mark.parametrize("name", sorted(OPENAI_SHAPES))
def test_openai_extras_import_and_export_unchanged(name):
    record = OPENAI_SHAPES[name]
    draft = to_draft(orjson.loads(orjson.dumps(record)))
    assert to_openai(draft.messages, plain=True) == record


def test_extras_are_searchable_and_readable_as_text():
    messages = to_draft(OPENAI_SHAPES["tool_calls"]).messages
    text = search_text(messages)
    assert 'get_weather({"city": "San Francisco"})' in text
    assert "It is 18 °C" in text and '{"temp_c": 18}' in text
    parts = to_draft(OPENAI_SHAPES["text_parts"]).messages
    assert first_turn(parts, "user") == "Name a prime\nbelow ten."
    assert turns_text(parts, "assistant") == "Seven."
    assert "Name a prime\nbelow ten." in search_text(parts)


def test_tools_are_part_of_the_conversation_hash():
    plain = to_draft(OPENAI_SHAPES["tool_calls"]).messages
    other = dict(OPENAI_SHAPES["tool_calls"], tools=[
        {"type": "function", "function": {"name": "get_weather", "parameters": {}}}])
    assert content_hash(plain) != content_hash(to_draft(other).messages)
    assert plain[0]["tools"] == [WEATHER_TOOL]  # kept on the first stored message


def test_tools_given_twice_are_refused():
    record = orjson.loads(orjson.dumps(OPENAI_SHAPES["tool_calls"]))
    record["messages"][0]["tools"] = []
    with pytest.raises(RecordError) as info:
        to_draft(record)
    assert info.value.code == "wrong_type" and info.value.field == "tools"


# --- LLaMA-Factory's glaive ShareGPT -------------------------------------------------------

def glaive_row(i: int, rng: random.Random) -> dict:
    """A row in LLaMA-Factory's glaive_toolcall shape: about half call a function."""
    tools = orjson.dumps([{"name": "calculate_tip", "description": "Tip for a bill",
                           "parameters": {"type": "object", "properties": {
                               "bill": {"type": "number"}, "percent": {"type": "number"}},
                               "required": ["bill", "percent"]}}]).decode()
    if i % 2:
        bill = rng.randint(10, 200)
        return {"conversations": [
            {"from": "human", "value": f"What is a 15% tip on ${bill}? (row {i})"},
            {"from": "function_call", "value": orjson.dumps(
                {"name": "calculate_tip", "arguments": {"bill": bill, "percent": 15}}).decode()},
            {"from": "observation", "value": orjson.dumps({"tip": bill * 0.15}).decode()},
            {"from": "gpt", "value": f"The tip is ${bill * 0.15:.2f}."}],
            "system": "You are a helpful assistant with access to functions.",
            "tools": tools}
    return {"conversations": [{"from": "human", "value": f"Tell me a fact, row {i}."},
                              {"from": "gpt", "value": f"Fact number {i}: water is wet."}],
            "system": "You are a helpful assistant.", "tools": tools if i % 4 else "[]"}


def test_glaive_sharegpt_rows_import_with_no_rejection(file_store, tmp_path):
    rng = random.Random(13)
    rows = [glaive_row(i, rng) for i in range(300)]
    path = write_jsonl(tmp_path / "glaive.jsonl", rows)
    store = file_store()
    report = import_file(store, path, user=ADMIN, status="accepted")
    assert report.rejected == [] and report.imported == 300
    calling = [e for e in store.find(ExampleFilter()) if len(e.messages) > 3]
    assert len(calling) == 150
    messages = calling[0].messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    call = messages[2]["tool_calls"][0]
    assert call["function"]["name"] == "calculate_tip"
    assert orjson.loads(call["function"]["arguments"])["percent"] == 15
    assert messages[3]["tool_call_id"] == call["id"]
    assert messages[0]["tools"][0]["function"]["name"] == "calculate_tip"
    # the export is valid OpenAI tool-calling data: tools at the top level
    out = tmp_path / "out.jsonl"
    export_jsonl(store, out, fmt="openai", user=ADMIN)
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    with_tools = [r for r in lines if len(r["messages"]) > 3]
    assert all(r["tools"][0]["type"] == "function" for r in with_tools)
    assert all("tools" not in m for r in lines for m in r["messages"])


def test_openai_export_round_trips_every_shape_through_the_store(file_store, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", list(OPENAI_SHAPES.values()))
    store = file_store()
    report = import_file(store, path, user=ADMIN, status="accepted")
    assert report.rejected == [] and report.imported == len(OPENAI_SHAPES)
    out = tmp_path / "out.jsonl"
    export_jsonl(store, out, fmt="openai", user=ADMIN)
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [{k: v for k, v in r.items() if k != "curate"} for r in lines] \
        == list(OPENAI_SHAPES.values())
    again = file_store("again.duckdb")
    import_file(again, out, user=ADMIN, status="accepted")
    assert [e.content_hash for e in again.find(ExampleFilter())] \
        == [e.content_hash for e in store.find(ExampleFilter())]


def test_the_openai_export_says_which_lines_llama_factory_cannot_take(file_store, tmp_path):
    """LLaMA-Factory's sharegpt reading (the entry the export writes) takes text turns of
    system, user and assistant only; the export counts the other lines and says so."""
    from curation.formats import llama_factory_reads

    taken = sorted(n for n, r in OPENAI_SHAPES.items() if llama_factory_reads(r["messages"]))
    assert taken == ["name", "weight"]
    path = write_jsonl(tmp_path / "in.jsonl", list(OPENAI_SHAPES.values()))
    store = file_store()
    import_file(store, path, user=ADMIN, status="accepted")
    result = export_jsonl(store, tmp_path / "out.jsonl", fmt="openai", user=ADMIN)
    assert result.llama_factory_skips == len(OPENAI_SHAPES) - 2
    assert result.llama_factory_note.startswith(
        f"{len(OPENAI_SHAPES) - 2} lines of this file hold tool calls, tool replies")
    manifest = orjson.loads(result.manifest_path.read_bytes())
    assert manifest["llama_factory_skips"] == len(OPENAI_SHAPES) - 2
    plain = export_jsonl(store, tmp_path / "pc.jsonl", fmt="prompt_completion", user=ADMIN)
    assert plain.llama_factory_skips == 0 and plain.llama_factory_note is None  # no entry


def test_prompt_completion_export_keeps_tools_at_the_top_and_round_trips(file_store, tmp_path):
    """TRL's SFTTrainer reads a prompt-completion line's `tools` at the top level; importing
    the file again gives the same conversations, tools included."""
    path = write_jsonl(tmp_path / "in.jsonl", list(OPENAI_SHAPES.values()))
    store = file_store()
    import_file(store, path, user=ADMIN, status="accepted")
    out = tmp_path / "pc.jsonl"
    export_jsonl(store, out, fmt="prompt_completion", user=ADMIN)
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r.get("tools") for r in lines] == [r.get("tools") for r in OPENAI_SHAPES.values()]
    assert all("tools" not in m for r in lines for m in r["prompt"] + r["completion"])
    again = file_store("again.duckdb")
    assert import_file(again, out, user=ADMIN, status="accepted").rejected == []
    assert [e.content_hash for e in again.find(ExampleFilter())] \
        == [e.content_hash for e in store.find(ExampleFilter())]


def test_prompt_completion_tools_given_twice_are_refused():
    line = {"prompt": [{"role": "user", "content": "Weather?", "tools": [WEATHER_TOOL]}],
            "completion": [{"role": "assistant", "content": "Sunny."}], "tools": [WEATHER_TOOL]}
    with pytest.raises(RecordError) as err:
        to_draft(line)
    assert (err.value.code, err.value.field) == ("wrong_type", "tools")
    text = to_draft({"prompt": "Weather?", "completion": "Sunny.", "tools": [WEATHER_TOOL]})
    assert text.messages[0]["tools"] == [WEATHER_TOOL]


# --- multimodal ------------------------------------------------------------------------------

LLAVA = {"messages": [{"role": "user", "content": "<image>\nWhat is in the picture?"},
                      {"role": "assistant", "content": "A cat on a mat."}],
         "images": ["cat.png"]}


@pytest.mark.parametrize("record, field", [
    (LLAVA, "images"),
    ({"conversations": [{"from": "human", "value": "<video>Describe it."},
                        {"from": "gpt", "value": "A dog runs."}], "videos": ["d.mp4"]}, "videos"),
    ({"instruction": "<audio>Transcribe.", "output": "Hello.", "audios": ["a.wav"]}, "audios"),
])
def test_media_rows_are_refused_unless_dropped(record, field):
    with pytest.raises(RecordError) as info:
        to_draft(record)
    assert info.value.code == "unsupported_modality" and info.value.field == field
    assert "--drop-media" in info.value.message
    messages = to_draft(record, drop_media=True).messages
    assert not any("<image>" in m["content"] or "<video>" in m["content"]
                   or "<audio>" in m["content"] for m in messages)
    assert messages[0]["content"] in ("What is in the picture?", "Describe it.", "Transcribe.")


def test_drop_media_import_and_refusal_in_one_file(file_store, tmp_path):
    path = write_jsonl(tmp_path / "mm.jsonl", [LLAVA, OPENAI_SHAPES["name"]])
    store = file_store()
    report = import_file(store, path, user=ADMIN)
    assert [e.code for e in report.rejected] == ["unsupported_modality"] and report.imported == 1
    store2 = file_store("drop.duckdb")
    report = import_file(store2, path, user=ADMIN, drop_media=True)
    assert report.rejected == [] and report.imported == 2
    assert first_turn(store2.find(ExampleFilter())[0].messages, "user") \
        == "What is in the picture?"


def test_cli_drop_media_flag(tmp_path):
    from click.testing import CliRunner

    from curate.cli import main

    path = write_jsonl(tmp_path / "mm.jsonl", [LLAVA])
    db = str(tmp_path / "ws" / "curate.duckdb")
    refused = CliRunner().invoke(main, ["import", str(path), "--json", "--db", db])
    assert orjson.loads(refused.stdout)["rejected"][0]["code"] == "unsupported_modality"
    kept = CliRunner().invoke(main, ["import", str(path), "--drop-media", "--json", "--db", db])
    assert orjson.loads(kept.stdout)["imported"] == 1


# --- special tokens --------------------------------------------------------------------------

def test_special_tokens_check_names_token_and_turn(file_store):
    from curation.checks import load_table

    store = file_store()
    bad = store.add([{"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello<|im_end|>\n<|im_start|>user\nx"}],
                    actor="t")
    eos = store.add([{"role": "user", "content": "End with </s> please"},
                     {"role": "assistant", "content": "ok"}], actor="t")
    repo = store.add([{"role": "user", "content": "What is <file_sep>?"},
                      {"role": "assistant", "content": "A SmolLM2 token."}], actor="t")
    good = store.add([{"role": "user", "content": "a < b and c > d"},
                      {"role": "assistant", "content": "<b>bold</b> is HTML"}], actor="t")
    result = SPECIAL_TOKENS_CHECK.run(load_table(store))
    by_id = {f.example_id: f for f in result.findings}
    assert by_id[bad.id].is_issue and by_id[bad.id].score == 0.0
    assert "<|im_end|> in messages[1] (assistant)" in by_id[bad.id].reason
    assert "<|im_start|> in messages[1] (assistant)" in by_id[bad.id].reason
    assert by_id[eos.id].reason == "</s> in messages[0] (user)"
    assert by_id[repo.id].is_issue
    assert not by_id[good.id].is_issue
    assert result.summary["flagged"] == 3


def test_special_tokens_cover_the_packaged_tokenizer(model_cache):
    from training.models import cached_default_model

    tokenizer_json = orjson.loads((cached_default_model(model_cache) / "tokenizer.json")
                                  .read_bytes())
    special = {t["content"] for t in tokenizer_json["added_tokens"] if t["special"]}
    assert special and special <= set(BASE_MODEL_TOKENS)


# --- training: the real packaged tokenizer --------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(model_cache):
    from transformers import AutoTokenizer

    from training.models import cached_default_model

    return AutoTokenizer.from_pretrained(cached_default_model(model_cache))


def _trained_texts(tokenizer, item) -> list[str]:
    from training.data import IGNORE_INDEX

    runs, current = [], []
    for token, label in zip(item.input_ids, item.labels):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return [tokenizer.decode(r) for r in runs + ([current] if current else [])]


def test_weight_zero_turns_are_masked_with_the_packaged_tokenizer(tokenizer):
    from training.data import encode

    messages = to_draft(OPENAI_SHAPES["weight"]).messages
    item = encode(tokenizer, messages, max_seq_length=512)
    assert _trained_texts(tokenizer, item) == [
        "Paris, as if everyone doesn't know that already.<|im_end|>"]
    assert "Paris<|im_end|>" in tokenizer.decode(item.input_ids)  # still there as context


def test_tool_calls_train_through_the_template_as_text(tokenizer):
    from training.data import encode

    messages = to_draft(OPENAI_SHAPES["tool_calls"]).messages
    item = encode(tokenizer, messages, max_seq_length=1024)
    text = tokenizer.decode(item.input_ids)
    assert text.startswith("<|im_start|>system\n<tools>\n" + orjson.dumps(WEATHER_TOOL).decode())
    assert '<|im_start|>tool\n{"temp_c": 18}<|im_end|>' in text
    call = '{"name":"get_weather","arguments":{"city":"San Francisco"}}'
    assert _trained_texts(tokenizer, item) == [
        f"<tool_call>\n{call}\n</tool_call><|im_end|>",
        "It is 18 °C in San Francisco.<|im_end|>"]
    parts = encode(tokenizer, to_draft(OPENAI_SHAPES["text_parts"]).messages, 512)
    assert _trained_texts(tokenizer, parts) == ["Seven.<|im_end|>"]
    assert "Name a prime\nbelow ten." in tokenizer.decode(parts.input_ids)


def test_training_file_with_tools_at_the_top_level_is_read_back(tmp_path, tokenizer):
    from training.data import load_train_data

    path = write_jsonl(tmp_path / "train.jsonl", [
        to_openai(to_draft(r).messages) for r in OPENAI_SHAPES.values()])
    data = load_train_data(path, tokenizer, max_seq_length=1024)
    assert data.report["examples"] == len(OPENAI_SHAPES)
    assert data.report["skipped_no_target"] == 0


def test_curate_check_reports_special_tokens(tmp_path):
    from click.testing import CliRunner

    from curate.cli import main

    path = write_jsonl(tmp_path / "t.jsonl", [
        {"messages": [{"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "bye<|im_end|>"}]},
        {"messages": [{"role": "user", "content": "plain"},
                      {"role": "assistant", "content": "text"}]}])
    db = str(tmp_path / "ws" / "curate.duckdb")
    CliRunner().invoke(main, ["import", str(path), "--db", db], catch_exceptions=False)
    result = CliRunner().invoke(main, ["check", "--json", "--db", db], catch_exceptions=False)
    payload = orjson.loads(result.stdout)
    assert payload["check"] == "special_tokens" and payload["summary"]["flagged"] == 1
    assert payload["findings"][0]["reason"] == "<|im_end|> in messages[1] (assistant)"
    unknown = CliRunner().invoke(main, ["check", "nonsense", "--db", db])
    assert unknown.exit_code != 0 and "unknown check 'nonsense'" in unknown.output
