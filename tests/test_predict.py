"""The model helps curate: confidence, suggestions, calibration, `curate predict` and the
Review page.

The pure parts (normalising over labels, calibration figures, bands) are checked on known
numbers; confidence on the real packaged base model; suggestions on a real store; and the rest
on the one real tiny run, trained and evaluated once for the module (`tests.test_failures`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from curate import Workspace
from curation import ExampleFilter, Store, review
from curation import suggestions as SG
from curation.auth import User
from curation.errors import InvalidValue, PermissionDenied
from curation.store import _schema
from tests.conftest import PROJECT_ROOT, add_legacy, admin, chat, page, unescaped
from tests.test_failures import evaluated  # noqa: F401 (the module's evaluated tiny run)
from tests.test_training import RUN_TIMEOUT
from training.predict import (confidence, continuation_logprobs, known_answers,
                              most_probable_label, normalise, predict)

ADA = admin("ada")


def test_normalising_over_labels_sums_to_one_and_keeps_the_preference():
    probs = normalise({"billing": -1.0, "card": -3.0, "other": -3.0})
    assert math.isclose(sum(probs.values()), 1.0)
    assert probs["billing"] > probs["card"] == probs["other"]
    # softmax: e^-1 / (e^-1 + 2 e^-3)
    assert math.isclose(probs["billing"], math.exp(-1) / (math.exp(-1) + 2 * math.exp(-3)))
    assert normalise({"only": -50.0}) == {"only": 1.0}  # no underflow


@pytest.fixture(scope="module")
def base(model_cache):
    from training.models import load_model

    return load_model(None, model_cache, device="cpu")


def test_confidence_of_labels_sums_to_one_and_prefers_what_the_model_prefers(base):
    model, tokenizer = base
    prompt = [{"role": "user", "content": "Reply with the single word banana."}]
    labels = ["banana", "quartz xylophone"]
    conf = {lab: confidence(model, tokenizer, prompt, lab, labels) for lab in labels}
    assert math.isclose(sum(conf.values()), 1.0, rel_tol=1e-6)
    totals = [sum(t) for t in continuation_logprobs(model, tokenizer, prompt, labels)]
    assert totals[0] > totals[1]  # the model prefers banana ...
    assert conf["banana"] > 0.5 > conf["quartz xylophone"]  # ... and so does its confidence
    assert confidence(model, tokenizer, prompt, "cherry", labels) == 0.0  # not a known label
    # the closed-set answer is the most probable label, with that confidence
    assert most_probable_label(model, tokenizer, prompt, labels) == ("banana", conf["banana"])
    assert most_probable_label(model, tokenizer, prompt, list(reversed(labels)))[0] == "banana"
    # free text: the mean token probability, in (0, 1], higher for the likelier answer
    liked = confidence(model, tokenizer, prompt, "banana", [])
    odd = confidence(model, tokenizer, prompt, "quartz xylophone", [])
    assert 0 < odd < liked <= 1


def test_calibration_figures_on_known_predictions():
    confidences = [0.95, 0.95, 0.92, 0.8, 0.75, 0.3, 0.1, 1.0]
    correct = [True, True, False, True, False, False, False, True]
    f = SG.calibration(confidences, correct)
    assert f["examples"] == 8 and f["accuracy"] == 4 / 8
    bands = f["bands"]
    assert (bands["high"]["examples"], bands["high"]["accuracy"]) == (4, 3 / 4)
    assert (bands["middle"]["examples"], bands["middle"]["accuracy"]) == (2, 1 / 2)
    assert (bands["low"]["examples"], bands["low"]["accuracy"]) == (2, 0.0)
    assert bands["high"]["range"] == ">= 0.9" and bands["low"]["share"] == 2 / 8
    # bins: [0.9, 1.0] holds 0.95, 0.95, 0.92, 1.0 (3 right, mean 0.955); [0.8, 0.9) 0.8 (right);
    # [0.7, 0.8) 0.75 (wrong); [0.3, 0.4) 0.3 (wrong); [0.1, 0.2) 0.1 (wrong)
    expected = (4 / 8 * abs(3 / 4 - 0.955) + 1 / 8 * abs(1 - 0.8) + 1 / 8 * abs(0 - 0.75)
                + 1 / 8 * 0.3 + 1 / 8 * 0.1)
    assert math.isclose(f["ece"], expected)
    assert [b["examples"] for b in f["bins"]] == [0, 1, 0, 1, 0, 0, 0, 1, 1, 4]
    # other thresholds move the bands
    moved = SG.calibration(confidences, correct, high=0.99, low=0.5)["bands"]
    assert [moved[b]["examples"] for b in SG.BANDS] == [1, 5, 2]
    assert SG.calibration([], [])["ece"] is None
    with pytest.raises(InvalidValue, match="2 confidences but 1 outcomes"):
        SG.calibration([0.5, 0.5], [True])


def test_thresholds_are_stored_per_workspace_and_checked(file_store):
    store = file_store()
    assert SG.thresholds(store) == (0.9, 0.7)
    SG.set_thresholds(store, ADA, 0.95, 0.8)
    assert SG.thresholds(store) == (0.95, 0.8)
    with pytest.raises(InvalidValue, match="0 < low <= high <= 1"):
        SG.set_thresholds(store, ADA, 0.5, 0.8)
    assert SG.thresholds(store) == (0.95, 0.8)
    assert [SG.band(c, 0.95, 0.8) for c in (0.95, 0.9, 0.8, 0.79)] == \
        ["high", "middle", "middle", "low"]


def test_suggestions_are_kept_beside_the_example_and_never_overwrite_an_edit(file_store):
    store = file_store()
    ex = store.add(chat("Where is my card?", "card_arrival"), actor="t", label="card_arrival")
    SG.record_suggestions(store, ADA, [SG.Suggestion(ex.id, ex.version, "run-a", "billing",
                                                     0.8, "label probability")])
    assert store.get(ex.id).messages == ex.messages  # the example itself is untouched
    assert SG.current(store, ex.id) == SG.Suggestion(ex.id, 1, "run-a", "billing", 0.8,
                                                     "label probability")
    # predicting again for the same version and run replaces it
    SG.record_suggestions(store, ADA, [SG.Suggestion(ex.id, 1, "run-a", "card_arrival", 0.6,
                                                     "label probability")])
    assert SG.current(store, ex.id).answer == "card_arrival"
    assert store.suggestion_count() == 1
    # a person edits the example: their text stays, the old suggestion is no longer current
    edited = review.edit(store, ADA, ex.id, base_version=1,
                         messages=chat("Where is my card?", "card_delivery"))
    assert edited.messages[-1]["content"] == "card_delivery"
    assert SG.current(store, ex.id) is None and store.suggestion_count() == 0
    # a suggestion recorded for the old version later does not touch the new text either
    SG.record_suggestions(store, ADA, [SG.Suggestion(ex.id, 1, "run-b", "billing", 0.99,
                                                     "label probability")])
    assert store.get(ex.id).messages[-1]["content"] == "card_delivery"
    assert SG.current(store, ex.id) is None
    with pytest.raises(PermissionDenied, match="'check' needs the reviewer role"):
        SG.record_suggestions(store, User("ann", "annotator"), [])


def test_migration_adds_suggestions_to_an_older_workspace(tmp_path, monkeypatch):
    path = tmp_path / "v6.duckdb"
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:6])
    with Store(path) as store:
        ex_id = add_legacy(store, chat("q", "a"))
        assert store.cursor().execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'suggestions'"
        ).fetchone() == (0,)
    monkeypatch.undo()
    with Store(path) as store:
        assert store.schema_version() == len(_schema.MIGRATIONS) > 6  # later ones may follow
        assert store.get(ex_id).messages == chat("q", "a")
        assert SG.current(store, ex_id) is None
        SG.record_suggestions(store, ADA, [SG.Suggestion(ex_id, 1, "r", "a", 0.5, "m")])
        assert SG.current(store, ex_id).answer == "a"


# --- on the real evaluated tiny run -----------------------------------------------------------

def test_predict_stores_suggestions_and_calibration_reads_the_eval_split(evaluated,  # noqa: F811
                                                                         model_cache,
                                                                         monkeypatch):
    path, result = evaluated
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    with Workspace.open(path, ADA) as ws:
        assert ws.predict_run() == result.run_id  # the only evaluated run
        pending = ws.store.find(ExampleFilter(split=("train",), status=("pending",)))
        before = {e.id: e.messages for e in pending}
        done = ws.predict(status=("pending",))
        labels = set(known_answers(ws.run(result.run_id).dir)[1])
        assert done.run_id == result.run_id and done.method == "label probability"
        assert sorted(s.example_id for s in done.suggestions) == sorted(before)
        assert sum(done.bands.values()) == len(before)
        for s in done.suggestions:
            assert 0 <= s.confidence <= 1
            assert ws.suggestion(s.example_id) == s
            assert ws.store.get(s.example_id).messages == before[s.example_id]
        for s in done.suggestions:  # a closed set: the answer is always a known label
            assert s.answer in labels
        figures = ws.calibration()
        eval_rows = [{"id": e.id, "version": e.version, "messages": e.messages}
                     for e in ws.store.find(ExampleFilter(split=("eval",)))]
        _, again = predict(ws.run(result.run_id).dir, eval_rows)
    assert figures["examples"] == len(result.examples)
    # calibration judges what pre-labelling answers on the eval split, not the evaluation's
    # generated answers
    references = {e["id"]: e["reference"] for e in result.examples}
    right = sum(a["answer"] == references[a["id"]] for a in again)
    assert figures["accuracy"] == right / len(result.examples)
    assert sum(b["examples"] for b in figures["bands"].values()) == len(result.examples)
    assert 0 <= figures["ece"] <= 1


def test_cli_predict_json_and_calibration(evaluated, model_cache):  # noqa: F811
    path, result = evaluated
    env = {**os.environ, "CURATE_MODEL_CACHE": str(model_cache)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "curate", "predict", "--db", str(path),
                               *args], env=env, capture_output=True, text=True, timeout=600,
                              check=False)

    done = cli(result.run_id, "--status", "accepted", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["run_id"] == result.run_id
    assert document["method"] == "label probability"
    assert len(document["suggestions"]) == 6  # the six accepted train tickets
    assert sum(document["bands"].values()) == 6
    calib = cli("--calibration", "--thresholds", "0.95,0.8", "--json")
    assert calib.returncode == 0, calib.stderr
    figures = json.loads(calib.stdout)
    assert figures["thresholds"] == {"high": 0.95, "low": 0.8}
    assert figures["bands"]["high"]["range"] == ">= 0.95"
    bad = cli("--thresholds", "0.5,0.8")
    assert bad.returncode == 1 and "0 < low <= high <= 1" in bad.stderr


def test_review_page_shows_the_suggestion_with_its_band(evaluated, model_cache,  # noqa: F811
                                                        monkeypatch):
    path, result = evaluated
    with Store(path) as store:
        ex = store.find(ExampleFilter(split=("train",), status=("accepted",)))[0]
        SG.set_thresholds(store, ADA, 0.9, 0.7)
        SG.record_suggestions(store, ADA, [SG.Suggestion(ex.id, ex.version, result.run_id,
                                                         "<b>billing</b>", 0.8,
                                                         "label probability")])
    monkeypatch.setenv("CURATE_DB", str(path))
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=RUN_TIMEOUT)
    at.session_state["user"] = ADA
    at.query_params["id"] = str(ex.id)
    at.switch_page(page("review")).run()
    assert not at.exception, at.exception
    assert at.query_params["id"] == str(ex.id)
    assert "<b>billing</b>" in [t.value for t in at.text]  # as text, not HTML
    captions = " ".join(unescaped(c.value) for c in at.caption)
    assert (f"Suggestion of run {result.run_id}, confidence 0.80 (label probability), "
            f"middle band (0.7 to 0.9)") in captions


def evaluation_page(path, model_cache, monkeypatch) -> AppTest:
    """The Evaluation page on the workspace at `path`, run once as the admin."""
    monkeypatch.setenv("CURATE_DB", str(path))
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=RUN_TIMEOUT)
    at.session_state["user"] = ADA
    at.switch_page(page("evaluation")).run()
    assert not at.exception, at.exception
    return at


def test_evaluation_page_pre_labels_and_draws_the_reliability_diagram(evaluated,  # noqa: F811
                                                                      model_cache,
                                                                      monkeypatch):
    path, result = evaluated
    with Store(path) as store:
        pending = [e.id for e in store.find(ExampleFilter(split=("train",),
                                                          status=("pending",)))]
    at = evaluation_page(path, model_cache, monkeypatch)
    assert "Pre-label and calibration" in [h.value for h in at.header]
    at.session_state["ev_pl_status"] = ["pending"]
    at.button(key="ev_prelabel").click().run()
    assert not at.exception, at.exception
    with Store(path) as store:
        made = [SG.current(store, i) for i in pending]
    assert pending and all(s is not None and s.run_id == result.run_id for s in made)
    said = " ".join(unescaped(m.value) for m in at.success)
    assert f"Run {result.run_id} pre-labelled {len(pending)} examples (" in said
    charts = len(at.get("plotly_chart"))
    at.button(key="ev_calibrate").click().run()
    assert not at.exception, at.exception
    bands = next(d.value for d in at.dataframe if "band" in d.value.columns)
    assert list(bands["band"]) == ["high", "middle", "low"]
    assert int(bands["examples"].sum()) == len(result.examples)
    assert len(at.get("plotly_chart")) == charts + 1  # the reliability diagram


def test_evaluation_page_routes_the_suggestions_and_shows_the_bands(evaluated,  # noqa: F811
                                                                     model_cache,
                                                                     monkeypatch):
    """After the page pre-labelled and checked calibration (the test above): Route, then the
    share in each band and the auto band's accuracy on the eval split, from the kept scores."""
    path, result = evaluated
    with Store(path) as store:
        waiting = store.routable_suggestions(result.run_id)
    assert waiting, "nothing pre-labelled to route"
    at = evaluation_page(path, model_cache, monkeypatch)
    assert "Route by confidence" in [h.value for h in at.header]
    assert f"{len(waiting):,} pending train examples have this run's suggestion" in \
        " ".join(t.value for t in at.text)
    at.button(key="FormSubmitter:ev_route-Route").click().run()
    assert not at.exception, at.exception
    said = " ".join(unescaped(m.value) for m in at.success)
    assert f"Routed {len(waiting)} examples: " in said
    with Workspace.open(path, ADA) as ws:
        status = ws.routing_status()
    assert status["routed"] == len(waiting) and status["run_id"] == result.run_id
    assert status["auto"] + status["middle"] + status["disagreed"] + status["low"] == \
        len(waiting)
    # calibration was checked above and kept in the run folder: the eval figure is there
    assert status["eval"] is not None and status["eval"]["range"] == ">= 0.9"
    shares = [c for c in at.get("plotly_chart") if "ev_routing_shares" in c.proto.id]
    assert len(shares) == 1 and "Auto-accepted: " in shares[0].proto.spec
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Auto band precision, QA sample"] == "—"  # nothing reviewed yet
    expected = status["eval"]["accuracy"]
    assert metrics["Auto band accuracy, eval split"] == \
        ("—" if expected is None else f"{expected:.1%}")


def test_scoring_with_the_prompt_cache_matches_a_plain_forward_of_each_continuation(base):
    """The prompt runs once and its cache is copied for the continuations: each token's
    log-probability is what one whole forward of prompt + continuation gives."""
    import torch

    from training.generate import END_OF_TURN

    model, tokenizer = base
    prompt = [{"role": "system", "content": "Answer with one intent label."},
              {"role": "user", "content": "My card still has not arrived."}]
    continuations = ["card_arrival", "billing", "a much longer free text answer here"]
    fast = continuation_logprobs(model, tokenizer, prompt, continuations)
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    head = tokenizer(text, add_special_tokens=False)["input_ids"]
    for tail_text, got in zip(continuations, fast):
        tail = tokenizer(tail_text + END_OF_TURN, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([head + tail])).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
        plain = [float(logp[len(head) - 1 + j, t]) for j, t in enumerate(tail)]
        assert len(got) == len(plain)
        assert max(abs(a - b) for a, b in zip(got, plain)) < 1e-3, (tail_text, got, plain)
