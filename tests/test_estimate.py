"""training.estimate: token counts as the trainer encodes, parameter counts from file headers,
measured speeds from run folders, and the time per epoch, on the packaged base model."""

from __future__ import annotations

import math

import orjson
import pytest

from tests.conftest import chat, write_jsonl
from training.config import TrainConfig
from training.data import encode
from training.estimate import (FLOPS_PER_PARAMETER_TOKEN, MatmulRate, count_parameters,
                               epoch_time, matmul_flops, matmul_rates, measured_speed,
                               model_weights, parameter_count, token_lengths)
from training.models import DEFAULT_BASE_MODEL, packaged_gguf
from training.launcher import list_runs

CONVERSATIONS = [
    chat("Hi", "Hello"),
    chat("My invoice shows two charges for March; can you refund one?", "billing",
         system="Answer with the ticket's category."),
    chat("Ça ne marche pas 🙁", "bugs") + [{"role": "user", "content": "Still broken"},
                                          {"role": "assistant", "content": "Escalated."}],
]
OTHER_MODEL = "some/other-model"


@pytest.fixture(scope="module")
def base_model_dir(model_cache):
    from training.models import cached_default_model

    return cached_default_model(model_cache)


def _run_folder(runs_dir, run_id: str, base_model: str, rates: list[float], **config):
    """A completed run folder as the trainer leaves it: manifest, status and metrics."""
    folder = runs_dir / run_id
    folder.mkdir(parents=True)
    settings = {**TrainConfig(base_model=base_model).to_dict(), **config}
    (folder / "manifest.json").write_bytes(orjson.dumps(
        {"run_id": run_id, "base_model": base_model, "config": settings}))
    (folder / "status.json").write_bytes(orjson.dumps(
        {"state": "completed", "device": "cpu", "precision": "fp32"}))
    write_jsonl(folder / "metrics.jsonl",
                [{"step": i + 1, "loss": 1.0, "tokens_per_second": rate}
                 for i, rate in enumerate(rates)])
    return folder


@pytest.fixture
def runs(tmp_path):
    """Three runs, newest first: one without steps, one of another model, one measured with
    a slow first step (warm-up) and batch size 2."""
    runs_dir = tmp_path / "runs"
    _run_folder(runs_dir, "20250101-000000-measured", DEFAULT_BASE_MODEL,
                [900.0, 100.0, 140.0, 120.0], batch_size=2)
    _run_folder(runs_dir, "20250102-000000-other", OTHER_MODEL, [5000.0, 5000.0])
    _run_folder(runs_dir, "20250103-000000-nosteps", DEFAULT_BASE_MODEL, [])
    return list_runs(runs_dir)


# --- tokens ---------------------------------------------------------------------------------

def test_token_lengths_are_the_trainers_encoded_lengths(base_model_dir, model_cache, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    expected = [len(encode(tokenizer, messages, 10 ** 6).input_ids)
                for messages in CONVERSATIONS]
    assert len(set(expected)) == len(CONVERSATIONS)  # the cases are told apart
    assert token_lengths(DEFAULT_BASE_MODEL, CONVERSATIONS, model_cache) == expected
    # a local folder named as the base model counts the same
    assert token_lengths(str(base_model_dir), CONVERSATIONS, tmp_path) == expected
    # before the first conversion, the packaged GGUF's tokenizer counts the same
    assert token_lengths(DEFAULT_BASE_MODEL, CONVERSATIONS, tmp_path / "empty") == expected


# --- parameters -----------------------------------------------------------------------------

def test_parameter_count_from_headers_equals_the_loaded_model(base_model_dir, model_cache,
                                                               tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model_dir)
    loaded = sum(p.numel() for p in model.parameters())
    assert model_weights(DEFAULT_BASE_MODEL, model_cache) == base_model_dir
    assert parameter_count(DEFAULT_BASE_MODEL, model_cache) == loaded
    assert parameter_count(str(base_model_dir), tmp_path) == loaded
    # before the first conversion the packaged GGUF file is counted: the same model
    assert model_weights(DEFAULT_BASE_MODEL, tmp_path) == packaged_gguf()
    assert parameter_count(DEFAULT_BASE_MODEL, tmp_path) == loaded
    # weights that are not here, or a folder without any, are not counted
    assert model_weights(str(tmp_path / "missing"), tmp_path) is None
    assert parameter_count(OTHER_MODEL, tmp_path) is None
    assert count_parameters(tmp_path) is None


# --- speed and time per epoch ---------------------------------------------------------------

def test_measured_speed_is_the_median_after_the_first_step_of_the_latest_run(runs, tmp_path):
    speed = measured_speed(runs, DEFAULT_BASE_MODEL)
    assert speed.run.id == "20250101-000000-measured"  # the newer one has no steps
    assert (speed.tokens_per_second, speed.steps) == (120.0, 3)  # 900 (warm-up) left out
    assert measured_speed(runs, OTHER_MODEL).tokens_per_second == 5000.0
    assert measured_speed(runs, "never-trained") is None
    # a run of one step is measured by that step
    _run_folder(tmp_path / "single", "20250104-000000-one", DEFAULT_BASE_MODEL, [300.0])
    speed = measured_speed(list_runs(tmp_path / "single"), DEFAULT_BASE_MODEL)
    assert (speed.tokens_per_second, speed.steps) == (300.0, 1)


def test_epoch_time_is_measured_where_a_run_measured_it(runs, tmp_path):
    def unused(*_):
        pytest.fail("the lower bound was computed although a run measured the speed")

    config = TrainConfig(batch_size=8)
    estimate = epoch_time(config, 1200, runs, tmp_path, parameters=unused,
                          flops_per_second=unused)
    assert estimate.measured and estimate.speed.run.id == "20250101-000000-measured"
    assert estimate.seconds == 1200 / 120.0 and estimate.tokens == 1200
    assert estimate.differ == ("batch_size",)  # that run trained in batches of 2
    assert estimate.parameters is None and estimate.flops_per_second is None
    double = epoch_time(config, 2400, runs, tmp_path, parameters=unused,
                        flops_per_second=unused)
    assert double.seconds == 2 * estimate.seconds
    same = epoch_time(TrainConfig(batch_size=2), 1200, runs, tmp_path, parameters=unused,
                      flops_per_second=unused)
    assert same.differ == ()


def test_epoch_time_is_a_flops_lower_bound_without_a_run(base_model_dir, model_cache):
    rate = matmul_flops()
    assert math.isfinite(rate) and rate > 1e6
    params = parameter_count(DEFAULT_BASE_MODEL, model_cache)
    config = TrainConfig(precision="fp32")
    asked = []

    def rate_for(precision: str) -> float:
        asked.append(precision)
        return rate

    estimate = epoch_time(config, 1000, [], model_cache, flops_per_second=rate_for)
    assert asked == ["fp32"]  # the rate of the precision the run will train in
    assert not estimate.measured and estimate.speed is None
    assert (estimate.parameters, estimate.flops_per_second) == (params, rate)
    assert estimate.seconds == pytest.approx(FLOPS_PER_PARAMETER_TOKEN * params * 1000 / rate)
    double = epoch_time(config, 2000, [], model_cache, flops_per_second=rate_for)
    assert double.seconds == pytest.approx(2 * estimate.seconds)
    # a model whose weights are not on this machine cannot be sized: no estimate
    assert epoch_time(TrainConfig(base_model=OTHER_MODEL), 1000, [], model_cache) is None


def test_matmul_rate_is_measured_on_this_machine_in_several_samples():
    rates = matmul_rates("fp32", samples=3)
    assert len(rates) == 3 and all(math.isfinite(r) and r > 1e6 for r in rates)


def test_matmul_rate_is_the_best_sample_and_is_measured_again_when_stale():
    """One slow sample (other work on the machine) must not make the bound: the best of the
    samples counts, a stale rate is measured again, and a slower new measurement does not
    lower the best the machine has shown. The timings here are scripted (the machine's load
    is not what is tested); the real measurement is tested above."""
    now = [1000.0]
    script = {"auto": [[2e9, 9e9, 1e9], [20e9, 3e9], [5e9]], "fp32": [[4e9]]}
    calls = []

    def measure(precision: str, samples: int) -> list[float]:
        calls.append((precision, samples))
        return script[precision].pop(0)

    rate = MatmulRate(max_age=300, samples=3, measure=measure, clock=lambda: now[0])
    assert rate("auto") == 9e9 and calls == [("auto", 3)]
    now[0] += 299
    assert rate("auto") == 9e9 and len(calls) == 1  # fresh: not measured again
    now[0] += 2
    assert rate("auto") == 20e9 and len(calls) == 2  # stale: measured again
    now[0] += 301
    assert rate("auto") == 20e9 and len(calls) == 3  # a busy moment lowers nothing
    assert rate("fp32") == 4e9 and calls[-1] == ("fp32", 3)  # each precision its own
