"""Property: import -> export (each output format) -> import gives back the same examples,
including examples that share a conversation but not its label, or differ only by Unicode
normalisation or whitespace."""

from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation import ExampleFilter, Store, export_jsonl, import_file
from curation.formats import ROUND_TRIP_FORMATS, content_hash
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

            for fmt in ROUND_TRIP_FORMATS:
                out = tmp / f"out-{fmt}.jsonl"
                result = export_jsonl(first, out, fmt=fmt, user=admin("prop"))
                assert result.count == len(dataset)
                assert result.manifest_path.is_file()
                with Store(tmp / f"second-{fmt}.duckdb") as second:
                    again = import_file(second, out, status="accepted", user=admin("prop"))
                    assert again.rejected == [] and again.imported == len(dataset), fmt
                    assert kept(second) == want, fmt

            # plain: the conversations come back; external ids, labels and tags do not
            plain = export_jsonl(first, tmp / "plain.jsonl", user=admin("prop"), plain=True)
            assert b'"curate"' not in plain.path.read_bytes()
            with Store(tmp / "third.duckdb") as third:
                import_file(third, plain.path, status="accepted", user=admin("prop"))
                conversations = {orjson.dumps(m): m for m, *_ in want}
                assert [e.messages for e in third.find()] == list(conversations.values())
                assert ({(e.label, e.tags, e.external_id) for e in third.find()}
                        <= {(None, (), None)})


# --- examples that are alike but not the same survive export -> import -------------------------

def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def multiset(store: Store) -> list[tuple]:
    return sorted((orjson.dumps(e.messages), e.label or "", e.tags, e.external_id or "")
                  for e in store.find())


def export_and_reimport(store: Store, tmp: Path, fmt: str) -> tuple[Store, object]:
    out = tmp / f"out-{fmt}.jsonl"
    export_jsonl(store, out, fmt=fmt, where=ExampleFilter(), user=admin("prop"))
    second = Store(tmp / f"second-{fmt}.duckdb")
    return second, import_file(second, out, status="accepted", user=admin("prop"))


def test_round_trip_keeps_label_conflicts_and_unicode_variants(file_store, tmp_path):
    store = file_store()
    same = [{"role": "user", "content": "Café closed?"}, {"role": "assistant", "content": "Yes."}]
    variants = [
        (same, "billing"), (same, "access"), (same, None),      # one conversation, three labels
        ([{"role": "user", "content": nfd("Café closed?")}, same[1]], "billing"),  # NFD
        ([{"role": "user", "content": "Café closed? "}, same[1]], "billing"),     # a space
        ([{"role": "user", "content": "café closed?"}, same[1]], "billing"),      # case
    ]
    for messages, label in variants:
        store.add(messages, actor="sme", label=label, status="accepted")
    for fmt in ROUND_TRIP_FORMATS:
        second, report = export_and_reimport(store, tmp_path, fmt)
        with second:
            assert report.rejected == [] and report.duplicates_in_file == [], fmt
            assert report.imported == len(variants), fmt
            assert multiset(second) == multiset(store), fmt
            # the two other labels of line 1's conversation are shown, not dropped
            assert [(c.line, c.other_line) for c in report.label_conflicts] == [(2, 1), (3, 1)]


PAIRS = st.lists(st.tuples(conversations(), st.sampled_from(["nfd", "space", "relabel", "id"]),
                           TEXT.map(str.strip).filter(bool)), min_size=1, max_size=4)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pairs=PAIRS)
def test_round_trip_of_look_alike_examples_gives_back_the_same_set(pairs):
    """Each drawn conversation is stored twice: as drawn, and changed in one way the import
    once took for a repeat (NFD text, an outer space, another label, another id)."""
    records = []
    for messages, change, label in pairs:
        other = [dict(m) for m in messages]
        first = {"messages": messages, "label": label, "id": "a"}
        if change == "nfd":
            other[-1]["content"] = nfd(other[-1]["content"]) + "\u0301"  # decomposed accent
        elif change == "space":
            other[-1]["content"] = " " + other[-1]["content"]
        records += [first, {"messages": other, "label": label + "+" if change == "relabel"
                            else label, "id": "b" if change == "id" else "a"}]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with Store(tmp / "first.duckdb") as first:
            import_file(first, write_input(tmp / "in.jsonl", records), status="accepted",
                        user=admin("prop"))
            want = multiset(first)
            assert len(want) == len({orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
                                     for r in records})
            for fmt in ROUND_TRIP_FORMATS:
                second, report = export_and_reimport(first, tmp, fmt)
                with second:
                    assert report.rejected == [], fmt
                    assert multiset(second) == want, fmt
