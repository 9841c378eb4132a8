"""Overlap for agreement on a real workspace file: blind serving to N different reviewers,
agreement deciding the example, disagreement going to adjudication, the adjudicator settling
it (audited), N = 1 unchanged, and kappa checked against scikit-learn and Fleiss (1971)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import cohen_kappa_score

from curate.cli import main
from curate.workspace import Workspace
from curation import ExampleFilter, InvalidValue, PermissionDenied, queues, review
from curation.agreement import (
    ADJUDICATION,
    cohen_kappa,
    figures,
    fleiss_kappa,
    overlap,
    progress,
    serving_filter,
    set_overlap,
    votes,
)
from curation.auth import User

ADA = User("ada", "admin")
RITA, BOB, CARL = User("rita", "reviewer"), User("bob", "reviewer"), User("carl", "reviewer")


def served(store, user: User, queue: str = "pending") -> list[int]:
    """The ids `user` is served by the queue, in order."""
    where = serving_filter(store, user, queue, ExampleFilter(split=("train",)))
    return [item.example.id for item in queues.upcoming(store, queue, where, limit=100)]


def vote(store, user: User, example_id: int, decision: str = "accept", label=None, reason=None):
    current = store.get(example_id)
    changes = {} if label is None else {"label": label}
    return review.decide(store, user, example_id, decision, base_version=current.version,
                         reason=reason, **changes)


@pytest.fixture
def overlap2(seeded_store):
    set_overlap(seeded_store, ADA, 2)
    return seeded_store


# --- kappa ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_cohen_kappa_equals_scikit_learn(seed):
    rng = random.Random(seed)
    categories = ["accept · billing", "accept · access", "reject · billing", "needs_work · x"]
    a = [rng.choice(categories) for _ in range(40)]
    b = [x if rng.random() < 0.6 else rng.choice(categories) for x in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_cohen_kappa_known_values_and_undefined():
    assert cohen_kappa(["x", "y", "x", "y"], ["x", "y", "x", "y"]) == pytest.approx(1.0)
    assert cohen_kappa(["x", "y"], ["y", "x"]) == pytest.approx(-1.0)
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # chance agreement 1: undefined
    with pytest.raises(InvalidValue, match="same items"):
        cohen_kappa(["x"], ["x", "y"])


def test_fleiss_kappa_of_the_fleiss_1971_table():
    """The worked example (Wikipedia, "Fleiss' kappa"): 10 items, 14 raters, 5 categories;
    by hand: mean P_i = 0.378, sum p_j^2 = 0.213, kappa = 0.210."""
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    p_j = np.array(table).sum(axis=0) / 140
    assert p_j == pytest.approx([0.143, 0.200, 0.279, 0.150, 0.229], abs=1e-3)
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_of_two_raters_is_scotts_pi():
    """With two raters per item, Fleiss' kappa is Scott's pi: (p_o - p_e) / (1 - p_e) with
    p_e from the pooled shares."""
    a, b = ["x", "x", "y", "y", "x"], ["x", "y", "y", "y", "x"]
    table = [[(a[i] == c) + (b[i] == c) for c in "xy"] for i in range(5)]
    pooled = np.array([sum(v == c for v in a + b) for c in "xy"]) / 10
    p_o, p_e = 4 / 5, float((pooled ** 2).sum())
    assert fleiss_kappa(table) == pytest.approx((p_o - p_e) / (1 - p_e))


# --- the setting ---------------------------------------------------------------------------

def test_overlap_defaults_to_one_and_only_admins_set_it(seeded_store):
    assert overlap(seeded_store) == 1
    with pytest.raises(PermissionDenied, match="'set_overlap' needs the admin role"):
        set_overlap(seeded_store, RITA, 2)
    assert overlap(seeded_store) == 1
    for bad in (0, 11, 2.5, True):
        with pytest.raises(InvalidValue, match="overlap must be a whole number"):
            set_overlap(seeded_store, ADA, bad)
    assert set_overlap(seeded_store, ADA, 3)["overlap"] == 3
    assert overlap(seeded_store) == 3


def test_with_overlap_one_a_decision_is_as_before(seeded_store):
    first = seeded_store.find(ExampleFilter(split=("train",)))[0]
    after = vote(seeded_store, RITA, first.id, "accept")
    assert after.status == "accepted" and after.version == first.version + 1
    assert progress(seeded_store, RITA, first.id) is None
    assert serving_filter(seeded_store, RITA, "pending", ExampleFilter()) == ExampleFilter()
    assert seeded_store.rated_rounds() == []


# --- serving and deciding --------------------------------------------------------------------

def test_overlap_two_serves_an_example_to_two_different_reviewers_blind(overlap2):
    store = overlap2
    train = served(store, RITA)
    assert len(train) == 4 and served(store, BOB) == train
    first = train[0]
    after = vote(store, RITA, first, "accept", label="billing")
    assert after.status == "pending" and after.version == 1  # blind: nothing changed
    assert [e["action"] for e in store.history(first)] == ["create"]
    assert first not in served(store, RITA)  # not to the same reviewer twice
    assert first in served(store, BOB)  # still to the others
    with pytest.raises(InvalidValue, match="rita has already decided on example"):
        vote(store, RITA, first, "reject", reason="changed my mind")
    shown = progress(store, BOB, first)
    assert (shown.needed, shown.recorded, shown.mine, shown.disputed) == (2, 1, False, False)
    assert progress(store, RITA, first).mine
    with pytest.raises(PermissionDenied):  # reviewers never read each other's decisions
        votes(store, BOB, first)


def test_agreement_decides_the_example_with_the_agreed_label(overlap2):
    store = overlap2
    first = served(store, RITA)[0]
    vote(store, RITA, first, "accept", label="refunds")
    after = vote(store, BOB, first, "accept", label="refunds")
    assert after.status == "accepted" and after.label == "refunds"
    [event] = [e for e in store.history(first) if e["action"] != "create"]
    assert event["action"] == "accept" and event["actor"] == "bob"
    assert event["reason"] == "2 independent decisions agree (rita, bob)"
    assert first not in served(store, CARL)  # decided: out of the pending queue
    assert first not in served(store, ADA, ADJUDICATION)
    assert progress(store, RITA, first) is None


def test_an_edit_with_a_vote_is_refused(overlap2):
    store = overlap2
    first = store.get(served(store, RITA)[0])
    with pytest.raises(InvalidValue, match="Save the edit to tags first"):
        review.decide(store, RITA, first.id, "accept", base_version=first.version,
                      tags=["new"])
    assert progress(store, RITA, first.id) is None
    unchanged = review.decide(store, RITA, first.id, "accept", base_version=first.version,
                              tags=list(first.tags), messages=first.messages)
    assert unchanged.version == first.version and progress(store, RITA, first.id).recorded == 1


def test_disagreement_goes_to_adjudication_and_an_admin_settles_it(overlap2):
    store = overlap2
    first = served(store, RITA)[0]
    vote(store, RITA, first, "accept", label="billing", reason="clear billing question")
    after = vote(store, BOB, first, "reject", reason="duplicate")
    assert after.status == "pending" and after.version == 1
    assert served(store, ADA, ADJUDICATION) == [first]
    assert served(store, RITA, ADJUDICATION) == []  # reviewers cannot adjudicate
    assert "1 examples wait for an admin to settle" in " ".join(
        a.message for a in Workspace(store, ADA).needs_attention())
    assert first not in served(store, CARL)  # no third vote: it waits for the adjudicator
    assert progress(store, CARL, first).disputed
    with pytest.raises(PermissionDenied, match="'adjudicate' needs the admin role"):
        vote(store, CARL, first, "accept")
    side_by_side = votes(store, ADA, first)
    assert [(v.reviewer, v.decision, v.label, v.reason) for v in side_by_side] == [
        ("rita", "accept", "billing", "clear billing question"),
        ("bob", "reject", "billing", "duplicate")]
    settled = vote(store, ADA, first, "accept", label="refunds", reason="billing it is")
    assert settled.status == "accepted" and settled.label == "refunds"
    [event] = [e for e in store.history(first) if e["action"] != "create"]
    assert event["actor"] == "ada" and event["action"] == "accept"
    assert event["reason"] == ("adjudicated (rita: accept · billing; bob: reject · billing): "
                               "billing it is")
    assert served(store, ADA, ADJUDICATION) == []
    assert {(v["state"], v["settled_by"]) for v in store.rated_rounds()} == {
        ("adjudicated", "ada")}


def test_needs_work_agreed_starts_a_new_round(overlap2):
    store = overlap2
    first = served(store, RITA)[0]
    vote(store, RITA, first, "needs_work", reason="vague")
    after = vote(store, BOB, first, "needs_work", reason="too short")
    assert after.status == "needs_work"
    assert first in served(store, RITA)  # undecided again: a new round, open to everyone
    vote(store, RITA, first, "accept")
    assert progress(store, BOB, first).recorded == 1


def test_lowering_overlap_settles_the_rounds_that_now_have_enough(seeded_store):
    store = seeded_store
    set_overlap(store, ADA, 3)
    a, b = served(store, RITA)[:2]
    for user in (RITA, BOB):
        vote(store, user, a, "accept")
    vote(store, RITA, b, "accept")
    vote(store, BOB, b, "reject", reason="no")
    assert store.get(a).status == "pending"
    outcome = set_overlap(store, ADA, 2)
    assert (outcome["agreed"], outcome["disputed"]) == ([a], [b])
    assert store.get(a).status == "accepted"
    assert served(store, ADA, ADJUDICATION) == [b]


def test_eval_and_decided_examples_are_decided_directly(overlap2):
    store = overlap2
    evaluated = store.find(ExampleFilter(split=("eval",)))[0]
    assert vote(store, RITA, evaluated.id, "accept").status == "accepted"
    first = served(store, RITA)[0]
    for user in (RITA, BOB):
        vote(store, user, first, "accept")
    assert vote(store, CARL, first, "reject", reason="wrong").status == "rejected"


# --- figures ---------------------------------------------------------------------------------

def test_figures_match_scikit_learn_per_pair_and_fleiss_overall(file_store):
    from tests.conftest import chat

    store = file_store()
    ids = [store.add(chat(f"q{i}", f"a{i}"), actor="seed", label="a").id for i in range(12)]
    set_overlap(store, ADA, 3)
    rng = random.Random(7)
    given = {u.name: [] for u in (RITA, BOB, CARL)}
    for example_id in ids:
        for user in (RITA, BOB, CARL):
            label = rng.choice(["a", "b", "c"])
            decision = rng.choice(["accept", "accept", "reject"])
            vote(store, user, example_id, decision, label=label,
                 reason="r" if decision == "reject" else None)
            given[user.name].append(f"{decision} · {label}")
    result = figures(store)
    assert result.items == 12 and result.reviewers == ["bob", "carl", "rita"]
    for pair in result.pairs:
        assert pair.items == 12
        assert pair.kappa == pytest.approx(cohen_kappa_score(given[pair.a], given[pair.b]))
    verdicts = sorted({v for votes_ in given.values() for v in votes_})
    table = [[sum(given[n][i] == c for n in given) for c in verdicts] for i in range(12)]
    assert result.fleiss == pytest.approx(fleiss_kappa(table))
    by_label = {x.label: x for x in result.labels}
    gave_a = [[sum(not given[n][i].endswith("· a") for n in given),
               sum(given[n][i].endswith("· a") for n in given)] for i in range(12)]
    assert by_label["a"].kappa == pytest.approx(fleiss_kappa(gave_a))
    touched = [row for row in gave_a if row[1]]
    assert by_label["a"].items == len(touched)
    assert by_label["a"].all_agree == pytest.approx(sum(r[1] == 3 for r in touched)
                                                    / len(touched))
    assert result.in_adjudication == sum(len({given[n][i] for n in given}) > 1
                                         for i in range(12))


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_overlap_and_agreement_json(overlap2):
    store = overlap2
    first, second = served(store, RITA)[:2]
    for user, decision in ((RITA, "accept"), (BOB, "accept")):
        vote(store, user, first, decision, label="billing")
        vote(store, user, second, decision, label="billing" if user is RITA else "access")
    path = str(store.path)
    store.close()
    runner = CliRunner()
    shown = runner.invoke(main, ["overlap", "--db", path])
    assert shown.exit_code == 0 and "2 independent decisions" in shown.output
    result = runner.invoke(main, ["agreement", "--db", path, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["overlap"] == 2 and data["items"] == 2 and data["in_adjudication"] == 1
    [pair] = data["pairs"]
    assert (pair["a"], pair["b"], pair["items"], pair["observed"]) == ("bob", "rita", 2, 0.5)
    assert pair["kappa"] == pytest.approx(cohen_kappa_score(
        ["accept · billing", "accept · access"], ["accept · billing", "accept · billing"]))
    shown = runner.invoke(main, ["overlap", "--db", path, "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout) == {"overlap": 2}
    changed = runner.invoke(main, ["overlap", "1", "--db", path, "--json"])
    assert changed.exit_code == 0, changed.output
    # both rounds were settled at two decisions: nothing left to settle
    assert json.loads(changed.stdout) == {"overlap": 1, "agreed": [], "disputed": []}
    with Workspace.open(path, ADA) as ws:
        assert ws.overlap() == 1
