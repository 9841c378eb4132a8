"""Every export format loads, unchanged, in the tools people feed it to: `datasets`
(`load_dataset("json")`) for all of them, TRL's chat-template functions with the packaged
SmolLM2 tokenizer for the openai export, OpenAI's key set for the plain openai export, and a
LLaMA-Factory `dataset_info.json` entry whose columns the file has."""

from __future__ import annotations

import json

import orjson
import pytest

from curation import InvalidValue, export_jsonl, import_file
from curation.formats import (BEDROCK_SCHEMA_VERSION, OPENAI_KEYS, OUTPUT_FORMATS,
                              ROUND_TRIP_FORMATS)
from tests.conftest import admin, chat, write_jsonl

ADA = admin("ada")
RECORDS = [  # no system, a system turn, several turns, no metadata, Unicode
    {"id": "t-1", "messages": chat("I was charged twice.", "Refunded."), "label": "billing",
     "tags": ["refund", "priority"]},
    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                  {"role": "user", "content": "Reset my password"},
                  {"role": "assistant", "content": "Use 'Forgot password'."}],
     "label": "access"},
    {"messages": chat("Ты кто? 🙂 \"q\" \\ e\u0301", "Помощник.")},
]


@pytest.fixture
def curated(empty_store, tmp_path):
    import_file(empty_store, write_jsonl(tmp_path / "in.jsonl", RECORDS), status="accepted",
                user=ADA)
    return empty_store


def lines(path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def load_json_dataset(path, tmp_path):
    load_dataset = pytest.importorskip("datasets").load_dataset

    return load_dataset("json", data_files=str(path), split="train",
                        cache_dir=str(tmp_path / "hf-cache"))


@pytest.mark.parametrize("plain", [False, True], ids=["curate", "plain"])
@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_every_format_loads_with_datasets(curated, tmp_path, fmt, plain):
    result = export_jsonl(curated, tmp_path / "out" / f"{fmt}.jsonl", fmt=fmt, user=ADA,
                          plain=plain)
    written = lines(result.path)
    dataset = load_json_dataset(result.path, tmp_path)
    assert dataset.num_rows == len(RECORDS) == result.count
    assert set(dataset.column_names) == set().union(*written)
    assert ("curate" in dataset.column_names) is not plain
    key = {"openai": "messages", "alpaca": "instruction", "prompt_completion": "completion",
           "bedrock": "messages", "vertex": "contents"}[fmt]
    assert dataset[key] == [row[key] for row in written]


def test_the_openai_export_goes_through_trls_chat_template(curated, tmp_path, model_cache):
    from transformers import AutoTokenizer

    data_utils = pytest.importorskip("trl.data_utils")
    apply_chat_template = data_utils.apply_chat_template
    maybe_apply_chat_template = data_utils.maybe_apply_chat_template

    from training.models import cached_default_model

    tokenizer = AutoTokenizer.from_pretrained(cached_default_model(model_cache))
    for plain in (False, True):
        out = export_jsonl(curated, tmp_path / f"openai-{plain}.jsonl", user=ADA, plain=plain)
        dataset = load_json_dataset(out.path, tmp_path)
        for row in dataset:
            text = maybe_apply_chat_template(row, tokenizer)["text"]
            assert text == apply_chat_template(row, tokenizer)["text"]
            for message in row["messages"]:
                assert f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>" in text
    # what exports wrote before: TRL refuses a top-level `label` next to `messages`
    with pytest.raises(KeyError, match="Invalid keys"):
        apply_chat_template({"messages": chat("q", "a"), "label": "billing"}, tokenizer)


def test_the_plain_openai_export_has_only_keys_openai_accepts(curated, tmp_path):
    result = export_jsonl(curated, tmp_path / "upload.jsonl", user=ADA, plain=True)
    for row in lines(result.path):
        assert set(row) <= OPENAI_KEYS and "messages" in row
        assert all(set(m) == {"role", "content"} for m in row["messages"])
    assert json.loads(result.manifest_path.read_text())["plain"] is True


def test_curates_fields_sit_under_one_key_and_come_back_on_import(curated, tmp_path,
                                                                   file_store):
    result = export_jsonl(curated, tmp_path / "out.jsonl", user=ADA)
    first = lines(result.path)[0]
    assert set(first) == {"messages", "curate"}
    ours = first["curate"]
    assert (ours["external_id"], ours["label"], ours["tags"]) == ("t-1", "billing",
                                                                  ["refund", "priority"])
    assert {"curate_id", "version", "split", "status", "source"} <= set(ours)
    again = file_store("again.duckdb")
    import_file(again, result.path, user=ADA)
    assert [(e.external_id, e.label, e.tags) for e in again.find()] == [
        (e.external_id, e.label, e.tags) for e in curated.find()]


def test_alpaca_always_has_system_and_history(curated, tmp_path):
    # LLaMA-Factory fails with KeyError('history') on a file where no row has the key
    result = export_jsonl(curated, tmp_path / "single.jsonl", fmt="alpaca", user=ADA,
                          where=curated_filter(label="billing"))
    row, = lines(result.path)
    assert row["system"] == "" and row["history"] == []


def curated_filter(**criteria):
    from curation import ExampleFilter

    return ExampleFilter(status=("accepted",), **{k: (v,) for k, v in criteria.items()})


@pytest.mark.parametrize("fmt", ["openai", "alpaca"])
def test_the_llama_factory_entry_names_columns_the_file_has(curated, tmp_path, fmt):
    result = export_jsonl(curated, tmp_path / "lf" / f"mine-{fmt}.jsonl", fmt=fmt, user=ADA)
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert result.dataset_info == tmp_path / "lf" / "dataset_info.json"
    entry = info[f"mine-{fmt}"]
    assert entry["file_name"] == f"mine-{fmt}.jsonl"
    columns = set().union(*lines(result.path))
    assert set(entry["columns"].values()) <= columns
    if fmt == "openai":
        assert entry["formatting"] == "sharegpt"
        tags = entry["tags"]
        roles = {m[tags["role_tag"]] for row in lines(result.path) for m in row["messages"]}
        assert roles == {tags["user_tag"], tags["assistant_tag"], tags["system_tag"]}
    else:
        assert entry["formatting"] == "alpaca"
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["dataset_info"] == str(result.dataset_info)
    assert manifest["dataset_name"] == f"mine-{fmt}"


def test_dataset_info_keeps_other_entries(curated, tmp_path):
    folder = tmp_path / "lf"
    folder.mkdir()
    (folder / "dataset_info.json").write_text('{"theirs": {"file_name": "theirs.json"}}')
    export_jsonl(curated, folder / "a.jsonl", user=ADA)
    export_jsonl(curated, folder / "b.jsonl", fmt="alpaca", user=ADA)
    export_jsonl(curated, folder / "a.jsonl", fmt="alpaca", user=ADA)  # replaces its entry
    info = json.loads((folder / "dataset_info.json").read_text())
    assert sorted(info) == ["a", "b", "theirs"]
    assert info["a"]["formatting"] == "alpaca" and info["theirs"] == {"file_name": "theirs.json"}


@pytest.mark.parametrize("fmt", sorted(set(OUTPUT_FORMATS) - {"openai", "alpaca"}))
def test_formats_llama_factory_cannot_read_get_no_entry(curated, tmp_path, fmt):
    result = export_jsonl(curated, tmp_path / "x.jsonl", fmt=fmt, user=ADA)
    assert result.dataset_info is None and not (tmp_path / "dataset_info.json").exists()
    assert json.loads(result.manifest_path.read_text())["dataset_info"] is None


def test_a_broken_dataset_info_refuses_the_export_before_writing(curated, tmp_path):
    folder = tmp_path / "lf"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("[1, 2]")
    snapshots = len(curated.snapshots())
    with pytest.raises(InvalidValue, match="dataset_info.json is not a JSON object"):
        export_jsonl(curated, folder / "x.jsonl", user=ADA)
    assert [p.name for p in folder.iterdir()] == ["dataset_info.json"]
    assert (folder / "dataset_info.json").read_text() == "[1, 2]"
    assert len(curated.snapshots()) == snapshots  # refused before the snapshot, too
    export_jsonl(curated, folder / "x.jsonl", fmt="bedrock", user=ADA)  # needs no entry


def test_bedrock_export_follows_the_conversation_schema(curated, tmp_path):
    rows = lines(export_jsonl(curated, tmp_path / "b.jsonl", fmt="bedrock", user=ADA,
                              plain=True).path)
    for row, record in zip(rows, RECORDS):
        assert row["schemaVersion"] == BEDROCK_SCHEMA_VERSION
        assert set(row) <= {"schemaVersion", "system", "messages"}
        turns = [m for m in record["messages"] if m["role"] != "system"]
        assert row["messages"] == [{"role": m["role"], "content": [{"text": m["content"]}]}
                                   for m in turns]
    assert "system" not in rows[0] and rows[1]["system"] == [{"text": "You are terse."}]


def test_vertex_export_follows_gemini_tuning_schema(curated, tmp_path):
    rows = lines(export_jsonl(curated, tmp_path / "v.jsonl", fmt="vertex", user=ADA,
                              plain=True).path)
    for row, record in zip(rows, RECORDS):
        assert set(row) <= {"systemInstruction", "contents"}
        turns = [m for m in record["messages"] if m["role"] != "system"]
        assert [c["role"] for c in row["contents"]] == [
            {"user": "user", "assistant": "model"}[m["role"]] for m in turns]
        assert [c["parts"] for c in row["contents"]] == [[{"text": m["content"]}]
                                                         for m in turns]
    assert "systemInstruction" not in rows[0]
    assert rows[1]["systemInstruction"] == {"role": "system",
                                            "parts": [{"text": "You are terse."}]}


def test_round_trip_formats_are_the_readable_ones():
    assert set(ROUND_TRIP_FORMATS) == set(OUTPUT_FORMATS) - {"bedrock", "vertex"}


def test_a_runs_train_rows_are_read_from_the_curate_object_and_from_older_files(curated,
                                                                                 tmp_path):
    from training.eval import train_rows_from_run
    from training.run_folder import TRAIN_FILE

    result = export_jsonl(curated, tmp_path / "run" / TRAIN_FILE, user=ADA)
    rows = train_rows_from_run(result.path.parent)
    assert [(r["id"], r["label"]) for r in rows] == [(e.id, e.label) for e in curated.find()]
    old = tmp_path / "old"  # a run folder written before the `curate` object
    old.mkdir()
    (old / TRAIN_FILE).write_bytes(orjson.dumps(
        {"messages": chat("q", "a"), "label": "billing",
         "metadata": {"curate_id": 7, "status": "accepted"}}) + b"\n")
    assert [(r["id"], r["label"]) for r in train_rows_from_run(old)] == [(7, "billing")]
