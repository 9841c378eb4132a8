"""The store: versions, conflicts, audit rows, snapshots, filters and migrations."""

from __future__ import annotations

import threading

import orjson
import pytest

from curation import (ExampleFilter, ExampleNotFound, InvalidExample, InvalidValue,
                      SchemaTooNew, SnapshotNotFound, Store, VersionConflict, import_file)
from curation.formats import content_hash
from curation.store import _schema
from tests.conftest import chat


def edit_events(store: Store, example_id: int) -> list[dict]:
    return [e for e in store.history(example_id) if e["action"] != "create"]


def test_update_bumps_version_and_writes_one_audit_event(seeded_store):
    ex = seeded_store.find()[0]
    new_messages = chat("question 0 about billing", "a better answer")
    updated = seeded_store.update(ex.id, base_version=ex.version, actor="alice",
                                  reason="clearer", messages=new_messages, label="refunds")
    assert updated.version == ex.version + 1
    assert updated.messages == new_messages and updated.label == "refunds"
    assert updated.updated_by == "alice" and updated.created_by == "seeder"
    assert updated.content_hash != ex.content_hash
    [event] = edit_events(seeded_store, ex.id)
    assert event["action"] == "edit" and event["actor"] == "alice" and event["reason"] == "clearer"
    assert event["version"] == 2
    assert event["before"] == {"messages": ex.messages, "label": "billing"}
    assert event["after"] == {"messages": new_messages, "label": "refunds"}


def test_status_change_is_named_after_the_decision(seeded_store):
    ex = seeded_store.find()[0]
    seeded_store.update(ex.id, base_version=1, actor="rev", status="accepted")
    assert [e["action"] for e in edit_events(seeded_store, ex.id)] == ["accept"]


def test_stale_version_is_refused_and_names_who_changed_it(seeded_store):
    ex = seeded_store.find()[0]
    seeded_store.update(ex.id, base_version=1, actor="alice", label="refunds")
    with pytest.raises(VersionConflict) as caught:
        seeded_store.update(ex.id, base_version=1, actor="bob", label="invoices")
    assert caught.value.changed_by == "alice" and caught.value.current == 2
    assert "alice" in str(caught.value) and "version 1" in str(caught.value)
    assert seeded_store.get(ex.id).label == "refunds"
    assert len(edit_events(seeded_store, ex.id)) == 1


def test_refused_and_empty_changes_write_nothing(seeded_store):
    ex = seeded_store.find()[0]
    with pytest.raises(InvalidExample, match="assistant"):
        seeded_store.update(ex.id, base_version=1, actor="a",
                            messages=[{"role": "user", "content": "only a question"}])
    with pytest.raises(InvalidValue, match="status"):
        seeded_store.update(ex.id, base_version=1, actor="a", status="done")
    with pytest.raises(InvalidValue, match="cannot change"):
        seeded_store.update(ex.id, base_version=1, actor="a", content_hash="x")
    unchanged = seeded_store.update(ex.id, base_version=1, actor="a", label=ex.label)
    assert unchanged.version == 1
    assert edit_events(seeded_store, ex.id) == []
    with pytest.raises(ExampleNotFound):
        seeded_store.update(999, base_version=1, actor="a", label="x")


def test_two_threads_editing_the_same_example_one_wins(seeded_store):
    ex = seeded_store.find()[0]
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def edit(who: str) -> None:
        barrier.wait()
        try:
            outcomes[who] = seeded_store.update(ex.id, base_version=1, actor=who, label=who)
        except VersionConflict as exc:
            outcomes[who] = exc

    threads = [threading.Thread(target=edit, args=(who,)) for who in ("ann", "ben")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conflicts = [o for o in outcomes.values() if isinstance(o, VersionConflict)]
    winners = [o for o in outcomes.values() if not isinstance(o, VersionConflict)]
    assert len(conflicts) == 1 and len(winners) == 1
    final = seeded_store.get(ex.id)
    assert final.version == 2 and final.label == winners[0].label == final.updated_by
    [event] = edit_events(seeded_store, ex.id)
    assert event["actor"] == final.updated_by


def test_filters_select_by_every_criterion(seeded_store):
    assert seeded_store.count() == 6
    assert seeded_store.count(ExampleFilter(split=("eval",))) == 2
    assert seeded_store.count(ExampleFilter(label=("billing", "bugs"))) == 4
    assert seeded_store.count(ExampleFilter(tag=("seed",))) == 6
    assert seeded_store.count(ExampleFilter(tag=("other",))) == 0
    assert seeded_store.count(ExampleFilter(search="ABOUT ACCESS")) == 2
    assert seeded_store.count(ExampleFilter(search=r"question [0-2] ", regex=True)) == 3
    assert seeded_store.count(ExampleFilter(source=("seed_eval.jsonl",))) == 2
    with pytest.raises(InvalidValue, match="regular expression"):
        ExampleFilter(search="(", regex=True)
    with pytest.raises(InvalidValue, match="split"):
        ExampleFilter(split=("test",))
    page = seeded_store.find(limit=2, offset=2)
    assert [e.external_id for e in page] == ["ext-2", "ext-3"]
    assert seeded_store.counts_by("label") == {"access": 2, "billing": 2, "bugs": 2}


def test_snapshot_is_immutable_and_reused_for_unchanged_data(seeded_store):
    where = ExampleFilter(split=("train",))
    first = seeded_store.snapshot(where, actor="eng")
    assert first.count == 4 and first.filters == {"split": ["train"]}
    assert seeded_store.snapshot(where, actor="eng").id == first.id
    ex = seeded_store.find(where)[0]
    seeded_store.update(ex.id, base_version=1, actor="eng",
                        messages=chat("question 0 about billing", "edited answer"))
    second = seeded_store.snapshot(where, actor="eng")
    assert second.id != first.id and second.content_hash != first.content_hash
    old_rows = list(seeded_store.snapshot_rows(first.id))
    assert [r["version"] for r in old_rows if r["id"] == ex.id] == [1]
    assert old_rows[0]["messages"][1]["content"] == "answer 0"
    assert {s.id for s in seeded_store.snapshots()} == {first.id, second.id}
    with pytest.raises(SnapshotNotFound):
        seeded_store.get_snapshot("snap-missing")


def test_migrations_are_recorded_and_an_older_workspace_is_upgraded(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    with Store(path) as store:
        assert store.schema_version() == len(_schema.MIGRATIONS)
        store.cursor().execute("INSERT INTO snapshots VALUES ('s', 'n', 'a', now(), '{}', 'h', 0)")
    newer = _schema.MIGRATIONS + [("notes table", "CREATE TABLE notes (body VARCHAR);")]
    monkeypatch.setattr(_schema, "MIGRATIONS", newer)
    with Store(path) as store:
        assert store.schema_version() == len(newer)
        assert store.cursor().execute("SELECT count(*) FROM notes").fetchone() == (0,)
        assert store.get_snapshot("s").name == "n"
        names = store.cursor().execute(
            "SELECT name FROM schema_migrations ORDER BY version").fetchall()
    assert names[-1] == ("notes table",)


def test_a_workspace_from_a_newer_curate_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "new.duckdb"
    Store(path).close()
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:-1])
    with pytest.raises(SchemaTooNew, match="upgrade Curate"):
        Store(path)


def test_a_workspace_from_before_migration_4_keeps_every_version_exactly_once(tmp_path,
                                                                               monkeypatch):
    path = tmp_path / "v3.duckdb"
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:3])
    v1, v2, other = chat("q", "first"), chat("q", "second"), chat("other q", "other a")
    with Store(path) as store:
        cur = store.cursor()
        # what Curate wrote before migration 4: every version, the current one included, in
        # example_versions, and the current one in examples as well
        for id_, messages, version in ((1, v2, 2), (2, other, 1)):
            cur.execute("INSERT INTO examples VALUES (?, ?, ?, ?, 'lab', ['t'], 'src', 'train', "
                        "'pending', ?, ?, 'ann', now()::TIMESTAMP, 'rev', now()::TIMESTAMP, "
                        "false)", [id_, f"x{id_}", orjson.dumps(messages).decode(),
                                   "\n".join(m["content"] for m in messages),
                                   content_hash(messages), version])
        for id_, messages, version in ((1, v1, 1), (1, v2, 2), (2, other, 1)):
            cur.execute("INSERT INTO example_versions VALUES (?, ?, ?, 'lab', ['t'], 'train', "
                        "'pending', ?, 'ann', now()::TIMESTAMP)",
                        [id_, version, orjson.dumps(messages).decode(), content_hash(messages)])
        cur.execute("INSERT INTO snapshots VALUES ('s1', 'old', 'a', now(), '{}', 'h', 2)")
        cur.execute("INSERT INTO snapshot_items VALUES ('s1', 1, 1), ('s1', 2, 1)")
    monkeypatch.undo()

    with Store(path) as store:
        assert store.schema_version() == len(_schema.MIGRATIONS)
        assert [(v["version"], v["messages"]) for v in store.versions(1)] == [(1, v1), (2, v2)]
        assert [(v["version"], v["messages"]) for v in store.versions(2)] == [(1, other)]
        assert store.cursor().execute(
            "SELECT example_id, version FROM example_versions").fetchall() == [(1, 1)]
        rows = list(store.snapshot_rows("s1"))
        assert [(r["id"], r["version"], r["messages"], r["external_id"]) for r in rows] == \
            [(1, 1, v1, "x1"), (2, 1, other, "x2")]
        assert store.find(ExampleFilter(search="other"))[0].id == 2  # search text kept
        store.update(2, base_version=1, actor="rev", label="new")
        assert [(v["version"], v["label"]) for v in store.versions(2)] == [(1, "lab"), (2, "new")]
        store.cursor().execute("CHECKPOINT")
        compression = store.cursor().execute(
            "SELECT DISTINCT compression FROM pragma_storage_info('examples') "
            "WHERE column_name = 'text' AND segment_type = 'VARCHAR'").fetchall()
        assert compression == [("Uncompressed",)]


def test_add_and_import_write_new_examples_through_one_path(file_store, tmp_path):
    """`Store.add` and the importer store the same columns and the same 'create' event for
    the same conversation; only the importer's event names the file line."""
    from tests.conftest import admin, write_jsonl

    messages = chat("  How do I reset my password?  ", "Use the link.", system="Be brief.")
    added_store, imported_store = file_store("added.duckdb"), file_store("imported.duckdb")
    added = added_store.add(messages, actor="ann", label=" access ", tags=("a", "b"),
                            source="notes.jsonl", split="eval", status="accepted")
    path = write_jsonl(tmp_path / "notes.jsonl",
                       [{"messages": messages, "label": "access", "tags": ["a", "b"]}])
    import_file(imported_store, path, split="eval", status="accepted", user=admin("ann"))
    [imported] = imported_store.find()
    fields = ("messages", "label", "tags", "source", "split", "status", "content_hash",
              "version", "created_by", "updated_by", "external_id", "deleted")
    assert {f: getattr(added, f) for f in fields} == {f: getattr(imported, f) for f in fields}
    assert added.content_hash == content_hash(messages)
    assert added_store.count(ExampleFilter(search="reset my")) == 1
    assert imported_store.count(ExampleFilter(search="reset my")) == 1
    [created] = added_store.history(added.id)
    [from_file] = imported_store.history(imported.id)
    assert created["after"] == {"source": "notes.jsonl", "split": "eval", "status": "accepted",
                                "label": "access"}
    assert from_file["after"] == {**created["after"], "line": 1}
    assert (created["action"], created["version"], created["actor"]) == ("create", 1, "ann")


def test_add_writes_nothing_when_refused_and_keeps_its_reason(empty_store):
    with pytest.raises(InvalidValue):
        empty_store.add(chat("q", "a"), actor="ann", status="done")
    assert empty_store.count() == 0 and not empty_store.has_examples()
    ex = empty_store.add(chat("q", "a"), actor="ann", reason="written by hand")
    assert [e["reason"] for e in empty_store.history(ex.id)] == ["written by hand"]
    assert empty_store.example_ids() == [ex.id]


def _run_row(run_id: str, snapshot: str, created_hour: int, state: str = "running",
             evaluation: str | None = None) -> list:
    from datetime import datetime

    return [run_id, snapshot, "hash-" + snapshot, "tiny-model", '{"epochs": 1}', state, "eng",
            datetime(2026, 12, 1, created_hour), None, 3, 0.5, None, evaluation]


def test_record_runs_writes_new_and_changed_runs_only(empty_store):
    """What training/runs.py `record_runs` and `recorded_runs` do, behind the store."""
    from curation.store import RUN_COLUMNS

    first = [_run_row("run-a", "snap-1", 9), _run_row("run-b", "snap-2", 10)]
    assert empty_store.record_runs(first) == ["run-a", "run-b"]
    before = {r["id"]: r["recorded_at"] for r in empty_store.recorded_runs()}
    assert empty_store.record_runs(first) == []  # unchanged: left alone
    assert {r["id"]: r["recorded_at"] for r in empty_store.recorded_runs()} == before
    done = _run_row("run-a", "snap-1", 9, "done", '{"accuracy": 0.75}')
    assert empty_store.record_runs([done, first[1]]) == ["run-a"]
    runs = empty_store.recorded_runs()
    assert [r["id"] for r in runs] == ["run-b", "run-a"]  # newest first
    assert set(runs[0]) == {*RUN_COLUMNS, "recorded_at"}
    assert runs[1]["state"] == "done" and runs[1]["evaluation"] == {"accuracy": 0.75}
    assert runs[1]["config"] == {"epochs": 1} and runs[0]["evaluation"] is None
    assert runs[1]["recorded_at"] >= before["run-a"]
    assert [r["id"] for r in empty_store.recorded_runs(snapshot_id="snap-1")] == ["run-a"]
    assert empty_store.recorded_runs(snapshot_id="snap-none") == []


def test_a_findings_queue_reads_only_its_checks_issues_less_the_skipped_reasons(seeded_store):
    """The duplicates queue: issues of the duplicate checks, worst first, without the
    suggested keepers; another check's issues and non-issues stay out."""
    from types import SimpleNamespace as Found

    import curation.checks  # noqa: F401  (registers the findings queues)
    from curation.queues import queue_size, upcoming
    from curation.store import QueueSource, utcnow

    a, b, c, d = seeded_store.example_ids()[:4]
    versions = {i: 1 for i in (a, b, c, d)}
    seeded_store.save_check_run("exact_duplicates", [
        Found(example_id=a, score=0.0, is_issue=True, reason="suggested keeper of #2",
              details={}),
        Found(example_id=b, score=0.2, is_issue=True, reason="duplicate of #1", details={}),
        Found(example_id=c, score=0.1, is_issue=True, reason="duplicate of #4", details={}),
        Found(example_id=d, score=0.9, is_issue=False, reason="unique", details={})],
        versions, fingerprint="f", summary={}, run_by="t", run_at=utcnow())
    seeded_store.save_check_run("outliers", [
        Found(example_id=d, score=0.0, is_issue=True, reason="odd", details={})],
        versions, fingerprint="f", summary={}, run_by="t", run_at=utcnow())
    items = upcoming(seeded_store, "duplicates", limit=10)
    assert [(i.example.id, i.rank, i.reason) for i in items] == [
        (c, 0.1, "duplicate of #4"), (b, 0.2, "duplicate of #1")]
    assert queue_size(seeded_store, "duplicates") == 2
    assert [i.example.id for i in upcoming(seeded_store, "flagged", limit=10)] == [d]
    after_c = upcoming(seeded_store, "duplicates", after=items[0].position, limit=10)
    assert [i.example.id for i in after_c] == [b]
    with pytest.raises(InvalidValue, match="queue source"):
        QueueSource("everything")


def test_labels_to_double_check_go_on_past_the_flag_line(seeded_store):
    """The label_quality queue: every example the label-issue check scored, flagged or not,
    lowest score first; an edited example and a dismissed one leave it."""
    from types import SimpleNamespace as Found

    import curation.checks  # noqa: F401  (registers the findings queues)
    from curation.auth import User
    from curation.checks import dismiss
    from curation.queues import queue_size, upcoming
    from curation.review import decide
    from curation.store import utcnow

    a, b, c, d = seeded_store.example_ids()[:4]
    seeded_store.save_check_run("label_issues", [
        Found(example_id=a, score=0.9, is_issue=False, reason="label agrees", details={}),
        Found(example_id=b, score=0.05, is_issue=True, reason="similar say 'x'", details={}),
        Found(example_id=c, score=0.3, is_issue=False, reason="label agrees", details={}),
        Found(example_id=d, score=0.2, is_issue=True, reason="similar say 'y'", details={})],
        {i: 1 for i in (a, b, c, d)}, fingerprint="f", summary={}, run_by="t",
        run_at=utcnow())
    items = upcoming(seeded_store, "label_quality", limit=10)
    assert [(i.example.id, i.rank, i.reason) for i in items] == [
        (b, 0.05, "similar say 'x'"), (d, 0.2, "similar say 'y'"),
        (c, 0.3, "not flagged (score 0.30)"), (a, 0.9, "not flagged (score 0.90)")]
    assert [i.example.id for i in upcoming(seeded_store, "flagged", limit=10)] == [b, d]
    reviewer = User("sme", "reviewer")
    decide(seeded_store, reviewer, b, "accept", base_version=1, label="access")
    dismiss(seeded_store, reviewer, "label_issues", [c], "label_ok")
    assert [i.example.id for i in upcoming(seeded_store, "label_quality", limit=10)] == [d, a]
    assert queue_size(seeded_store, "label_quality") == 2
