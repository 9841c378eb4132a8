"""The Workspace facade: each step as the CLI and the pages call it, on a real DuckDB file."""

from __future__ import annotations

import orjson
import pytest

from curate import Workspace
from curation import ExampleFilter
from curation.auth import User
from curation.errors import PermissionDenied
from curation.checks.coverage import Targets
from curation.review import bulk
from tests.conftest import admin, chat, write_jsonl

REVIEWER = User("rex", "reviewer")


def messages_of(attention) -> str:
    return "\n".join(a.message for a in attention)


def test_import_saves_its_report_beside_the_store(empty_store, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"messages": chat("q", "a")}, "{broken"])
    ws = Workspace(empty_store, admin("ada"))
    report, saved = ws.import_file(source)
    assert (report.imported, len(report.rejected)) == (1, 1)
    assert saved.parent == empty_store.path.parent / "import-reports"
    assert orjson.loads(saved.read_bytes())["rejected"][0]["line"] == 2


def test_roles_are_checked_for_the_user_the_workspace_acts_as(seeded_store, tmp_path):
    ws = Workspace(seeded_store, REVIEWER)
    with pytest.raises(PermissionDenied):
        ws.export(tmp_path / "out.jsonl", where=ExampleFilter())
    with pytest.raises(PermissionDenied):
        ws.add_user("eve", "admin", password="a long enough password")
    assert ws.run_checks(["exact_duplicates"])[0].check == "exact_duplicates"


def test_snapshots_list_the_runs_that_used_them(seeded_store, tmp_path):
    ws = Workspace(seeded_store, admin("ada"))
    result = ws.export(tmp_path / "all.jsonl", where=ExampleFilter())
    [item] = ws.snapshots()
    assert item.snapshot.id == result.snapshot.id and item.run_ids == []


def test_needs_attention_follows_the_store_and_the_coverage_targets(seeded_store):
    ws = Workspace(seeded_store, admin("ada"))
    pending = messages_of(ws.needs_attention())
    assert "6 examples wait for a first decision" in pending
    assert "3 label(s) are under their coverage target" in pending  # default target 20
    assert "never ran" in pending

    ws.set_coverage_targets(Targets(default_min=2))  # each label has two: none is thin
    bulk(seeded_store, ws.user, [e.id for e in seeded_store.find()], "accept")
    assert ws.needs_attention() == []

    ws.set_coverage_targets(Targets(default_min=2, per_label={"bugs": 5}))
    [thin] = ws.needs_attention()
    assert thin.page == "coverage"
    assert "bugs (2 of 5)" in thin.message and "are in the Review queue" in thin.message


def test_needs_attention_asks_for_an_eval_split(empty_store, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"messages": chat(f"q{i}", "a"), "label": "x"}
                                                  for i in range(3)])
    ws = Workspace(empty_store, admin("ada"))
    ws.import_file(source, status="accepted")
    assert "No example is in the eval split" in messages_of(ws.needs_attention())


def test_open_creates_the_workspace_and_closes_it(tmp_path):
    with Workspace.open(tmp_path / "ws" / "curate.duckdb", admin("ada")) as ws:
        assert ws.stats()["total"] == 0
        assert ws.load_demo().imported > 0
    with Workspace.open(tmp_path / "ws" / "curate.duckdb", admin("ada")) as again:
        assert again.stats()["total"] > 0


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """The README's Python example, run as written in a folder with a tickets.jsonl."""
    from tests.conftest import DEMO_FILE, PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    [code] = [block.split("```")[0] for block in readme.split("```python\n")[1:]
              if "Workspace.open" in block]
    (tmp_path / "tickets.jsonl").write_bytes(DEMO_FILE.read_bytes())
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    with Workspace.open(tmp_path / "workspace" / "curate.duckdb", admin("ada")) as ws:
        assert ws.stats()["by_status"]["accepted"] > 0
        assert {r.check for r in [*ws.run_checks(["exact_duplicates"])]} == {"exact_duplicates"}
