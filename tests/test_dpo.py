"""DPO runs (`training.dpo`) and pairwise preference accuracy (`training.preference_eval`).

The runs are real trainer processes on the packaged SmolLM2 with tiny settings, on real
preference pairs imported into a real store (TRL's explicit-prompt form).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from click.testing import CliRunner

from curation.auth import User
from curation.query import ExampleFilter
from curation.errors import InvalidValue
from curation.preference import PreferencePair
from tests.conftest import chat
from tests.test_app_training import open_page, trained  # noqa: F401  (fixtures)
from training.checkpoint import load_training_state
from training.config import TrainConfig
from training.dpo import snapshot_pairs
from training.launcher import cancel, launch, list_runs, read_run, resume, wait
from training.run_folder import checkpoint_dirs

ADMIN = User("ada", "admin")
TINY_DPO = {"method": "dpo", "r": 2, "max_seq_length": 48, "batch_size": 2, "epochs": 1,
            "learning_rate": 1e-3}
RUN_TIMEOUT = 240


def _pairs(n: int, split: str = "train", start: int = 0) -> list[PreferencePair]:
    if split == "eval":  # worded apart from the train pairs, so they do not leak
        ask, say = "Double {k}, please.", "Doubled, {k} makes {v}."
    else:
        ask, say = "What is {k} plus {k}?", "{k} plus {k} is {v}."
    return [PreferencePair(
        example_id=k,
        prompt=({"role": "user", "content": ask.format(k=k)},),
        chosen=({"role": "assistant", "content": say.format(k=k, v=2 * k)},),
        rejected=({"role": "assistant", "content": say.format(k=k, v=2 * k + 3)},),
        split=split) for k in range(start, start + n)]


def _import_pairs(store, pairs: list[PreferencePair], tmp_path, split: str) -> None:
    """Store `pairs` as accepted preference examples of `split`, through a TRL file."""
    import orjson

    from curation.importer import import_file

    path = tmp_path / f"pairs-{split}.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"prompt": list(p.prompt), "chosen": list(p.chosen),
                                            "rejected": list(p.rejected)}) + b"\n"
                              for p in pairs))
    report = import_file(store, path, user=ADMIN, status="accepted", split=split)
    assert report.imported == len(pairs) and not report.rejected


@pytest.fixture
def dpo_store(file_store, model_cache, monkeypatch, tmp_path):
    """A store with six accepted train preference pairs and two eval ones; any run still
    active after the test is cancelled."""
    from training.models import cached_default_model

    cached_default_model(model_cache)
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    store = file_store()
    _import_pairs(store, _pairs(6), tmp_path, "train")
    _import_pairs(store, _pairs(2, "eval", start=10), tmp_path, "eval")
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


# --- settings -------------------------------------------------------------------------------

@pytest.mark.parametrize("values, named", [
    ({"method": "ppo"}, "method"), ({"method": "dpo", "beta": 0}, "beta"),
    ({"method": "dpo", "beta": True}, "beta"), ({"sft_run": "run-1"}, "sft_run"),
    ({"method": "dpo", "sft_run": " "}, "sft_run"),
    ({"method": "dpo", "sft_weight": -0.5}, "sft_weight"), ({"sft_weight": 1.0}, "sft_weight")])
def test_dpo_settings_are_validated_by_name(values, named):
    with pytest.raises(InvalidValue, match=named):
        TrainConfig(**values)


def test_a_manifest_without_a_method_reads_as_sft_and_dpo_round_trips():
    old = TrainConfig().to_dict()
    for key in ("method", "beta", "sft_run", "sft_weight"):
        del old[key]
    assert TrainConfig.from_dict(old).method == "sft"
    config = TrainConfig(method="dpo", beta=0.2, sft_run="run-x", sft_weight=0.5)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_cli_takes_method_dpo_and_its_settings(tmp_path):
    from curate.cli import main

    db = tmp_path / "ws" / "curate.duckdb"
    assert CliRunner().invoke(main, ["init", "--db", str(db)]).exit_code == 0
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert "--method [sft|dpo]" in help_text and "--beta" in help_text and \
        "--sft-run" in help_text and "--sft-weight" in help_text
    refused = CliRunner().invoke(main, ["train", "--db", str(db), "--method", "dpo",
                                        "--beta", "-1"])
    assert refused.exit_code != 0 and "beta must be in (0, 10]" in refused.output
    refused = CliRunner().invoke(main, ["train", "--db", str(db), "--sft-run", "run-1"])
    assert refused.exit_code != 0 and "method 'dpo' only" in refused.output
    refused = CliRunner().invoke(main, ["train", "--db", str(db), "--method", "dpo",
                                        "--sft-weight", "11"])
    assert refused.exit_code != 0 and "sft_weight must be in [0, 10]" in refused.output


# --- encoding and pairwise accuracy ---------------------------------------------------------

def test_only_the_answer_after_the_prompt_is_scored(model_cache):
    from training.data import IGNORE_INDEX
    from training.dpo import encode_side
    from training.models import load_model

    _, tokenizer = load_model(None, model_cache)
    prompt = ({"role": "user", "content": "hi"}, {"role": "assistant", "content": "EARLIER"},
              {"role": "user", "content": "and now?"})
    side = encode_side(tokenizer, prompt, ({"role": "assistant", "content": "LATER"},), 256)
    scored = tokenizer.decode([t for t, y in zip(side.input_ids, side.labels)
                               if y != IGNORE_INDEX])
    assert scored == "LATER<|im_end|>"


def test_pairwise_accuracy_agrees_with_a_direct_computation(model_cache):
    import torch

    from training.dpo import encode_pairs
    from training.models import load_model
    from training.preference_eval import pair_margins, pairwise_accuracy

    model, tokenizer = load_model(None, model_cache)
    pairs = [
        PreferencePair(1, ({"role": "user", "content": "Capital of France?"},),
                       ({"role": "assistant", "content": "Paris."},),
                       ({"role": "assistant", "content": "Banana."},)),
        PreferencePair(2, ({"role": "user", "content": "2 + 2 = ?"},),
                       ({"role": "assistant", "content": "zebra zebra zebra"},),
                       ({"role": "assistant", "content": "4"},)),
        PreferencePair(3, ({"role": "user", "content": "Say hello."},),
                       ({"role": "assistant", "content": "Hello!"},),
                       ({"role": "assistant", "content": "Hello! How can I help you today?"},)),
    ]
    encoded, _ = encode_pairs(tokenizer, pairs, 128)
    margins = pair_margins(model, tokenizer, encoded, batch_size=2)

    def direct(side) -> float:  # one sequence, full logits, no batching or padding
        ids = torch.tensor([side.input_ids])
        with torch.no_grad():
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        return sum(logps[k - 1, side.input_ids[k]].item()
                   for k in range(1, len(side.input_ids)) if side.labels[k] != -100)

    expected = [direct(p.chosen) - direct(p.rejected) for p in encoded]
    assert margins == pytest.approx(expected, abs=2e-3)
    assert pairwise_accuracy(margins) == sum(m > 0 for m in expected) / 3
    assert margins[1] < 0 < margins[0]  # the nonsense "chosen" loses, Paris wins
    assert pairwise_accuracy([0.0, 1.0]) == 0.5 and pairwise_accuracy([]) is None


def test_the_reference_is_computed_once_per_pair_and_served_in_any_batch(model_cache):
    """Later epochs take the reference log-probabilities from the cache; whatever the batch,
    they are those of the adapter-free model for exactly its pairs."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.dpo import encode_pairs, pair_batch, pair_logps, reference_logps
    from training.models import load_model

    model, tokenizer = load_model(None, model_cache)
    encoded, _ = encode_pairs(tokenizer, _pairs(4), 64)
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    for name, weight in model.named_parameters():
        if "lora_B" in name:  # an adapter that changes the model, as after some steps
            torch.nn.init.normal_(weight, std=0.05)
    pad = tokenizer.pad_token_id

    def batch(indices):
        return pair_batch(model, [encoded[i] for i in indices], pad, "cpu")

    def reference(indices, cache):
        return reference_logps(model, batch(indices), indices, cache)

    cache: dict = {}
    reference([0, 1, 2, 3], cache)
    assert set(cache) == {0, 1, 2, 3}
    with torch.no_grad():
        tuned = pair_logps(model, batch([3, 1]))
        with model.disable_adapter():
            expected = pair_logps(model, batch([3, 1]))
    before = dict(cache)
    served = reference([3, 1], cache)
    assert cache == before, "nothing recomputed"
    assert served.tolist() == pytest.approx(expected.tolist(), abs=1e-3)
    assert (tuned - expected).abs().max() > 0.01, "the adapter is on: the check can fail"
    fresh = reference([2, 0], {})
    assert fresh.tolist() == pytest.approx([cache[2][0], cache[0][0], cache[2][1],
                                            cache[0][1]], abs=1e-3)


def test_a_packed_pair_scores_as_its_two_sides_apart(model_cache):
    """`pair_logps` runs the shared prefix once, with a 4-D mask keeping the two rests apart;
    it must give what each side gives alone, for any overlap of the two answers."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.dpo import collate_pairs, encode_pairs, pair_batch, pair_logps, \
        sequence_logps, shared_prefix
    from training.models import load_model

    model, tokenizer = load_model(None, model_cache)
    ask = ({"role": "user", "content": "How many legs do 3 cats have?"},)
    steps = "Each cat has 4 legs.\nSo 3 cats have 3*4=12 legs.\nThe answer is 12."

    def pair(i, chosen, rejected, prompt=ask):
        return PreferencePair(i, prompt, ({"role": "assistant", "content": chosen},),
                              ({"role": "assistant", "content": rejected},))

    pairs = [
        pair(1, steps, steps.replace("=12", "=13")),  # differ late
        pair(2, steps, "So 3 cats have 3*4=12 legs.\nThe answer is 12."),  # a step left out
        pair(3, "Twelve.", "Twelve legs, since each of the 3 cats has four."),  # one extends
        pair(4, "No.", "Yes, certainly.", ({"role": "user", "content": "Hi"},
                                           {"role": "assistant", "content": "Hello!"},
                                           {"role": "user", "content": "Is 7 even?"})),
    ]
    encoded, _ = encode_pairs(tokenizer, pairs, 128)
    assert len(encoded) == 4
    first_scored = next(t for t, y in enumerate(encoded[1].chosen.labels) if y != -100)
    assert shared_prefix(encoded[0]) > shared_prefix(encoded[1]) >= first_scored
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.05)
    with torch.no_grad():
        packed = pair_logps(model, pair_batch(model, encoded, tokenizer.pad_token_id, "cpu"))
        apart = sequence_logps(model, collate_pairs(encoded, tokenizer.pad_token_id))
    assert packed.tolist() == pytest.approx(apart.tolist(), abs=2e-3)
    assert packed[0] - packed[4] != pytest.approx(0, abs=0.1), "the sides differ"


def test_the_sft_weight_adds_the_chosen_sides_mean_negative_log_likelihood():
    import torch

    from training.dpo import dpo_loss

    chosen, rejected = torch.tensor([-10.0, -30.0]), torch.tensor([-12.0, -25.0])
    ref_c, ref_r = torch.tensor([-11.0, -29.0]), torch.tensor([-11.0, -26.0])
    plain, reward_c, reward_r = dpo_loss(chosen, rejected, ref_c, ref_r, 0.5)
    margins = 0.5 * ((chosen - ref_c) - (rejected - ref_r))
    assert plain.item() == pytest.approx(-torch.nn.functional.logsigmoid(margins).mean().item())
    with_sft, _, _ = dpo_loss(chosen, rejected, ref_c, ref_r, 0.5, 2.0, torch.tensor([4, 16]))
    assert with_sft.item() == pytest.approx(plain.item() + 2.0 * 40 / 20)
    assert reward_c.tolist() == [0.5, -0.5] and reward_r.tolist() == [-0.5, 0.5]


# --- runs -----------------------------------------------------------------------------------

def test_dpo_run_checkpoints_without_pickle_resumes_and_is_scored(dpo_store):
    from training.preference_eval import evaluate_preferences

    run = launch(dpo_store, ADMIN, TrainConfig(**TINY_DPO, checkpoint_every_steps=1,
                                               keep_checkpoints=1))
    assert len(snapshot_pairs(dpo_store, run.manifest.snapshot_id)) == 6
    assert run.manifest.extra["pairs"] == 6 and (run.dir / "pairs.jsonl").is_file()
    first = _wait_for(lambda: checkpoint_dirs(run.dir), what="the first checkpoint")[0]
    os.killpg(run.pid, signal.SIGKILL)
    _wait_for(lambda: read_run(run.dir).state == "interrupted", timeout=10,
              what="the run to read as interrupted")
    saved = int(checkpoint_dirs(run.dir)[-1].name[5:])
    assert saved >= int(first.name[5:]) >= 1
    state = load_training_state(checkpoint_dirs(run.dir)[-1])  # safetensors + JSON only
    assert state["optimizer"]["state"], "the optimizer's moments are in the checkpoint"

    resume(dpo_store, ADMIN, run.id)
    done = wait(run.dir, timeout=RUN_TIMEOUT)
    assert done.state == "completed", done.status.reason
    assert done.status.resumed_from_step == saved
    assert done.status.data["pairs"] == 6, "trained on the train pairs, not the eval ones"
    assert [m["step"] for m in done.metrics] == [1, 2, 3]
    assert all({"reward_accuracy", "reward_margin"} <= m.keys() for m in done.metrics)
    assert done.metrics[0]["loss"] == pytest.approx(0.6931, abs=1e-3), \
        "DPO starts at -log(1/2): the tuned model is the reference"
    assert f"resuming from step-{saved}" in (run.dir / "trainer.log").read_text()
    assert not list(run.dir.rglob("*.pt")) and not list(run.dir.rglob("*.bin")) and \
        not list(run.dir.rglob("*.pth"))
    assert (done.adapter_dir / "adapter_model.safetensors").is_file()

    result = evaluate_preferences(run.dir, _pairs(4, "eval", start=10))
    assert set(result["systems"]) == {"base", "tuned"} and result["pairs"] == 4
    assert result["reference"] == "base" and result["aggregate"] == "sum"
    tuned = [e["tuned"] for e in result["examples"]]
    assert tuned != [e["base"] for e in result["examples"]], "the adapter changes the model"
    assert result["systems"]["tuned"]["accuracy"] == sum(m > 0 for m in tuned) / 4


def test_evaluation_of_a_dpo_run_adds_pairwise_accuracy(dpo_store, capsys, open_page):  # noqa: F811
    from curate.cli import _show_eval
    from training.config import EvalConfig
    from training.evaluate import start_eval, wait_eval
    from training.run_folder import read_eval, read_json

    run = launch(dpo_store, ADMIN, TrainConfig(**TINY_DPO, checkpoint_every_steps=0))
    done = wait(run.dir, timeout=RUN_TIMEOUT)
    assert done.state == "completed", done.status.reason
    dpo_store.add(chat("What is 7 plus 7?", "7 plus 7 is 14."), actor="t", split="eval")
    start_eval(dpo_store, ADMIN, run.dir, EvalConfig(shots=0, max_new_tokens=4))
    assert len(read_json(run.dir / "eval_request.json")["pairs"]) == 2
    job = wait_eval(run.dir, timeout=RUN_TIMEOUT)
    assert job.state == "completed", job.status.reason
    result = read_eval(run.dir)
    assert result.systems["fine_tuned"], "the usual metrics are still there"
    p = result.preference
    assert p["pairs"] == 2 and set(p["systems"]) == {"base", "tuned"}
    eval_pairs = [e.id for e in dpo_store.find(ExampleFilter(split=("eval",)))
                  if e.kind == "preference"]
    assert [e["id"] for e in p["examples"]] == eval_pairs and len(eval_pairs) == 2
    summary = result.summary()["preference"]
    assert "examples" not in summary and summary["gain_points"] == p["gain_points"]
    _show_eval(result)
    assert "pairwise preference accuracy on 2 eval pairs" in capsys.readouterr().out

    at = open_page(dpo_store, "evaluation")  # the Evaluation page shows it too
    [table] = [d.value for d in at.dataframe if "Accuracy (points)" in d.value.columns]
    assert list(table.index) == ["Base model", "DPO-tuned"]
    assert table["Accuracy (points)"].tolist() == [
        100 * p["systems"][s]["accuracy"] for s in ("base", "tuned")]
    assert any("2 held-out preference pairs" in c.value.replace("\\", "")
               for c in at.caption)


def test_dpo_starts_from_an_sft_run_and_is_scored_against_it(dpo_store):
    from training.preference_eval import evaluate_preferences

    sft = launch(dpo_store, ADMIN, TrainConfig(**{**TINY_DPO, "method": "sft"},
                                               checkpoint_every_steps=0))
    assert wait(sft.dir, timeout=RUN_TIMEOUT).state == "completed"
    with pytest.raises(InvalidValue, match="same base model"):
        launch(dpo_store, ADMIN, TrainConfig(**TINY_DPO, sft_run=sft.id,
                                             base_model=str(sft.dir)))
    run = launch(dpo_store, ADMIN, TrainConfig(**TINY_DPO, sft_run=sft.id,
                                               checkpoint_every_steps=0))
    assert run.manifest.extra["sft_run"] == sft.id
    done = wait(run.dir, timeout=RUN_TIMEOUT)
    assert done.state == "completed", done.status.reason
    assert done.metrics[0]["loss"] == pytest.approx(0.6931, abs=1e-3), \
        "the merged SFT model is the reference as well as the start"
    with pytest.raises(InvalidValue, match="choose a completed SFT run"):
        launch(dpo_store, ADMIN, TrainConfig(**TINY_DPO, sft_run=run.id))

    result = evaluate_preferences(run.dir, _pairs(3, "eval", start=20))
    assert list(result["systems"]) == ["base", "sft", "tuned"] and result["reference"] == "sft"
    sft_margins = [e["sft"] for e in result["examples"]]
    assert sft_margins != [e["base"] for e in result["examples"]], "the SFT adapter is merged"
    assert sft_margins != [e["tuned"] for e in result["examples"]]


def test_dpo_run_is_cancellable(dpo_store):
    run = launch(dpo_store, ADMIN, TrainConfig(**TINY_DPO))
    _wait_for(lambda: read_run(run.dir).status.state == "running", what="the trainer")
    cancelled = cancel(ADMIN, run.dir, timeout=20)
    assert cancelled.state == "cancelled" and not cancelled.active
    assert "cancelled (SIGTERM)" in (run.dir / "trainer.log").read_text()
    assert not (run.dir / "adapter").exists()


def test_dpo_needs_train_pairs_and_a_completed_sft_run_to_start_from(dpo_store, file_store,
                                                                      tmp_path):
    from curation.errors import EmptyTrainingSet, RunNotFound

    with pytest.raises(RunNotFound):
        launch(dpo_store, ADMIN, TrainConfig(**TINY_DPO, sft_run="run-nope"))
    sft_only = file_store("sft-only.duckdb")  # plain chats and eval pairs: no train pairs
    for i in range(4):
        sft_only.add(chat(f"q{i}", f"a{i}"), actor="t", status="accepted")
    _import_pairs(sft_only, _pairs(2, "eval"), tmp_path, "eval")
    with pytest.raises(EmptyTrainingSet, match="no train preference pairs"):
        launch(sft_only, ADMIN, TrainConfig(**TINY_DPO))
    assert list_runs(sft_only.path.parent / "runs") == []


# --- the Training page ----------------------------------------------------------------------


def test_training_form_offers_dpo_with_its_settings_and_sft_runs(open_page, trained):  # noqa: F811
    store, sft_run = trained
    at = open_page(store, "training")
    assert at.selectbox(key="tr_method").value == "sft"
    assert not [w for w in at.number_input if w.key == "tr_beta"], "DPO settings stay hidden"
    at.selectbox(key="tr_method").set_value("dpo").run()
    assert not at.exception, at.exception
    assert at.number_input(key="tr_beta").value == TrainConfig().beta
    assert any("Trains on the preference pairs" in m.value for m in at.markdown)
    assert "reference" in at.number_input(key="tr_beta").help
    assert at.number_input(key="tr_sft_weight").value == 0.0
    assert "RPO" in at.number_input(key="tr_sft_weight").help
    runs = at.selectbox(key="tr_sft_run")
    assert runs.options == ["none (the base model)", sft_run.id]
    at.number_input(key="tr_beta").set_value(0.0).run()
    assert any("beta must be in (0, 10]" in e.value.replace("\\", "") for e in at.error), \
        [e.value for e in at.error]


def test_a_learning_curve_refuses_dpo(file_store, tmp_path):
    from training.curve import start_curve

    with pytest.raises(InvalidValue, match="SFT runs only"):
        start_curve(file_store(), ADMIN, TrainConfig(method="dpo"), runs_dir=tmp_path / "runs")
