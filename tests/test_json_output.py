"""Every `--json` command, run as a user runs it (a subprocess from another folder), prints one
parseable JSON document on stdout and nothing else, on a workspace holding every shape the
store can hold: labelled and unlabelled, train and eval, accepted and deleted examples,
snapshots and a completed training run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import click
import pytest

from curation import Store, import_file
from curation.auth import User
from curate.cli import main
from curation.review import bulk
from tests.conftest import admin, chat, write_jsonl
from tests.test_training import TINY_FLAGS

ADMIN = User("ada", "admin")


def _json_commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[tuple]:
    """Every command of the CLI that has a --json option, as its words."""
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _json_commands(command, (*prefix, name))
        elif any("--json" in p.opts for p in command.params):
            found.append((*prefix, name))
    return found


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, model_cache):
    """A workspace with every shape of example, one snapshot and one completed tiny run."""
    folder = tmp_path_factory.mktemp("json")
    records = [{"messages": chat(f"How do I reset password {i}?", f"Use the link {i}."),
                "label": label}
               for i, label in enumerate(["access", "billing", None, "access", "billing",
                                          None, "access", "billing"])]
    with Store(folder / "ws" / "curate.duckdb") as store:
        import_file(store, write_jsonl(folder / "train.jsonl", records), user=admin("t"),
                    status="accepted")
        import_file(store, write_jsonl(folder / "eval.jsonl", [
            {"messages": chat("Where is my card?", "On its way."), "label": "cards"},
            {"messages": chat("Unlabelled eval question", "An answer.")}]),
            user=admin("t"), split="eval", status="accepted")
        first = store.find()[0]
        bulk(store, ADMIN, [first.id], "delete")
    env = {**os.environ, "CURATE_MODEL_CACHE": str(model_cache)}
    run = subprocess.run([sys.executable, "-m", "curate", "train", "--db",
                          "ws/curate.duckdb", "--no-eval", *TINY_FLAGS],
                         cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return folder


# run on a copy, so the others see the workspace unchanged
CHANGES_THE_STORE = {("import",), ("predict",), ("route",)}

ARGUMENTS = {  # the arguments each --json command needs beyond --db and --json
    ("import",): lambda ws: [str(write_jsonl(ws / "more.jsonl", [
        {"messages": chat("one more", "yes")}, "{broken"]))],
    ("export",): lambda ws: [str(ws / "out.jsonl"), "--status", "accepted"],
    ("eval",): lambda ws: [_only_run(ws)],
    ("compare",): lambda ws: [_only_run(ws), _only_run(ws)],
    ("failures",): lambda ws: [],  # RUN is optional: the latest evaluated run
    ("predict",): lambda ws: [_only_run(ws), "--status", "accepted"],  # no run is evaluated
    ("route",): lambda ws: [_only_run(ws)],  # no run is evaluated: name it
    ("backup",): lambda ws: [str(ws / "copy.duckdb")],
    ("check",): lambda ws: ["special_tokens"],
    ("curve",): lambda ws: ["--show", "--id", _curve(ws)],  # a prepared one: no training
    ("overlap",): lambda ws: [],  # N is optional: show the setting
    ("edit-pairs",): lambda ws: [],  # on|off is optional: show the setting
}


def _curve(ws) -> str:
    """A learning curve folder made of the one run (as `curate curve` writes it)."""
    from training.curve import CURVE_FILE
    from training.run_folder import write_json

    folder = ws / "ws" / "runs" / "curve-20990101-000000-json"
    folder.mkdir(exist_ok=True)
    points = [{"fraction": f, "examples": n, "example_ids": list(range(n)),
               "run_id": _only_run(ws), "state": "completed", "metric": "token_f1",
               "score": score} for f, n, score in ((0.5, 3, 40.0), (1.0, 7, 55.0))]
    write_json(folder / CURVE_FILE, {"id": folder.name, "state": "completed", "seed": 0,
                                     "fractions": [0.5, 1.0], "points": points})
    return folder.name


def _only_run(ws) -> str:
    (run_dir,) = (ws / "ws" / "runs").glob("run-*")
    return run_dir.name


def test_every_json_command_is_exercised():
    """A new --json command must be added here (with its arguments, if it needs any)."""
    commands = set(_json_commands())
    assert {("stats",), ("snapshots",), ("noise",), ("runs",), ("eval",)} <= commands
    needs_arguments = {c for c in commands
                       if any(isinstance(p, click.Argument) for p in _command(c).params)}
    assert needs_arguments <= set(ARGUMENTS), needs_arguments - set(ARGUMENTS)


def _command(words: tuple[str, ...]) -> click.Command:
    command = main
    for word in words:
        command = command.commands[word]
    return command


@pytest.mark.parametrize("words", _json_commands(), ids=" ".join)
def test_json_output_is_one_document_and_nothing_else(workspace, words, model_cache, tmp_path):
    if words in CHANGES_THE_STORE:
        workspace = shutil.copytree(workspace, tmp_path / "copy")
    extra = ARGUMENTS.get(words, lambda ws: [])(workspace)
    env = {**os.environ, "CURATE_MODEL_CACHE": str(model_cache)}
    result = subprocess.run([sys.executable, "-m", "curate", *words, *extra, "--db",
                             "ws/curate.duckdb", "--json"], cwd=workspace, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # raises on anything but exactly one document
    assert document is not None
    if words == ("compare",):  # a run against itself: its snapshot unchanged, scores equal
        assert document["data"]["totals"]["unchanged"] == 7  # the accepted train examples left
        assert all(row["score_change"] in (None, 0) for row in document["per_label"])
    if words == ("curve",):
        assert [p["score"] for p in document["points"]] == [40.0, 55.0]
        assert document["advice"].startswith("More data is likely to help")
    if words == ("guidelines", "show"):  # none written yet: version 0, no text
        assert document == {"version": 0, "text": ""}
    if words == ("guidelines", "history"):
        assert document == []
    if words == ("overlap",):
        assert document == {"overlap": 1}
    if words == ("edit-pairs",):
        assert document == {"edit_pairs": True}
    if words == ("stats",):
        assert document["unlabelled"] == 3  # two train, one eval; none deleted
        assert "null" not in document["by_label"]
        assert document["by_split"] == {"train": 7, "eval": 2}
