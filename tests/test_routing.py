"""Confidence routing: bands to destinations, the QA sample, the audit, reverting, the queues,
the measured precision, `curate route` and the Review page's one-key accept.

Suggestions with known confidences are recorded directly on a real DuckDB file (what
`curate predict` stores), so each band and each rule is checked on numbers chosen for it; the
model that makes real suggestions is tested in `tests.test_predict`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from curate import Workspace
from curation import Store, import_file, queues
from curation import routing as R
from curation import suggestions as SG
from curation.auth import User
from curation.errors import InvalidValue, PermissionDenied
from tests.conftest import PROJECT_ROOT, admin, chat, page, unescaped, write_jsonl

ADA = admin("ada")
RUN = "run-20261201-000000-abcd"
LABELS = ("card_arrival", "billing", "refund")


def prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def seed_workspace(store: Store, confidences: list[float], *,
                   answered: dict[int, str] | None = None) -> list[int]:
    """Pending train prompts imported without answers (or with the given answer and label
    at those indexes), each with a suggestion of RUN at the given confidence; their ids."""
    answered = answered or {}
    records = [{"messages": chat(f"question {k}", answered[k]), "label": answered[k]}
               if k in answered else {"messages": prompt(f"question {k}")}
               for k in range(len(confidences))]
    folder = Path(store.path).parent
    start = store.count()
    import_file(store, write_jsonl(folder / f"seed-{start}.jsonl", records), user=ADA,
                unanswered=True)
    examples = store.find()[start:]
    for k, (ex, conf) in enumerate(zip(examples, confidences)):
        SG.record_suggestions(store, ADA, [SG.Suggestion(
            ex.id, ex.version, RUN, LABELS[k % 3], conf, SG.LABEL_METHOD)])
    return [ex.id for ex in examples]


def test_the_qa_sample_is_reproducible_from_the_seed_and_sized_by_the_share():
    ids = list(range(100, 300))
    first = R.qa_sample(ids, 0.05, seed=7)
    assert len(first) == 10 and set(first) <= set(ids) and first == sorted(first)
    assert R.qa_sample(list(reversed(ids)), 0.05, seed=7) == first  # order does not matter
    assert R.qa_sample(ids, 0.05, seed=8) != first
    assert len(R.qa_sample(ids[:3], 0.05, seed=0)) == 1  # ceil: a small band still gets one
    assert R.qa_sample(ids, 0.0, seed=0) == [] and R.qa_sample([], 0.05, seed=0) == []
    with pytest.raises(InvalidValue, match="between 0 and 1"):
        R.qa_sample(ids, 1.5, seed=0)


def test_with_answer_appends_or_replaces_the_last_answer():
    assert R.with_answer(prompt("q"), "a") == chat("q", "a")
    assert R.with_answer(chat("q", "old"), "new") == chat("q", "new")
    assert R.answer_of(prompt("q")) is None and R.answer_of(chat("q", "a")) == "a"


def test_routing_sends_known_confidences_to_the_right_places(file_store):
    store = file_store()
    #            high  high  mid   mid   low   =high (0.9)  high, but disagrees  high, agrees
    confs = [0.99, 0.95, 0.85, 0.70, 0.69, 0.90, 0.97, 0.96]
    # index 6 suggests LABELS[0] but already says "refund"; index 7 suggests LABELS[1] and says it
    ids = seed_workspace(store, confs, answered={6: "refund", 7: "billing"})
    done = R.route(store, ADA, RUN, seed=3)
    assert done.auto_accepted == [ids[0], ids[1], ids[5], ids[7]]
    assert done.suggested == [ids[2], ids[3]] and done.disagreed == [ids[6]]
    assert done.left == [ids[4]] and done.routed == 8
    assert done.shares() == {"auto_accepted": 4 / 8, "review": 3 / 8, "left": 1 / 8}
    for i in done.auto_accepted:
        ex = store.get(i)
        k = ids.index(i)
        assert ex.status == "accepted" and ex.label == LABELS[k % 3]
        assert ex.messages == chat(f"question {k}", LABELS[k % 3])
        event = store.history(i)[-1]
        assert event["actor"] == f"model:{RUN}" and event["action"] == "accept"
        assert event["reason"].startswith(f"auto-accepted: confidence {confs[k]:.3f} >= 0.9")
    # the person's text is never overwritten: the confident disagreement waits for a person
    kept = store.get(ids[6])
    assert kept.status == "pending" and kept.messages == chat("question 6", "refund")
    for i in (ids[2], ids[3], ids[4]):
        assert store.get(i).status == "pending" and store.get(i).needs_answer
    # the Model suggestions queue: middle band and the disagreement, most confident first
    items = queues.upcoming(store, R.SUGGESTIONS, limit=10)
    assert [it.example.id for it in items] == [ids[6], ids[2], ids[3]]
    assert "differs from the stored answer" in items[0].reason
    assert "suggests 'refund' with confidence 0.85 (0.7 to 0.9)" in items[1].reason
    # the QA sample: ceil(5% of 4) = 1 of the auto-accepted, the same one for the same seed
    assert done.qa_sample == R.qa_sample(done.auto_accepted, 0.05, 3)
    qa = queues.upcoming(store, R.QA_SAMPLE, limit=10)
    assert [it.example.id for it in qa] == done.qa_sample
    last = R.last_routing(store)
    assert last["run_id"] == RUN and last["auto"] == 4 and last["run_by"] == "ada"
    said = [a.message for a in Workspace(store, ADA).needs_attention()]
    assert "3 model suggestions wait for a person: one key (m) accepts each (Review page, " \
        "queue 'Model suggestions')." in said
    assert any(m.startswith("1 auto-accepted examples of the QA sample wait") for m in said)


def test_thresholds_of_the_workspace_move_the_bands(file_store):
    store = file_store()
    SG.set_thresholds(store, ADA, 0.98, 0.5)
    ids = seed_workspace(store, [0.99, 0.95, 0.6, 0.4])
    done = R.route(store, ADA, RUN, qa_share=0)
    assert (done.auto_accepted, done.suggested, done.left) == ([ids[0]], ids[1:3], [ids[3]])
    assert done.qa_sample == [] and queues.queue_size(store, R.QA_SAMPLE) == 0


def test_only_pending_train_examples_with_a_current_suggestion_are_routed(file_store):
    store = file_store()
    ids = seed_workspace(store, [0.99, 0.99, 0.99, 0.99])
    # edited since the suggestion: stale; eval split: never routed; already rejected: left alone
    ex = store.get(ids[0])
    store.update(ids[0], base_version=ex.version, actor="bob",
                 messages=prompt("question 0, rephrased"))
    store.update(ids[1], base_version=1, actor="bob", split="eval")
    store.update(ids[2], base_version=1, actor="bob", status="rejected", reason="spam")
    done = R.route(store, ADA, RUN)
    assert done.auto_accepted == [ids[3]] and done.routed == 1


def test_auto_accepts_revert_to_pending_and_leave_the_qa_sample(file_store):
    store = file_store()
    ids = seed_workspace(store, [0.99, 0.98, 0.97, 0.5])
    done = R.route(store, ADA, RUN, qa_share=1.0)
    assert done.qa_sample == ids[:3]
    # a person decides on one of them first: that one is theirs now, and stays
    ex = store.get(ids[0])
    Workspace(store, ADA).decide(ids[0], "reject", base_version=ex.version, reason="wrong")
    with pytest.raises(PermissionDenied):
        R.revert_auto_accepts(store, User("ann", "annotator"), RUN)
    reverted = R.revert_auto_accepts(store, ADA, RUN)
    assert reverted == ids[1:3]
    for i in reverted:
        ex = store.get(i)
        assert ex.status == "pending" and ex.needs_answer and ex.label is None
        event = store.history(i)[-1]
        assert (event["action"], event["actor"]) == ("revert", "ada")
        assert event["reason"] == f"undo the auto-accept of run {RUN}"
    assert store.get(ids[0]).status == "rejected"
    assert [f[0] for f in store.findings(R.QA_SAMPLE)] == [ids[0]]
    assert R.revert_auto_accepts(store, ADA, RUN) == []  # nothing left to undo


def test_qa_reviews_measure_the_precision_of_the_auto_band(file_store):
    store = file_store()
    ids = seed_workspace(store, [0.99, 0.98, 0.97, 0.96])
    ws = Workspace(store, ADA)
    done = ws.route(RUN, qa_share=1.0)
    assert done.qa_sample == ids
    assert R.qa_precision(store) == {"sampled": 4, "reviewed": 0, "correct": 0,
                                     "precision": None}

    def current(i):
        return store.get(i)

    # confirmed as is: correct (no new version is written, the verdict is still recorded)
    before = current(ids[0])
    assert ws.decide(ids[0], "accept", base_version=before.version).version == before.version
    # relabelled and accepted: wrong
    ex = current(ids[1])
    ws.decide(ids[1], "accept", base_version=ex.version, label="refund",
              messages=chat("question 1", "refund"))
    # rejected: wrong
    ws.decide(ids[2], "reject", base_version=current(ids[2]).version, reason="not an intent")
    assert R.qa_precision(store) == {"sampled": 4, "reviewed": 3, "correct": 1,
                                     "precision": 1 / 3}
    # reviewed examples leave the QA queue; deciding again does not count twice
    assert [it.example.id for it in queues.upcoming(store, R.QA_SAMPLE, limit=9)] == [ids[3]]
    ws.decide(ids[0], "accept", base_version=current(ids[0]).version)
    assert R.qa_precision(store)["reviewed"] == 3
    status = ws.routing_status()
    assert status["qa"]["precision"] == 1 / 3 and status["run_id"] == RUN
    assert status["eval"] is None  # the run folder is not here: no calibration to read
    # undoing the rejection takes its verdict back: the example waits in the queue again
    ws.undo(ids[2], current(ids[2]).version)
    assert current(ids[2]).status == "accepted"
    assert R.qa_precision(store) == {"sampled": 4, "reviewed": 2, "correct": 1,
                                     "precision": 1 / 2}
    assert {it.example.id for it in queues.upcoming(store, R.QA_SAMPLE, limit=9)} == {
        ids[2], ids[3]}


def test_accepting_a_suggestion_is_one_audited_change_by_the_person(file_store):
    store = file_store()
    ids = seed_workspace(store, [0.8])
    ws = Workspace(store, ADA)
    R.route(store, ADA, RUN)
    ex = store.get(ids[0])
    after = ws.accept_suggestion(ids[0], base_version=ex.version, tags=("checked",))
    assert after.status == "accepted" and after.label == "card_arrival"
    assert after.messages == chat("question 0", "card_arrival") and after.tags == ("checked",)
    event = store.history(ids[0])[-1]
    assert (event["action"], event["actor"]) == ("accept", "ada")
    assert event["reason"] == f"accepted the suggestion of run {RUN} (confidence 0.80)"
    assert queues.queue_size(store, R.SUGGESTIONS) == 0
    with pytest.raises(InvalidValue, match="no model suggestion for its current version"):
        ws.accept_suggestion(ids[0], base_version=after.version)
    with pytest.raises(PermissionDenied):
        R.route(store, User("ann", "annotator"), RUN)


def test_cli_route_json_and_undo(tmp_path):
    path = tmp_path / "w.duckdb"
    with Store(path) as store:
        ids = seed_workspace(store, [0.99, 0.95, 0.8, 0.2])

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "curate", "route", "--db", str(path),
                               *args], capture_output=True, text=True, timeout=300,
                              check=False, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done

    document = json.loads(cli(RUN, "--seed", "5", "--qa-share", "0.5", "--json").stdout)
    assert document["auto_accepted"] == ids[:2] and document["suggested"] == [ids[2]]
    assert document["left"] == [ids[3]] and document["qa_sample"] == R.qa_sample(ids[:2], .5, 5)
    assert document["shares"] == {"auto_accepted": 0.5, "review": 0.25, "left": 0.25}
    shown = json.loads(cli("--status", "--json").stdout)
    assert shown["run_id"] == RUN and shown["qa"]["sampled"] == 1
    text = cli("--status").stdout
    assert "auto-accepted 2 (50%)" in text and "QA sample: 0 of 1 reviewed" in text
    undone = json.loads(cli("--undo", RUN, "--json").stdout)
    assert undone == {"run_id": RUN, "reverted": ids[:2]}
    with Store(path) as store:
        assert [store.get(i).status for i in ids] == ["pending"] * 4
    assert "Nothing to route: no pending train example has a suggestion of run other-run" in \
        cli("other-run").stdout


def test_review_page_accepts_a_suggestion_with_one_key(tmp_path, monkeypatch):
    path = tmp_path / "w.duckdb"
    with Store(path) as store:
        ids = seed_workspace(store, [0.85, 0.75, 0.3])
        R.route(store, ADA, RUN)
    monkeypatch.setenv("CURATE_DB", str(path))
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60)
    at.session_state["user"] = ADA
    at.query_params["queue"] = R.SUGGESTIONS
    at.switch_page(page("review")).run()
    assert not at.exception, at.exception
    assert at.query_params["id"] == str(ids[0])  # the most confident suggestion first
    accept = at.button(key="rv_accept_suggestion")
    assert accept.proto.shortcut == "m"
    accept.click().run()
    assert not at.exception, at.exception
    with Store(path) as store:
        ex = store.get(ids[0])
        assert ex.status == "accepted" and ex.messages == chat("question 0", "card_arrival")
    assert at.query_params["id"] == str(ids[1])  # on to the next suggestion
    # a low-band answer is not offered as a suggestion
    at.query_params["id"] = str(ids[2])
    at.run()
    captions = " ".join(unescaped(c.value) for c in at.caption)
    assert "below the low threshold 0.7, so it is not suggested" in captions
    assert not [b for b in at.button if b.key == "rv_accept_suggestion"]
