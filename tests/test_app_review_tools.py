"""AppTest of the Review page on conversations with tool calls, tool replies, text parts and
weights: shown turn by turn and readably, texts editable, the tool structure kept on save."""

from __future__ import annotations

import random

import orjson
from streamlit.testing.v1 import AppTest

from curation import import_file
from tests.conftest import admin, shown_id, unescaped, write_jsonl
from tests.test_rich_formats import OPENAI_SHAPES


def _imported(file_store, tmp_path, *names: str):
    store = file_store()
    path = write_jsonl(tmp_path / "in.jsonl", [OPENAI_SHAPES[n] for n in names])
    report = import_file(store, path, user=admin("ada"))
    assert report.rejected == []
    return store


def _boxes(at: AppTest, example_id: int, version: int = 1) -> dict[str, str]:
    prefix = f"rv_e{example_id}_v{version}_m"
    return {t.key[len(prefix) - 1:]: t.value for t in at.text_area
            if t.key and t.key.startswith(prefix)}


def test_a_tool_call_is_shown_as_a_formatted_call_and_the_reply_labelled(review_page,
                                                                          file_store, tmp_path):
    store = _imported(file_store, tmp_path, "tool_calls")
    example = store.find()[0]
    at = review_page(store)
    assert not at.exception, at.exception
    assert shown_id(at) == example.id
    codes = [c.value for c in at.code]
    assert 'get_weather({\n  "city": "San Francisco"\n})' in codes
    captions = [unescaped(c.value) for c in at.caption]
    assert any("Tool reply to call call_id" in c for c in captions)
    assert any("Tool call call_id (read-only)" in c for c in captions)
    assert any("shown read-only" in c for c in captions)
    assert any("Tools available (1): get_weather" in unescaped(e.label) for e in at.expander)
    # the texts are editable boxes; the tool-calling turn has no empty text box
    assert _boxes(at, example.id) == {"m0": "What is the weather in San Francisco?",
                                      "m2": '{"temp_c": 18}',
                                      "m3": "It is 18 °C in San Francisco."}


def test_editing_a_text_keeps_the_tool_structure(review_page, file_store, tmp_path):
    store = _imported(file_store, tmp_path, "tool_calls")
    example = store.find()[0]
    at = review_page(store)
    at.text_area(key=f"rv_e{example.id}_v1_m3").input("18 degrees in San Francisco.").run()
    at.button(key="rv_accept").click().run()
    assert not at.exception, at.exception
    after = store.get(example.id)
    assert after.status == "accepted" and after.version == 2
    expected = orjson.loads(orjson.dumps(example.messages))
    expected[3]["content"] = "18 degrees in San Francisco."
    assert after.messages == expected
    assert after.messages[0]["tools"] and after.messages[1]["tool_calls"]


def test_text_parts_and_weights_are_shown_and_edited_as_parts(review_page, file_store,
                                                              tmp_path):
    store = _imported(file_store, tmp_path, "text_parts", "weight")
    parts, weighted = store.find()
    at = review_page(store)
    assert shown_id(at) == parts.id
    assert _boxes(at, parts.id) == {"m0_p0": "Be brief.", "m1_p0": "Name a prime",
                                    "m1_p1": "below ten.", "m2_p0": "Seven."}
    at.text_area(key=f"rv_e{parts.id}_v1_m2_p0").input("Seven (7).").run()
    at.button(key="rv_accept").click().run()
    assert store.get(parts.id).messages[2]["content"] == [{"type": "text", "text": "Seven (7)."}]
    assert shown_id(at) == weighted.id
    assert any("weight 0: context only, not trained on" in unescaped(c.value)
               for c in at.caption)


def _texts(messages) -> list[str]:
    from curation.messages import message_text

    return [message_text(m) for m in messages if message_text(m)]


def test_every_documented_shape_displays_in_review(review_page, file_store, tmp_path):
    from tests.test_rich_formats import glaive_row

    store = file_store()
    rows = list(OPENAI_SHAPES.values()) + [glaive_row(1, random.Random(0))]
    report = import_file(store, write_jsonl(tmp_path / "all.jsonl", rows), user=admin("ada"))
    assert report.rejected == [] and report.imported == len(rows)
    for example in store.find():
        at = review_page(store, id=str(example.id))
        assert not at.exception, (example.messages, at.exception)
        assert shown_id(at) == example.id
        shown = [t.value for t in at.text_area] + [c.value for c in at.code]
        parts = [p for m in example.messages if isinstance(m.get("content"), list)
                 for p in m["content"]]
        expected = [p["text"] for p in parts] if parts else _texts(example.messages)
        assert all(any(text in value for value in shown) for text in expected), example.id
        calls = [c["function"]["name"] for m in example.messages for c in m.get("tool_calls", [])]
        assert all(any(value.startswith(name + "(") for value in shown) for name in calls)


def test_an_unanswered_tool_conversation_is_answered_in_its_own_box(review_page, file_store,
                                                                    tmp_path):
    record = {"messages": [{"role": "user", "content": "Weather in Oslo?", "name": "bob"}],
              "tools": OPENAI_SHAPES["tool_calls"]["tools"]}
    store = file_store()
    report = import_file(store, write_jsonl(tmp_path / "q.jsonl", [record]),
                         user=admin("ada"), unanswered=True)
    assert report.needs_answer == 1
    example = store.find()[0]
    at = review_page(store)
    at.text_area(key=f"rv_e{example.id}_v1_answer").input("Cold, probably.").run()
    at.button(key="rv_accept").click().run()
    assert not at.exception, at.exception
    after = store.get(example.id)
    assert after.messages[-1] == {"role": "assistant", "content": "Cold, probably."}
    assert after.messages[0]["tools"] and not after.needs_answer
