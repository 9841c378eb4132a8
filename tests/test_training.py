"""LoRA training runs with the real packaged base model on CPU: masks, runs, cancel, resume.

The runs are tiny (6 examples, rank 2, 64 tokens, batch 2: 3 steps) so the whole file stays
within a few minutes on a slow two-core machine; most of each run's time is the trainer
process importing torch and loading the model.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import orjson
import pytest

from curation.auth import User
from curation.errors import (BadCheckpoint, EmptyTrainingSet, InvalidValue, LeakageUnresolved,
                             PermissionDenied, RunAlreadyActive)
from curation.query import ExampleFilter
from tests.conftest import PROJECT_ROOT, chat, write_jsonl
from training.config import TrainConfig
from training.data import IGNORE_INDEX, encode, plan_batches
from training.launcher import cancel, find_run, launch, list_runs, read_run, resume, wait
from training.processes import group_members
from training.run_folder import checkpoint_dirs

ADMIN = User("ada", "admin")
TINY = {"r": 2, "max_seq_length": 64, "batch_size": 2, "epochs": 1, "learning_rate": 1e-3}
TINY_FLAGS = ["--rank", "2", "--max-seq-length", "64", "--batch-size", "2", "--epochs", "1"]
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def base_model_dir(model_cache):
    """The packaged model converted once (so trainer processes never convert it at once)."""
    from training.models import cached_default_model

    return cached_default_model(model_cache)


@pytest.fixture(scope="module")
def tokenizer(base_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_dir)


@pytest.fixture
def train_store(file_store, base_model_dir, model_cache, monkeypatch):
    """Six accepted train examples, plus one pending and one eval example that a run must
    leave out; any run still active after the test is cancelled."""
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    store = file_store()
    for i in range(6):
        store.add(chat(f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}."), actor="t",
                  status="accepted", split="train")
    store.add(chat("pending question", "pending answer"), actor="t")
    store.add(chat("eval question", "eval answer"), actor="t", status="accepted", split="eval")
    yield store
    for run in list_runs(store.path.parent / "runs"):
        if run.active:
            cancel(ADMIN, run.dir, timeout=5)


def _wait_for(predicate, timeout: float = RUN_TIMEOUT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- (a) data -------------------------------------------------------------------------------

def _unmasked_runs(item) -> list[list[int]]:
    runs, current = [], []
    for token, label in zip(item.input_ids, item.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.parametrize("messages", [
    chat("What is 2+2?", "4, of course."),
    chat("Hi", "Hello!\nHow can I help?  Two spaces, and ünïcödé.", system="Be terse."),
    [{"role": "user", "content": "first"}, {"role": "assistant", "content": "one"},
     {"role": "user", "content": "second"}, {"role": "assistant", "content": " two words"}],
], ids=["single-turn", "system-and-newlines", "multi-turn"])
def test_label_mask_covers_exactly_the_assistant_tokens(tokenizer, messages):
    item = encode(tokenizer, messages, max_seq_length=512)
    decoded = [tokenizer.decode(run) for run in _unmasked_runs(item)]
    expected = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    assert decoded == expected
    # everything else (system prompt, user turns, headers, the newline after <|im_end|>) is
    # masked: the unmasked tokens are exactly the assistant contents' tokens
    assert item.target_tokens == sum(len(r) for r in _unmasked_runs(item))
    assert len(item.input_ids) > item.target_tokens + 10


def test_truncation_and_length_bucketed_batches(tokenizer):
    item = encode(tokenizer, chat("word " * 100, "answer"), max_seq_length=32)
    assert len(item.input_ids) == 32 and item.truncated and item.target_tokens == 0
    lengths = [5, 50, 6, 49, 7, 48, 8]
    plan = plan_batches(lengths, batch_size=2, seed=3, epoch=0)
    assert sorted(i for b in plan for i in b) == list(range(7))
    assert all(abs(lengths[b[0]] - lengths[b[-1]]) <= 2 for b in plan)
    assert plan == plan_batches(lengths, batch_size=2, seed=3, epoch=0)
    orders = {tuple(map(tuple, plan_batches(lengths, 2, 3, e))) for e in range(6)}
    assert len(orders) > 1, "the batch order must be shuffled per epoch"


# --- (f) config -----------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("r", 0), ("alpha", -1), ("dropout", 1.0), ("learning_rate", 0), ("epochs", 0),
    ("max_seq_length", 8), ("batch_size", 0), ("precision", "fp16"),
    ("target_modules", " , "), ("keep_checkpoints", 0), ("checkpoint_every_steps", -1),
    ("warmup_ratio", 0.9), ("base_model", ""),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(InvalidValue) as err:
        TrainConfig(**{field: value})
    assert str(err.value).startswith(field)


def test_config_round_trips_and_refuses_unknown_keys():
    config = TrainConfig(r=4, learning_rate=1e-4, precision="fp32")
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InvalidValue, match="'rank'"):
        TrainConfig.from_dict({"rank": 4})


# --- (g) refusals ---------------------------------------------------------------------------

def test_launch_refuses_exact_and_near_copies_but_only_warns_on_a_paraphrase(train_store):
    """Exact and near eval copies of accepted train examples refuse the launch; a same-meaning
    eval example alone does not: `curate train` starts, warns on stderr, and the manifest
    lists the paraphrase."""
    from click.testing import CliRunner

    from curate.cli import main
    from tests.conftest import plant_train_eval_pairs

    planted = plant_train_eval_pairs(train_store)
    for train_id, _ in planted.values():
        e = train_store.get(train_id)
        train_store.update(train_id, base_version=e.version, actor="t", status="accepted")
    with pytest.raises(LeakageUnresolved) as err:
        launch(train_store, ADMIN, TrainConfig(**TINY))
    assert {(x["eval_id"], x["train_id"], x["method"]) for x in err.value.leaks} == {
        (planted[k][1], planted[k][0], k) for k in ("exact", "near")}
    assert "exactly or nearly" in str(err.value)
    runs_dir = train_store.path.parent / "runs"
    assert list_runs(runs_dir) == []

    for kind in ("exact", "near"):  # settle the copies: only the paraphrase is left
        e = train_store.get(planted[kind][1])
        train_store.update(e.id, base_version=e.version, actor="t", status="rejected")
    out = CliRunner().invoke(main, ["train", "--db", str(train_store.path), "--detach",
                                    "--checkpoint-every", "0", *TINY_FLAGS])
    assert out.exit_code == 0, out.output
    [run] = list_runs(runs_dir)
    semantic_eval, semantic_train = planted["semantic"][1], planted["semantic"][0]
    assert [(x["eval_id"], x["train_id"], x["method"])
            for x in run.manifest.paraphrase_pairs] == [(semantic_eval, semantic_train,
                                                         "semantic")]
    assert run.manifest.leaked_pairs == [] and run.manifest.leakage_overridden_by is None
    assert (f"warning: 1 eval example(s) mean the same as a train example (eval "
            f"#{semantic_eval} ~ train #{semantic_train})") in out.stderr
    cancel(ADMIN, run.dir, timeout=10)


def test_empty_snapshot_is_refused_before_any_process_starts(file_store):
    store = file_store()
    store.add(chat("not accepted", "so not trained"), actor="t")
    with pytest.raises(EmptyTrainingSet, match="no examples"):
        launch(store, ADMIN, TrainConfig(**TINY))
    assert list_runs(store.path.parent / "runs") == []
    with pytest.raises(PermissionDenied, match="train"):
        launch(store, User("ann", "annotator"), TrainConfig(**TINY))


@pytest.mark.parametrize("name", ["/nonexistent/model", "./not-here", "../nor-here"])
def test_a_missing_base_model_folder_is_refused_before_any_process_starts(train_store, name):
    """It used to start a run that failed half a minute later with transformers' 'Repo id
    must be in the form...' (and `--detach` reported it started)."""
    with pytest.raises(InvalidValue, match=f"base_model: the folder {re.escape(name)} does "
                                           "not exist"):
        launch(train_store, ADMIN, TrainConfig(**{**TINY, "base_model": name}))
    assert list_runs(train_store.path.parent / "runs") == []


def test_leakage_into_the_snapshot_is_refused_unless_overridden(train_store):
    """An eval example that copies an accepted train example blocks the launch; a copy of a
    train example outside the snapshot (pending) does not; the override is recorded."""
    runs_dir = train_store.path.parent / "runs"
    pending = train_store.find(ExampleFilter(status=("pending",)))[0]
    train_store.add(chat(pending.messages[0]["content"], "x"), actor="t", split="eval")
    first = launch(train_store, ADMIN, TrainConfig(**TINY, checkpoint_every_steps=0))  # no leak
    wait(first.dir, timeout=RUN_TIMEOUT)

    copied = train_store.find(ExampleFilter(status=("accepted",), split=("train",)))[2]
    leaked = train_store.add(chat(copied.messages[0]["content"].upper() + "  ",
                                  copied.messages[1]["content"]), actor="t", split="eval")
    with pytest.raises(LeakageUnresolved) as err:
        launch(train_store, ADMIN, TrainConfig(**TINY))
    assert err.value.leaks == [{"eval_id": leaked.id, "train_id": copied.id,
                                "method": "exact", "similarity": 1.0}]
    assert f"eval #{leaked.id} ~ train #{copied.id} (exact)" in str(err.value)
    assert "--allow-leakage" in str(err.value) and len(list_runs(runs_dir)) == 1
    from click.testing import CliRunner

    from curate.cli import main

    refused = CliRunner().invoke(main, ["train", "--db", str(train_store.path), *TINY_FLAGS])
    assert refused.exit_code == 1 and "1 eval example duplicate" in refused.output
    assert len(list_runs(runs_dir)) == 1

    run = launch(train_store, ADMIN, TrainConfig(**TINY), allow_leakage=True)
    assert run.manifest.leakage == {"pairs": err.value.leaks, "overridden_by": ADMIN.name}
    cancel(ADMIN, run.dir, timeout=10)

    # the store records both runs, traced to their snapshots
    recorded = {r["id"]: r for r in train_store.recorded_runs()}
    assert recorded[first.id]["state"] == "completed" and recorded[first.id]["steps"] == 3
    assert recorded[first.id]["leakage_overridden_by"] is None
    assert recorded[run.id]["leakage_overridden_by"] == ADMIN.name
    assert recorded[run.id]["config"]["r"] == TINY["r"]
    listed = CliRunner().invoke(main, ["snapshots", "--json", "--db", str(train_store.path)])
    by_snapshot = {s["id"]: s["runs"] for s in orjson.loads(listed.output)}
    assert run.manifest.snapshot_id == first.manifest.snapshot_id  # same train set
    assert by_snapshot[run.manifest.snapshot_id] == [run.id, first.id]
    assert train_store.recorded_runs()[0]["state"] == "cancelled"  # re-read from the folder


def test_trainer_fails_clearly_on_bad_data(tmp_path, base_model_dir, model_cache, monkeypatch):
    """The trainer's own failure path, in this process: a broken train.jsonl line."""
    import torch

    from training import trainer

    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what main() would set for good
    run_dir = tmp_path / "run-bad"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_bytes(orjson.dumps({"config": TrainConfig(**TINY)
                                                          .to_dict()}))
    (run_dir / "train.jsonl").write_text(orjson.dumps({"messages": chat("q", "a")}).decode()
                                         + "\n{not json\n")
    previous, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    try:
        assert trainer.main([str(run_dir)]) == 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        torch.set_num_threads(threads)
    status = orjson.loads((run_dir / "status.json").read_bytes())
    assert status["state"] == "failed" and "train.jsonl line 2" in status["reason"]
    assert "Traceback" in (run_dir / "trainer.log").read_text()


# --- (b) a run end to end -------------------------------------------------------------------

def test_run_completes_with_an_adapter_that_changes_the_model(train_store, model_cache):
    run = launch(train_store, ADMIN, TrainConfig(**TINY, checkpoint_every_steps=0))
    assert run.active and run.manifest.examples == 6
    assert run.manifest.snapshot_hash == train_store.get_snapshot(
        run.manifest.snapshot_id).content_hash
    assert len((run.dir / "train.jsonl").read_text().splitlines()) == 6

    done = wait(run.dir, timeout=RUN_TIMEOUT)
    assert done.state == "completed", done.status.reason
    assert done.status.pid == run.pid and not done.active
    assert [m["step"] for m in done.metrics] == [1, 2, 3] == list(
        range(1, done.status.total_steps + 1))
    fields = {"step", "epoch", "loss", "learning_rate", "tokens_per_second", "eta_seconds",
              "time"}
    assert all(fields <= set(m) for m in done.metrics)
    assert done.metrics[-1]["epoch"] == 1.0 and done.metrics[-1]["eta_seconds"] == 0
    assert done.status.final["loss"] == done.metrics[-1]["loss"]
    print(f"\ntraining throughput: {[m['tokens_per_second'] for m in done.metrics]} tokens/s")

    # the time estimate before a first run is a lower bound: not above this real epoch
    from training.estimate import MatmulRate, epoch_time

    tokens = sum(m["tokens"] for m in done.metrics)
    real = sum(m["tokens"] / m["tokens_per_second"] for m in done.metrics)
    bound = epoch_time(TrainConfig(**TINY), tokens, [], model_cache,
                       flops_per_second=MatmulRate())
    assert not bound.measured and 0 < bound.seconds <= real

    import torch
    from peft import PeftModel

    from training.models import load_model, load_run_model

    adapter = done.adapter_dir
    assert orjson.loads((adapter / "adapter_config.json").read_bytes())["r"] == 2
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base, tok = load_model(None, model_cache, device="cpu")
        ids = tok.apply_chat_template([{"role": "user", "content": "What is 3 plus 3?"}],
                                      add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
        tuned, _ = load_run_model(run.dir, device="cpu")  # PeftModel.from_pretrained(adapter)
        assert isinstance(tuned, PeftModel)
        with torch.inference_mode():
            before, after = base(input_ids=ids).logits, tuned(input_ids=ids).logits
    finally:
        torch.set_num_threads(threads)
    assert (after - before).abs().max().item() > 1e-3


# --- (c), (d) one run at a time, cancel -----------------------------------------------------

def test_second_launch_while_active_names_the_active_run(train_store):
    first = launch(train_store, ADMIN, TrainConfig(**TINY))
    with pytest.raises(RunAlreadyActive) as err:
        launch(train_store, ADMIN, TrainConfig(**TINY))
    assert first.id in str(err.value) and f"curate cancel {first.id}" in str(err.value)
    assert [r.id for r in list_runs(train_store.path.parent / "runs")] == [first.id]
    assert cancel(ADMIN, first.dir, timeout=10).state == "cancelled"


def test_cancel_stops_the_whole_process_group(train_store):
    run = launch(train_store, ADMIN, TrainConfig(**TINY))
    _wait_for(lambda: read_run(run.dir).status.state == "running",
              what="the trainer to start")
    assert _process_exists(run.pid) and run.pid in group_members(run.pid)

    cancelled = cancel(ADMIN, run.dir, timeout=20)
    assert cancelled.state == "cancelled" and not cancelled.active
    assert not _process_exists(run.pid)
    assert group_members(run.pid) == []
    assert "cancelled (SIGTERM)" in (run.dir / "trainer.log").read_text(), \
        "the trainer itself should have handled SIGTERM"
    assert not (run.dir / "adapter").exists()


# --- (e) resume -----------------------------------------------------------------------------

def test_resume_after_sigkill_continues_from_the_checkpoint(train_store):
    run = launch(train_store, ADMIN, TrainConfig(**TINY, checkpoint_every_steps=1,
                                                 keep_checkpoints=1))
    first = _wait_for(lambda: checkpoint_dirs(run.dir), what="the first checkpoint")[0]
    os.killpg(run.pid, signal.SIGKILL)
    killed_at = time.time()
    interrupted = _wait_for(lambda: (r := read_run(run.dir)).state == "interrupted" and r,
                            timeout=10, what="the run to read as interrupted")
    assert not interrupted.active
    saved = int(checkpoint_dirs(run.dir)[-1].name[5:])
    assert saved >= int(first.name[5:]) >= 1

    resumed = resume(train_store, ADMIN, run.id)
    assert resumed.active and resumed.pid != run.pid
    done = wait(run.dir, timeout=RUN_TIMEOUT)
    assert done.state == "completed", done.status.reason
    assert done.status.resumed_from_step == saved < 3
    assert [m["step"] for m in done.metrics] == [1, 2, 3]
    after = [m for m in done.metrics if m["time"] > killed_at]
    assert after and after[0]["step"] == saved + 1, "the step counter must continue"
    assert f"resuming from step-{saved}" in (run.dir / "trainer.log").read_text()
    assert len(checkpoint_dirs(run.dir)) <= 1  # keep_checkpoints=1
    assert (done.adapter_dir / "adapter_model.safetensors").is_file()
    # the training state was saved, and loaded, without pickle
    assert not list(run.dir.rglob("*.pt")) and not list(run.dir.rglob("*.bin"))


class _Payload:
    """Unpickling this runs a shell command: what a tampered checkpoint would carry."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_training_state_round_trips_without_pickle(tmp_path):
    import random

    import torch

    from training.checkpoint import (STATE_JSON, STATE_TENSORS, load_training_state,
                                     save_training_state)

    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (s + 1))
    for _ in range(2):
        sum(p.square().sum() for p in params).backward()
        optimizer.step()
        scheduler.step()
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
             "odd": {"$key": float("inf"), (1, "a"): [None, True, 2.5]}}
    save_training_state(tmp_path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_JSON, STATE_TENSORS]
    (tmp_path / "position.json").write_text('{"step": 2, "epoch": 0, "next_batch": 2}')
    (tmp_path / "adapter_model.safetensors").write_bytes((tmp_path / STATE_TENSORS)
                                                         .read_bytes())
    loaded = load_training_state(tmp_path)
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert loaded["optimizer"]["state"].keys() == {0, 1}  # the parameters' indices
    for i in (0, 1):
        for name, value in state["optimizer"]["state"][i].items():
            assert torch.equal(loaded["optimizer"]["state"][i][name], value)
    assert loaded["scheduler"] == state["scheduler"]
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    assert loaded["rng"]["python"] == state["rng"]["python"]
    random.setstate(loaded["rng"]["python"])  # the exact tuple shape random needs
    assert loaded["odd"] == state["odd"]
    fresh = torch.optim.AdamW(params, lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    assert fresh.state_dict()["param_groups"] == state["optimizer"]["param_groups"]


def test_a_tampered_checkpoint_is_refused_and_runs_no_code(train_store, tmp_path):
    """The attack the issue names: a pickle that runs a command, planted in the last
    checkpoint of an interrupted run. Resuming refuses it with a clear error, and so does
    the trainer itself when started on the folder directly; the command never runs."""
    import torch

    from training.checkpoint import STATE_JSON, STATE_TENSORS

    run = launch(train_store, ADMIN, TrainConfig(**TINY, checkpoint_every_steps=1))
    _wait_for(lambda: checkpoint_dirs(run.dir), what="the first checkpoint")
    os.killpg(run.pid, signal.SIGKILL)
    _wait_for(lambda: read_run(run.dir).state == "interrupted", timeout=10,
              what="the run to read as interrupted")
    latest = checkpoint_dirs(run.dir)[-1]
    marker = tmp_path / "code-ran"
    payload = tmp_path / "payload.pt"
    torch.save(_Payload(f"touch {marker}"), payload)

    planted = latest / "training_state.pt"
    planted.write_bytes(payload.read_bytes())
    with pytest.raises(BadCheckpoint) as err:
        resume(train_store, ADMIN, run.id)
    assert str(err.value) == (
        f"checkpoint {latest} holds training_state.pt, a pickle, which Curate does not load "
        "(it could run code); remove that folder to resume from the checkpoint before it "
        "(or from the start)")
    assert read_run(run.dir).state == "interrupted"  # no process was started
    started = subprocess.run([sys.executable, "-m", "training.trainer", str(run.dir)],
                             env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
                             capture_output=True, timeout=RUN_TIMEOUT, check=False)
    assert started.returncode == 1
    failed = read_run(run.dir)
    assert failed.state == "failed" and "a pickle, which Curate does not load" in \
        failed.status.reason

    planted.unlink()  # the pickle in place of the tensors file instead: damaged, not run
    tensors = (latest / STATE_TENSORS).read_bytes()
    (latest / STATE_TENSORS).write_bytes(payload.read_bytes())
    resume(train_store, ADMIN, run.id)
    done = wait(run.dir, timeout=RUN_TIMEOUT)
    assert done.state == "failed"
    assert done.status.reason.startswith(f"checkpoint {latest} has a damaged "
                                            f"{STATE_TENSORS} (")
    assert not marker.exists()

    # valid JSON of the wrong shape in the state file: refused by name, not a Python error
    (latest / STATE_TENSORS).write_bytes(tensors)
    (latest / STATE_JSON).write_bytes(orjson.dumps({"optimizer": 5, "scheduler": {}, "rng": {}}))
    resume(train_store, ADMIN, run.id)
    done = wait(run.dir, timeout=RUN_TIMEOUT)
    assert done.state == "failed"
    assert done.status.reason.startswith(f"checkpoint {latest} has a training state that "
                                         "does not fit this run (")


# --- (h) the command line, from anywhere ------------------------------------------------------

def _cli(args: list[str], cwd, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT + 120,
                          check=False)


def _cli_env(model_cache, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CURATE_DB"}
    return {**env, "PYTHONPATH": str(PROJECT_ROOT), "CURATE_MODEL_CACHE": str(model_cache),
            **extra}


def _run_id(output: str) -> str:
    [line] = [x for x in output.splitlines() if x.startswith("run ") and " started " in x]
    return line.split()[1]


def test_cli_trains_from_another_folder_with_a_relative_and_the_default_db(
        tmp_path, base_model_dir, model_cache):
    """`curate train` run from a folder other than the project: with a relative --db it
    watches the run to completion; with the default ./workspace store, --detach returns and
    the run completes on its own. The run folders are absolute in what the CLI says."""
    here = tmp_path / "elsewhere"
    here.mkdir()
    assert here.resolve() != PROJECT_ROOT.resolve()
    write_jsonl(here / "train.jsonl", [{"messages": chat(f"What is {i} plus {i}?",
                                                         f"It is {2 * i}.")} for i in range(6)])
    env = _cli_env(model_cache)
    flags = [*TINY_FLAGS, "--checkpoint-every", "0"]

    imported = _cli(["import", "train.jsonl", "--status", "accepted", "--db", "rel/c.duckdb"],
                    here, env)
    assert imported.returncode == 0, imported.stderr
    trained = _cli(["train", "--db", "rel/c.duckdb", *flags, "--no-eval"], here, env)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    run_id = _run_id(trained.stdout)
    run_dir = here / "rel" / "runs" / run_id
    assert f"folder {run_dir}" in trained.stdout and "completed" in trained.stdout
    done = read_run(run_dir)
    assert done.state == "completed" and [m["step"] for m in done.metrics] == [1, 2, 3]
    assert (done.adapter_dir / "adapter_model.safetensors").is_file()

    assert _cli(["init"], here, env).returncode == 0
    assert _cli(["import", "train.jsonl", "--status", "accepted"], here, env).returncode == 0
    detached = _cli(["train", *flags, "--detach"], here, env)
    assert detached.returncode == 0, detached.stdout + detached.stderr
    run_dir = find_run(here / "workspace" / "runs", _run_id(detached.stdout))
    assert read_run(run_dir).status.state in ("running", "completed")  # taken over
    done = wait(run_dir, timeout=RUN_TIMEOUT)
    assert done.state == "completed", done.status.reason
    assert [m["step"] for m in done.metrics] == [1, 2, 3]
    listed = _cli(["runs", "--json"], here, env)
    assert [(r["id"], r["state"]) for r in orjson.loads(listed.stdout)] == [
        (done.id, "completed")]


def test_detach_fails_when_the_trainer_dies_before_it_starts(tmp_path, model_cache):
    """A trainer that exits before taking the run over (here: a broken Python environment,
    a sitecustomize that kills the trainer process only) fails the launch instead of a
    "started" and exit 0; the run reads as failed with the trainer's last words."""
    broken = tmp_path / "broken-env"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if 'training.trainer' in sys.orig_argv:\n"
        "    print('simulated broken environment', file=sys.stderr)\n"
        "    os._exit(3)\n")
    env = _cli_env(model_cache, PYTHONPATH=os.pathsep.join([str(broken), str(PROJECT_ROOT)]))
    write_jsonl(tmp_path / "train.jsonl", [{"messages": chat(f"question {i}", f"answer {i}")}
                                           for i in range(4)])
    db = ["--db", "ws/curate.duckdb"]
    assert _cli(["import", "train.jsonl", "--status", "accepted", *db], tmp_path,
                env).returncode == 0
    result = _cli(["train", *db, *TINY_FLAGS, "--detach"], tmp_path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert " started " not in result.stdout
    assert "did not start: the trainer exited (status 3) before it started: simulated " \
        "broken environment" in result.stderr
    [run] = list_runs(tmp_path / "ws" / "runs")
    assert run.state == "failed" and not run.active
    assert "simulated broken environment" in run.status.reason


def test_runs_cli_lists_and_cancel_cli_refuses_an_ended_run(train_store, tmp_path):
    """Smoke test of the CLI over a run folder written by hand (no trainer process)."""
    from click.testing import CliRunner

    from curate.cli import main
    from training.run_folder import write_json

    run_dir = train_store.path.parent / "runs" / "run-20250101-000000-abcd"
    run_dir.mkdir(parents=True)
    write_json(run_dir / "manifest.json", {"run_id": run_dir.name, "snapshot_id": "snap-x"})
    write_json(run_dir / "status.json", {"state": "completed", "pid": 1, "total_steps": 2})
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 1.25}'
                                           '\n{"step": 3, "lo')  # a half-written last line
    db = ["--db", str(train_store.path)]
    listed = orjson.loads(CliRunner().invoke(main, ["runs", "--json", *db]).output)
    assert [(r["id"], r["state"], r["step"], r["loss"]) for r in listed] == [
        (run_dir.name, "completed", 2, 1.25)]
    result = CliRunner().invoke(main, ["cancel", run_dir.name, *db])
    assert result.exit_code == 1 and "already ended (completed)" in result.output
    result = CliRunner().invoke(main, ["cancel", "run-nope", *db])
    assert result.exit_code == 1 and "no run 'run-nope'" in result.output
