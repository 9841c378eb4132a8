"""Leases on review queues and Submit for review, on real DuckDB files: no example is served
to two people at once (also under concurrent claims on threads), leases expire, renew and are
released on decision, skip and submission; admins list them; the CLI prints them as JSON."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from click.testing import CliRunner

from curate.cli import main
from curate.workspace import Workspace
from curation import ExampleFilter, PermissionDenied, VersionConflict, leases, queues
from curation.auth import User
from curation.store import utcnow
from tests.conftest import admin, chat

RITA, ROB, ANN = User("rita", "reviewer"), User("rob", "reviewer"), User("ann", "annotator")
ADA = User("ada", "admin")


@pytest.fixture
def many_store(empty_store):
    """40 pending train examples, ids in import order."""
    for i in range(40):
        empty_store.add(chat(f"question {i}", f"answer {i}"), actor="seeder", label="l")
    return empty_store


def test_two_people_in_one_queue_get_different_examples(seeded_store):
    first, second = seeded_store.find()[:2]
    mine = leases.claim_next(seeded_store, RITA, "pending")
    theirs = leases.claim_next(seeded_store, ROB, "pending")
    assert mine.example.id == first.id
    assert theirs.example.id == second.id
    assert leases.holder(seeded_store, first.id).holder == "rita"
    assert leases.holder(seeded_store, second.id).holder == "rob"


def test_claiming_the_next_releases_my_previous_lease(seeded_store):
    first = leases.claim_next(seeded_store, RITA, "pending")
    second = leases.claim_next(seeded_store, RITA, "pending", after=first.position)
    assert second.example.id != first.example.id
    assert leases.holder(seeded_store, first.example.id) is None
    assert [lease.example_id for lease in leases.leases(seeded_store, ADA)] == [
        second.example.id]


def _on_threads(people: list[User], work) -> None:
    """Run work(person) for each person at once, one thread (and cursor) each."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(people))

    def run(person: User) -> None:
        try:
            start.wait()
            work(person)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors


def test_concurrent_claimers_on_threads_never_get_the_same_example(many_store):
    """8 people claim at the same instant, each on their own thread and cursor: 8 examples."""
    people = [User(f"r{i}", "reviewer") for i in range(8)]
    got: dict[str, int] = {}
    _on_threads(people, lambda p: got.__setitem__(
        p.name, leases.claim_next(many_store, p, "pending").example.id))
    assert len(got) == 8 and len(set(got.values())) == 8
    assert {lease.holder: lease.example_id for lease in leases.leases(many_store, ADA)} == got


def test_concurrent_reviewers_decide_every_example_once_without_conflicts(many_store):
    """4 reviewers work the Pending queue at once until it is empty: no example is served
    to two of them, none meets a version conflict, every decision is in the audit."""
    people = [User(f"r{i}", "reviewer") for i in range(4)]
    served: dict[str, list[int]] = {p.name: [] for p in people}

    def work(person: User) -> None:
        ws = Workspace(many_store, person)
        after = None
        while (item := ws.claim_next("pending", after=after)) is not None:
            served[person.name].append(item.example.id)
            ws.decide(item.example.id, "accept", base_version=item.example.version)
            after = item.position

    _on_threads(people, work)
    every = [i for ids in served.values() for i in ids]
    assert sorted(every) == many_store.example_ids()  # each example once, to one person
    for name, ids in served.items():
        for example_id in ids:
            [event] = [e for e in many_store.history(example_id) if e["action"] == "accept"]
            assert event["actor"] == name
    assert many_store.counts_by("status") == {"accepted": 40}
    assert leases.leases(many_store, ADA) == []


def test_an_expired_lease_is_ignored_and_replaced(seeded_store):
    first = seeded_store.find()[0]
    now = utcnow()
    assert leases.claim_next(seeded_store, RITA, "pending", now=now).example.id == first.id
    later = now + timedelta(minutes=leases.DEFAULT_LEASE_MINUTES, seconds=1)
    assert leases.holder(seeded_store, first.id, now=later) is None
    assert leases.claim_next(seeded_store, ROB, "pending", now=later).example.id == first.id
    assert leases.holder(seeded_store, first.id, now=later).holder == "rob"


def test_the_lease_length_is_a_workspace_setting(seeded_store):
    leases.set_lease_minutes(seeded_store, ADA, 1)
    now = utcnow()
    lease_id = leases.claim_next(seeded_store, RITA, "pending", now=now).example.id
    assert leases.holder(seeded_store, lease_id, now=now).expires_at == now + timedelta(minutes=1)
    with pytest.raises(PermissionDenied):
        leases.set_lease_minutes(seeded_store, RITA, 10)
    with pytest.raises(Exception, match="between 0.5 and 240"):
        leases.set_lease_minutes(seeded_store, ADA, 0)


def test_hold_renews_my_lease_and_leaves_someone_elses(seeded_store):
    now = utcnow()
    item = leases.claim_next(seeded_store, RITA, "pending", now=now)
    later = now + timedelta(minutes=4)
    renewed = leases.hold(seeded_store, RITA, item.example.id, now=later)
    assert renewed.holder == "rita" and renewed.acquired_at == now
    assert renewed.expires_at == later + timedelta(minutes=5)
    # still held at 6 minutes, past the first expiry, because it was renewed
    theirs = leases.hold(seeded_store, ROB, item.example.id, now=now + timedelta(minutes=6))
    assert theirs.holder == "rita"  # rob is told who holds it; nothing changes
    assert leases.holder(seeded_store, item.example.id, now=later).holder == "rita"


def test_hold_writes_only_once_less_than_half_of_the_lease_is_left(seeded_store):
    now = utcnow()
    item = leases.claim_next(seeded_store, RITA, "pending", now=now)
    early = leases.hold(seeded_store, RITA, item.example.id, now=now + timedelta(minutes=2))
    assert early.expires_at == now + timedelta(minutes=5)  # more than half left: unchanged
    late = leases.hold(seeded_store, RITA, item.example.id, now=now + timedelta(minutes=3))
    assert late.expires_at == now + timedelta(minutes=8)


def test_an_example_opened_by_link_is_leased_if_free(seeded_store):
    ex = seeded_store.find()[3]
    assert leases.hold(seeded_store, ROB, ex.id).holder == "rob"
    # so the queue walks past it for everyone else
    served = []
    after = None
    while (item := leases.claim_next(seeded_store, RITA, "pending", after=after)) is not None:
        served.append(item.example.id)
        after = item.position
    assert ex.id not in served and len(served) == 5


def test_decide_and_skip_release_the_lease(seeded_store):
    ws = Workspace(seeded_store, RITA)
    item = ws.claim_next("pending")
    ws.decide(item.example.id, "accept", base_version=item.example.version)
    assert leases.holder(seeded_store, item.example.id) is None
    item = ws.claim_next("pending", after=item.position)
    assert ws.release(item.example.id) == 1  # a skip
    assert leases.holder(seeded_store, item.example.id) is None


def test_a_decided_example_is_not_served_again(seeded_store):
    ws_rita, ws_rob = Workspace(seeded_store, RITA), Workspace(seeded_store, ROB)
    mine = ws_rita.claim_next("pending")
    ws_rita.decide(mine.example.id, "accept", base_version=mine.example.version)
    theirs = ws_rob.claim_next("pending")
    assert theirs.example.id != mine.example.id
    assert seeded_store.get(theirs.example.id).status == "pending"


def test_only_admins_list_leases(seeded_store):
    leases.claim_next(seeded_store, RITA, "pending")
    [lease] = leases.leases(seeded_store, ADA)
    assert lease.holder == "rita" and lease.queue == "pending"
    with pytest.raises(PermissionDenied):
        leases.leases(seeded_store, RITA)


def test_claim_respects_the_filters_and_returns_none_at_the_end(seeded_store):
    where = ExampleFilter(label=("access",))
    got = leases.claim_next(seeded_store, RITA, "pending", where)
    assert got.example.label == "access"
    other = leases.claim_next(seeded_store, ROB, "pending", where)
    assert other.example.label == "access" and other.example.id != got.example.id
    assert leases.claim_next(seeded_store, ANN, "pending", where) is None


# --- Submit for review ----------------------------------------------------------------------

def test_submit_records_the_edits_and_moves_the_example_to_submitted(seeded_store):
    ws = Workspace(seeded_store, ANN)
    item = ws.claim_next("pending")
    ex = item.example
    assert queues.queue_size(seeded_store, leases.SUBMITTED) == 0
    after = ws.submit(ex.id, base_version=ex.version, label="refunds",
                      messages=chat("question 0 about billing", "a better answer"))
    assert after.version == ex.version + 1 and after.status == "pending"
    assert after.label == "refunds" and after.messages[-1]["content"] == "a better answer"
    [event] = [e for e in seeded_store.history(ex.id) if e["action"] == "submit"]
    assert event["actor"] == "ann" and event["after"]["label"] == "refunds"
    [shown] = queues.upcoming(seeded_store, leases.SUBMITTED, limit=5)
    assert shown.example.id == ex.id and "submitted for review by ann" in shown.reason
    assert leases.holder(seeded_store, ex.id) is None  # released


def test_a_submission_without_edits_is_still_one_audited_change(seeded_store):
    ex = seeded_store.find()[1]
    after = leases.submit(seeded_store, ANN, ex.id, base_version=ex.version)
    assert after.version == ex.version + 1
    assert [e["action"] for e in seeded_store.history(ex.id)] == ["create", "submit"]
    assert queues.queue_size(seeded_store, leases.SUBMITTED) == 1


def test_a_reviewer_decides_a_submitted_example_and_it_leaves_the_queue(seeded_store):
    ex = seeded_store.find()[0]
    leases.submit(seeded_store, ANN, ex.id, base_version=ex.version, reason="checked")
    ws = Workspace(seeded_store, RITA)
    item = ws.claim_next(leases.SUBMITTED)
    assert item.example.id == ex.id and item.reason.endswith(": checked")
    ws.decide(ex.id, "needs_work", base_version=item.example.version, reason="cite policy")
    assert queues.queue_size(seeded_store, leases.SUBMITTED) == 0
    assert seeded_store.get(ex.id).status == "needs_work"  # back to the annotators


def test_a_submitted_example_waits_for_a_reviewer_not_another_annotator(seeded_store):
    first, second = seeded_store.find()[:2]
    leases.submit(seeded_store, ANN, first.id, base_version=first.version)
    other = User("otto", "annotator")
    assert leases.claim_next(seeded_store, other, "pending").example.id == second.id
    assert leases.claim_next(seeded_store, RITA, "pending").example.id == first.id


def test_an_annotator_walks_past_a_run_of_submitted_examples(many_store):
    for ex in many_store.find()[:20]:
        leases.submit(many_store, ANN, ex.id, base_version=ex.version)
    got = leases.claim_next(many_store, User("otto", "annotator"), "pending")
    assert got.example.id == many_store.find()[20].id


def test_submit_on_a_stale_version_writes_nothing(seeded_store):
    ex = seeded_store.find()[0]
    seeded_store.update(ex.id, base_version=ex.version, actor="other", label="x")
    with pytest.raises(VersionConflict):
        leases.submit(seeded_store, ANN, ex.id, base_version=ex.version)
    assert queues.queue_size(seeded_store, leases.SUBMITTED) == 0
    assert [e["action"] for e in seeded_store.history(ex.id)] == ["create", "edit"]


def test_submit_carries_edits_not_a_status(seeded_store):
    ex = seeded_store.find()[0]
    with pytest.raises(Exception, match="a reviewer decides"):
        leases.submit(seeded_store, ANN, ex.id, base_version=ex.version, status="accepted")


# --- the CLI ----------------------------------------------------------------------------------

def test_cli_leases_json_lists_who_holds_what(seeded_store):
    item = leases.claim_next(seeded_store, RITA, "pending")
    path = seeded_store.path
    seeded_store.close()
    result = CliRunner().invoke(main, ["leases", "--db", str(path), "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["holder"] == "rita" and row["example_id"] == item.example.id
    assert row["queue"] == "pending"
    text = CliRunner().invoke(main, ["leases", "--db", str(path)])
    assert text.exit_code == 0 and "rita" in text.output and f"#{item.example.id}" in text.output


def test_cli_sets_the_lease_length(empty_store):
    path = empty_store.path
    empty_store.close()
    result = CliRunner().invoke(main, ["leases", "--db", str(path), "--minutes", "3"])
    assert result.exit_code == 0, result.output
    assert "3 minutes" in result.output
    with Workspace.open(path, admin("a")) as ws:
        assert leases.lease_minutes(ws.store) == 3


def test_with_overlap_each_reviewer_comes_back_for_what_the_other_held(seeded_store):
    """Overlap 2: both reviewers decide every train example, blind, working at the same time;
    an example passed over while the other held it is served again from the queue's head."""
    from curation.agreement import set_overlap

    set_overlap(seeded_store, ADA, 2)
    train = ExampleFilter(split=("train",))
    wss = {"rita": Workspace(seeded_store, RITA), "rob": Workspace(seeded_store, ROB)}
    seen: dict[str, list[int]] = {name: [] for name in wss}
    position: dict[str, tuple | None] = dict.fromkeys(wss)
    for _ in range(10):
        claimed = {}
        for name, ws in wss.items():  # both claim before either decides: leases overlap
            item = ws.claim_next("pending", ws.serving_filter("pending", train),
                                 after=position[name])
            if item is not None:
                claimed[name] = item
        if not claimed:
            break
        assert len({i.example.id for i in claimed.values()}) == len(claimed)
        for name, item in claimed.items():
            wss[name].decide(item.example.id, "accept", base_version=item.example.version)
            seen[name].append(item.example.id)
            position[name] = item.position
    every = seeded_store.example_ids(train)
    assert sorted(seen["rita"]) == every and sorted(seen["rob"]) == every
    assert seeded_store.counts_by("status", train) == {"accepted": 4}
