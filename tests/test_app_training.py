"""AppTest of the Training and Evaluation pages with real tiny runs of the packaged model.

One tiny run (6 accepted train tickets, rank 2, 64 tokens, batch 3: 2 steps) is trained once
for the module and serves the live view, the Evaluation page (which evaluates it for real,
3 eval examples, 4 new tokens) and the run comparison. The launch test starts a second run
from the page, on a workspace with a planted leak, and cancels it once the refusals are seen.
"""

from __future__ import annotations

import shutil

import orjson
import pytest
from streamlit.testing.v1 import AppTest

from curation import Store
from curation.auth import User
from tests.conftest import PROJECT_ROOT, admin, chat, page as page_path
from tests.test_eval import TICKETS
from tests.test_training import ADMIN, RUN_TIMEOUT, TINY, _wait_for
from training.config import TrainConfig
from training.config import EvalConfig
from training.eval import with_margin
from training.evaluate import cancel_eval, read_eval_job, start_eval, wait_eval
from training.launcher import ENDED_STATES, cancel, launch, list_runs, read_run
from training.processes import group_members
from training.run_folder import read_eval

RITA = User("rita", "reviewer")
EVAL_TICKETS = [("I was billed the wrong amount", "billing"),
                ("I am locked out after two attempts", "access"),
                ("Search returns nothing at all", "bugs")]


def _tickets(store: Store, eval_rows=EVAL_TICKETS) -> tuple[list[int], list[int]]:
    """The train tickets (accepted) and `eval_rows` (pending, eval split): their ids."""
    train = [store.add(chat(f"Ticket: {text}", label), actor="t", label=label,
                       status="accepted", split="train").id for text, label in TICKETS]
    evals = [store.add(chat(f"Ticket: {text}", label), actor="t", label=label,
                       split="eval").id for text, label in eval_rows]
    return train, evals


@pytest.fixture(scope="module")
def trained(tmp_path_factory, model_cache):
    """A workspace with a completed tiny run (trained once for the module)."""
    from training.models import cached_default_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CURATE_MODEL_CACHE", str(model_cache))
        cached_default_model(model_cache)
        store = Store(tmp_path_factory.mktemp("trained") / "curate.duckdb")
        _tickets(store)
        run = launch(store, ADMIN, TrainConfig(**{**TINY, "batch_size": 3},
                                               checkpoint_every_steps=0))
        _wait_for(lambda: read_run(run.dir).status.state in ENDED_STATES,
                  timeout=RUN_TIMEOUT, what="the run to end")
        run = read_run(run.dir)
        assert run.state == "completed", run.status.reason
        yield store, run
    store.close()


@pytest.fixture
def open_page(monkeypatch, model_cache):
    def open_(store: Store, page: str, user: User = ADMIN, **state) -> AppTest:
        monkeypatch.setenv("CURATE_DB", str(store.path))
        monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=RUN_TIMEOUT)
        at.session_state["user"] = user
        for key, value in state.items():
            at.session_state[key] = value
        at.switch_page(page_path(page)).run()
        assert not at.exception, at.exception
        return at

    return open_


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(elements) -> list[str]:
    return [e.value.replace("\\", "").replace("\u2060", "") for e in elements]


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _frame(at: AppTest, label: str):
    """The one table shown with a column (or row) named `label`."""
    frames = [d.value for d in at.dataframe]
    [frame] = [f for f in frames if label in f.columns or label in f.index]
    return frame


def _chart(at: AppTest, key: str) -> dict:
    [chart] = [c for c in at.get("plotly_chart") if key in c.proto.id]
    return orjson.loads(chart.proto.spec)


# --- access ---------------------------------------------------------------------------------

@pytest.mark.parametrize("page", ["training", "evaluation"])
def test_pages_are_refused_to_a_reviewer(monkeypatch, empty_store, page):
    monkeypatch.setenv("CURATE_DB", str(empty_store.path))
    monkeypatch.delenv("CURATE_SINGLE_USER", raising=False)
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
    at.session_state["user"] = RITA
    _run(at)
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page(page_path(page))  # not in a reviewer's navigation
    # Reached directly, the page itself refuses and shows nothing else.
    direct = AppTest.from_file(str(page_path(page)), default_timeout=30)
    direct.session_state["user"] = RITA
    _run(direct)
    assert "needs a role that may 'train'" in direct.error[0].value
    assert "rita (reviewer)" in direct.error[0].value
    assert not direct.title and not direct.button


def test_admin_sees_both_pages_on_an_empty_workspace(open_page, empty_store):
    at = open_page(empty_store, "training")
    assert at.title[0].value == "Training" and not at.error
    assert any("no accepted train examples" in i for i in _texts(at.info))
    at = open_page(empty_store, "evaluation")
    assert at.title[0].value == "Evaluation"
    assert any("No completed training run" in i for i in _texts(at.info))


# --- the form -------------------------------------------------------------------------------

def test_form_validation_and_token_lengths(open_page, trained):
    store, _ = trained
    at = open_page(store, "training")
    assert not at.error and not at.button(key="tr_launch").disabled
    # every TrainConfig field has its widget, with the dataclass default and help text
    assert at.number_input(key="tr_r").value == TrainConfig().r
    assert at.selectbox(key="tr_precision").value == "auto"
    assert "LoRA rank" in at.number_input(key="tr_r").help

    at.number_input(key="tr_r").set_value(0)
    _run(at)
    assert _texts(at.error) == ["**This setting is not valid:** r (the LoRA rank) must be a "
                                "positive whole number, not 0"]
    assert at.button(key="tr_launch").disabled
    at.number_input(key="tr_r").set_value(4)
    at.number_input(key="tr_dropout").set_value(1.0)
    _run(at)
    assert _texts(at.error) == ["**This setting is not valid:** dropout must be in [0, 1), not "
                                "1.0"]
    at.number_input(key="tr_dropout").set_value(0.1)

    # the histogram counts every accepted train example; max_seq_length cuts them or not
    at.number_input(key="tr_max_seq_length").set_value(16)
    _run(at)
    assert not at.error
    assert _metrics(at)["Cut by max length"] == str(len(TICKETS))
    hist = _chart(at, "tr_lengths")
    assert len(hist["data"][0]["x"]) == len(TICKETS)
    assert min(hist["data"][0]["x"]) > 16
    at.number_input(key="tr_max_seq_length").set_value(max(hist["data"][0]["x"]))
    _run(at)
    assert _metrics(at)["Cut by max length"] == "0"
    assert _metrics(at)["Steps per epoch"] == "1"  # 6 examples in batches of 8


# --- the live view and the runs list --------------------------------------------------------

def test_completed_run_is_shown_with_its_curve_and_a_measured_estimate(open_page, trained):
    store, run = trained
    at = open_page(store, "training")
    assert at.selectbox(key="tr_view").value == run.id
    shown = _metrics(at)
    assert shown["State"] == "completed"
    assert shown["Step"] == f"{len(run.metrics)}/{run.total_steps}" == "2/2"
    assert shown["Loss"] == f"{run.last['loss']:.4f}"
    curve = _chart(at, "tr_loss")["data"][0]
    assert curve["x"] == [m["step"] for m in run.metrics]
    assert curve["y"] == [m["loss"] for m in run.metrics]
    assert "tr_cancel" not in [b.key for b in at.button]
    assert "tr_resume" not in [b.key for b in at.button]  # completed: nothing to resume
    table = _frame(at, "Final loss")
    assert table["Run"].tolist() == [run.id] and table["State"].tolist() == ["completed"]
    assert table["Final loss"].tolist() == [run.status.final["loss"]]
    # listing the runs recorded the ended run in the store (launch recorded it starting)
    [recorded] = store.recorded_runs()
    assert (recorded["id"], recorded["state"], recorded["steps"], recorded["final_loss"]) == \
        (run.id, "completed", 2, run.last["loss"])
    # the time per epoch comes from this run's measured speed (one step after the first)
    rate = run.metrics[1]["tokens_per_second"]
    [estimate] = [t for t in _texts(at.markdown) if "per epoch" in t]
    assert "measured" in estimate and f"{rate:,.0f} tokens/s over 1 step of run {run.id}" \
        in estimate


# --- launching ------------------------------------------------------------------------------

def test_the_newest_learning_curve_is_plotted_with_its_advice(open_page, trained, tmp_path):
    """A prepared curve folder (the points of a flat curve) beside the trained run."""
    from training.curve import CURVE_FILE
    from training.run_folder import write_json

    store, run = trained
    folder = run.dir.parent / "curve-20990101-000000-abcd"
    folder.mkdir()
    points = [{"fraction": f, "examples": n, "example_ids": list(range(n)), "run_id": run.id,
               "state": "completed", "metric": "exact_match", "score": score}
              for f, n, score in ((0.25, 2, 50.0), (0.5, 3, 70.0), (1.0, 6, 71.0))]
    write_json(folder / CURVE_FILE, {"id": folder.name, "state": "completed",
                                     "snapshot_id": run.manifest.snapshot_id, "seed": 0,
                                     "fractions": [0.25, 0.5, 1.0], "points": points})
    try:
        at = open_page(store, "training")
        spec = _chart(at, "tr_curve")
        assert spec["data"][0]["x"] == [2, 3, 6] and spec["data"][0]["y"] == [50.0, 70.0, 71.0]
        assert list(_frame(at, "Fraction")["Examples"]) == [2, 3, 6]
        [advice] = [i for i in _texts(at.info) if "last doubling" in i]
        assert "unlikely to help much" in advice and "from 3 to 6 examples" in advice
    finally:
        shutil.rmtree(folder)


def test_learning_curve_button_starts_the_driver_and_cancel_stops_it(open_page, file_store):
    """The button starts the curve in the app's process: its first run trains on the 25%
    subset while the page shows the curve live; Cancel stops the run and the curve."""
    from training.curve import list_curves

    store = file_store()
    _tickets(store)
    runs_dir = store.path.parent / "runs"
    at = open_page(store, "training")
    for key, value in {"tr_r": 2, "tr_batch_size": 2, "tr_max_seq_length": 64,
                       "tr_epochs": 30, "tr_learning_rate": 1e-3}.items():  # still training
        at.number_input(key=key).set_value(value)                         # when cancelled
    _run(at)
    at.button(key="tr_curve_start").click()
    _run(at)
    try:
        [curve] = list_curves(runs_dir)
        assert curve.state == "running"
        # 6 tickets, 2 in each of 3 labels: at least one of each label, then all
        assert [p["examples"] for p in curve.points] == [3, 3, 6]
        _wait_for(lambda: list_curves(runs_dir)[0].points[0]["run_id"], timeout=120,
                  what="the first run of the curve")
        [run] = list_runs(runs_dir)
        assert run.manifest.examples == 3 and run.manifest.extra["curve"]["id"] == curve.id
        assert at.button(key="tr_curve_start").disabled  # one curve at a time
        _run(at)
        assert _frame(at, "Fraction")["State"].iloc[0] == "training"
        at.button(key="tr_curve_cancel").click()
        _run(at)
        _wait_for(lambda: list_curves(runs_dir)[0].state == "cancelled", timeout=60,
                  what="the curve to be cancelled")
        assert read_run(run.dir).state == "cancelled"
        assert len(list_runs(runs_dir)) == 1  # no further point was launched
        _run(at)
        assert list(_frame(at, "Fraction")["State"]) == ["cancelled", "waiting", "waiting"]
    finally:
        for started in list_runs(runs_dir):
            if started.active:
                cancel(admin("t"), started.dir, timeout=5)


def test_launch_from_the_page_with_leakage_override_refusal_and_cancel(open_page, file_store):
    store = file_store()
    train, evals = _tickets(store, EVAL_TICKETS + [TICKETS[0]])  # a train ticket in eval too
    leaked_eval = evals[-1]
    at = open_page(store, "training")
    # the leak is shown before launch, and launching over it needs the tick
    assert any("1 eval example(s) duplicate train examples" in w for w in _texts(at.warning))
    leaks = _frame(at, "Eval example")
    assert leaks["Eval example"].tolist() == [leaked_eval]
    assert leaks["Train example"].tolist() == [train[0]] and leaks["Method"].tolist() == ["exact"]
    assert at.button(key="tr_launch").disabled
    # no earlier run here: the time per epoch is a labelled lower bound, not a measurement
    [estimate] = [t for t in _texts(at.markdown) if "per epoch" in t]
    assert estimate.startswith(":material/timer: **Estimate, a lower bound: at least ") and \
        "from FLOPs, not a measurement of training" in estimate and "best of 5 samples" in \
        estimate
    at.checkbox(key="tr_allow_leakage").check()
    for key, value in {"tr_r": 2, "tr_batch_size": 2, "tr_max_seq_length": 64,
                       "tr_epochs": 1, "tr_learning_rate": 1e-3}.items():
        at.number_input(key=key).set_value(value)
    _run(at)
    assert not at.button(key="tr_launch").disabled

    at.button(key="tr_launch").click()
    _run(at)
    [run] = list_runs(store.path.parent / "runs")
    try:
        config = run.manifest.config
        assert (config["r"], config["batch_size"], config["max_seq_length"],
                config["epochs"], config["learning_rate"]) == (2, 2, 64, 1, 1e-3)
        assert run.manifest.created_by == ADMIN.name
        assert run.manifest.leakage["overridden_by"] == ADMIN.name
        assert [p["eval_id"] for p in run.manifest.leakage["pairs"]] == [leaked_eval]
        assert at.selectbox(key="tr_view").value == run.id
        assert _metrics(at)["State"] in ("starting", "running")
        assert not at.checkbox(key="tr_allow_leakage").value  # for that launch only
        at.checkbox(key="tr_allow_leakage").check()
        _run(at)

        # a second launch while it is active is refused, naming the active run
        at.button(key="tr_launch").click()
        _run(at)
        assert any(e.startswith("**Not started:** run " + run.id) for e in _texts(at.error))
        assert len(list_runs(store.path.parent / "runs")) == 1

        at.button(key="tr_cancel").click()
        _run(at)
        after = read_run(run.dir)
        assert after.state == "cancelled" and not after.active
        assert not group_members(run.pid or after.pid)
        assert _metrics(at)["State"] == "cancelled"
        assert "tr_resume" in [b.key for b in at.button]

        # launching again once it is cancelled: the run selector exists now, and the new
        # run is shown without StreamlitAPIException (the selector's key was set after it)
        at.checkbox(key="tr_allow_leakage").check()
        _run(at)
        at.button(key="tr_launch").click()
        _run(at)
        second, first = list_runs(store.path.parent / "runs")
        assert first.id == run.id and second.id != run.id
        assert at.selectbox(key="tr_view").value == second.id
        assert _metrics(at)["State"] in ("starting", "running")
        assert not at.error
    finally:
        for started in list_runs(store.path.parent / "runs"):
            if started.active:
                cancel(admin("t"), started.dir, timeout=5)


def test_a_paraphrase_in_eval_warns_but_does_not_block_the_launch(open_page, file_store):
    from tests.conftest import TRAIN_EVAL_PAIRS

    store = file_store()
    _tickets(store)
    trained_text, evaluated_text = TRAIN_EVAL_PAIRS["semantic"]
    paraphrased = store.add(chat(trained_text, "access"), actor="t", label="access",
                            status="accepted", split="train").id
    said_again = store.add(chat(evaluated_text, "access"), actor="t", label="access",
                           split="eval").id
    at = open_page(store, "training")
    assert any("1 eval example(s) mean the same as a train example" in w
               for w in _texts(at.warning))
    assert not any("duplicate train examples" in w for w in _texts(at.warning))
    table = _frame(at, "Eval example")
    assert table["Eval example"].tolist() == [said_again]
    assert table["Train example"].tolist() == [paraphrased]
    assert table["Method"].tolist() == ["semantic"]
    assert "tr_allow_leakage" not in [c.key for c in at.checkbox]
    assert not at.button(key="tr_launch").disabled


# --- evaluation -----------------------------------------------------------------------------

def test_evaluation_page_evaluates_and_shows_the_result(open_page, trained):
    store, run = trained
    (run.dir / "eval.json").unlink(missing_ok=True)
    at = open_page(store, "evaluation")
    assert at.selectbox(key="ev_run").value == run.id
    assert any("has not been evaluated yet" in i for i in _texts(at.info))
    at.checkbox(key="ev_form_sp_on").check()
    at.text_area(key="ev_form_sp").input("Answer with one word.")
    at.number_input(key="ev_form_shots").set_value(1)
    at.number_input(key="ev_form_max_new").set_value(4)
    [submit] = [b for b in at.button if (b.key or "").startswith("FormSubmitter:ev_form-")]
    submit.click()
    _run(at)
    # the evaluation runs in a process of its own; the page follows it, then shows the result
    job = read_eval_job(run.dir)
    assert job is not None and job.status.requested_by == ADMIN.name
    if job.active:
        assert "ev_cancel" in [b.key for b in at.button]
    assert wait_eval(run.dir, timeout=RUN_TIMEOUT).state == "completed"
    _run(at)
    stored = read_eval(run.dir)
    assert stored is not None and stored.settings["system_prompt"] == "Answer with one word."
    assert stored.settings["shots"] == 1 and stored.settings["eval_examples"] == 3
    # the store records the run with its evaluation summary
    [recorded] = [r for r in store.recorded_runs() if r["id"] == run.id]
    assert recorded["evaluation"] == stored.summary() and recorded["state"] == "completed"

    # the scoreboard is the stored metrics in points, the primary metric marked
    board = _frame(at, "Accuracy (primary)")
    assert board.index[0] == "Accuracy (primary)"
    for column, system in (("Zero-shot", "zero_shot"), ("Fine-tuned", "fine_tuned")):
        assert board.loc["Accuracy (primary)", column] == \
            round(stored.systems[system]["accuracy"] * 100, 1)
    decision = stored.verdict["decision"]
    box = at.success if decision == "deploy" else at.error
    assert any(t.startswith(f"**{decision.capitalize()}.**") for t in _texts(box))
    # another margin judges again without generating
    at.number_input(key="ev_margin").set_value(-1000.0)
    _run(at)
    assert with_margin(stored, -1000.0).verdict["decision"] == "deploy"
    assert any(t.startswith("**Deploy.**") for t in _texts(at.success))
    at.number_input(key="ev_margin").set_value(1000.0)
    _run(at)
    assert any(t.startswith("**Don't deploy.**") for t in _texts(at.error))
    assert read_eval(run.dir) == stored  # nothing was recomputed or rewritten

    # the side-by-side filters show exactly the stored examples of each outcome and label
    examples = stored.examples
    for outcome in ("win", "loss", "tie", "all"):
        at.segmented_control(key="ev_outcome").set_value(outcome)
        _run(at)
        expected = [e["id"] for e in examples if outcome in ("all", e["outcome"])]
        assert _frame(at, "Outcome")["Id"].tolist() == expected
        # each example's card links to it on the Review page
        links = [(link.proto.page, link.proto.query_string) for link in at.get("page_link")]
        assert links == [("review", f"id={i}") for i in expected]
    at.multiselect(key="ev_labels").set_value(["billing"])
    _run(at)
    frame = _frame(at, "Outcome")
    assert frame["Label"].tolist() == ["billing"]
    assert frame["Fine-tuned"].tolist() == [e["fine_tuned"] for e in examples
                                            if e["label"] == "billing"]
    assert "Ticket: I was billed the wrong amount" in [t.value for t in at.text]


def test_scoreboard_shows_the_score_without_train_copies_beside_the_whole_split(open_page,
                                                                               trained):
    """The run's real evaluation (made here if the test above did not leave one), with the
    clean subset measured against the run's train rows plus a planted copy of the first eval
    prompt: the scoreboard shows both rows; an older eval.json says it predates them."""
    from training.eval import clean_subset, eval_rows_from_store, evaluate, train_rows_from_run
    from training.run_folder import SYSTEMS, write_json

    store, run = trained
    stored = read_eval(run.dir)
    if stored is None:
        stored = evaluate(run.dir, eval_rows_from_store(store), train_rows_from_run(run.dir),
                          EvalConfig(shots=1, max_new_tokens=4), device="cpu")
    assert stored.contamination["clean_examples"] == 3  # no eval ticket copies a train one
    rows = eval_rows_from_store(store)
    assert [r["id"] for r in rows] == [e["id"] for e in stored.examples]
    copied = train_rows_from_run(run.dir) + [{"id": 999, "messages": rows[0]["messages"]}]
    scores = {s: [e["scores"][s] for e in stored.examples] for s in SYSTEMS}
    planted = clean_subset(rows, copied, scores)
    assert planted["clean_examples"] == 2
    other = run.dir.parent / (run.id + "-copy")
    shutil.copytree(run.dir, other)
    manifest = orjson.loads((other / "manifest.json").read_bytes())
    write_json(other / "manifest.json", {**manifest, "run_id": other.name})
    write_json(other / "eval.json", {**stored.to_json(), "run_id": other.name,
                                     "contamination": planted})
    try:
        at = open_page(store, "evaluation", ev_run=other.name)
        assert at.selectbox(key="ev_run").value == other.name
        board = _frame(at, "Accuracy (primary)")
        for column, system in (("Zero-shot", "zero_shot"), ("Fine-tuned", "fine_tuned")):
            assert board.loc["Accuracy (primary)", column] == \
                round(planted["primary"][system]["all"] * 100, 1)
            assert board.loc["Accuracy, no train copy", column] == \
                round(planted["primary"][system]["clean"] * 100, 1)
        captions = _texts(at.caption)
        assert any("the 2 of 3 eval examples whose prompt is no exact or near" in c and
                   f"#{rows[0]['id']} ~ train #999 (exact)" in c for c in captions)

        older = {k: v for k, v in stored.to_json().items() if k != "contamination"}
        write_json(other / "eval.json", {**older, "run_id": other.name})
        at = open_page(store, "evaluation", ev_run=other.name)
        assert "Accuracy, no train copy" not in _frame(at, "Accuracy (primary)").index
        assert any(c.startswith("This evaluation predates the “no train copy” figure")
                   for c in _texts(at.caption))
    finally:
        shutil.rmtree(other)


def test_a_running_evaluation_is_shown_live_in_a_fresh_session_and_cancelled(open_page,
                                                                             trained):
    """An evaluation started elsewhere (here by the library; as by another session before a
    server restart) is followed by a page opened fresh: its run selected, progress, phase,
    Cancel; Cancel stops its process group and the page says so."""
    store, run = trained
    earlier = read_eval(run.dir)
    job = start_eval(store, ADMIN, run.dir, EvalConfig(max_new_tokens=4))
    try:
        _wait_for(lambda: (j := read_eval_job(run.dir)).status.state == "running" and
                  j.status.phase in ("zero_shot", "few_shot", "fine_tuned") and j,
                  what="the evaluator to answer")
        at = open_page(store, "evaluation", ev_run="no such run")
        assert at.selectbox(key="ev_run").value == run.id
        shown = _metrics(at)
        now = read_eval_job(run.dir)
        assert shown["State"] == "running"
        assert shown["Phase"] in ("Zero-shot", "Few-shot", "Fine-tuned")
        assert shown["Answers"].endswith("/9") and int(shown["Answers"].split("/")[0]) <= \
            now.done
        [bar] = at.get("progress")
        assert f"Evaluating run {run.id}: " in bar.proto.text
        evaluate_forms = ("FormSubmitter:ev_form", "FormSubmitter:ev_rerun")
        assert not [b for b in at.button  # no second evaluation can be started meanwhile
                    if (b.key or "").startswith(evaluate_forms)]

        at.button(key="ev_cancel").click()
        _run(at)
        after = read_eval_job(run.dir)
        assert after.state == "cancelled" and not group_members(job.pid or after.pid)
        assert "ev_cancel" not in [b.key for b in at.button]
        assert any(t.startswith("The last evaluation was cancelled.") for t in _texts(at.info))
        assert read_eval(run.dir) == earlier
    finally:
        if (read_eval_job(run.dir) or job).active:
            cancel_eval(ADMIN, run.dir, timeout=5)


def test_run_comparison_lists_only_the_settings_that_differ(open_page, trained):
    store, run = trained
    other = run.dir.parent / (run.id + "-r4")
    shutil.copytree(run.dir, other)
    manifest = orjson.loads((other / "manifest.json").read_bytes())
    manifest["run_id"] = other.name
    manifest["config"]["r"] = 4
    (other / "manifest.json").write_bytes(orjson.dumps(manifest))
    (other / "eval.json").unlink(missing_ok=True)
    try:
        at = open_page(store, "evaluation")
        at.multiselect(key="ev_compare").set_value([run.id, other.name])
        _run(at)
        diff = _frame(at, "r")
        assert diff.index.tolist() == ["r"]
        assert diff.loc["r"].tolist() == ["2", "4"]
        metrics = _frame(at, "final loss")
        assert metrics.loc["final loss"].tolist() == [f"{run.status.final['loss']:.4g}"] * 2
        assert metrics.loc["verdict", other.name] == "not evaluated"
        data = _frame(at, "Relabelled in")  # the same snapshot: nothing moved, no score to compare
        assert (data["Added"] == 0).all() and (data["Removed"] == 0).all()
        assert data["Train examples"].str.match(r"^(\d+) → \1$").all()
        assert data["Change (points)"].isna().all()
        stored = read_eval(run.dir)
        assert metrics.loc["verdict", run.id] == (
            "not evaluated" if stored is None else
            f"{stored.verdict['decision']} ({stored.verdict['margin_points']:g}-point "
            "margin)")
    finally:
        shutil.rmtree(other)
