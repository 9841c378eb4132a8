"""The data diff of two snapshots (curation.snapshot_diff), on a real store."""

from __future__ import annotations

from curation import ExampleFilter
from curation.review import decide, edit
from curation.snapshot_diff import diff_snapshots
from tests.conftest import admin, chat, write_jsonl

ADA = admin("ada")
TRAIN = ExampleFilter(status=("accepted",), split=("train",))


def test_each_kind_of_change_is_counted_under_its_label(seeded_store, tmp_path):
    store = seeded_store
    first = {e.external_id: e for e in store.find()}
    for e in first.values():
        decide(store, ADA, e.id, "accept", base_version=e.version)
    before = store.snapshot(TRAIN, actor="ada")  # train: ext-0, ext-1 (billing), ext-2, ext-3

    current = {e.external_id: e for e in store.find()}
    relabelled, edited, removed = current["ext-0"], current["ext-2"], current["ext-3"]
    edit(store, ADA, relabelled.id, base_version=relabelled.version, label="access")
    edit(store, ADA, edited.id, base_version=edited.version,
         messages=chat("question 2 about access, reworded", "answer 2"))
    decide(store, ADA, removed.id, "reject", base_version=removed.version, reason="wrong")
    store_path = write_jsonl(tmp_path / "new.jsonl", [
        {"messages": chat("a new bugs question", "an answer"), "label": "bugs"}])
    from curation import import_file
    import_file(store, store_path, user=ADA, status="accepted")
    after = store.snapshot(TRAIN, actor="ada")

    diff = diff_snapshots(store, before.id, after.id)
    assert diff.totals == {"added": 1, "removed": 1, "relabelled": 1, "edited": 1,
                           "unchanged": 1}
    assert diff.ids["relabelled"] == [relabelled.id] and diff.ids["edited"] == [edited.id]
    rows = {c.label: c for c in diff.by_label}
    assert (rows["billing"].before, rows["billing"].after) == (2, 1)
    assert rows["billing"].relabelled_out == 1 and rows["access"].relabelled_in == 1
    assert (rows["access"].before, rows["access"].after, rows["access"].removed,
            rows["access"].edited) == (2, 2, 1, 1)
    assert (rows["bugs"].before, rows["bugs"].after, rows["bugs"].added) == (0, 1, 1)
    assert diff.summary() == "1 added, 1 removed, 1 relabelled, 1 edited, 1 unchanged"


def test_a_snapshot_against_itself_changes_nothing(seeded_store):
    snap = seeded_store.snapshot(ExampleFilter(), actor="ada")
    diff = diff_snapshots(seeded_store, snap.id, snap.id)
    assert diff.totals["unchanged"] == snap.count == 6
    assert all(c.before == c.after and not (c.added or c.removed) for c in diff.by_label)
