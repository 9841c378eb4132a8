"""Evaluation: metrics on hand-computed cases, bootstrap and verdict logic, and one short real
evaluation of a tiny run (base zero-shot, base few-shot, fine-tuned) with `curate eval`.
"""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import chat
from tests.test_training import ADMIN, RUN_TIMEOUT, TINY, _wait_for
from training import metrics as M
from training.config import EvalConfig, TrainConfig

# --- metrics --------------------------------------------------------------------------------

def test_normalise_strips_case_and_trailing_punctuation():
    assert M.normalise("  Billing. ") == "billing"
    assert M.normalise("Refund  please!?") == "refund please"
    assert M.normalise("e.g. yes") == "e.g. yes"  # inner punctuation stays


def test_accuracy_and_macro_f1_with_a_label_never_predicted():
    refs = ["a", "b", "b", "c"]
    preds = ["A.", "a", "b", "a"]  # "c" is never predicted
    assert M.accuracy(preds, refs) == 0.5
    per = M.per_label_f1(preds, refs)
    # a: tp 1, fp 2, fn 0 -> P 1/3, R 1, F1 0.5; b: tp 1, fp 0, fn 1 -> P 1, R 1/2, F1 2/3
    # c: never predicted -> P 0, R 0, F1 0
    assert per["a"] == pytest.approx({"precision": 1 / 3, "recall": 1.0, "f1": 0.5,
                                      "support": 1})
    assert per["b"]["f1"] == pytest.approx(2 / 3) and per["b"]["support"] == 2
    assert per["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert M.macro_f1(preds, refs) == pytest.approx((0.5 + 2 / 3 + 0) / 3)


def test_token_f1_and_rouge_l_on_known_strings():
    # tokens without articles: [cat, sat] vs [cat, sat, down] -> P 1, R 2/3, F1 0.8
    assert M.token_f1("The cat sat.", "a cat sat down") == pytest.approx(0.8)
    assert M.token_f1("dog", "cat") == 0.0 and M.token_f1("", "") == 1.0
    # [cat, sat, on, mat] vs [cat, on, mat]: LCS 3 -> P 3/4, R 1, F1 6/7
    assert M.rouge_l("cat sat on mat", "the cat on the mat") == pytest.approx(6 / 7)
    # order matters for ROUGE-L, not for token F1
    assert M.token_f1("mat on cat", "cat on mat") == 1.0
    assert M.rouge_l("mat on cat", "cat on mat") == pytest.approx(1 / 3)


def test_is_label_like_both_ways():
    labels = ["billing", "access", "bugs", "Billing."] * 10
    assert M.is_label_like(labels) and M.primary_metric(labels) == "accuracy"
    sentences = ["Your refund will arrive within five working days.",
                 "Reset the password from the login page, then sign in again."]
    assert not M.is_label_like(sentences) and M.primary_metric(sentences) == "token_f1"
    many = [f"label {i}" for i in range(40)]  # short but 40 distinct of 40: not a closed set
    assert not M.is_label_like(many)
    assert M.is_label_like(many[:20])  # up to 20 distinct values always count as a set


def test_paired_bootstrap_identical_scores_are_not_significant():
    scores = [1, 0, 1, 1, 0, 0.5]
    result = M.paired_bootstrap(scores, scores)
    assert result["ci_low"] <= 0 <= result["ci_high"]
    assert not result["significant"] and result["mean_diff"] == 0 and result["p_value"] == 1.0


def test_paired_bootstrap_clear_win_is_significant_and_deterministic():
    a, b = [1.0] * 30, [1.0] * 5 + [0.0] * 25
    result = M.paired_bootstrap(a, b, seed=3)
    assert result["significant"] and result["ci_low"] > 0 and result["p_value"] < 0.05
    assert result["mean_diff"] == pytest.approx(25 / 30)
    assert M.paired_bootstrap(a, b, seed=3) == result
    assert M.paired_bootstrap(b, a)["ci_high"] < 0


def test_verdict_by_margin_and_significance():
    ok = M.verdict(0.60, 0.70, margin_points=5, ci=(0.03, 0.17))
    assert ok["decision"] == "deploy" and ok["significant"]
    assert ok["difference_points"] == pytest.approx(10)
    short = M.verdict(0.60, 0.63, margin_points=5, ci=(0.01, 0.05))
    assert short["decision"] == "don't deploy" and "short of the 5-point margin" in \
        short["reason"]
    noisy = M.verdict(0.60, 0.70, margin_points=5,
                      ci={"ci_low": -0.02, "ci_high": 0.2})
    assert noisy["decision"] == "deploy" and not noisy["significant"]
    assert "not significant on this sample size" in noisy["reason"]
    assert M.verdict(0.7, 0.6, 5, (-0.2, -0.01))["decision"] == "don't deploy"


def test_shots_prefer_different_labels_and_prompt_replaces_system():
    from training.eval import build_prompt, pick_shots

    rows = [{"id": i, "label": lab, "messages": chat(f"q{i}", lab)}
            for i, lab in enumerate(["a", "a", "a", "b", "b", "c"])]
    shots = pick_shots(rows, 3, seed=1)
    assert sorted(s["label"] for s in shots) == ["a", "b", "c"]
    assert pick_shots(rows, 3, seed=1) == shots
    prompt = build_prompt(chat("q", "answer", system="old"), "new", shots[:1])
    assert prompt[0] == {"role": "system", "content": "new"}
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert prompt[-1]["content"] == "q"
    assert build_prompt(chat("q", "answer", system="old"), None)[0]["content"] == "old"


def test_clean_subset_leaves_out_exact_and_near_train_copies_only():
    """The primary metric on the whole split and without eval rows whose prompt copies a
    train prompt (exact or near); a paraphrase stays in, as does a copied answer."""
    from tests.conftest import TRAIN_EVAL_PAIRS
    from training.eval import CLEAN_RULE, clean_subset

    train = [{"id": 100 + i, "label": "x", "messages": chat(trained, "answer")}
             for i, (trained, _) in enumerate(TRAIN_EVAL_PAIRS.values())]
    evals = [{"id": i + 1, "label": "x", "messages": chat(evaluated, "answer", system="S")}
             for i, (_, evaluated) in enumerate(TRAIN_EVAL_PAIRS.values())]  # exact, near, same
    evals.append({"id": 4, "label": "x", "messages": chat("Do you integrate with Slack?",
                                                          "answer")})
    scores = {"fine_tuned": [1.0, 1.0, 0.0, 0.5], "zero_shot": [0.0, 0.0, 1.0, 1.0]}
    report = clean_subset(evals, train, scores)
    assert report["rule"] == CLEAN_RULE and "exact or near" in CLEAN_RULE
    assert (report["examples"], report["clean_examples"]) == (4, 2)
    assert [(c["id"], c["train_id"], c["method"]) for c in report["copies"]] == [
        (1, 100, "exact"), (2, 101, "near")]
    assert report["primary"]["fine_tuned"] == {"all": 0.625, "clean": 0.25}
    assert report["primary"]["zero_shot"] == {"all": 0.5, "clean": 1.0}
    everything_copied = clean_subset(evals[:2], train, {"fine_tuned": [1.0, 0.0]})
    assert everything_copied["primary"]["fine_tuned"] == {"all": 0.5, "clean": None}
    assert clean_subset(evals, [], scores)["clean_examples"] == 4


# --- one short real evaluation --------------------------------------------------------------

TICKETS = [("I was charged twice this month", "billing"),
           ("I cannot log in to my account", "access"),
           ("The export button crashes the app", "bugs"),
           ("Please refund my last invoice", "billing"),
           ("My password reset link expired", "access"),
           ("The page shows an error 500", "bugs")]


def _ticket_store(file_store):
    """6 accepted train tickets, 3 eval tickets and one rejected eval ticket."""
    store = file_store()
    for text, label in TICKETS:
        store.add(chat(f"Ticket: {text}", label), actor="t", label=label, status="accepted",
                  split="train")
    for text, label in [("I was billed the wrong amount", "billing"),
                        ("I am locked out after two attempts", "access"),
                        ("Search returns nothing at all", "bugs")]:
        store.add(chat(f"Ticket: {text}", label), actor="t", label=label, split="eval")
    store.add(chat("Ticket: rejected one", "bugs"), actor="t", label="bugs", split="eval",
              status="rejected")
    return store


@pytest.fixture
def evaluated_run(file_store, model_cache, monkeypatch):
    """A tiny completed run (6 accepted train tickets, rank 2, 2 steps) and three eval rows
    (one rejected eval row that must be left out)."""
    from training.models import cached_default_model
    from training.launcher import ENDED_STATES, cancel, launch, read_run

    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    cached_default_model(model_cache)
    store = _ticket_store(file_store)
    config = TrainConfig(**{**TINY, "batch_size": 3}, checkpoint_every_steps=0)
    started = launch(store, ADMIN, config)
    # the trainer's own status (not the liveness check, which can misread a just-started
    # process as gone and call the run interrupted)
    _wait_for(lambda: read_run(started.dir).status.state in ENDED_STATES,
              timeout=RUN_TIMEOUT, what="the run to end")
    run = read_run(started.dir)
    assert run.state == "completed", run.status.reason
    yield store, run
    if read_run(started.dir).active:
        cancel(ADMIN, started.dir, timeout=5)


def test_real_evaluation_writes_eval_json_and_cli_shows_it(evaluated_run, monkeypatch):
    import torch
    from click.testing import CliRunner

    import training.eval as ev
    from curate.cli import main
    from training.run_folder import SYSTEMS, read_eval

    store, run = evaluated_run
    rows = ev.eval_rows_from_store(store)
    assert [r["label"] for r in rows] == ["billing", "access", "bugs"]
    train_rows = ev.train_rows_from_run(run.dir)
    assert len(train_rows) == 6
    calls = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch may be imported already, with spinning OpenMP threads
    try:
        result = ev.evaluate(run.dir, rows, train_rows,
                             EvalConfig(system_prompt="Answer with one word.", shots=1,
                                        max_new_tokens=4), device="cpu",
                             progress=lambda s, d, t: calls.append((s, d, t)))
    finally:
        torch.set_num_threads(threads)
    assert calls[-1] == ("fine_tuned", 9, 9)

    stored = read_eval(run.dir)
    assert (run.dir / "eval.json").is_file() and stored == result
    assert set(stored.systems) == {"zero_shot", "few_shot", "fine_tuned"}
    assert stored.primary_metric == "accuracy"
    assert [e["id"] for e in stored.examples] == [r["id"] for r in rows]
    for e in stored.examples:
        assert all(isinstance(e[s], str) for s in SYSTEMS)
        assert e["outcome"] in ("win", "loss", "tie")
        assert e["reference"] in ("billing", "access", "bugs")
    assert len(stored.settings["shot_ids"]) == 1 and stored.settings["shots"] == 1
    z, f = stored.systems["zero_shot"]["primary"], stored.systems["few_shot"]["primary"]
    assert stored.baseline["primary"] == max(z, f)
    assert stored.verdict == M.verdict(
        stored.baseline["primary"], stored.systems["fine_tuned"]["primary"], 5.0,
        stored.comparison, metric="accuracy")
    print(f"\neval took {stored.wall_seconds} s; answers: "
          f"{[(e['zero_shot'], e['few_shot'], e['fine_tuned']) for e in stored.examples]}")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the stored evaluation should be shown, not recomputed")

    monkeypatch.setattr(ev, "evaluate", must_not_run)
    before = (run.dir / "eval.json").stat().st_mtime_ns
    out = CliRunner().invoke(main, ["eval", run.id, "--json", "--db", str(store.path)])
    assert out.exit_code == 0, out.output
    shown = orjson.loads(out.output)
    for name in ("zero_shot", "few_shot", "fine_tuned"):
        assert shown[name] == stored.systems[name]
    assert shown["baseline"] == stored.baseline and shown["verdict"] == stored.verdict
    assert (run.dir / "eval.json").stat().st_mtime_ns == before

    text = CliRunner().invoke(main, ["eval", run.id, "--db", str(store.path)]).output
    assert "(baseline)" in text and stored.verdict["decision"].upper() in text

    # the whole split and the subset without train copies, side by side (none copied here)
    c = stored.contamination
    assert (c["examples"], c["clean_examples"], c["copies"]) == (3, 3, [])
    for name in SYSTEMS:
        assert c["primary"][name]["all"] == pytest.approx(stored.systems[name]["primary"])
        assert c["primary"][name]["clean"] == pytest.approx(stored.systems[name]["primary"])
    assert shown["contamination"] == c
    assert "no train copy (3)" in text and "fine_tuned" in text.split("no train copy (3)")[1]


def test_the_facade_ranks_gaps_by_a_real_evaluations_error_rates(evaluated_run):
    """Workspace.gaps joins the store's gap list with the newest evaluated run's per-label
    error rates; `curate coverage --json` shows them with the rank key."""
    import torch
    from click.testing import CliRunner

    import training.eval as ev
    from curate import Workspace
    from curate.cli import main
    from curation.checks.coverage import Targets, set_targets

    store, run = evaluated_run
    workspace = Workspace(store, ADMIN)
    before = workspace.gaps()
    assert before.run_id is None and all(g.error_rate is None for g in before.gaps)
    # planted counts: billing 2 train + 1 eval of a target of 9, access 3 of 5, bugs 3 of 4
    set_targets(store, ADMIN, Targets(default_min=4, per_label={"billing": 9, "access": 5}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = ev.evaluate(run.dir, ev.eval_rows_from_store(store),
                             ev.train_rows_from_run(run.dir),
                             EvalConfig(system_prompt="Answer with one word.", shots=0,
                                        max_new_tokens=4), device="cpu")
    finally:
        torch.set_num_threads(threads)
    per_label = result.systems["fine_tuned"]["per_label"]
    rates = {label: 1 - v["accuracy"] for label, v in per_label.items()}
    ranked = workspace.gaps()
    assert (ranked.run_id, ranked.metric) == (run.id, "accuracy")
    assert {g.label: g.error_rate for g in ranked.gaps} == pytest.approx(rates)
    assert {g.label: g.scored for g in ranked.gaps} == {"billing": 1, "access": 1, "bugs": 1}
    keys = {g.label: g.rank_key for g in ranked.gaps}
    assert keys == pytest.approx({"billing": 6 * rates["billing"],
                                  "access": 2 * rates["access"], "bugs": 1 * rates["bugs"]})
    assert [g.rank_key for g in ranked.gaps] == sorted(keys.values(), reverse=True)
    print(f"\nper-label error rates {rates}; order {[g.label for g in ranked.gaps]}")

    out = CliRunner().invoke(main, ["coverage", "--json", "--db", str(store.path)])
    assert out.exit_code == 0, out.output
    shown = orjson.loads(out.stdout)
    assert shown["evaluation"]["run_id"] == run.id and shown["rule"] == ranked.rule
    assert [(g["label"], g["error_rate"], g["rank_key"]) for g in shown["gaps"]] == [
        (g.label, g.error_rate, g.rank_key) for g in ranked.gaps]
    text = CliRunner().invoke(main, ["coverage", "--db", str(store.path)]).output
    assert "error" in text.splitlines()[0] and "key" in text.splitlines()[0]
    assert f"evaluation of run {run.id} (accuracy)" in text


def test_eval_help_has_an_example():
    from click.testing import CliRunner

    from curate.cli import main

    out = CliRunner().invoke(main, ["eval", "--help"]).output
    assert "Example:" in out and "curate eval" in out


def test_curate_train_watches_the_run_then_evaluates_and_records_it(file_store, model_cache,
                                                                     monkeypatch):
    from click.testing import CliRunner

    from curate.cli import main
    from training.launcher import list_runs
    from training.models import cached_default_model
    from training.run_folder import read_eval

    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    cached_default_model(model_cache)
    store = _ticket_store(file_store)
    out = CliRunner().invoke(main, [
        "train", "--db", str(store.path), "--rank", "2", "--max-seq-length", "64",
        "--batch-size", "3", "--epochs", "1", "--checkpoint-every", "0"])
    assert out.exit_code == 0, out.output
    (run,) = list_runs(store.path.parent / "runs")
    assert f"run {run.id} completed" in out.output and "step     2/2" in out.output
    stored = read_eval(run.dir)
    assert stored is not None and stored.settings["eval_examples"] == 3
    assert "(baseline)" in out.output
    assert f"{stored.verdict['decision'].upper()}: {stored.verdict['reason']}" in out.output
    (recorded,) = store.recorded_runs()
    assert recorded["state"] == "completed"
    assert recorded["evaluation"] == orjson.loads(orjson.dumps(stored.summary()))


# --- evaluation in a background process -----------------------------------------------------

@pytest.fixture(scope="module")
def background_run(tmp_path_factory, model_cache):
    """A tiny completed run (6 accepted train tickets, 3 eval tickets), trained once for these
    tests; the store is closed so that CLI processes can open it. Yields (db path, run)."""
    from curation import Store
    from training.launcher import ENDED_STATES, launch, read_run
    from training.models import cached_default_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CURATE_MODEL_CACHE", str(model_cache))
        cached_default_model(model_cache)
        db = tmp_path_factory.mktemp("background") / "ws" / "curate.duckdb"
        with Store(db) as store:
            _ticket_store(lambda: store)
            started = launch(store, ADMIN, TrainConfig(**{**TINY, "batch_size": 3},
                                                       checkpoint_every_steps=0))
        _wait_for(lambda: read_run(started.dir).status.state in ENDED_STATES,
                  timeout=RUN_TIMEOUT, what="the run to end")
        run = read_run(started.dir)
        assert run.state == "completed", run.status.reason
        yield db, run


@pytest.fixture
def bg(background_run, model_cache, monkeypatch):
    """The background run, with the model cache set; any evaluation still active after the
    test is cancelled."""
    from training.evaluate import cancel_eval, read_eval_job

    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    yield background_run
    job = read_eval_job(background_run[1].dir)
    if job and job.active:
        cancel_eval(ADMIN, job.dir, timeout=5)


def _cli(*args: str) -> list[str]:
    """The command line of `curate ARGS` as a process of its own."""
    import sys

    return [sys.executable, "-m", "curate", *args]


def _running(run_dir, after: str | None = None):
    """The run's evaluation once its evaluator process is answering (requested after
    `after`)."""
    from training.evaluate import read_eval_job

    def ready():
        job = read_eval_job(run_dir)
        return job if job and job.status.state == "running" and job.pid and \
            (after is None or job.status.requested_at > after) else None

    return _wait_for(ready, timeout=RUN_TIMEOUT, what="the evaluator to run")


def test_eval_detach_returns_at_once_then_the_result_appears(bg, tmp_path):
    """`curate eval RUN --detach`, from another folder: exit 0 while the evaluation is still
    running; the result lands in eval.json and the CLI records it in the store; a second
    evaluation meanwhile is refused, naming the running one."""
    import subprocess
    import time

    from click.testing import CliRunner

    from curation import Store
    from curate.cli import main
    from curation.errors import EvaluationAlreadyActive
    from training.evaluate import read_eval_job, start_eval, wait_eval
    from training.run_folder import read_eval

    db, run = bg
    (run.dir / "eval.json").unlink(missing_ok=True)
    began = time.monotonic()
    out = subprocess.run(_cli("eval", run.id, "--detach", "--max-new-tokens", "4", "--shots",
                              "1", "--db", str(db)),
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - began
    assert out.returncode == 0, out.stderr
    job = read_eval_job(run.dir)
    assert job.active and job.state in ("queued", "running"), job.state  # still going
    assert f"evaluation of run {run.id} started (pid {job.pid})" in out.stdout
    assert read_eval(run.dir) is None
    print(f"\n--detach returned in {took:.1f} s")

    with Store(db) as store, pytest.raises(EvaluationAlreadyActive) as err:
        start_eval(store, ADMIN, run.dir)
    assert f"evaluation of run {run.id}" in str(err.value)
    assert f"curate eval {run.id} --cancel" in str(err.value)
    again = CliRunner().invoke(main, ["eval", run.id, "--rerun", "--detach", "--db", str(db)])
    assert again.exit_code == 1 and "one evaluation at a time" in again.output
    assert read_eval_job(run.dir).pid == job.pid

    done = wait_eval(run.dir, timeout=RUN_TIMEOUT)
    assert done.state == "completed", done.status.reason
    assert (done.done, done.total) == (9, 9) and done.phase == "fine_tuned"
    stored = read_eval(run.dir)
    assert stored.settings["max_new_tokens"] == 4 and stored.settings["shots"] == 1
    assert stored.settings["eval_examples"] == 3
    assert done.status.verdict == stored.verdict
    shown = CliRunner().invoke(main, ["eval", run.id, "--json", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert orjson.loads(shown.stdout) == orjson.loads(orjson.dumps(stored.summary()))
    with Store(db) as store:
        [recorded] = [r for r in store.recorded_runs() if r["id"] == run.id]
    assert recorded["evaluation"] == orjson.loads(orjson.dumps(stored.summary()))


def test_eval_goes_on_when_the_cli_that_started_it_is_killed(bg, tmp_path):
    import signal
    import subprocess

    from tests.test_training import _process_exists
    from training.evaluate import wait_eval
    from training.run_folder import now_iso, read_eval

    db, run = bg
    before = now_iso()
    cli = subprocess.Popen(_cli("eval", run.id, "--rerun", "--max-new-tokens", "4", "--db",
                                str(db)),
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        job = _running(run.dir, after=before)
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=30)
    assert job.pid != cli.pid and _process_exists(job.pid)
    err = cli.stderr.read().decode()
    assert f"evaluating run {run.id} on 3 eval examples in process {job.pid}" in err
    done = wait_eval(run.dir, timeout=RUN_TIMEOUT)
    assert done.state == "completed", done.status.reason
    stored = read_eval(run.dir)
    assert stored.created_at > before and stored.settings["max_new_tokens"] == 4


def test_cancel_stops_the_evaluator_and_a_killed_one_reads_as_interrupted(bg):
    """SIGKILL leaves `interrupted` (not active, startable again); `curate eval RUN --cancel`
    ends the next one as cancelled with its whole process group gone; the earlier eval.json
    stays."""
    import os
    import signal

    from click.testing import CliRunner

    from curation import Store
    from curate.cli import main
    from training.evaluate import read_eval_job, start_eval
    from training.processes import group_members
    from training.run_folder import read_eval

    db, run = bg
    earlier = read_eval(run.dir)
    with Store(db) as store:
        first = start_eval(store, ADMIN, run.dir)
    assert first.state == "queued" and first.active and first.total == 9
    first = _running(run.dir)
    os.killpg(first.pid, signal.SIGKILL)
    killed = _wait_for(lambda: (j := read_eval_job(run.dir)).state == "interrupted" and j,
                       timeout=10, what="the evaluation to read as interrupted")
    assert not killed.active
    refused = CliRunner().invoke(main, ["eval", run.id, "--cancel", "--db", str(db)])
    assert refused.exit_code == 1
    assert "has no evaluation running (the last one interrupted)" in refused.output

    with Store(db) as store:
        second = start_eval(store, ADMIN, run.dir)  # not refused: the killed one is over
    second = _running(run.dir, after=first.status.requested_at)
    assert second.pid != first.pid and group_members(second.pid)
    out = CliRunner().invoke(main, ["eval", run.id, "--cancel", "--db", str(db)])
    assert out.exit_code == 0, out.output
    assert f"evaluation of run {run.id} cancelled" in out.output
    after = read_eval_job(run.dir)
    assert after.state == "cancelled" and not after.active
    assert group_members(second.pid) == []
    assert "cancelled (SIGTERM)" in (run.dir / "eval.log").read_text(), \
        "the evaluator itself should have handled SIGTERM"
    assert read_eval(run.dir) == earlier
