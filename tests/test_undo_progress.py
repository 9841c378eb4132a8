"""Undo of one change and of a bulk batch, bulk over all matching rows, and progress counts,
on real DuckDB files."""

from __future__ import annotations

from datetime import timedelta

import pytest

from curation import ExampleFilter, InvalidValue, PermissionDenied, VersionConflict, review
from curation.auth import User
from curation.progress import decisions_per_day, queue_progress
from curation.store import utcnow
from curation.undo import last_batch, undo_batch, undo_change
from curation.importer import import_file
from tests.conftest import add_legacy, admin, chat

RITA = User("rita", "reviewer")
RAVI = User("ravi", "reviewer")
ANN = User("ann", "annotator")
FIELDS = ("messages", "label", "tags", "split", "status")


def same_fields(version: dict, example) -> bool:
    return all(version[f] == getattr(example, f) for f in FIELDS)


def test_undo_restores_the_exact_previous_version_content_label_and_status(seeded_store):
    ex = seeded_store.find()[0]
    edited = review.edit(seeded_store, RITA, ex.id, base_version=1, tags=["seed", "checked"])
    decided = review.decide(seeded_store, RITA, ex.id, "reject", base_version=edited.version,
                            reason="wrong", label="access",
                            messages=chat("question 0 about billing", "a new answer"))
    assert decided.status == "rejected" and decided.label == "access"
    restored = undo_change(seeded_store, RITA, ex.id, decided.version)
    before = seeded_store.version(ex.id, edited.version)
    assert same_fields(before, restored) and same_fields(before, seeded_store.get(ex.id))
    assert restored.status == "pending" and restored.label == "billing"
    assert restored.messages[-1]["content"] == "answer 0"
    assert restored.content_hash == seeded_store.get(ex.id).content_hash == edited.content_hash
    event = seeded_store.history(ex.id)[-1]
    assert event["action"] == "revert" and event["actor"] == "rita"
    assert event["version"] == decided.version + 1
    assert "undo reject" in event["reason"]
    # the undo of the edit before it goes back to the import
    undo_change(seeded_store, RITA, ex.id, edited.version)
    assert same_fields(seeded_store.version(ex.id, 1), seeded_store.get(ex.id))


def test_undo_is_refused_when_someone_changed_the_example_since(seeded_store):
    ex = seeded_store.find()[0]
    mine = review.decide(seeded_store, RITA, ex.id, "accept", base_version=1)
    review.edit(seeded_store, RAVI, ex.id, base_version=mine.version, label="bugs")
    with pytest.raises(VersionConflict, match="ravi"):
        undo_change(seeded_store, RITA, ex.id, mine.version)
    assert seeded_store.get(ex.id).label == "bugs"
    assert seeded_store.get(ex.id).status == "accepted"


def test_undo_of_someone_elses_change_needs_the_revert_right(seeded_store):
    ex = seeded_store.find()[0]
    theirs = review.edit(seeded_store, RITA, ex.id, base_version=1, label="bugs")
    with pytest.raises(PermissionDenied):
        undo_change(seeded_store, ANN, ex.id, theirs.version)
    own = review.edit(seeded_store, ANN, ex.id, base_version=theirs.version, label="access")
    assert undo_change(seeded_store, ANN, ex.id, own.version).label == "bugs"  # own edit: ok
    with pytest.raises(InvalidValue, match="import"):
        undo_change(seeded_store, RITA, ex.id, 1)


def test_bulk_on_all_matching_rows_then_undo_of_the_whole_batch(file_store):
    store = file_store()
    ids = [store.add(chat(f"q{i}", f"a{i}"), actor="setup", label="a" if i < 130 else "b").id
           for i in range(150)]
    where = ExampleFilter(label=("a",))
    with pytest.raises(InvalidValue, match="130 examples match the filter now, not the 100"):
        review.bulk_matching(store, RITA, where, "accept", expected=100)
    assert store.count(ExampleFilter(status=("accepted",))) == 0  # nothing changed
    result = review.bulk_matching(store, RITA, where, "accept", expected=130)
    assert len(result.changed) == 130 and result.batch
    assert store.count(ExampleFilter(status=("accepted",))) == 130
    assert store.get(ids[140]).status == "pending"  # outside the filter
    batch = store.batch(result.batch)
    assert batch["changed"] == 130 and batch["actor"] == "rita" and batch["scope"].startswith(
        "all 130 matching")
    assert last_batch(store, RITA)["id"] == result.batch
    # someone changes one of them meanwhile: the undo leaves that one alone
    store.update(ids[5], base_version=2, actor="ravi", label="c")
    undone = undo_batch(store, RITA, result.batch)
    assert len(undone.restored) == 129 and list(undone.skipped) == [ids[5]]
    assert store.count(ExampleFilter(status=("accepted",))) == 1
    for example_id in ids[:130]:
        if example_id != ids[5]:
            assert same_fields(store.version(example_id, 1), store.get(example_id))
            assert store.history(example_id)[-1]["action"] == "revert"
    assert last_batch(store, RITA) is None
    with pytest.raises(InvalidValue, match="undone already"):
        undo_batch(store, RITA, result.batch)


def test_batch_undo_restores_deleted_rows_and_checks_rights(seeded_store):
    admin_user = User("ada", "admin")
    ids = [e.id for e in seeded_store.find()][:3]
    result = review.bulk(seeded_store, admin_user, ids, "delete")
    assert seeded_store.count() == 3
    with pytest.raises(PermissionDenied):
        undo_batch(seeded_store, RITA, result.batch)  # deleting needs an admin
    undo_batch(seeded_store, admin_user, result.batch)
    assert seeded_store.count() == 6 and not any(seeded_store.get(i).deleted for i in ids)


def test_progress_counts_my_decisions_today_in_the_queue(seeded_store):
    first, second, third = seeded_store.find()[:3]
    assert queue_progress(seeded_store, "pending", "rita").text() == (
        "0 of 6 done in this queue today")
    review.decide(seeded_store, RITA, first.id, "accept", base_version=1)
    later = review.decide(seeded_store, RITA, second.id, "reject", base_version=1, reason="no")
    review.decide(seeded_store, RAVI, third.id, "accept", base_version=1)  # someone else
    progress = queue_progress(seeded_store, "pending", "rita")
    assert (progress.done, progress.total) == (2, 5)  # ravi's decision left the queue
    assert (queue_progress(seeded_store, "all", "rita").done,
            queue_progress(seeded_store, "all", "rita").total) == (2, 6)
    assert queue_progress(seeded_store, "pending", "ravi").done == 1
    undo_change(seeded_store, RITA, second.id, later.version)  # an undone decision: not done
    assert (queue_progress(seeded_store, "pending", "rita").done,
            queue_progress(seeded_store, "pending", "rita").total) == (1, 5)
    billing = ExampleFilter(label=("billing",), status=("pending",))
    assert queue_progress(seeded_store, "pending", "rita", billing).text() == (
        "1 of 2 done in this queue today")
    tomorrow = utcnow() + timedelta(days=1)
    assert queue_progress(seeded_store, "pending", "rita", now=tomorrow).done == 0


def test_decisions_per_day_leave_out_the_system_actors(seeded_store):
    ids = [e.id for e in seeded_store.find()]
    review.decide(seeded_store, RITA, ids[0], "accept", base_version=1)
    review.decide(seeded_store, RITA, ids[1], "accept", base_version=1)
    review.edit(seeded_store, RITA, ids[2], base_version=1, label="x")  # an edit: no decision
    review.decide(seeded_store, RAVI, ids[3], "needs_work", base_version=1, reason="why")
    seeded_store.update(ids[4], base_version=1, actor="cli:root", status="accepted")
    seeded_store.update(ids[5], base_version=1, actor="model:run-1", status="accepted")
    rows = decisions_per_day(seeded_store)
    today = utcnow().date()
    assert rows == [(today, "ravi", 1), (today, "rita", 2)]


def test_migration_adds_batches_to_an_older_workspace(tmp_path, monkeypatch):
    from curation.store import Store, _schema

    mine = next(i for i, (name, _) in enumerate(_schema.MIGRATIONS) if "bulk batches" in name)
    path = tmp_path / "older.duckdb"
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:mine])
    with Store(path) as store:
        ex_id = add_legacy(store, chat("q", "a"))
    monkeypatch.undo()
    with Store(path) as store:
        assert store.schema_version() == len(_schema.MIGRATIONS)
        result = review.bulk(store, RITA, [ex_id], "accept")
        assert store.get(ex_id).status == "accepted"
        assert undo_batch(store, RITA, result.batch).restored == [ex_id]
        assert store.get(ex_id).status == "pending"


def test_progress_in_a_findings_queue_counts_only_its_examples(seeded_store):
    from curation.checks import run_check
    from curation.checks.coverage import Targets, set_targets

    set_targets(seeded_store, User("ada", "admin"), Targets(default_min=2, per_label={"bugs": 3}))
    run_check(seeded_store, "coverage", user=User("ada", "admin"))
    bugs = [e.id for e in seeded_store.find(ExampleFilter(label=("bugs",)))]
    billing = seeded_store.find(ExampleFilter(label=("billing",)))[0].id
    assert queue_progress(seeded_store, "coverage", "rita").text() == (
        "0 of 2 done in this queue today")
    review.decide(seeded_store, RITA, bugs[0], "accept", base_version=1)
    review.decide(seeded_store, RITA, billing, "accept", base_version=1)  # not in this queue
    assert queue_progress(seeded_store, "coverage", "rita").text() == (
        "1 of 2 done in this queue today")
    assert queue_progress(seeded_store, "pending", "rita").text() == (
        "2 of 6 done in this queue today")


def test_last_change_is_my_latest_standing_decision_or_edit_not_a_batchs(seeded_store):
    from curation.undo import last_change

    ids = [e.id for e in seeded_store.find()]
    assert last_change(seeded_store, RITA) is None
    review.decide(seeded_store, RITA, ids[0], "accept", base_version=1)
    edited = review.edit(seeded_store, RITA, ids[1], base_version=1, label="bugs")
    review.decide(seeded_store, RAVI, ids[2], "accept", base_version=1)  # not mine
    review.bulk(seeded_store, RITA, [ids[3]], "accept")  # a batch: undone on Browse
    assert last_change(seeded_store, RITA) == (ids[1], edited.version, "edit")
    undo_change(seeded_store, RITA, ids[1], edited.version)
    assert last_change(seeded_store, RITA) == (ids[0], 2, "accept")  # the one before
    review.edit(seeded_store, RAVI, ids[0], base_version=2, tags=["x"])  # no longer stands
    assert last_change(seeded_store, RITA) is None
    assert last_change(seeded_store, RAVI) == (ids[0], 3, "edit")
    assert last_change(seeded_store, RAVI, now=utcnow() + timedelta(days=1)) is None


@pytest.mark.parametrize("action, value", [
    ("accept", None), ("reject", None), ("set_label", "b"), ("add_tag", "new"),
    ("remove_tag", "t1"), ("move_split", "eval"), ("delete", None), ("restore", None)])
def test_a_set_based_bulk_write_records_what_one_update_per_example_records(file_store, action,
                                                                             value):
    """The same action, applied per example with `Store.update` on one store and as a bulk
    action on its twin, leaves the same examples, versions, superseded rows and events."""
    per_example, bulk_store = file_store("one.duckdb"), file_store("bulk.duckdb")
    for store in (per_example, bulk_store):
        for i in range(12):
            label = "a" if i % 3 else "b"  # some already have the label set_label sets
            tags = ["t1", "new"] if i % 4 == 0 else ["t1"]
            ex = store.add(chat(f"q{i}", f"a{i}"), actor="setup", label=label, tags=tags)
            if i % 5 == 0:
                store.update(ex.id, base_version=1, actor="setup", status="accepted")
            if i % 6 == 0:
                store.update(ex.id, base_version=store.get(ex.id).version, actor="setup",
                             deleted=True)
        prompt = store.path.parent / "prompt.jsonl"
        prompt.write_text('{"messages": [{"role": "user", "content": "unanswered"}]}\n')
        import_file(store, prompt, unanswered=True, user=admin("setup"))
    ids = per_example.example_ids(ExampleFilter()) + per_example.example_ids(
        ExampleFilter(deleted=True))
    for example_id in ids:
        current = per_example.get(example_id)
        if action == "accept" and current.needs_answer:
            continue
        per_example.update(example_id, base_version=current.version, actor="rita",
                           reason="bulk", **review._bulk_changes(current, action, value or ""))
    result = review.bulk(bulk_store, admin("rita"), ids, action, value, reason="bulk")
    assert result.changed and len(result.changed) + len(result.unchanged) + len(
        result.needs_answer) == len(ids)
    unanswered = {i for i in ids if per_example.get(i).needs_answer}
    assert len(unanswered) == 1
    assert set(result.needs_answer) == (unanswered if action == "accept" else set())

    def state(store):
        rows = {i: (store.get(i).version, *(getattr(store.get(i), f) for f in
                                            (*FIELDS, "deleted", "updated_by"))) for i in ids}
        events = [(i, e["action"], e["actor"], e["version"], e["before"],
                   e["after"], e["reason"]) for i in ids for e in store.history(i)]
        superseded = {i: store.version(i, 1) for i in ids if store.get(i).version > 1}
        return rows, events, {i: {k: v[k] for k in FIELDS} for i, v in superseded.items()}

    assert state(bulk_store) == state(per_example)
    assert bulk_store.batch(result.batch)["changed"] == len(result.changed)
    # and its undo records what one revert per example records
    reason = f"undo batch {result.batch} ({action})"
    for example_id in result.changed:
        current = per_example.get(example_id)
        before = per_example.history(example_id)[-1]["before"]
        per_example.update(example_id, base_version=current.version, actor="rita",
                           action="revert", reason=reason, **before)
    undone = undo_batch(bulk_store, admin("rita"), result.batch)
    assert undone.restored == result.changed and not undone.skipped
    assert state(bulk_store) == state(per_example)
