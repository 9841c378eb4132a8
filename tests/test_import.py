"""import_file against real DuckDB files: line reports, encodings, idempotence, options,
JSON arrays, CSV, atomicity under kill -9 and the single-writer lock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time

import orjson
import pytest

from curation import (ExampleFilter, ImportReport, InvalidValue, LineError, NotUtf8, Store,
                      UnreadableFile, import_file, importer)
from curation.formats import parse_mapping
from tests.conftest import PROJECT_ROOT, add_legacy, admin, chat, write_jsonl


def rec(i: int, **extra) -> dict:
    return {"messages": chat(f"question {i}", f"answer {i}"), **extra}


def rejected(report: ImportReport) -> list[tuple[int, str]]:
    return [(e.line, e.code) for e in report.rejected]


def contents(store: Store) -> list[list[str]]:
    return [[m["content"] for m in ex.messages] for ex in store.find()]


# --- the acceptance test -----------------------------------------------------------------------

def test_10000_lines_with_3_malformed_import_9997_and_name_exactly_those_lines(empty_store,
                                                                                tmp_path):
    bad = {17: ('{"messages": [{"role": "user", "content": "cut off', "invalid_json"),
           5000: (orjson.dumps({"messages": [{"role": "assistant", "content": "a"},
                                             {"role": "user", "content": "q"}]}).decode(),
                  "invalid_turn_order"),
           9999: ('["a", "list", "not", "an", "object"]', "data_type")}
    lines = [bad[n][0] if n in bad else rec(n) for n in range(1, 10_001)]
    path = write_jsonl(tmp_path / "big.jsonl", lines)

    report = import_file(empty_store, path, user=admin("tester"))

    assert report.lines == 10_000
    assert report.imported == 9_997
    assert rejected(report) == [(n, code) for n, (_, code) in sorted(bad.items())]
    assert report.already_in_store == [] and report.duplicates_in_file == []
    assert empty_store.count() == 9_997
    assert report.file_kind == "jsonl"
    assert "9,997 imported" in report.summary() and "3 rejected" in report.summary()
    # ids follow the order of the lines
    first, last = empty_store.find(limit=1)[0], empty_store.find(order_by="-id", limit=1)[0]
    assert first.messages == chat("question 1", "answer 1")
    assert last.messages == chat("question 10000", "answer 10000")


# --- line-level errors -------------------------------------------------------------------------

def test_line_errors_are_reported_with_their_line_numbers(empty_store, tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        rec(1),                                                      # 1
        "",                                                          # 2 blank
        '{"messages": [',                                            # 3
        '"just a string"',                                           # 4
        '{"prompt": "p5", "completion": NaN}',                       # 5
        "   \t",                                                     # 6 blank
        '{"prompt": "p7 \\ud800", "completion": "c7"}',              # 7
        '{"prompt": "p8", "completion": "c8", "label": -Infinity}',  # 8
        '{"prompt": "p9 \\ud83d\\ude00", "completion": "c9"}',       # 9 a valid pair: emoji
        '{"prompt": "p10", "completion": "c10",}',                   # 10 trailing comma
        "42",                                                        # 11
        '{"text": "no known keys"}',                                 # 12
    ])
    report = import_file(empty_store, path, user=admin("t"))
    assert rejected(report) == [(3, "invalid_json"), (4, "data_type"), (5, "nan_value"),
                                (7, "lone_surrogate"), (8, "nan_value"), (10, "invalid_json"),
                                (11, "data_type"), (12, "unknown_format")]
    fields = {e.line: e.field for e in report.rejected}
    assert fields[5] == "completion" and fields[7] == "prompt" and fields[8] == "label"
    assert all(e.message for e in report.rejected)
    assert "column" in report.rejected[0].message
    assert report.lines == 10            # blank lines are not records
    assert report.imported == 2
    assert contents(empty_store) == [["question 1", "answer 1"], ["p9 😀", "c9"]]


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_json_nested_too_deeply_is_one_rejected_record_not_a_traceback(empty_store, tmp_path,
                                                                       kind):
    """100,000 nested brackets made Python's JSON decoder raise RecursionError, which ended
    the whole import with a traceback."""
    deep = "[" * 100_000 + "]" * 100_000
    if kind == "jsonl":
        path = write_jsonl(tmp_path / "deep.jsonl", [rec(1), deep, rec(3)])
        expected, imported = [(2, "invalid_json")], 2
    else:  # a JSON array: what follows the deep item cannot be found, so it is not read
        path = tmp_path / "deep.json"
        path.write_text(f"[{json.dumps(rec(1))},\n{deep},\n{json.dumps(rec(3))}]")
        expected, imported = [(2, "invalid_json")], 1
    report = import_file(empty_store, path, user=admin("t"))
    assert rejected(report) == expected and report.imported == imported
    assert "nested too deeply" in report.rejected[0].message


def test_validation_errors_carry_code_field_and_line(empty_store, tmp_path):
    path = write_jsonl(tmp_path / "v.jsonl", [
        rec(1),
        {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]},
        {"instruction": "long " * 10, "output": "a"},
        {"messages": chat("q", "a"), "tags": [1, 2]},
    ])
    report = import_file(empty_store, path, user=admin("t"), max_field_chars=20)
    assert report.rejected == [
        LineError(2, "unrecognized_role", report.rejected[0].message, "messages[1].role"),
        LineError(3, "field_too_long", report.rejected[1].message, "instruction"),
        LineError(4, "wrong_type", report.rejected[2].message, "tags"),
    ]
    assert report.imported == 1


# --- encodings and line endings ----------------------------------------------------------------

def test_bom_and_crlf_line_endings(empty_store, tmp_path):
    lines = [orjson.dumps(rec(1)),
             orjson.dumps({"prompt": "two\r\nlines", "completion": "ok\r\n"}),
             b"",
             orjson.dumps(rec(3))]
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    report = import_file(empty_store, path, user=admin("t"))
    assert (report.imported, report.rejected, report.lines) == (3, [], 3)
    assert contents(empty_store) == [["question 1", "answer 1"], ["two\nlines", "ok\n"],
                                     ["question 3", "answer 3"]]
    assert all("\r" not in ex.messages[1]["content"] + ex.messages[0]["content"]
               for ex in empty_store.find())


def test_not_utf8_jsonl_is_refused_whole_and_names_the_line(seeded_store, tmp_path):
    before = seeded_store.count()
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(orjson.dumps(rec(1)) + b"\n" + orjson.dumps(rec(2)) + b"\n"
                     + '{"prompt": "café", "completion": "crème"}\n'.encode("latin-1")
                     + orjson.dumps(rec(4)) + b"\n")
    with pytest.raises(NotUtf8, match="not UTF-8") as info:
        import_file(seeded_store, path, user=admin("t"))
    assert "line 3" in str(info.value)
    assert seeded_store.count() == before
    # the store is usable afterwards, and nothing of the refused file was kept
    report = import_file(seeded_store, write_jsonl(tmp_path / "ok.jsonl", [rec(1)]),
                         user=admin("t"))
    assert report.imported == 1 and seeded_store.count() == before + 1


@pytest.mark.parametrize("name, data", [
    ("latin1.csv", "prompt,completion\nq,a\ncafé,crème\n".encode("latin-1")),
    ("latin1.json", '[{"prompt": "q", "completion": "a"},\n {"prompt": "café", "completion": '
                    '"x"}]'.encode("latin-1")),
])
def test_not_utf8_csv_and_json_array_are_refused_whole(seeded_store, tmp_path, name, data):
    before = seeded_store.count()
    (tmp_path / name).write_bytes(data)
    with pytest.raises(NotUtf8, match="not UTF-8") as info:
        import_file(seeded_store, tmp_path / name, user=admin("t"))
    # where, as for JSONL: the line and the byte ("é" is one byte, 0xe9, in Latin-1)
    assert "(line 3, byte 4 of the line is b'\\xe9')" in str(info.value) if name.endswith(
        ".csv") else "(line 2, byte 17 of the line is b'\\xe9')" in str(info.value)
    assert seeded_store.count() == before


# --- idempotence and duplicates ------------------------------------------------------------

def test_importing_the_same_file_twice_adds_nothing(seeded_store, tmp_path):
    path = write_jsonl(tmp_path / "again.jsonl", [rec(1), "", rec(2), rec(3)])
    first = import_file(seeded_store, path, user=admin("t"))
    count = seeded_store.count()
    second = import_file(seeded_store, path, user=admin("t"))
    assert first.imported == 3 and first.already_in_store == []
    assert second.imported == 0 and second.already_in_store == [1, 3, 4]
    assert second.rejected == [] and second.duplicates_in_file == []
    assert seeded_store.count() == count
    assert "3 already in the store" in second.summary()


def test_known_example_with_other_tags_is_still_skipped(seeded_store, tmp_path):
    known = seeded_store.find()[0]
    path = write_jsonl(tmp_path / "retag.jsonl", [
        {"messages": known.messages, "label": known.label, "id": known.external_id,
         "tags": ["new"]}])
    report = import_file(seeded_store, path, split="eval", user=admin("t"))
    assert report.imported == 0 and report.already_in_store == [1]
    assert report.label_conflicts == []
    assert seeded_store.get(known.id).tags == known.tags


def test_known_conversation_with_another_label_is_imported_as_a_label_conflict(seeded_store,
                                                                                tmp_path):
    known = seeded_store.find()[0]
    path = write_jsonl(tmp_path / "relabel.jsonl",
                       [{"messages": known.messages, "label": "other", "id": known.external_id}])
    before = seeded_store.count()
    report = import_file(seeded_store, path, user=admin("t"))
    assert report.imported == 1 and report.already_in_store == []
    assert report.label_conflicts == [importer.LabelConflict(1, "other", known.label,
                                                             other_example=known.id)]
    assert f"example #{known.id}" in report.label_conflicts[0].message
    assert "1 imported with a conflicting label" in report.summary()
    assert seeded_store.count() == before + 1
    new = seeded_store.find(order_by="-id", limit=1)[0]
    assert (new.messages, new.label) == (known.messages, "other")
    assert seeded_store.get(known.id).label == known.label  # the stored one is untouched
    [event] = seeded_store.history(new.id)  # the store records the conflict too
    assert event["after"]["label_conflict"] == report.label_conflicts[0].message
    # importing the file again adds nothing: both labels are now stored
    again = import_file(seeded_store, path, user=admin("t"))
    assert again.imported == 0 and again.already_in_store == [1]


def test_same_conversation_with_two_labels_in_one_file_keeps_both(empty_store, tmp_path):
    path = write_jsonl(tmp_path / "two.jsonl", [rec(1, label="a"), rec(2), rec(1, label="b"),
                                                rec(1, label="a"), rec(1)])
    report = import_file(empty_store, path, user=admin("t"))
    assert report.imported == 4 and report.duplicates_in_file == [(4, 1)]
    assert [(c.line, c.label, c.other_line, c.other_label) for c in report.label_conflicts] == [
        (3, "b", 1, "a"), (5, None, 1, "a")]
    assert [e.label for e in empty_store.find()] == ["a", None, "b", None]
    assert report.to_dict()["label_conflicts"][0]["message"].startswith(
        "same conversation as line 1, labelled 'a' there and 'b' here")


def test_duplicates_inside_one_file_are_imported_once(empty_store, tmp_path):
    path = write_jsonl(tmp_path / "dups.jsonl", [
        rec(1),
        rec(2),
        {"messages": chat("  question 1\n", "answer 1 ")},          # not the same: spaces
        {"prompt": "question 2", "completion": "answer 2"},          # same in another format
        rec(3, id="e3"),
        rec(1, tags=["x"]),                                          # tags are not identity
        rec(3, id="e4"),                                             # another external id
        rec(3),                                                      # no id: matches any id
    ])
    report = import_file(empty_store, path, user=admin("t"))
    assert report.imported == 5
    assert report.duplicates_in_file == [(4, 2), (6, 1), (8, 5)]
    assert report.to_dict()["duplicates_in_file"][0] == {"line": 4, "first_line": 2}
    assert contents(empty_store) == [["question 1", "answer 1"], ["question 2", "answer 2"],
                                     ["  question 1\n", "answer 1 "],
                                     ["question 3", "answer 3"], ["question 3", "answer 3"]]
    assert "3 repeated within the file" in report.summary()
    assert report.label_conflicts == []


@pytest.mark.parametrize("order", [(None, "E1", "E2"), ("E1", "E2", None), ("E1", None, "E1")])
def test_no_external_id_of_a_repeated_conversation_is_lost_whatever_the_order(
        empty_store, tmp_path, order):
    """A record without an id first used to take in the records with ids after it, so
    (none, E1, E2) kept one example and no id, while (E1, E2, none) kept both ids."""
    path = write_jsonl(tmp_path / "ids.jsonl", [rec(1, **({"id": i} if i else {}))
                                                for i in order])
    report = import_file(empty_store, path, user=admin("t"))
    kept = sorted(ex.external_id or "" for ex in empty_store.find())
    assert set(kept) - {""} == {i for i in order if i}  # every id is stored
    assert report.imported + len(report.duplicates_in_file) == 3
    assert report.imported == {(None, "E1", "E2"): 3, ("E1", "E2", None): 2,
                               ("E1", None, "E1"): 1}[order]


def test_repeat_of_a_stored_conversation_inside_the_file(seeded_store, tmp_path):
    known = seeded_store.find()[0]
    same = {"messages": known.messages, "label": known.label, "id": known.external_id}
    path = write_jsonl(tmp_path / "r.jsonl", [rec(1), same, same])
    report = import_file(seeded_store, path, user=admin("t"))
    assert report.imported == 1
    assert report.already_in_store == [2] and report.duplicates_in_file == [(3, 2)]


# --- options -----------------------------------------------------------------------------------

def test_split_status_source_tags_external_id_and_actor(empty_store, tmp_path):
    path = write_jsonl(tmp_path / "opts.jsonl", [
        rec(1, id="ext-1", label="billing", tags=["a", "b"]),
        rec(2, id=22),
        rec(3, tags="b, d"),
    ])
    report = import_file(empty_store, path, split="eval", status="accepted", user=admin("alice"),
                         tags=("b", "c", ""))
    assert report.imported == 3
    examples = empty_store.find()
    assert [e.external_id for e in examples] == ["ext-1", "22", None]
    assert [e.tags for e in examples] == [("a", "b", "c"), ("b", "c"), ("b", "d", "c")]
    assert [e.label for e in examples] == ["billing", None, None]
    assert {(e.split, e.status, e.source, e.version, e.created_by, e.updated_by)
            for e in examples} == {("eval", "accepted", "opts.jsonl", 1, "alice", "alice")}
    assert empty_store.get(examples[0].id).external_id == "ext-1"

    path2 = write_jsonl(tmp_path / "other.jsonl", [rec(4)])
    import_file(empty_store, path2, source="vendor batch 7", user=admin("bob"))
    newest = empty_store.find(order_by="-id", limit=1)[0]
    assert (newest.source, newest.split, newest.status) == ("vendor batch 7", "train",
                                                           "pending")
    assert empty_store.counts_by("source") == {"opts.jsonl": 3, "vendor batch 7": 1}


def test_one_create_event_and_one_version_per_imported_example(empty_store, tmp_path):
    path = write_jsonl(tmp_path / "audit.jsonl", [rec(1, label="l1"), "{bad", rec(3)])
    import_file(empty_store, path, status="accepted", user=admin("alice"))
    examples = empty_store.find()
    for example, line in zip(examples, (1, 3)):
        [event] = empty_store.history(example.id)
        assert event["action"] == "create" and event["actor"] == "alice"
        assert event["version"] == 1 and event["before"] is None
        assert event["after"] == {"source": "audit.jsonl", "split": "train",
                                  "status": "accepted", "label": example.label, "line": line}
    for example in examples:
        [version] = empty_store.versions(example.id)
        assert (version["version"], version["changed_by"], version["messages"]) == \
            (1, "alice", example.messages)
    # the current version is stored once, in `examples`; example_versions holds earlier ones
    assert empty_store.cursor().execute(
        "SELECT count(*) FROM example_versions").fetchone()[0] == 0
    snap = empty_store.snapshot(ExampleFilter(), actor="t")
    rows = list(empty_store.snapshot_rows(snap.id))
    assert [(r["id"], r["version"], r["messages"], r["label"]) for r in rows] == \
        [(e.id, 1, e.messages, e.label) for e in examples]


@pytest.mark.parametrize("kwargs, words", [
    ({"split": "test"}, "split"),
    ({"status": "done"}, "status"),
    ({"fmt": "xml"}, "format"),
    ({"fmt": "mapped"}, "mapping"),
    ({"max_field_chars": 0}, "max_field_chars must be a whole number of at least 1"),
    ({"max_field_chars": -5}, "max_field_chars"),
])
def test_invalid_options_are_refused(seeded_store, tmp_path, kwargs, words):
    path = write_jsonl(tmp_path / "x.jsonl", [rec(1)])
    before = seeded_store.count()
    with pytest.raises(InvalidValue, match=words):
        import_file(seeded_store, path, user=admin("t"), **kwargs)
    assert seeded_store.count() == before


def test_missing_and_empty_files_are_unreadable(empty_store, tmp_path):
    with pytest.raises(UnreadableFile, match="no such file"):
        import_file(empty_store, tmp_path / "nope.jsonl", user=admin("t"))
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(UnreadableFile, match="empty"):
        import_file(empty_store, tmp_path / "empty.txt", user=admin("t"))


def test_explicit_format_and_mapped_jsonl(empty_store, tmp_path):
    path = write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "i1", "output": "o1"}, {"messages": chat("q", "a")}])
    report = import_file(empty_store, path, fmt="alpaca", user=admin("t"))
    assert report.imported == 1 and rejected(report) == [(2, "missing_field")]

    path = write_jsonl(tmp_path / "mapped.jsonl", [
        {"q": "mq1", "a": "ma1", "cat": "x", "tags": ["t1", "t2"]}, {"q": "mq2"}])
    report = import_file(empty_store, path, mapping=parse_mapping("prompt=q,response=a,"
                                                                  "label=cat,tags=tags"),
                         user=admin("t"))
    assert report.imported == 1 and rejected(report) == [(2, "missing_field")]
    assert report.rejected[0].field == "a"
    newest = empty_store.find(order_by="-id", limit=1)[0]
    assert (newest.messages, newest.label, newest.tags) == (chat("mq1", "ma1"), "x",
                                                            ("t1", "t2"))


def test_mapped_csv_errors_name_the_users_column_and_line(empty_store, tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("query,reply,intent,sys\n"
                    "ok,fine,a,\n"                       # 2
                    "  ,fine,a,\n"                       # 3: empty prompt
                    f"q4,{'r' * 30},a,\n"                # 4: response too long
                    f"q5,r5,{'l' * 30},\n"               # 5: label too long
                    "q6,\t,a,\n"                        # 6: empty response
                    "q7,r7,a,  \n")                      # 7: blank system cell: no system
    mapping = parse_mapping("prompt=query,response=reply,label=intent,system=sys")
    report = import_file(empty_store, path, mapping=mapping, max_field_chars=20, user=admin("t"))
    assert [(e.line, e.code, e.field) for e in report.rejected] == [
        (3, "missing_content", "query"), (4, "field_too_long", "reply"),
        (5, "field_too_long", "intent"), (6, "missing_content", "reply"),
        (7, "missing_content", "sys")]
    assert report.rejected[0].message == "column `query` (prompt) is empty"
    assert report.rejected[1].message.startswith("column `reply` (response) has 30 characters")
    assert not [e for e in report.rejected if "messages" in e.message or "label" == e.field]
    assert report.imported == 1


def test_mapped_jsonl_errors_name_the_users_keys(empty_store, tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"q": 42, "a": "x"},
        {"q": "q2", "a": "a2", "cat": {"x": 1}},
        {"q": "q3", "a": "a3", "kw": [1]},
        {"q": "q4", "a": "a4", "ref": ["r"]},
        '{"q": "q5", "a": NaN}',
    ])
    mapping = parse_mapping("prompt=q,response=a,label=cat,tags=kw,id=ref")
    report = import_file(empty_store, path, mapping=mapping, user=admin("t"))
    assert [(e.line, e.code, e.field) for e in report.rejected] == [
        (1, "wrong_type", "q"), (2, "wrong_type", "cat"), (3, "wrong_type", "kw"),
        (4, "wrong_type", "ref"), (5, "nan_value", "a")]
    assert [e.message.split(" must ")[0] for e in report.rejected[:4]] == [
        "column `q` (prompt)", "column `cat` (label)", "column `kw` (tags)",
        "column `ref` (id)"]


def test_progress_is_reported_up_to_the_file_size(empty_store, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [rec(i) for i in range(10_001)])
    calls = []
    import_file(empty_store, path, user=admin("t"), progress=lambda done, total: calls.append(
        (done, total)))
    size = path.stat().st_size
    assert len(calls) == 2 and calls[0][0] < size and calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_report_dict_and_saved_file(empty_store, tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [rec(1), "nope", rec(1)])
    report = import_file(empty_store, path, user=admin("t"))
    saved = report.save(tmp_path / "reports")
    data = json.loads(saved.read_text())
    assert saved.name.endswith("-r.jsonl.json")
    assert data == {"path": str(path), "file_kind": "jsonl", "lines": 3, "imported": 1,
                    "already_in_store": [], "duplicates_in_file": [{"line": 3, "first_line": 1}],
                    "rejected": [{"line": 2, "code": "invalid_json",
                                  "message": report.rejected[0].message, "field": None}],
                    "label_conflicts": [], "needs_answer": 0}


# --- JSON arrays -------------------------------------------------------------------------------

JSON_ARRAY = """\
[
  {"prompt": "p1",
   "completion": "c1"},
  {"prompt": "p2", "completion": 5},
  "not an object",
  {
    "messages": [{"role": "user", "content": "x"},
                 {"role": "assistant", "content": NaN}]
  },

  {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
   "id": "e-5", "label": "l5", "tags": ["t"]}
]
"""


def test_json_array_reports_the_line_where_each_bad_element_starts(empty_store, tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(JSON_ARRAY)
    report = import_file(empty_store, path, user=admin("t"))
    assert report.file_kind == "json" and report.lines == 5
    assert rejected(report) == [(4, "wrong_type"), (5, "data_type"), (6, "nan_value")]
    assert report.imported == 2
    [e1, e5] = empty_store.find()
    assert e1.messages == chat("p1", "c1")
    assert (e5.external_id, e5.label, e5.tags) == ("e-5", "l5", ("t",))
    assert [ev["after"]["line"] for ev in (empty_store.history(e1.id)[0],
                                           empty_store.history(e5.id)[0])] == [2, 11]


@pytest.mark.parametrize("first_line, kind", [
    ("[" * 1200 + "]" * 1200, "jsonl"),  # too deep for orjson, but whole: a JSONL line
    ("[" * 1100 + '"]] \\" ]"' + "]" * 1100, "jsonl"),  # brackets in strings do not count
    ('[{"prompt": "p1",', "json"),  # an array that goes on: a JSON array file
])
def test_a_first_line_that_is_one_whole_value_makes_the_file_jsonl(empty_store, tmp_path,
                                                                    first_line, kind):
    path = tmp_path / "deep.jsonl"
    path.write_text(first_line + "\n" + json.dumps(rec(1)) + "\n")
    report = import_file(empty_store, path, user=admin("t"))
    assert report.file_kind == kind
    if kind == "jsonl":  # the first line is refused, the record after it is read
        assert [r[0] for r in rejected(report)] == [1] and report.imported == 1


def test_json_array_with_bom_crlf_and_no_file_suffix(empty_store, tmp_path):
    path = tmp_path / "arr.data"
    path.write_bytes(b"\xef\xbb\xbf" + JSON_ARRAY.replace("\n", "\r\n").encode())
    report = import_file(empty_store, path, user=admin("t"))
    assert report.file_kind == "json"
    assert rejected(report) == [(4, "wrong_type"), (5, "data_type"), (6, "nan_value")]


def test_json_array_element_larger_than_the_read_buffer(empty_store, tmp_path):
    big = "word " * 300_000  # 1.5 MB: spans the importer's 1 MiB read blocks
    items = [rec(1), {"prompt": big, "completion": "c"}, rec(3), {"prompt": "p", "x": 1}]
    path = tmp_path / "big.json"
    path.write_text("[\n" + ",\n".join(json.dumps(i) for i in items) + "\n]\n")
    report = import_file(empty_store, path, user=admin("t"), max_field_chars=2_000_000)
    assert report.imported == 3 and rejected(report) == [(5, "missing_field")]
    assert empty_store.find()[1].messages[0]["content"] == big


def test_json_array_syntax_error_stops_at_that_element(empty_store, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n{"prompt": "p1", "completion": "c1"},\n{"prompt": oops},\n'
                    '{"prompt": "p3", "completion": "c3"}\n]\n')
    report = import_file(empty_store, path, user=admin("t"))
    assert rejected(report) == [(3, "invalid_json")]
    assert "cannot be read" in report.rejected[0].message
    assert report.imported == 1


def test_unclosed_json_array_is_reported(empty_store, tmp_path):
    path = tmp_path / "open.json"
    path.write_text('[\n{"prompt": "p1", "completion": "c1"},\n')
    report = import_file(empty_store, path, user=admin("t"))
    assert report.imported == 1 and [e.code for e in report.rejected] == ["invalid_json"]


def test_json_array_trailing_data_is_not_silently_dropped(empty_store, tmp_path):
    path = tmp_path / "two.json"
    path.write_text('[{"prompt": "p1", "completion": "c1"}]\n'
                    '{"prompt": "p2", "completion": "c2"}\n')
    report = import_file(empty_store, path, user=admin("t"))
    assert report.imported == 2 or report.rejected


def test_jsonl_whose_first_line_is_an_array(empty_store, tmp_path):
    path = write_jsonl(tmp_path / "first.jsonl", ['[1, 2]', rec(2), rec(3)])
    report = import_file(empty_store, path, user=admin("t"))
    assert rejected(report) == [(1, "data_type")]
    assert report.imported == 2


# --- CSV -------------------------------------------------------------------------------------

CSV = (
    'ticket,question,answer,category,tags\n'                       # 1
    'T-1,"Hello, world","Hi, there",billing,"a;b"\n'               # 2
    'T-2,"multi\nline question","answer with ""quotes""",access,\n'  # 3-4
    'T-3,too,many,fields,x,y\n'                                    # 5
    'T-4,q4,a4,,c\n'                                               # 6
    'T-5,q5\n'                                                     # 7
    ',q6,"a6\n\n\nend",bugs,\n'                                    # 8-11
    'T-7,"",a7,bugs,\n'                                            # 12
)
CSV_MAP = "prompt=question,response=answer,label=category,tags=tags,id=ticket"


@pytest.mark.parametrize("variant", ["lf", "bom_crlf"])
def test_mapped_csv(empty_store, tmp_path, variant):
    path = tmp_path / "tickets.csv"
    text = CSV if variant == "lf" else "\ufeff" + CSV.replace("\n", "\r\n")
    path.write_bytes(text.encode())
    report = import_file(empty_store, path, mapping=parse_mapping(CSV_MAP), user=admin("t"))
    assert report.file_kind == "csv"
    assert rejected(report) == [(5, "wrong_type"), (7, "wrong_type"), (12, "missing_content")]
    assert "6 fields" in report.rejected[0].message and "2 fields" in report.rejected[1].message
    assert report.imported == 4
    got = [(e.external_id, e.messages, e.label, e.tags) for e in empty_store.find()]
    assert got == [
        ("T-1", chat("Hello, world", "Hi, there"), "billing", ("a", "b")),
        ("T-2", chat("multi\nline question", 'answer with "quotes"'), "access", ()),
        ("T-4", chat("q4", "a4"), None, ("c",)),
        (None, chat("q6", "a6\n\n\nend"), "bugs", ()),
    ]


def test_csv_with_known_columns_needs_no_mapping(empty_store, tmp_path):
    path = tmp_path / "pc.csv"
    path.write_text("prompt,completion,label,extra\np1,c1,x,ignored\np2,c2,,\n")
    report = import_file(empty_store, path, user=admin("t"))
    assert report.imported == 2
    assert [(e.messages, e.label) for e in empty_store.find()] == [(chat("p1", "c1"), "x"),
                                                                    (chat("p2", "c2"), None)]
    path = tmp_path / "alpaca.csv"
    path.write_text("instruction,input,output\nTranslate,cat,chat\n")
    assert import_file(empty_store, path, user=admin("t")).imported == 1
    assert empty_store.find()[-1].messages == chat("Translate\ncat", "chat")


def test_csv_with_unknown_columns_needs_a_mapping(seeded_store, tmp_path):
    before = seeded_store.count()
    path = tmp_path / "unknown.csv"
    path.write_text("question,answer\nq,a\n")
    with pytest.raises(InvalidValue, match="need a mapping"):
        import_file(seeded_store, path, user=admin("t"))
    assert seeded_store.count() == before


def test_csv_mapped_column_missing_from_header(seeded_store, tmp_path):
    before = seeded_store.count()
    path = tmp_path / "t.csv"
    path.write_text("question,answer\nq,a\n")
    with pytest.raises(InvalidValue, match="category"):
        import_file(seeded_store, path, user=admin("t"),
                    mapping=parse_mapping("prompt=question,response=answer,label=category"))
    assert seeded_store.count() == before


def test_csv_line_numbers_after_a_blank_line(empty_store, tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("prompt,completion\nq1,a1\n\nq2,a2,extra\n")
    report = import_file(empty_store, path, user=admin("t"))
    assert rejected(report) == [(4, "wrong_type")]


def test_csv_field_over_the_csv_modules_limit_is_one_rejected_line(seeded_store, tmp_path):
    # 200,000 characters: over the csv module's default limit of 131,072, which aborted the
    # whole import with _csv.Error before
    path = tmp_path / "big.csv"
    path.write_text("prompt,completion\nq1,a1\n" + f'"{"x" * 200_000}",a2\nq3,a3\n')
    before = seeded_store.count()
    report = import_file(seeded_store, path, user=admin("t"))
    assert rejected(report) == [(3, "field_too_long")]
    assert report.rejected[0].field == "prompt" and "200,000" in report.rejected[0].message
    assert report.imported == 2 and seeded_store.count() == before + 2
    assert contents(seeded_store)[-2:] == [["q1", "a1"], ["q3", "a3"]]


def test_csv_field_over_the_reader_limit_skips_to_the_next_row(empty_store, tmp_path,
                                                               monkeypatch):
    monkeypatch.setattr(importer, "CSV_FIELD_LIMIT", 100)
    path = tmp_path / "huge.csv"
    path.write_text("prompt,completion\nq1,a1\n"                       # 1-2
                    f'"{"x" * 60}\n{"y" * 60}\n"",a, b",c\n'           # 3-5: quoted, too long
                    "q6,a6\n"                                          # 6
                    f"q7,{'z' * 150}\n"                                # 7: unquoted, too long
                    "q8,a8\n"                                          # 8
                    f'q9,a 5" screen{"z" * 150}\n'                    # 9: a stray quote
                    "q10,a10\n"                                        # 10
                    f'"q11","{"w" * 150}""\n""\n"\n'                 # 11-13: "" inside quotes
                    "q14,a14\n")                                       # 14
    report = import_file(empty_store, path, user=admin("t"))
    assert rejected(report) == [(3, "field_too_long"), (7, "field_too_long"),
                                (9, "field_too_long"), (11, "field_too_long")]
    assert "100 characters" in report.rejected[0].message
    assert contents(empty_store) == [["q1", "a1"], ["q6", "a6"], ["q8", "a8"],
                                     ["q10", "a10"], ["q14", "a14"]]


def test_csv_rows_with_nul_characters_are_rejected_one_by_one(empty_store, tmp_path):
    path = tmp_path / "nul.csv"
    path.write_bytes(b"prompt,completion\nq1,a1\nq\x002,a2\n" + b"\x00" * 300_000
                     + b"\nq4,a4\n")
    report = import_file(empty_store, path, user=admin("t"))
    assert rejected(report) == [(3, "invalid_csv"), (4, "invalid_csv")]
    assert "line 3 contains a NUL character" in report.rejected[0].message
    assert contents(empty_store) == [["q1", "a1"], ["q4", "a4"]]


def test_nul_filled_csv_is_refused_with_a_clear_error(seeded_store, tmp_path):
    path = tmp_path / "zeros.csv"
    path.write_bytes(b"\x00" * 300_000)
    before = seeded_store.count()
    with pytest.raises(UnreadableFile, match="header .* NUL"):
        import_file(seeded_store, path, user=admin("t"))
    assert seeded_store.count() == before


# --- atomicity under kill -9 -------------------------------------------------------------------

CHILD_IMPORT = textwrap.dedent("""
    import multiprocessing, sys, time
    from curation import Store, User, import_file, importer
    store = Store(sys.argv[1])
    kill_at = sys.argv[3]
    if sys.argv[4] == "workers":
        importer.PARALLEL_MIN_BYTES, importer._worker_count = 0, lambda: 2

    def progress(done, total):
        print("progress", done, total, flush=True)
        if kill_at == "staging" or done == total:
            print("workers", *[p.pid for p in multiprocessing.active_children()], flush=True)
            print("ready", flush=True)
            time.sleep(600)

    import_file(store, sys.argv[2], user=User("child", "admin"), progress=progress)
    print("committed", flush=True)
""")


def _run_python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _read_until_ready(proc: subprocess.Popen, timeout: float) -> list[str]:
    """Lines of the child's stdout up to 'ready'; kill the child if it takes too long."""
    lines: list[str] = []
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                break
    finally:
        timer.cancel()
    return lines


def _gone(pid: int) -> bool:
    """The process has exited (no longer listed, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("kill_at, n_lines, parse", [("staging", 15_000, "main"),
                                                      ("staging", 40_000, "workers"),
                                                      ("before_commit", 130_000, "workers")])
def test_kill_9_during_import_leaves_the_store_as_it_was(tmp_path, kill_at, n_lines, parse):
    db = tmp_path / "ws" / "curate.duckdb"
    with Store(db) as store:
        import_file(store, write_jsonl(tmp_path / "seed.jsonl", [rec(-1), rec(-2), rec(-3)]),
                    user=admin("seeder"))
        before = contents(store)
    assert len(before) == 3

    big = tmp_path / "big.jsonl"
    template = (b'{"messages":[{"role":"user","content":"bulk question %d"},'
                b'{"role":"assistant","content":"bulk answer %d"}]}\n')
    big.write_bytes(b"".join(template % (i, i) for i in range(n_lines)))

    child = _run_python(CHILD_IMPORT, str(db), str(big), kill_at, parse)
    try:
        lines = _read_until_ready(child, timeout=40)
        assert lines and lines[-1] == "ready", (lines, child.stderr.read())
        workers = [int(pid) for pid in lines[-2].split()[1:]]
        if parse == "workers" and sys.platform.startswith("linux"):
            # still parsing, or all parsed and the workers already gone before COMMIT
            assert len(workers) == (2 if kill_at == "staging" else 0)
        done, total = map(int, lines[-3].split()[1:])
        # the import is underway in its transaction: staging batches, or every row adopted
        assert (done < total) if kill_at == "staging" else (done == total)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        assert "committed" not in child.stdout.read()
        # the parsing processes see their pipes close and exit too
        deadline = time.monotonic() + 10
        while not all(map(_gone, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(map(_gone, workers)), workers
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()

    with Store(db) as store:
        assert store.count() == 3
        assert contents(store) == before
        assert store.cursor().execute("SELECT count(*) FROM events").fetchone()[0] == 3
        assert [len(store.versions(e.id)) for e in store.find()] == [1, 1, 1]
        assert store.cursor().execute(
            "SELECT count(*) FROM example_versions").fetchone()[0] == 0
        report = import_file(store, write_jsonl(tmp_path / "after.jsonl", [rec(1), rec(-1)]),
                             user=admin("t"))
        assert report.imported == 1 and report.already_in_store == [2]
        assert store.count() == 4


# --- one writer process ------------------------------------------------------------------------

CHILD_OPEN = "import sys; from curation import Store; Store(sys.argv[1]).close(); print('opened')"


def test_second_process_gets_store_locked(empty_store):
    child = _run_python(CHILD_OPEN, str(empty_store.path))
    out, err = child.communicate(timeout=60)
    assert child.returncode != 0
    assert "StoreLocked" in err and "open for writing in another process" in err
    assert "opened" not in out

    empty_store.close()
    child = _run_python(CHILD_OPEN, str(empty_store.path))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.strip() == "opened"


# --- parsing in worker processes ---------------------------------------------------------------

@pytest.fixture
def in_workers(monkeypatch):
    """JSONL imports parsed by two worker processes, in chunks of at most 7 lines."""
    monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(importer, "BATCH_ROWS", 7)
    monkeypatch.setattr(importer, "_worker_count", lambda: 2)


def _mixed_lines() -> list:
    lines: list = [rec(i, id=f"x{i}", label=f"l{i % 3}", tags=["t", f"n{i}"]) for i in range(40)]
    lines[3] = '{"messages": [{"role": "user"'                        # invalid_json
    lines[8] = ""                                                     # blank
    lines[9] = rec(2, id="x2", label="l2", tags=["other"])           # duplicate_in_file
    lines[15] = '{"prompt": "p", "completion": NaN}'                  # nan_value
    lines[16] = rec(-1)                                               # already in the store
    lines[22] = "[1, 2]"                                              # data_type
    lines[23] = rec(5, id="x5", label="changed")                      # label conflict, line 6
    lines[30] = {"prompt": "two\r\nlines", "completion": "c", "label": 7}  # general path
    lines[31] = {"messages": chat("q", "a"), "tags": "a;b"}           # general path
    return lines


def _outcome(store: Store, report: ImportReport) -> tuple:
    examples = [(e.id, e.external_id, e.messages, e.label, e.tags, e.content_hash, e.version)
                for e in store.find()]
    events = store.cursor().execute(
        "SELECT example_id, action, version, after FROM events ORDER BY id").fetchall()
    return ({**report.to_dict(), "path": None}, examples, events)


def test_workers_import_exactly_what_the_main_process_imports(file_store, tmp_path,
                                                                monkeypatch):
    path = write_jsonl(tmp_path / "mixed.jsonl", _mixed_lines())
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().rstrip(b"\n"))  # BOM, no last newline
    outcomes = []
    for parse in ("main", "workers"):
        if parse == "workers":
            monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 0)
            monkeypatch.setattr(importer, "BATCH_ROWS", 7)
            monkeypatch.setattr(importer, "_worker_count", lambda: 2)
        store = file_store(f"{parse}.duckdb")
        import_file(store, write_jsonl(tmp_path / "seed.jsonl", [rec(-1)]), user=admin("seeder"))
        report = import_file(store, path, user=admin("t"), tags=("batch",))
        outcomes.append(_outcome(store, report))
    assert outcomes[0] == outcomes[1]
    report = outcomes[1][0]
    assert [(e["line"], e["code"]) for e in report["rejected"]] == [
        (4, "invalid_json"), (16, "nan_value"), (23, "data_type")]
    assert report["duplicates_in_file"] == [{"line": 10, "first_line": 3}]
    assert report["already_in_store"] == [17]
    assert [(c["line"], c["other_line"]) for c in report["label_conflicts"]] == [(24, 6)]
    assert report["lines"] == 39 and report["imported"] == 39 - 3 - 1 - 1


def test_not_utf8_in_a_later_chunk_is_refused_whole(in_workers, seeded_store, tmp_path):
    before = seeded_store.count()
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b"".join(orjson.dumps(rec(i)) + b"\n" for i in range(20))
                     + '{"prompt": "café", "completion": "x"}\n'.encode("latin-1")
                     + orjson.dumps(rec(21)) + b"\n")
    with pytest.raises(NotUtf8, match="line 21"):
        import_file(seeded_store, path, user=admin("t"))
    assert seeded_store.count() == before
    report = import_file(seeded_store, write_jsonl(tmp_path / "ok.jsonl", [rec(1)]),
                         user=admin("t"))
    assert report.imported == 1


def test_progress_with_workers_rises_to_the_file_size(in_workers, empty_store, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [rec(i) for i in range(30)])
    calls = []
    report = import_file(empty_store, path, user=admin("t"),
                         progress=lambda done, total: calls.append(done))
    assert report.imported == 30 and empty_store.count() == 30
    assert len(calls) == 5 and calls == sorted(calls) and calls[-1] == path.stat().st_size


def test_a_store_hashed_before_exact_hashes_is_migrated(tmp_path, monkeypatch):
    """Stores made when content_hash ignored NFC and outer spaces get exact hashes on open, so
    importing their examples again still finds them already stored."""
    from curation.store import _schema

    mine = next(i for i, (name, _) in enumerate(_schema.MIGRATIONS) if "exact" in name)
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:mine])
    records = [rec(1, label="l"), {"messages": chat(" question 2 ", "e\u0301"), "label": "l"}]
    path = write_jsonl(tmp_path / "old.jsonl", records)
    with Store(tmp_path / "old.duckdb") as store:
        for record in records:
            add_legacy(store, record["messages"], record["label"])
        store.cursor().execute("UPDATE examples SET content_hash = 'old-style hash'")
    monkeypatch.undo()
    with Store(tmp_path / "old.duckdb") as store:
        from curation.formats import content_hash

        assert [e.content_hash for e in store.find()] == [content_hash(r["messages"])
                                                          for r in records]
        report = import_file(store, path, user=admin("t"))
        assert report.imported == 0 and report.already_in_store == [1, 2]


def test_a_csv_header_naming_a_column_twice_is_refused(seeded_store, tmp_path):
    """`prompt,prompt,completion` imported the second prompt and dropped the first silently."""
    path = tmp_path / "twice.csv"
    path.write_text("prompt,completion,prompt\nfirst,answer,second\n")
    with pytest.raises(UnreadableFile, match=r"names the column 'prompt' more than once "
                                             r"\(columns 1, 3\)"):
        import_file(seeded_store, path, user=admin("t"))
    assert seeded_store.count() == 6
