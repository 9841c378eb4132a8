"""The run folder's typed records: what older Curate versions wrote still reads, what this one
writes round-trips byte for byte, and the evaluation settings validate like TrainConfig's."""

from __future__ import annotations

import math

import orjson
import pytest

from curation.errors import InvalidValue
from training.config import EvalConfig, TrainConfig, default, help_text
from training.launcher import read_run, record_runs
from training.run_folder import (EVAL_FILE, EVAL_STATUS, MANIFEST, STATUS, EvalResult,
                                 EvalStatus, RunManifest, RunStatus, read_eval, write_json)

# What `launch` writes today, in its key order.
MANIFEST_NOW = {
    "run_id": "run-20250101-000000-abcd", "snapshot_id": "snap-1", "snapshot_hash": "h" * 64,
    "snapshot_name": None, "filters": {"status": ["accepted"], "split": ["train"]},
    "examples": 6, "train_file_sha256": "f" * 64, "base_model": "SmolLM2-135M-Instruct",
    "config": TrainConfig(r=4).to_dict(), "model_cache": "/models", "created_by": "ada",
    "created_at": "2025-01-01T00:00:00.000000Z",
    "leakage": {"pairs": [{"eval_id": 7, "train_id": 2, "method": "exact", "similarity": 1.0}],
                "overridden_by": "ada"}}
# An early manifest: no snapshot name, filters, file digest, cache or leakage record, and
# target modules comma-separated in one string.
MANIFEST_OLD = {"run_id": "run-20240101-000000-0001", "snapshot_id": "snap-0",
                "snapshot_hash": "0" * 64, "examples": 3, "base_model": "SmolLM2-135M-Instruct",
                "config": {**TrainConfig().to_dict(), "target_modules": "q_proj, v_proj"},
                "created_by": "ada", "created_at": "2024-01-01T00:00:00.000000Z"}


def test_a_manifest_round_trips_byte_for_byte():
    manifest = RunManifest.from_json(MANIFEST_NOW)
    assert manifest.leaked_pairs[0]["eval_id"] == 7 and manifest.leakage_overridden_by == "ada"
    assert orjson.dumps(manifest.to_json()) == orjson.dumps(MANIFEST_NOW)
    assert RunManifest.from_json(manifest.to_json()) == manifest


def test_keys_from_a_newer_version_are_kept_not_dropped():
    newer = {**MANIFEST_NOW, "tokenizer_sha256": "t" * 64}
    manifest = RunManifest.from_json(newer)
    assert manifest.extra == {"tokenizer_sha256": "t" * 64}
    assert manifest.to_json() == newer


def test_an_old_run_folder_still_reads(tmp_path):
    run_dir = tmp_path / "runs" / MANIFEST_OLD["run_id"]
    run_dir.mkdir(parents=True)
    write_json(run_dir / MANIFEST, MANIFEST_OLD)
    # an old status: final still null from the start, no device or data report
    write_json(run_dir / STATUS, {"state": "completed", "pid": None, "final": None,
                                  "ended_at": "2024-01-01T00:10:00.000000Z"})
    run = read_run(run_dir)
    assert run.id == MANIFEST_OLD["run_id"] and run.state == "completed"
    assert run.manifest.leaked_pairs == [] and run.manifest.leakage_overridden_by is None
    assert run.manifest.model_cache is None and run.manifest.snapshot_name is None
    assert run.status.final_loss is None and run.status.device is None
    assert run.to_dict()["final"] is None and run.to_dict()["config"] == MANIFEST_OLD["config"]
    config = TrainConfig.from_dict(run.manifest.config)
    assert config.target_modules == ["q_proj", "v_proj"]
    assert config.target_modules_list() == ["q_proj", "v_proj"]  # what PEFT is given


def test_a_status_with_nulls_reads_as_empty_containers():
    status = RunStatus.from_json({"state": "running", "final": None, "data": None,
                                  "reason": None})
    assert status.final == {} and status.data == {} and status.final_loss is None
    done = RunStatus.from_json({"state": "completed", "final": {"loss": 0.5}, "device": "cpu"})
    assert done.final_loss == 0.5 and done.device == "cpu"
    assert RunStatus.from_json(done.to_json()) == done


def test_an_eval_status_counts_nulls_as_nothing_done():
    status = EvalStatus.from_json({"state": "queued", "done": None, "total": 9})
    assert (status.done, status.total, status.eta_seconds) == (0, 9, None)
    assert EvalStatus.from_json(status.to_json()) == status


def _result(**changes) -> dict:
    metrics = {"primary": 0.5, "accuracy": 0.5, "token_f1": 0.5, "rouge_l": 0.5}
    return {"run_id": "run-x", "created_at": "2025-01-01T00:00:00.000000Z",
            "primary_metric": "accuracy",
            "systems": {s: metrics for s in ("zero_shot", "few_shot", "fine_tuned")},
            "baseline": {"system": "zero_shot", **metrics},
            "comparison": {"a": "fine_tuned", "b": "zero_shot", "mean_diff": 0.0},
            "verdict": {"decision": "don't deploy", "margin_points": 5.0},
            "outcomes": {"win": 0, "loss": 0, "tie": 2},
            "settings": {"shots": 3, "eval_examples": 2}, "wall_seconds": 1.5,
            "wall_seconds_by_system": {"zero_shot": 0.5}, "examples": [], **changes}


def test_an_eval_json_round_trips_and_an_older_one_reads(tmp_path):
    now = _result()
    write_json(tmp_path / EVAL_FILE, now)
    stored = read_eval(tmp_path)
    assert isinstance(stored, EvalResult) and stored.verdict["decision"] == "don't deploy"
    assert orjson.dumps(stored.to_json()) == orjson.dumps(now)
    assert stored.summary()["outcomes"] == {"win": 0, "loss": 0, "tie": 2}

    old = {k: v for k, v in now.items()
           if k not in ("comparison", "outcomes", "wall_seconds_by_system")}
    write_json(tmp_path / EVAL_FILE, old)
    stored = read_eval(tmp_path)
    assert stored.outcomes == {} and stored.wall_seconds_by_system == {}
    assert stored.summary()["outcomes"] is None and stored.summary()["comparison"] is None
    assert read_eval(tmp_path / "nowhere") is None


CONTAMINATION = {"rule": "no exact or near copy", "examples": 2, "clean_examples": 1,
                 "copies": [{"id": 7, "train_id": 3, "method": "exact", "similarity": 1.0}],
                 "primary": {s: {"all": 0.5, "clean": 1.0}
                             for s in ("zero_shot", "few_shot", "fine_tuned")}}


def test_an_eval_json_without_the_clean_subset_still_reads_and_shows(seeded_store):
    """eval.json written before the "no train copy" figure reads with an empty
    `contamination`, is written back byte for byte, and `curate eval` shows it without the
    side-by-side line; a new one carries and shows it."""
    from click.testing import CliRunner

    from curate.cli import main

    runs_dir = seeded_store.path.parent / "runs"
    run_dir = runs_dir / MANIFEST_NOW["run_id"]
    run_dir.mkdir(parents=True)
    write_json(run_dir / MANIFEST, MANIFEST_NOW)
    verdict = {"decision": "don't deploy", "margin_points": 5.0, "reason": "no better"}
    old = _result(run_id=MANIFEST_NOW["run_id"], verdict=verdict)
    write_json(run_dir / EVAL_FILE, old)
    stored = read_eval(run_dir)
    assert stored.contamination == {} and "contamination" not in stored.extra
    assert orjson.dumps(stored.to_json()) == orjson.dumps(old)
    assert stored.summary()["contamination"] is None

    def show(*flags):
        out = CliRunner().invoke(main, ["eval", MANIFEST_NOW["run_id"], *flags,
                                        "--db", str(seeded_store.path)])
        assert out.exit_code == 0, out.output
        return out.stdout

    assert orjson.loads(show("--json"))["contamination"] is None
    assert "no train copy" not in show()

    write_json(run_dir / EVAL_FILE, _result(run_id=MANIFEST_NOW["run_id"], verdict=verdict,
                                            contamination=CONTAMINATION))
    stored = read_eval(run_dir)
    assert stored.contamination == CONTAMINATION
    assert list(stored.to_json())[-1] == "contamination"
    assert orjson.loads(show("--json"))["contamination"] == CONTAMINATION
    text = show()
    assert "accuracy, whole eval split (2) -> no train copy (1): zero_shot 50.0 -> 100.0" in text
    assert "1 eval example(s) have one" in text


def test_record_runs_reads_the_typed_records_into_the_store(seeded_store):
    runs_dir = seeded_store.path.parent / "runs"
    run_dir = runs_dir / MANIFEST_NOW["run_id"]
    run_dir.mkdir(parents=True)
    write_json(run_dir / MANIFEST, MANIFEST_NOW)
    write_json(run_dir / STATUS, {"state": "completed", "ended_at": "2025-01-01T00:05:00Z"})
    write_json(run_dir / EVAL_FILE, _result(run_id=MANIFEST_NOW["run_id"]))
    record_runs(seeded_store, runs_dir)
    [row] = seeded_store.recorded_runs()
    assert (row["id"], row["snapshot_id"], row["state"]) == (MANIFEST_NOW["run_id"], "snap-1",
                                                             "completed")
    assert row["config"] == MANIFEST_NOW["config"] and row["leakage_overridden_by"] == "ada"
    assert row["evaluation"]["verdict"]["decision"] == "don't deploy"


def test_an_eval_status_file_is_read_by_the_job(tmp_path):
    from training.evaluate import read_eval_job

    write_json(tmp_path / EVAL_STATUS, {"run_id": "run-x", "state": "completed", "done": 9,
                                        "total": 9, "requested_by": "ada",
                                        "settings": EvalConfig().to_dict()})
    job = read_eval_job(tmp_path)
    assert job.state == "completed" and not job.active and (job.done, job.total) == (9, 9)
    assert job.status.requested_by == "ada" and job.to_dict()["settings"]["shots"] == 3


# --- EvalConfig ------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("shots", -1), ("shots", 1.5), ("max_new_tokens", 0), ("batch_size", 0), ("seed", -1),
    ("margin_points", math.nan), ("margin_points", "5"), ("system_prompt", 3),
])
def test_eval_config_validation_names_the_field(field, value):
    with pytest.raises(InvalidValue) as err:
        EvalConfig(**{field: value})
    assert str(err.value).startswith(field)


def test_eval_config_round_trips_as_the_request_settings_and_refuses_unknown_keys():
    config = EvalConfig(system_prompt="", shots=0, max_new_tokens=4, margin_points=-2.5)
    assert list(config.to_dict()) == ["system_prompt", "shots", "max_new_tokens",
                                      "margin_points", "batch_size", "seed"]
    assert EvalConfig.from_dict(config.to_dict()) == config
    assert EvalConfig.from_dict({}) == EvalConfig()  # an older request's missing settings
    with pytest.raises(InvalidValue, match="'margin'"):
        EvalConfig.from_dict({"margin": 3})


def test_the_cli_takes_eval_help_and_defaults_from_eval_config():
    from click.testing import CliRunner

    from curate.cli import main

    out = CliRunner(env={"COLUMNS": "300"}).invoke(main, ["eval", "--help"]).output
    flat = " ".join(out.split())
    for field in ("shots", "max_new_tokens", "margin_points"):
        assert " ".join(help_text(field, EvalConfig).split()) in flat
    assert f"[default: {default('shots', EvalConfig)}]" in flat


@pytest.mark.parametrize("value", [" , ", [], ["q_proj", ""], ["q_proj", 3], 5, "q,,v"])
def test_target_modules_must_be_all_linear_or_module_names(value):
    with pytest.raises(InvalidValue, match="^target_modules"):
        TrainConfig(target_modules=value)


def test_target_modules_take_a_list_as_peft_does():
    assert TrainConfig().target_modules == "all-linear"
    config = TrainConfig(target_modules=["q_proj", "v_proj"])
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig(target_modules="q_proj,v_proj") == config  # an older manifest's string
