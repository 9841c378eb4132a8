"""Learning curve: nested stratified subsets and the advice (pure), one real tiny curve end to
end through the CLI (three tiny runs on 8 examples, each evaluated), and `--show --json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import orjson
import pytest

from curation.errors import CurveNotFound, InvalidValue
from tests.test_training import TINY_FLAGS, _cli_env
from training.curve import (STALE_SECONDS, THRESHOLD_POINTS, advice, list_curves,
                            nested_subsets, read_curve)
from training.launcher import list_runs
from training.run_folder import TRAIN_FILE

# --- pure -------------------------------------------------------------------------------------

def test_subsets_are_nested_stratified_and_seeded():
    rows = [(i, "a") for i in range(40)] + [(100 + i, "b") for i in range(8)] + \
        [(200, "c"), (300, None), (301, None)]
    subsets = nested_subsets(rows, (0.25, 0.5, 1.0), seed=7)
    quarter, half, full = (set(subsets[f]) for f in (0.25, 0.5, 1.0))
    assert quarter < half < full == {i for i, _ in rows}
    labels = dict(rows)

    def count(ids, label):
        return sum(labels[i] == label for i in ids)

    assert [count(quarter, lab) for lab in ("a", "b", "c", None)] == [10, 2, 1, 1]
    assert [count(half, lab) for lab in ("a", "b", "c", None)] == [20, 4, 1, 1]
    # a fixed seeded order, not the first ids: the same for the same seed, other for another
    assert subsets == nested_subsets(list(reversed(rows)), (1.0, 0.5, 0.25), seed=7)
    assert subsets[0.25] != nested_subsets(rows, (0.25,), seed=8)[0.25]
    assert set(subsets[0.25]) != {i for i in range(10)} | {100, 101, 200, 300}
    with pytest.raises(InvalidValue, match="fractions"):
        nested_subsets(rows, (0.0, 1.0))


def test_advice_reads_the_last_doubling_against_the_threshold():
    grows = [{"examples": 25, "score": 40.0}, {"examples": 50, "score": 60.0},
             {"examples": 100, "score": 70.0}]
    assert advice(grows).startswith("More data is likely to help")
    assert "from 50 to 100 examples" in advice(grows) and "+10.0 points" in advice(grows)
    flat = grows[:2] + [{"examples": 100, "score": 60.0 + THRESHOLD_POINTS - 0.1}]
    assert advice(flat).startswith("More data of the same kind is unlikely")
    assert "cleaner data" in advice(flat)
    exactly = grows[:2] + [{"examples": 100, "score": 60.0 + THRESHOLD_POINTS}]
    assert advice(exactly).startswith("More data is likely to help")
    assert advice(grows, threshold=15).startswith("More data of the same kind")
    assert advice(grows[:1] + [{"examples": 50, "score": None}]).startswith("Not enough")


# --- a real tiny curve, through the CLI ------------------------------------------------------

@pytest.fixture(scope="module")
def curve_workspace(tmp_path_factory, model_cache):
    """A workspace with 8 accepted train examples in two labels and two eval examples, and
    one tiny learning curve made by `curate curve`."""
    from curation import Store
    from tests.conftest import chat
    from training.models import cached_default_model

    cached_default_model(model_cache)
    folder = tmp_path_factory.mktemp("curve")
    with Store(folder / "ws" / "curate.duckdb") as store:
        for i in range(8):
            label = "add" if i % 2 else "double"
            store.add(chat(f"Question {i}: what is {i} {label}?", label), actor="t",
                      label=label, status="accepted", split="train")
        store.add(chat("What is 9 add?", "add"), actor="t", label="add", status="accepted",
                  split="eval")
        store.add(chat("What is 9 double?", "double"), actor="t", label="double",
                  status="accepted", split="eval")
    result = subprocess.run([sys.executable, "-m", "curate", "curve", "--db",
                             "ws/curate.duckdb", *TINY_FLAGS], cwd=folder,
                            env=_cli_env(model_cache), capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, result.stderr + result.stdout
    return folder, result.stdout


def test_curve_trains_nested_runs_on_one_snapshot_and_gives_advice(curve_workspace):
    folder, output = curve_workspace
    runs_dir = folder / "ws" / "runs"
    [curve] = list_curves(runs_dir)
    assert curve.state == "completed" and curve.reason is None
    assert [p["examples"] for p in curve.points] == [2, 4, 8]
    assert all(p["state"] == "completed" and p["score"] is not None for p in curve.points)
    ids = [set(p["example_ids"]) for p in curve.points]
    assert ids[0] < ids[1] < ids[2]
    runs = {r.id: r for r in list_runs(runs_dir)}
    assert len(runs) == 3
    for point in curve.points:
        run = runs[point["run_id"]]
        assert run.state == "completed"
        assert run.manifest.snapshot_id == curve.snapshot_id  # one snapshot for all
        assert run.manifest.extra["curve"] == {"id": curve.id, "fraction": point["fraction"]}
        assert run.manifest.examples == point["examples"]
        trained = {orjson.loads(line)["curate"]["curate_id"]
                   for line in (run.dir / TRAIN_FILE).read_bytes().splitlines()}
        assert trained == set(point["example_ids"])
        assert (run.dir / "eval.json").is_file()
    assert curve.advice in output
    assert "100%" in output and "8 examples" in output


def test_curve_show_json_prints_the_points_and_the_advice(curve_workspace, model_cache):
    folder, _ = curve_workspace
    result = subprocess.run([sys.executable, "-m", "curate", "curve", "--show", "--json",
                             "--db", "ws/curate.duckdb"], cwd=folder,
                            env=_cli_env(model_cache), capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    curve = read_curve(folder / "ws" / "runs")
    assert document["id"] == curve.id and document["advice"] == curve.advice
    assert [p["examples"] for p in document["points"]] == [2, 4, 8]
    assert all("example_ids" not in p for p in document["points"])


def test_show_without_a_curve_says_how_to_make_one(tmp_path, model_cache):
    from curation import Store

    Store(tmp_path / "ws" / "curate.duckdb").close()
    with pytest.raises(CurveNotFound):
        read_curve(tmp_path / "ws" / "runs")
    result = subprocess.run([sys.executable, "-m", "curate", "curve", "--show", "--db",
                             "ws/curate.duckdb"], cwd=tmp_path, env=_cli_env(model_cache),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "no learning curve yet: `curate curve` trains one" in result.stderr


def test_a_refused_launch_fails_the_curve_with_its_reason(file_store, model_cache, monkeypatch):
    """An eval example copying a train example: the first launch is refused before anything
    trains, and curve.json says why."""
    from curation.auth import User
    from curation.errors import LeakageUnresolved
    from tests.conftest import chat
    from training.config import TrainConfig
    from training.curve import run_curve

    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    store = file_store()
    for i in range(4):
        store.add(chat(f"Question {i} about cards", "cards"), actor="t", label="cards",
                  status="accepted", split="train")
    store.add(chat("Question 0 about cards", "cards"), actor="t", label="cards",
              status="accepted", split="eval")
    runs_dir = store.path.parent / "runs"
    with pytest.raises(LeakageUnresolved):
        run_curve(store, User("ada", "admin"), TrainConfig(), runs_dir=runs_dir)
    curve = read_curve(runs_dir)
    assert curve.state == "failed" and "duplicate train examples" in curve.reason
    assert [p["state"] for p in curve.points] == ["waiting"] * 3
    assert list_runs(runs_dir) == []


def test_a_curve_whose_driver_is_gone_reads_as_interrupted(tmp_path):
    from training.curve import CURVE_FILE
    from training.run_folder import write_json

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    for name, pid, beat in (("curve-1-dead", dead.pid, now), ("curve-2-live", os.getpid(), now),
                            ("curve-3-silent", os.getpid(), now - STALE_SECONDS - 1)):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / CURVE_FILE, {"id": name, "state": "running", "pid": pid,
                                                  "heartbeat": beat})
    states = {c.id: c.state for c in list_curves(tmp_path)}
    # a dead driver, and a live process whose driver thread stopped beating
    assert states == {"curve-1-dead": "interrupted", "curve-2-live": "running",
                      "curve-3-silent": "interrupted"}
