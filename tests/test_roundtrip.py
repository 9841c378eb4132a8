"""Property: import -> export (each output format) -> import gives back the same examples."""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation import Store, export_jsonl, import_file
from curation.formats import OUTPUT_FORMATS, content_hash
from tests.conftest import admin

# Any character but lone surrogates (not encodable) and "\r" (stored as "\n"), with the
# awkward ones drawn often: emoji (incl. a ZWJ sequence and a skin tone), CJK, combining marks,
# quotes, backslashes, newlines, tabs, NUL, line/paragraph separators, RTL text.
AWKWARD = ["🙂", "👩‍💻", "👍🏽", "日本語", "中文", "한국어", "e\u0301", "\u0308", "\"", "'", "\\",
           "\\n", "\n", "\n\n", "\t", " ", "\u00a0", "\u2028", "\u2029", "\x00", "مرحبا", "{}",
           "[\"x\"]", "NaN", "Ω"]
CHARS = st.characters(exclude_categories=["Cs"], exclude_characters="\r")
CHUNK = st.one_of(CHARS, st.sampled_from(AWKWARD))
TEXT = st.lists(CHUNK, min_size=1, max_size=12).map("".join)
CONTENT = TEXT.filter(lambda s: s.strip())
TAG = TEXT.map(str.strip).filter(lambda s: s and "," not in s)


@st.composite
def conversations(draw) -> list[dict[str, str]]:
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(CONTENT)})
    for _ in range(draw(st.integers(1, 4))):
        messages += [{"role": "user", "content": draw(CONTENT)},
                     {"role": "assistant", "content": draw(CONTENT)}]
    return messages


EXAMPLE = st.fixed_dictionaries({
    "messages": conversations(),
    "label": st.none() | TEXT,
    "tags": st.lists(TAG, max_size=4, unique=True),
    "id": st.none() | CONTENT,
})
DATASETS = st.lists(EXAMPLE, min_size=1, max_size=6,
                    unique_by=lambda e: content_hash(e["messages"]))


def expected(example: dict) -> tuple:
    """What the store keeps: contents exactly, the label stripped (blank: none), tags, id."""
    label = (example["label"] or "").strip() or None
    return example["messages"], label, tuple(example["tags"]), example["id"]


def kept(store: Store) -> list[tuple]:
    return [(e.messages, e.label, e.tags, e.external_id) for e in store.find()]


def write_input(path: Path, dataset: list[dict]) -> Path:
    with open(path, "wb") as f:
        for example in dataset:
            record = {k: v for k, v in example.items() if v is not None}
            f.write(orjson.dumps(record) + b"\n")
    return path


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(dataset=DATASETS)
def test_import_export_import_keeps_conversations_and_metadata(dataset):
    want = [expected(e) for e in dataset]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with Store(tmp / "first.duckdb") as first:
            report = import_file(first, write_input(tmp / "in.jsonl", dataset),
                                 status="accepted", user=admin("prop"))
            assert report.rejected == [] and report.imported == len(dataset)
            assert kept(first) == want

            for fmt in OUTPUT_FORMATS:
                out = tmp / f"out-{fmt}.jsonl"
                result = export_jsonl(first, out, fmt=fmt, user=admin("prop"))
                assert result.count == len(dataset)
                assert result.manifest_path.is_file()
                with Store(tmp / f"second-{fmt}.duckdb") as second:
                    again = import_file(second, out, status="accepted", user=admin("prop"))
                    assert again.rejected == [] and again.imported == len(dataset), fmt
                    assert kept(second) == want, fmt
