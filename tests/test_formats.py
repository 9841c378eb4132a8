"""The pure converters of curation/formats.py: readers, validation codes, writers, hashing."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation import InvalidValue
from curation.formats import (CODES, MAPPING_TARGETS, OUTPUT_FORMATS, ROUND_TRIP_FORMATS, WRITERS,
                              Draft, RecordError, _metadata, _openai_fast, content_hash,
                              detect_format, from_openai, llama_factory_entry, parse_mapping,
                              to_alpaca, to_bedrock, to_draft, to_openai, to_prompt_completion,
                              to_vertex)
from tests.conftest import chat


def S(content: str) -> dict[str, str]:
    return {"role": "system", "content": content}


def U(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def A(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def raises(record: Any, fmt: str = "auto", **kwargs: Any) -> RecordError:
    with pytest.raises(RecordError) as info:
        to_draft(record, fmt, **kwargs)
    return info.value


MULTI_TURN = [S("You are terse."), U("Hi"), A("Hello."), U("What is 2+2?"), A("4")]


# --- each input format becomes the expected Draft --------------------------------------------

def test_openai_messages_with_metadata_and_ignored_keys():
    record = {"id": "ext-1", "messages": MULTI_TURN, "label": "math", "tags": ["a", "b"],
              "metadata": {"curate_id": 3}, "unrelated_column": 42}
    draft = to_draft(record)
    assert draft == Draft(messages=MULTI_TURN, label="math", tags=("a", "b"),
                          external_id="ext-1")
    assert to_draft(record, "openai") == draft


def test_openai_without_metadata_has_empty_defaults():
    draft = to_draft({"messages": [U("q"), A("a")]})
    assert draft == Draft(messages=[U("q"), A("a")])
    assert (draft.label, draft.tags, draft.external_id) == (None, (), None)


def test_metadata_normalisation():
    base = {"messages": [U("q"), A("a")]}
    draft = to_draft({**base, "id": 7, "label": 3, "tags": "x, y;z|x"})
    assert (draft.external_id, draft.label, draft.tags) == ("7", "3", ("x", "y", "z"))
    draft = to_draft({**base, "id": "", "label": "  ", "tags": [" x ", "x", "", "y"]})
    assert (draft.external_id, draft.label, draft.tags) == (None, None, ("x", "y"))
    draft = to_draft({**base, "label": "  billing \n", "tags": None, "id": None})
    assert (draft.external_id, draft.label, draft.tags) == (None, "billing", ())


def test_alpaca_instruction_and_output():
    draft = to_draft({"instruction": "Name a colour.", "output": "Red.", "label": "c",
                      "tags": ["t"], "id": "a-1"})
    assert draft == Draft(messages=[U("Name a colour."), A("Red.")], label="c", tags=("t",),
                          external_id="a-1")


def test_alpaca_input_is_appended_to_the_instruction():
    draft = to_draft({"instruction": "Translate to French.", "input": "cat", "output": "chat"})
    assert draft.messages == [U("Translate to French.\ncat"), A("chat")]  # as LLaMA-Factory
    blank = to_draft({"instruction": "Translate.", "input": "  ", "output": "x"}, "alpaca")
    assert blank.messages == [U("Translate."), A("x")]


@pytest.mark.parametrize("separator", ["\n\n", " ", "\n### Input:\n"])
def test_alpaca_separator_is_a_parameter(separator):
    record = {"instruction": "Translate to French.", "input": "cat", "output": "chat"}
    for fmt in ("auto", "alpaca"):
        draft = to_draft(record, fmt, alpaca_separator=separator)
        assert draft.messages[0] == U(f"Translate to French.{separator}cat")
    no_input = to_draft({**record, "input": ""}, alpaca_separator=separator)
    assert no_input.messages[0] == U("Translate to French.")


def test_alpaca_system_and_history_make_a_multi_turn_conversation():
    record = {"system": "You are terse.", "history": [["Hi", "Hello."]],
              "instruction": "What is 2+2?", "input": "", "output": "4"}
    assert to_draft(record).messages == MULTI_TURN


def test_prompt_completion_as_plain_strings():
    draft = to_draft({"prompt": "Capital of France?", "completion": "Paris", "id": 12})
    assert draft == Draft(messages=[U("Capital of France?"), A("Paris")], external_id="12")


def test_prompt_completion_as_message_lists():
    record = {"prompt": MULTI_TURN[:-1], "completion": MULTI_TURN[-1:], "label": "math"}
    assert to_draft(record) == Draft(messages=MULTI_TURN, label="math")


def test_sharegpt_conversations_with_top_level_system():
    record = {"system": "You are terse.", "id": "sg-1", "tags": ["chat"],
              "conversations": [{"from": "human", "value": "Hi"},
                                {"from": "gpt", "value": "Hello."},
                                {"from": "human", "value": "What is 2+2?"},
                                {"from": "gpt", "value": "4"}]}
    assert to_draft(record) == Draft(messages=MULTI_TURN, tags=("chat",), external_id="sg-1")


def test_sharegpt_accepts_system_user_assistant_names_too():
    record = {"conversations": [{"from": "system", "value": "You are terse."},
                                {"from": "user", "value": "Hi"},
                                {"from": "assistant", "value": "Hello."}]}
    assert to_draft(record, "sharegpt").messages == MULTI_TURN[:3]


def test_mapped_record_with_every_target():
    mapping = {"prompt": "question", "response": "answer", "system": "persona",
               "label": "category", "id": "key", "tags": "labels"}
    record = {"question": "Reset my password", "answer": "Use the link.", "persona": "Be kind.",
              "category": "access", "key": "T-9", "labels": "web; urgent", "ignored": "x"}
    draft = to_draft(record, "mapped", mapping)
    assert draft == Draft(messages=[S("Be kind."), U("Reset my password"), A("Use the link.")],
                          label="access", tags=("web", "urgent"), external_id="T-9")


def test_mapped_empty_optional_cells_are_absent():
    mapping = {"prompt": "q", "response": "a", "system": "s", "label": "l", "id": "i",
               "tags": "t"}
    draft = to_draft({"q": "x", "a": "y", "s": "", "l": "", "i": "", "t": ""}, "mapped",
                     mapping)
    assert draft == Draft(messages=[U("x"), A("y")])
    # a mapped optional column that the record lacks is simply absent too
    assert to_draft({"q": "x", "a": "y"}, "mapped", mapping) == draft


def test_explicit_format_is_used_instead_of_detection():
    err = raises({"messages": [U("q"), A("a")]}, "alpaca")
    assert (err.code, err.field) == ("missing_field", "instruction")


# --- every validation code is raised, with its field -----------------------------------------

@dataclass(frozen=True)
class Case:
    code: str
    record: Any
    field: str | None
    fmt: str = "auto"
    kwargs: dict = field(default_factory=dict)


CASES = [
    Case("data_type", [U("q"), A("a")], None),
    Case("data_type", "just text", None),
    Case("data_type", None, None, "openai"),
    Case("unknown_format", {"text": "q", "answer": "a"}, None),
    Case("missing_messages_list", {"messages": []}, "messages"),
    Case("missing_messages_list", {"messages": "q"}, "messages"),
    Case("missing_messages_list", {"conversations": {}}, "conversations"),
    Case("missing_messages_list", {"label": "x"}, "messages", "openai"),
    Case("message_missing_key", {"messages": [{"role": "user"}, A("a")]},
         "messages[0].content"),
    Case("message_missing_key", {"messages": [U("q"), {"content": "a"}]}, "messages[1].role"),
    Case("message_missing_key", {"conversations": [{"from": "human"}]},
         "conversations[0].value"),
    Case("message_unrecognized_key", {"messages": [{**U("q"), "mood": "bob"}, A("a")]},
         "messages[0]"),
    Case("message_unrecognized_key",
         {"conversations": [{"from": "human", "value": "q", "weight": 1}]}, "conversations[0]"),
    Case("unrecognized_role", {"messages": [U("q"), {"role": "bot", "content": "a"}]},
         "messages[1].role"),
    Case("unrecognized_role", {"messages": [{"role": "observation", "content": "q"}, A("a")]},
         "messages[0].role"),
    Case("unrecognized_role", {"conversations": [{"from": "human", "value": "q"},
                                                 {"from": "bot", "value": "a"}]},
         "conversations[1].from"),
    Case("missing_content", {"messages": [U(" \n\t "), A("a")]}, "messages[0].content"),
    Case("missing_content", {"messages": [U("q"), A("")]}, "messages[1].content"),
    Case("missing_content", {"messages": [U("q"), A("a")], "id": "   "}, "id"),
    Case("missing_content", {"instruction": "  ", "output": "a"}, "instruction"),
    Case("example_missing_assistant_message", {"messages": [S("s"), U("q")]}, "messages"),
    Case("example_missing_assistant_message", {"messages": [U("q"), U("q2")]}, "messages"),
    Case("invalid_turn_order", {"messages": [U("q"), U("q2"), A("a")]}, "messages[1].role"),
    Case("invalid_turn_order", {"messages": [A("a"), U("q"), A("a2")]}, "messages[0].role"),
    Case("invalid_turn_order", {"messages": [S("s"), A("a")]}, "messages[1].role"),
    Case("invalid_turn_order", {"messages": [U("q"), A("a"), S("s"), U("q"), A("a")]},
         "messages[2].role"),
    Case("invalid_turn_order", {"messages": [U("q"), A("a"), U("q2")]}, "messages"),
    Case("invalid_turn_order",
         {"prompt": [U("q")], "completion": [A("a"), U("q2"), A("a2")]}, "completion"),
    Case("missing_field", {"instruction": "q"}, "output"),
    Case("missing_field", {"output": "a"}, "instruction"),
    Case("missing_field", {"prompt": "q"}, "completion"),
    Case("missing_field", {"completion": "a"}, "prompt"),
    Case("missing_field", {"question": "q"}, "answer", "mapped",
         {"mapping": {"prompt": "question", "response": "answer"}}),
    Case("wrong_type", {"messages": [{"role": "user", "content": 42}, A("a")]},
         "messages[0].content"),
    Case("wrong_type", {"messages": [U("q"), {"role": "assistant", "content": None}]},
         "messages[1].content"),
    Case("wrong_type", {"messages": [U("q"), "a"]}, "messages[1]"),
    Case("wrong_type", {"messages": [U("q"), A("a")], "label": {"x": 1}}, "label"),
    Case("wrong_type", {"messages": [U("q"), A("a")], "label": True}, "label"),
    Case("wrong_type", {"messages": [U("q"), A("a")], "tags": ["ok", 1]}, "tags"),
    Case("wrong_type", {"messages": [U("q"), A("a")], "id": [1]}, "id"),
    Case("wrong_type", {"instruction": "q", "output": "a", "history": "x"}, "history"),
    Case("wrong_type", {"instruction": "q", "output": "a", "history": [["only one"]]},
         "history[0]"),
    Case("wrong_type", {"instruction": "q", "input": 3, "output": "a"}, "input"),
    Case("wrong_type", {"prompt": "q", "completion": [A("a")]}, "completion"),
    Case("wrong_type", {"conversations": ["q"]}, "conversations[0]"),
    Case("field_too_long", {"messages": [U("abcdef"), A("a")]}, "messages[0].content",
         kwargs={"max_chars": 5}),
    Case("field_too_long", {"instruction": "abcdef", "output": "a"}, "instruction",
         kwargs={"max_chars": 5}),
    Case("field_too_long", {"messages": [U("q"), A("a")], "label": "abcdef"}, "label",
         kwargs={"max_chars": 5}),
    Case("nan_value", {"messages": [{"role": "user", "content": float("nan")}, A("a")]},
         "messages[0].content"),
    Case("nan_value", {"messages": [U("q"), {"role": "assistant", "content": float("-inf")}]},
         "messages[1].content"),
    Case("lone_surrogate", {"messages": [U("caf\ud800"), A("a")]}, "messages[0].content"),
    # OpenAI's fine-tuning extras, broken (tests/test_rich_formats.py has the valid shapes)
    Case("unsupported_modality", {"messages": [U("<image>q"), A("a")], "images": ["a.png"]},
         "images"),
    Case("unsupported_modality", {"conversations": [{"from": "human", "value": "<audio>q"},
                                                    {"from": "gpt", "value": "a"}],
                                  "audios": ["a.wav"]}, "audios"),
    Case("unsupported_modality", {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        A("a")]}, "messages[0].content[0]"),
    Case("message_unrecognized_key", {"messages": [{**U("q"), "weight": 1}, A("a")]},
         "messages[0].weight"),
    Case("wrong_type", {"messages": [U("q"), {**A("a"), "weight": 2}]}, "messages[1].weight"),
    Case("message_missing_key", {"messages": [U("q"), {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "1"}, A("a")]}, "messages[2].tool_call_id"),
    Case("invalid_turn_order", {"messages": [U("q"), {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c2", "content": "1"}, A("a")]},
         "messages[2].tool_call_id"),
    Case("invalid_turn_order", {"messages": [U("q"), {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        U("q2"), A("a")]}, "messages[2].role"),
    Case("invalid_turn_order", {"messages": [U("q"), {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "1"}]}, "messages"),
    Case("message_missing_key", {"messages": [U("q"), {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"arguments": "{}"}}]}]},
         "messages[1].tool_calls[0].function.name"),
    Case("wrong_type", {"conversations": [{"from": "human", "value": "q"},
                                          {"from": "function_call", "value": "not json"}]},
         "conversations[1].value"),
]


def _case(param) -> Case:
    return param.values[0] if hasattr(param, "values") else param


def _case_id(case: Case) -> str:
    return f"{case.code}-{case.field}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_validation_code_is_raised_with_its_field(case: Case):
    err = raises(case.record, case.fmt, **case.kwargs)
    assert err.code == case.code, err
    assert err.field == case.field, err
    assert err.message and err.code in CODES


def test_every_record_level_code_is_tested():
    record_level = set(CODES) - {"duplicate_in_file", "invalid_json", "invalid_csv"}
    assert {_case(p).code for p in CASES} == record_level


def test_field_too_long_boundary():
    assert to_draft({"messages": [U("abcde"), A("a")]}, max_chars=5).messages[0]["content"] \
        == "abcde"
    assert raises({"messages": [U("abcde"), A("a")]}, max_chars=4).code == "field_too_long"


def test_crlf_and_cr_in_content_become_lf():
    draft = to_draft({"messages": [S("a\r\nb"), U("line 1\r\nline 2\r\n"), A("x\ry")]})
    assert [m["content"] for m in draft.messages] == ["a\nb", "line 1\nline 2\n", "x\ny"]
    assert to_draft({"prompt": "p\r\n", "completion": "c"}).messages[0]["content"] == "p\n"


def test_contents_are_otherwise_kept_exactly():
    text = "  leading and trailing spaces  \n\tand a tab, \"quotes\", \\ and é (NFD: e\u0301) 🙂"
    assert to_draft({"messages": [U(text), A(text)]}).messages == [U(text), A(text)]


# --- mistakes are reported on the record's own key -----------------------------------------

def test_sharegpt_field_index_with_top_level_system():
    record = {"system": "s", "conversations": [{"from": "human", "value": "q"},
                                               {"from": "gpt", "value": "  "}]}
    err = raises(record)
    assert err.code == "missing_content"
    assert err.field in ("conversations[1].value", "conversations[1].content")


def test_alpaca_output_field_is_named():
    err = raises({"instruction": "q", "output": " "})
    assert (err.code, err.field) == ("missing_content", "output")


def test_prompt_completion_prompt_field_is_named():
    err = raises({"prompt": 5, "completion": "a"})
    assert (err.code, err.field) == ("wrong_type", "prompt")


def test_prompt_completion_empty_completion_list_is_refused():
    raises({"prompt": [U("q"), A("a")], "completion": []})


# --- detect_format and parse_mapping ---------------------------------------------------------

@pytest.mark.parametrize("record, expected", [
    ({"messages": []}, "openai"),
    ({"messages": [], "prompt": "x"}, "openai"),
    ({"conversations": []}, "sharegpt"),
    ({"instruction": "x", "output": "y"}, "alpaca"),
    ({"instruction": "x"}, "alpaca"),
    ({"output": "y", "input": ""}, "alpaca"),
    ({"prompt": "x", "completion": "y"}, "prompt_completion"),
    ({"completion": "y"}, "prompt_completion"),
])
def test_detect_format(record, expected):
    assert detect_format(record) == expected


def test_detect_format_unknown():
    with pytest.raises(RecordError) as info:
        detect_format({"question": "q", "answer": "a"})
    assert info.value.code == "unknown_format"
    assert "answer, question" in info.value.message


def test_parse_mapping_valid():
    assert parse_mapping(" prompt=text , response=answer,label=category,system=sys,id=key,"
                         "tags=labels") == {"prompt": "text", "response": "answer",
                                            "label": "category", "system": "sys", "id": "key",
                                            "tags": "labels"}
    assert set(MAPPING_TARGETS) == {"prompt", "response", "system", "label", "id", "tags"}
    assert parse_mapping(None) == {} and parse_mapping("") == {}


@pytest.mark.parametrize("text, words", [
    ("prompt=text,response=answer,category=label", "category"),
    ("prompt=text", "response"),
    ("response=answer", "prompt"),
    ("prompt=text,response", "TARGET=COLUMN"),
    ("prompt=text,response=", "TARGET=COLUMN"),
    ("prompt:text,response:answer", "TARGET=COLUMN"),
])
def test_parse_mapping_invalid(text, words):
    with pytest.raises(InvalidValue, match=words):
        parse_mapping(text)


# --- writers and the round trip --------------------------------------------------------------

META = {"curate_id": 1, "version": 2, "split": "train", "status": "accepted", "source": "f"}


def test_to_openai():
    assert to_openai([U("q"), A("a")], external_id="e-1", label="l", tags=("x", "y"),
                     metadata=META) == {"messages": [U("q"), A("a")], "curate": {
                         "external_id": "e-1", "label": "l", "tags": ["x", "y"], **META}}
    assert to_openai([U("q"), A("a")]) == {"messages": [U("q"), A("a")], "curate": {
        "external_id": None, "label": None, "tags": []}}


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_plain_leaves_curates_fields_out(fmt):
    full = WRITERS[fmt](MULTI_TURN, external_id="e", label="l", tags=("t",), metadata=META)
    plain = WRITERS[fmt](MULTI_TURN, external_id="e", label="l", tags=("t",), metadata=META,
                         plain=True)
    assert full.pop("curate")["label"] == "l"
    assert plain == full  # the same record, less the one key
    assert not {"id", "label", "tags", "metadata"} & set(plain)


def test_to_alpaca_single_turn_always_has_system_and_history():
    # LLaMA-Factory fails with KeyError('history') on a file where no row has them
    assert to_alpaca([U("q"), A("a")], external_id="e", label="l", tags=("x",)) == {
        "instruction": "q", "input": "", "output": "a", "system": "", "history": [],
        "curate": {"external_id": "e", "label": "l", "tags": ["x"]}}


def test_to_alpaca_multi_turn_with_system_uses_history():
    assert to_alpaca(MULTI_TURN, metadata=META, plain=True) == {
        "instruction": "What is 2+2?", "input": "", "output": "4", "system": "You are terse.",
        "history": [["Hi", "Hello."]]}


def test_to_prompt_completion():
    assert to_prompt_completion(MULTI_TURN, external_id="e", tags=["t"]) == {
        "prompt": MULTI_TURN[:-1], "completion": MULTI_TURN[-1:],
        "curate": {"external_id": "e", "label": None, "tags": ["t"]}}


def test_to_bedrock():
    assert to_bedrock(MULTI_TURN, plain=True) == {
        "schemaVersion": "bedrock-conversation-2024",
        "system": [{"text": "You are terse."}],
        "messages": [{"role": "user", "content": [{"text": "Hi"}]},
                     {"role": "assistant", "content": [{"text": "Hello."}]},
                     {"role": "user", "content": [{"text": "What is 2+2?"}]},
                     {"role": "assistant", "content": [{"text": "4"}]}]}
    assert "system" not in to_bedrock([U("q"), A("a")], plain=True)


def test_to_vertex():
    assert to_vertex(MULTI_TURN, plain=True) == {
        "systemInstruction": {"role": "system", "parts": [{"text": "You are terse."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]},
                     {"role": "model", "parts": [{"text": "Hello."}]},
                     {"role": "user", "parts": [{"text": "What is 2+2?"}]},
                     {"role": "model", "parts": [{"text": "4"}]}]}
    assert "systemInstruction" not in to_vertex([U("q"), A("a")], plain=True)


def test_llama_factory_entries():
    assert llama_factory_entry("alpaca", "x.jsonl") == {
        "file_name": "x.jsonl", "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output",
                    "system": "system", "history": "history"}}
    entry = llama_factory_entry("openai", "y.jsonl")
    assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "messages"}
    assert entry["tags"]["role_tag"] == "role" and entry["tags"]["system_tag"] == "system"
    for fmt in ("prompt_completion", "bedrock", "vertex"):
        assert llama_factory_entry(fmt, "z.jsonl") is None


CONVERSATIONS = {
    "single": [U("q"), A("a")],
    "system": [S("sys"), U("q"), A("a")],
    "multi_turn_system": MULTI_TURN,
    "three_pairs": [U("1"), A("one"), U("2"), A("two"), U("3\n\nwith blank line"), A("three")],
    "unicode": [S("Ты — помощник."), U("日本語で? \"quoted\" \\ back\\slash"),
                A("はい 🙂 e\u0301")],
}


@pytest.mark.parametrize("fmt", ROUND_TRIP_FORMATS)
@pytest.mark.parametrize("name", CONVERSATIONS)
@pytest.mark.parametrize("meta", [{}, {"external_id": "ext-9", "label": "billing",
                                       "tags": ("a", "b c")}], ids=["bare", "meta"])
def test_writer_then_reader_gives_the_same_draft(fmt, name, meta):
    messages = CONVERSATIONS[name]
    record = WRITERS[fmt](messages, metadata=META, **meta)
    expected = Draft(messages=messages, label=meta.get("label"), tags=meta.get("tags", ()),
                     external_id=meta.get("external_id"))
    assert to_draft(record) == expected
    assert to_draft(record, fmt) == expected
    assert detect_format(record) == fmt


@pytest.mark.parametrize("fmt", ROUND_TRIP_FORMATS)
def test_files_exported_before_the_curate_key_still_import(fmt):
    record = WRITERS[fmt](MULTI_TURN, plain=True)
    record.update({"id": "old-1", "label": "billing", "tags": ["a"], "metadata": META})
    assert to_draft(record) == Draft(messages=MULTI_TURN, label="billing", tags=("a",),
                                     external_id="old-1")


def test_errors_in_the_curate_object_name_its_field():
    with pytest.raises(RecordError) as err:
        to_draft({"messages": [U("q"), A("a")], "curate": {"label": ["x"]}})
    assert err.value.code == "wrong_type" and err.value.field == "curate.label"
    with pytest.raises(RecordError) as err:
        to_draft({"messages": [U("q"), A("a")], "curate": {"tags": 3}})
    assert err.value.field == "curate.tags"
    for not_an_object in ("str", [1], 3):  # not ignored in favour of a top-level label
        with pytest.raises(RecordError) as err:
            to_draft({"messages": [U("q"), A("a")], "curate": not_an_object, "label": "x"})
        assert (err.value.code, err.value.field) == ("wrong_type", "curate")


# --- content_hash ------------------------------------------------------------------------------

def test_content_hash_is_of_the_exact_text():
    # outer whitespace and the Unicode normalisation form count: Curate never changes a text,
    # so an import must not drop one as a repeat of another (the exact-duplicates check shows
    # such near-identical examples instead)
    assert content_hash([U("hello"), A("world")]) != \
        content_hash([U("  hello\n"), A("world")])
    nfc, nfd = unicodedata.normalize("NFC", "café Å"), unicodedata.normalize("NFD", "café Å")
    assert nfc != nfd
    assert content_hash([U(nfc), A("x")]) != content_hash([U(nfd), A("x")])


def test_content_hash_is_sha256_of_the_stored_messages_json():
    messages = [S("sys"), U("café 🙂\u2028\x00"), A('"q"\\n')]
    stored = orjson.dumps(messages)  # what the `messages` column holds (a migration's input)
    assert content_hash(messages) == hashlib.sha256(stored).hexdigest()
    assert content_hash([{"content": m["content"], "role": m["role"]} for m in messages]) == \
        content_hash(messages)  # key order does not matter


def test_content_hash_changes_with_role_or_word():
    base = content_hash([U("hello there"), A("world")])
    assert base != content_hash([S("hello there"), A("world")])
    assert base != content_hash([U("hello here"), A("world")])
    assert base != content_hash([U("hello  there"), A("world")])
    assert base != content_hash([U("hello"), A("there world")])
    assert base != content_hash([U("hello there"), A("world"), U("x"), A("y")])
    assert len(base) == 64 and int(base, 16) >= 0


# --- the fast path for clean OpenAI records gives what the general path gives -----------------

_ODD = st.sampled_from([None, True, 1, 2.5, float("nan"), "", " ", "x", " y ", "a\rb", "a\r\nb",
                        "\ud800", "é", "e\u0301", "系统", "\u00a0", "user", "tool", [], {}])
_TEXT = st.one_of(st.text(min_size=1, max_size=8), _ODD)


@st.composite
def _openai_records(draw) -> dict:
    """Mostly clean OpenAI records, each with a few random defects (or none)."""
    roles = (["system"] if draw(st.booleans()) else []) + \
        ["user", "assistant"] * draw(st.integers(1, 3))
    messages: list = [{"role": r, "content": draw(st.text(min_size=1, max_size=8))}
                      for r in roles]
    record: dict = {"messages": messages}
    for key, value in (("label", _TEXT), ("id", _TEXT),
                       ("tags", st.lists(_TEXT, max_size=3) | _ODD)):
        if draw(st.booleans()):
            record[key] = draw(value)
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(messages) - 1))
        defect = draw(st.sampled_from(["role", "content", "key", "drop", "order", "type",
                                       "reverse", "empty"]))
        if not isinstance(messages[i], dict) or len(messages[i]) != 2:
            continue  # already broken
        if defect == "role":
            messages[i]["role"] = draw(_TEXT)
        elif defect == "content":
            messages[i]["content"] = draw(_TEXT)
        elif defect == "key":
            messages[i]["name"] = "x"
        elif defect == "drop":
            messages[i].pop(draw(st.sampled_from(["role", "content"])))
        elif defect == "order":
            messages[i] = {"content": messages[i]["content"], "role": messages[i]["role"]}
        elif defect == "type":
            messages[i] = draw(_ODD)
        elif defect == "reverse":
            messages.reverse()
        else:
            record["messages"] = draw(st.sampled_from([[], None, "text"]))
            break
    return record


def _general(record: dict, max_chars: int) -> Draft | str:
    try:
        return Draft(messages=from_openai(record, max_chars), **_metadata(record, max_chars))
    except RecordError as err:
        return err.code


@given(_openai_records(), st.sampled_from([4, 100]))
@settings(max_examples=600, deadline=None)
def test_fast_openai_path_agrees_with_the_general_path(record, max_chars):
    fast = _openai_fast(record, max_chars)
    if fast is not None:
        assert fast == _general(record, max_chars)
        assert to_draft(record, "openai", max_chars=max_chars) == fast
    else:  # left to the general path, which to_draft then takes
        general = _general(record, max_chars)
        if isinstance(general, str):
            with pytest.raises(RecordError) as raised:
                to_draft(record, max_chars=max_chars)
            assert raised.value.code == general
        else:
            assert to_draft(record, max_chars=max_chars) == general


def test_fast_openai_path_takes_the_common_shape():
    record = {"id": "x-1", "messages": chat("q", "a", system="s"), "label": " l ",
              "tags": ["a", " b", "a", ""], "other": 1}
    assert _openai_fast(record, 100) == Draft(messages=chat("q", "a", system="s"), label="l",
                                              tags=("a", "b"), external_id="x-1")


@pytest.mark.parametrize("fmt", ["alpaca", "bedrock", "vertex"])
@pytest.mark.parametrize("turn", [
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "c1", "type": "function",
                     "function": {"name": "refund", "arguments": "{}"}}]},
    {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
    {"role": "assistant", "content": "a", "weight": 0},
    {"role": "tool", "content": "42"},
], ids=["tool_call", "content_parts", "weight", "tool_role"])
def test_text_only_formats_refuse_turns_they_cannot_hold(fmt, turn):
    with pytest.raises(InvalidValue, match=f"the {fmt} export cannot hold"):
        WRITERS[fmt]([U("q"), turn], plain=True)
    assert WRITERS["openai"]([U("q"), turn], plain=True) == {"messages": [U("q"), turn]}
