"""The `curate` command line, in process (CliRunner) and as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from curate.cli import main
from curation import Store
from tests.conftest import chat, write_jsonl


@pytest.fixture
def run(tmp_path):
    db = tmp_path / "ws" / "curate.duckdb"

    def invoke(*args: str):
        result = CliRunner().invoke(main, [*args, "--db", str(db)], catch_exceptions=False)
        return result

    invoke.db = db
    return invoke


@pytest.fixture
def tickets(tmp_path):
    return write_jsonl(tmp_path / "tickets.jsonl", [
        {"id": "t1", "messages": chat("refund please", "done", system="be brief"),
         "label": "billing"},
        {"id": "t2", "messages": chat("cannot log in", "reset it"), "label": "access"},
        "{broken",
        {"messages": chat("cannot log in", "reset it"), "label": "access"},
    ])


def test_import_prints_a_summary_and_writes_the_full_report(run, tickets):
    result = run("import", str(tickets), "--status", "accepted", "--tag", "batch1")
    assert result.exit_code == 0
    assert "4 records read; 2 imported, 1 rejected" in result.output
    assert "line 3: invalid_json" in result.output
    report_files = list((run.db.parent / "import-reports").glob("*.json"))
    assert len(report_files) == 1
    report = json.loads(report_files[0].read_text())
    assert report["rejected"][0]["line"] == 3
    assert report["duplicates_in_file"] == [{"line": 4, "first_line": 2}]


def test_stats_json_counts_by_status_split_label_source(run, tickets):
    run("import", str(tickets), "--split", "eval", "--source", "crm")
    figures = json.loads(run("stats", "--json").output)
    assert figures["total"] == 2
    assert figures["by_split"] == {"eval": 2}
    assert figures["by_status"] == {"pending": 2}
    assert figures["by_source"] == {"crm": 2}
    assert figures["by_label"] == {"access": 1, "billing": 1}
    assert figures["unlabelled"] == 0
    assert figures["by_kind"] == {"sft": 2}
    assert "by label:" in run("stats").output


def test_stats_json_counts_the_unlabelled_apart_from_a_label_named_null(run, tmp_path):
    """JSON keys are text: the unlabelled count under a "null" key would collide with a label
    named "null", and a JSON reader keeps one of the two."""
    records = write_jsonl(tmp_path / "labels.jsonl", [
        {"messages": chat("q1", "a1"), "label": "null"}, {"messages": chat("q2", "a2")},
        {"messages": chat("q3", "a3")}])
    run("import", str(records))
    text = run("stats", "--json").output
    assert text.count('"null"') == 1
    figures = json.loads(text)
    assert figures["by_label"] == {"null": 1} and figures["unlabelled"] == 2


def test_stats_counts_preference_pairs_and_kto_records_by_kind(run, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "3+3?", "chosen": "6", "rejected": "7"},
        {"prompt": "Rain?", "completion": "Yes", "label": True},
        {"messages": chat("q", "a")}])
    run("import", str(pairs))
    figures = json.loads(run("stats", "--json").output)
    assert figures["by_kind"] == {"kto": 1, "preference": 2, "sft": 1}
    text = run("stats").output
    assert "by kind:" in text and "preference" in text


def test_export_writes_jsonl_manifest_and_reuses_the_snapshot(run, tickets, tmp_path):
    run("import", str(tickets), "--status", "accepted")
    out = tmp_path / "out" / "curated.jsonl"
    first = json.loads(run("export", str(out), "--json", "--label", "billing").output)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["count"] == 1 and lines[0]["curate"]["external_id"] == "t1"
    assert lines[0]["curate"]["label"] == "billing" and "label" not in lines[0]
    manifest = json.loads((out.parent / "curated.manifest.json").read_text())
    assert manifest["snapshot_id"] == first["snapshot_id"]
    assert manifest["filters"] == {"label": ["billing"], "status": ["accepted"]}
    again = json.loads(run("export", str(out), "--json", "--label", "billing").output)
    assert again["snapshot_id"] == first["snapshot_id"]
    listed = json.loads(run("snapshots", "--json").output)
    assert [s["id"] for s in listed] == [first["snapshot_id"]]
    assert listed[0]["count"] == 1


def test_export_plain_and_the_formats_for_uploads(run, tickets, tmp_path):
    run("import", str(tickets), "--status", "accepted")
    out = tmp_path / "up" / "upload.jsonl"
    result = run("export", str(out), "--plain")
    assert result.exit_code == 0 and "(openai, plain)" in result.output
    assert f"LLaMA-Factory: dataset 'upload' in {out.parent / 'dataset_info.json'}" \
        in result.output
    assert [set(json.loads(x)) for x in out.read_text().splitlines()] == [{"messages"}] * 2
    for fmt, key in (("bedrock", "schemaVersion"), ("vertex", "contents")):
        done = json.loads(run("export", str(tmp_path / f"{fmt}.jsonl"), "--format", fmt,
                              "--plain", "--json").output)
        assert done["format"] == fmt and done["plain"] is True and done["dataset_info"] is None
        first = json.loads((tmp_path / f"{fmt}.jsonl").read_text().splitlines()[0])
        assert key in first and "curate" not in first


@pytest.mark.parametrize("option, joined", [((), "Translate.\ncat"),
                                            (("--alpaca-separator", "\\n\\n"),
                                             "Translate.\n\ncat"),
                                            (("--alpaca-separator", " | "), "Translate. | cat")])
def test_import_alpaca_separator(run, tmp_path, option, joined):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Translate.", "input": "cat",
                                               "output": "chat"}])
    assert run("import", str(path), *option).exit_code == 0
    from curation import Store

    with Store(run.db) as store:
        assert store.find()[0].messages[0]["content"] == joined


def test_user_errors_are_one_line_without_traceback(run, tmp_path):
    csv_file = tmp_path / "odd.csv"
    csv_file.write_text("a,b\n1,2\n")
    result = CliRunner().invoke(main, ["import", str(csv_file), "--db", str(run.db)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: ") and "--map" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_import_of_mapped_csv_names_the_users_column_and_line(run, tmp_path):
    csv_file = tmp_path / "q.csv"
    csv_file.write_text("query,reply\nq1,a1\n,a2\n")
    result = run("import", str(csv_file), "--map", "prompt=query,response=reply")
    assert "  line 3: missing_content: column `query` (prompt) is empty" in result.output
    assert "messages[" not in result.output
    report = json.loads(run("import", str(csv_file), "--map", "prompt=query,response=reply",
                            "--json").output)
    assert report["rejected"] == [{"line": 3, "code": "missing_content", "field": "query",
                                   "message": "column `query` (prompt) is empty"}]


def test_import_prints_label_conflicts(run, tickets, tmp_path):
    run("import", str(tickets))
    relabel = write_jsonl(tmp_path / "relabel.jsonl", [
        {"messages": chat("cannot log in", "reset it"), "label": "billing"}])
    result = run("import", str(relabel))
    assert "1 imported, 0 rejected, 1 imported with a conflicting label" in result.output
    assert ("  line 1: label_conflict (imported): same conversation as example #2, labelled "
            "'access' there and 'billing' here") in result.output


def _all_commands(group=main, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _all_commands(command, (*prefix, name))


@pytest.mark.parametrize("command", list(_all_commands()), ids=" ".join)
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and f"curate {' '.join(command)}" in result.output


def test_quality_commands_print_findings_as_json(run):
    run("init", "--demo")
    exact = json.loads(run("dedupe", "--method", "exact", "--json").output)
    assert exact["check"] == "exact_duplicates" and exact["summary"]["groups"] == 6
    first = exact["findings"][0]
    assert first["external_id"].startswith("tl-") and isinstance(first["id"], int)
    assert 0 <= first["score"] <= 1 and "duplicate" in first["reason"]
    gaps = json.loads(run("coverage", "--json", "--min-per-label", "57").output)["gaps"]
    assert gaps[0]["label"] == "security_incident" and gaps[0]["want"] == 57
    assert sum(g["shortfall"] > 0 for g in gaps) >= 4


def test_console_script_reports_a_locked_store_in_one_line(tmp_path, empty_store):
    curate = str(Path(sys.executable).with_name("curate"))
    result = subprocess.run([curate, "stats", "--db", str(empty_store.path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "open for writing in another process" in result.stderr
    assert "Traceback" not in result.stderr


def test_init_demo_loads_the_demo_workspace(run):
    result = run("init", "--demo")
    assert result.exit_code == 0, result.output
    figures = json.loads(run("stats", "--json").output)
    assert 380 <= figures["total"] <= 440
    assert set(figures["by_split"]) == {"train", "eval"}
    assert figures["by_status"]["accepted"] > 0 and figures["by_status"]["pending"] > 0
    assert figures["by_source"] == {"demo": figures["total"]}


def test_a_file_system_error_is_one_line_not_a_traceback(run, tickets, tmp_path):
    run("import", str(tickets))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the export's folder should be")
    result = CliRunner().invoke(main, ["export", str(blocker / "out.jsonl"), "--db",
                                       str(run.db)])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "not-a-folder" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [("export", "out.jsonl", "--label", b"\xed\xa0\x80"),
                                  ("import", "tickets.jsonl", "--source", b"\xff")])
def test_an_argument_that_is_not_utf8_is_a_usage_error_not_a_traceback(tmp_path, tickets, args):
    """Bytes the shell passes as they are reach Python as lone surrogates, which DuckDB
    refused with a traceback."""
    subprocess.run([sys.executable, "-m", "curate", "init", "--db", "ws.duckdb"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=60)
    result = subprocess.run([sys.executable, "-m", "curate", *args, "--db", b"ws.duckdb"],
                            cwd=tmp_path, capture_output=True, timeout=60, check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in stderr
    shown = args[-1].decode("utf-8", "backslashreplace")
    assert f"the argument '{shown}' is not UTF-8 text" in stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(run, tickets):
    """`curate ... | head`: the reader closes the pipe; no 'error: Broken pipe', no traceback."""
    run("import", str(tickets))
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the command writes
    result = subprocess.run([sys.executable, "-m", "curate", "stats", "--db", str(run.db)],
                            stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60,
                            check=False)
    os.close(writer)
    assert result.stderr == "" and result.returncode == 141


@pytest.mark.parametrize("command", [["stats"], ["runs"], ["export", "out.jsonl"],
                                     ["snapshots", "--json"], ["backup"]])
def test_a_command_on_a_path_without_a_workspace_says_so_and_creates_nothing(tmp_path, command):
    """From the wrong folder (or with a typo in --db) every command used to make a new, empty
    workspace there, folders and all, and answer from it ('0 examples')."""
    result = subprocess.run([sys.executable, "-m", "curate", *command], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"error: there is no workspace at workspace/curate.duckdb (from {tmp_path}): run the "
        "command in the folder that holds workspace/, or name it with --db or $CURATE_DB; "
        "`curate init --db workspace/curate.duckdb` creates a new one\n")
    assert list(tmp_path.iterdir()) == []
    typo = tmp_path / "no" / "such" / "c.duckdb"
    result = subprocess.run([sys.executable, "-m", "curate", *command, "--db", str(typo)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and f"there is no workspace at {typo}:" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_init_import_and_user_add_still_create_the_workspace(tmp_path, tickets):
    for i, command in enumerate([["init"], ["import", str(tickets)],
                                 ["user", "add", "ann", "--role", "admin", "--no-password",
                                  "--email", "ann@example.com"]]):
        db = tmp_path / f"ws{i}" / "c.duckdb"
        result = CliRunner().invoke(main, [*command, "--db", str(db)])
        assert result.exit_code == 0, result.output
        assert db.is_file()


def test_an_export_of_no_example_warns_on_stderr(run, tickets, tmp_path):
    run("import", str(tickets))  # all pending: the default export (accepted) matches none
    out = tmp_path / "empty.jsonl"
    result = run("export", str(out), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["count"] == 0
    assert "warning: the snapshot is empty: no example matches these filters (status " \
           f"accepted), so {out} holds no line" in result.stderr
    assert out.read_bytes() == b""
    result = run("export", str(out), "--status", "pending")
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_a_failed_first_import_leaves_no_empty_workspace_behind(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    db = tmp_path / "new" / "folders" / "curate.duckdb"
    result = CliRunner().invoke(main, ["import", str(empty), "--db", str(db)])
    assert result.exit_code == 1 and "holds no records" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]  # folders gone too
    # a workspace that existed (and holds examples) is left as it was
    ok = write_jsonl(tmp_path / "ok.jsonl", [{"messages": chat("q", "a")}])
    assert CliRunner().invoke(main, ["import", str(ok), "--db", str(db)]).exit_code == 0
    result = CliRunner().invoke(main, ["import", str(empty), "--db", str(db)])
    assert result.exit_code == 1 and db.is_file()
    with Store(db) as store:
        assert store.count() == 1
