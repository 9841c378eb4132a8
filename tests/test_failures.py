"""Eval failures back to curation: the Eval failures queue, the evidence for each failure,
the Expected impact queue, `curate failures --json` and the Review page.

The first tests plant an evaluation's per-example answers (the `EvalResult.examples` shape
the facade hands over) on a real store with the real packaged embedding model, to pin the
ordering and the evidence exactly; the rest use one real tiny run, trained and evaluated once
for the module, through the facade, the CLI and the app.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from curate import Workspace
from curation import ExampleFilter, Store, queues
from curation import failures as F
from curation.checks import run_check
from tests.conftest import PROJECT_ROOT, admin, chat, page, unescaped
from tests.test_app_training import _tickets
from tests.test_training import ADMIN, RUN_TIMEOUT, TINY, _wait_for
from training.config import EvalConfig, TrainConfig

ADA = admin("ada")


def _answers(rows: list[tuple[int, str, str, str, float]]) -> list[dict]:
    """Evaluated examples as `EvalResult.examples` holds them: (id, label, reference, fine-tuned
    answer, fine-tuned score)."""
    return [{"id": i, "label": label, "reference": ref, "fine_tuned": answer,
             "scores": {"fine_tuned": score}} for i, label, ref, answer, score in rows]


@pytest.fixture
def planted(file_store) -> tuple[Store, dict[str, int]]:
    """Train: two card_arrival and two billing tickets (accepted), an exact duplicate of one
    card ticket (pending), and pending tickets for the impact queue; eval: three tickets."""
    store = file_store()
    ids = {}

    def add(key, text, label, split="train", status="accepted"):
        ids[key] = store.add(chat(text, label), actor="t", label=label, split=split,
                             status=status).id

    add("card1", "Where is my new card? It has not arrived yet", "card_arrival")
    add("card2", "My card still hasn't been delivered", "card_arrival")
    add("bill1", "I was charged twice for one payment", "billing")
    add("bill2", "Why is there an extra fee on my statement", "billing")
    add("dup", "Where is my new card? It has not arrived yet", "card_arrival",
        status="pending")
    add("near", "When will my card arrive in the post?", "card_arrival", status="pending")
    add("far", "How do I change the colour theme of the app?", "settings", status="pending")
    add("done", "My card has not come yet", "card_arrival", status="needs_work")
    add("e_card", "How long until my card arrives?", "card_arrival", split="eval")
    add("e_bill", "I see a double charge on my account", "billing", split="eval")
    add("e_ok", "Change my app theme", "settings", split="eval")
    return store, ids


def test_failures_are_stored_worst_first_with_error_rates(planted):
    store, ids = planted
    answers = _answers([(ids["e_card"], "card_arrival", "the card is on its way", "a fee", 0.2),
                        (ids["e_bill"], "billing", "refund the double charge", "no idea", 0.0),
                        (ids["e_ok"], "settings", "open settings then theme",
                         "open settings then theme now", 0.8)])
    assert F.record_failures(store, ADA, "run-a", "2026-01-01T00:00:00Z", "token_f1",
                             answers) == 2
    found = F.failures(store)
    # free text: below half the reference's words is a failure; the worst first
    assert [f.example_id for f in found] == [ids["e_bill"], ids["e_card"]]
    assert found[1].reason == ("fine-tuned answered 'a fee', reference 'the card is on its "
                               "way' (run run-a)")
    assert found[1].details["answer"] == "a fee"
    summary = F.failure_run(store)
    assert summary["error_rate_by_label"] == {"card_arrival": 1.0, "billing": 1.0,
                                              "settings": 0.0}
    # the queue reads them in the same order, with the reason
    items = queues.upcoming(store, F.FAILURES, limit=10)
    assert [i.example.id for i in items] == [ids["e_bill"], ids["e_card"]]
    assert items[1].reason == found[1].reason
    assert [f.check for f in queues.feeds(store, F.FAILURES)] == [F.FAILURES]
    # the same evaluation again is a no-op; accuracy counts any wrong answer
    assert F.record_failures(store, ADA, "run-a", "2026-01-01T00:00:00Z", "token_f1",
                             answers) is None
    assert F.record_failures(store, ADA, "run-b", "2026-01-02T00:00:00Z", "accuracy",
                             answers) == 3


def test_evidence_lists_the_nearest_train_examples_with_their_flags(planted):
    store, ids = planted
    run_check(store, "exact_duplicates", user=ADA)  # flags the pending copy of card1
    F.record_failures(store, ADA, "run-a", "t0", "accuracy", _answers(
        [(ids["e_card"], "card_arrival", "card_arrival", "billing", 0.0)]))
    evidence = F.evidence(store, ids["e_card"], k=5)
    assert evidence.answer == "billing" and evidence.reference == "card_arrival"
    assert evidence.run_id == "run-a"
    near = [n.example_id for n in evidence.neighbours]
    # the five card tickets in train (any status but rejected), no eval or billing ticket
    assert sorted(near) == sorted(ids[k] for k in ("card1", "card2", "dup", "near", "done"))
    assert [n.label for n in evidence.neighbours] == ["card_arrival"] * 5
    sims = [n.similarity for n in evidence.neighbours]
    assert sims == sorted(sims, reverse=True) and 0 < sims[-1] <= 1
    flagged = {n.example_id: n.flags for n in evidence.neighbours if n.flags}
    # the pending copy is flagged; card1, its suggested keeper, is not
    assert list(flagged) == [ids["dup"]]
    assert flagged[ids["dup"]] == [f"a duplicate: exact duplicate of #{ids['card1']}"]
    assert evidence.summary == ("the 5 closest training examples say card_arrival; 1 of them "
                                "is flagged as a duplicate")
    assert [n.example_id for n in F.evidence(store, ids["e_card"], k=2).neighbours] == near[:2]
    assert F.evidence(store, ids["e_ok"]) is None  # not a failure


def test_impact_scores_follow_the_stated_rule():
    candidates = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    failed = np.array([[1.0, 0.0]])
    scores = F.impact_scores(candidates, ["a", "b", None], failed, {"a": 0.5, "b": 1.0})
    assert scores.tolist() == pytest.approx([(1.0 + 0.5) / 2, (0.0 + 1.0) / 2, 0.6 / 2])


def test_impact_queue_puts_pending_examples_near_failures_and_in_weak_labels_first(planted):
    store, ids = planted
    F.record_failures(store, ADA, "run-a", "t0", "accuracy", _answers(
        [(ids["e_card"], "card_arrival", "card_arrival", "billing", 0.0),
         (ids["e_ok"], "settings", "settings", "settings", 1.0)]))
    assert F.rank_by_impact(store, ADA) == 3  # the pending train examples
    items = queues.upcoming(store, F.IMPACT, limit=10)
    # the card tickets (nearest the failure, in a label the model always got wrong) first;
    # the needs-work card ticket and the accepted ones are not pending
    assert [i.example.id for i in items] == [ids["near"], ids["dup"], ids["far"]]
    assert [i.rank for i in items] == sorted(i.rank for i in items)
    assert items[0].rank < 0.1 and items[-1].rank > 0.5  # 1 - impact
    assert items[0].reason.endswith("error rate 100% on its label")
    assert items[-1].reason.endswith("error rate 0% on its label")
    # a decided example leaves the queue
    store.update(ids["near"], base_version=store.get(ids["near"]).version, actor="t",
                 status="accepted")
    assert [i.example.id for i in queues.upcoming(store, F.IMPACT, limit=10)] == \
        [ids["dup"], ids["far"]]


# --- one real tiny run, evaluated -----------------------------------------------------------

@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, model_cache):
    """A workspace (closed, so that other processes may open it) with a tiny run trained on 6
    tickets and evaluated on 3, and a pending exact duplicate of a train ticket, flagged."""
    import torch

    import training.eval as ev
    from training.launcher import ENDED_STATES, launch, read_run
    from training.models import cached_default_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CURATE_MODEL_CACHE", str(model_cache))
        cached_default_model(model_cache)
        path = tmp_path_factory.mktemp("failures") / "curate.duckdb"
        with Store(path) as store:
            _tickets(store)
            store.add(chat("Ticket: I was charged twice this month", "billing"), actor="t",
                      label="billing", split="train")
            run_check(store, "exact_duplicates", user=ADA)
            run = launch(store, ADMIN, TrainConfig(**{**TINY, "batch_size": 3},
                                                   checkpoint_every_steps=0))
            _wait_for(lambda: read_run(run.dir).status.state in ENDED_STATES,
                      timeout=RUN_TIMEOUT, what="the run to end")
            assert read_run(run.dir).state == "completed"
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                result = ev.evaluate(run.dir, ev.eval_rows_from_store(store),
                                     ev.train_rows_from_run(run.dir),
                                     EvalConfig(shots=1, max_new_tokens=4), device="cpu")
            finally:
                torch.set_num_threads(threads)
        yield path, result


def test_recorded_evaluation_feeds_the_queues_worst_first(evaluated):
    path, result = evaluated
    wrong = {e["id"] for e in result.examples if e["scores"]["fine_tuned"] < 1}
    assert wrong, "the tiny run answered every eval ticket right: nothing to test"
    with Workspace.open(path, ADMIN) as ws:
        ws.record_runs()
        found = F.failures(ws.store)
        assert {f.example_id for f in found} == wrong
        assert [(f.score, f.example_id) for f in found] == sorted((f.score, f.example_id)
                                                                  for f in found)
        items = queues.upcoming(ws.store, F.FAILURES, limit=10)
        assert [i.example.id for i in items] == [f.example_id for f in found]
        assert len(ws.failure_evidence(found[0].example_id).neighbours) == 3
        # all seven train tickets: labels as stored, only the pending copy flagged
        evidence = ws.failure_evidence(found[0].example_id, k=7)
        train = {e.id: e for e in ws.store.find(ExampleFilter(split=("train",)))}
        assert sorted(n.example_id for n in evidence.neighbours) == sorted(train)
        assert all(train[n.example_id].label == n.label for n in evidence.neighbours)
        [copy] = [e.id for e in train.values() if e.status == "pending"]
        [original] = [e.id for e in train.values() if e.id != copy and
                      e.messages == train[copy].messages]
        assert {n.example_id: n.flags for n in evidence.neighbours if n.flags} == \
            {copy: [f"a duplicate: exact duplicate of #{original}"]}
        assert evidence.summary.endswith("; 1 of them is flagged as a duplicate")
        # the one pending train example is ranked for impact: both queues are fed
        assert [i.example.status for i in queues.upcoming(ws.store, F.IMPACT)] == ["pending"]
        assert all(queues.queue_size(ws.store, name) for name in F.QUEUES)


def test_cli_failures_json_lists_failures_with_evidence(evaluated, model_cache):
    path, result = evaluated
    env = {**os.environ, "CURATE_MODEL_CACHE": str(model_cache)}
    done = subprocess.run([sys.executable, "-m", "curate", "failures", "--db", str(path),
                           "--json", "-k", "2"], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    items = json.loads(done.stdout)["failures"]
    wrong = sorted((e["scores"]["fine_tuned"], e["id"]) for e in result.examples
                   if e["scores"]["fine_tuned"] < 1)
    assert [i["example_id"] for i in items] == [i for _, i in wrong]
    by_id = {e["id"]: e for e in result.examples}
    for item in items:
        assert item["answer"] == by_id[item["example_id"]]["fine_tuned"]
        assert item["reference"] == by_id[item["example_id"]]["reference"]
        assert len(item["neighbours"]) == 2 and item["summary"].startswith("the 2 closest")
    # another run's id that does not exist is one clear line
    bad = subprocess.run([sys.executable, "-m", "curate", "failures", "nope", "--db",
                          str(path)], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert bad.returncode == 1 and "nope" in bad.stderr


def test_review_page_shows_the_answer_and_the_evidence_with_links(evaluated, monkeypatch,
                                                                 model_cache):
    path, _ = evaluated
    with Workspace.open(path, ADMIN) as ws:
        ws.record_failures()  # what opening the Evaluation page does
    monkeypatch.setenv("CURATE_DB", str(path))
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=RUN_TIMEOUT)
    at.session_state["user"] = ADMIN
    at.session_state["rv_queue"] = F.FAILURES
    at.switch_page(page("review")).run()
    assert not at.exception, at.exception
    with Workspace.open(path, ADMIN) as ws:
        first = F.failures(ws.store)[0]
        evidence = ws.failure_evidence(first.example_id)
    assert at.query_params["id"] == str(first.example_id)
    captions = " ".join(unescaped(c.value) for c in at.caption)
    assert "Eval failures of the latest evaluated run (last run" in captions
    texts = [t.value for t in at.text]
    assert (evidence.answer or "(empty)") in texts  # the tiny model may answer nothing
    assert evidence.reference in texts
    assert evidence.summary[0].upper() + evidence.summary[1:] + "." in texts
    for n in evidence.neighbours:
        assert n.prompt in texts and all(f"flagged as {f}" in texts for f in n.flags)
    links = [(link.proto.page, link.proto.query_string) for link in at.get("page_link")]
    assert [(p, q) for p, q in links if p == "review"] == \
        [("review", f"id={n.example_id}") for n in evidence.neighbours]
    # the impact queue states its rule; Rank again takes in examples imported since
    at.selectbox(key="rv_queue").set_value(F.IMPACT).run()
    assert F.IMPACT_RULE in [c.value for c in at.caption]
    with Store(path) as store:
        before = queues.queue_size(store, F.IMPACT)
        store.add(chat("Ticket: I was charged three times", "billing"), actor="t",
                  label="billing", split="train")
    at.button(key="rv_rank").click().run()
    assert not at.exception, at.exception
    with Store(path) as store:
        assert queues.queue_size(store, F.IMPACT) == before + 1
