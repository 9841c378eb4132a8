"""The workspace is the user's alone: folders 0700, files 0600 (the store holds password
hashes; exports, reports and checkpoints hold the curated data), whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from curation import ExampleFilter, Store, export_jsonl, import_file
from curation.uploads import IMPORT_REPORTS_DIR, save_upload
from tests.conftest import PROJECT_ROOT, admin, chat, write_jsonl

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(*roots: Path) -> dict[str, int]:
    """Every folder and file under `roots` (themselves included) with its permission bits."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            found[str(path)] = mode(path)
    return found


@pytest.fixture
def umask_022():
    """A usual umask (files 0644), as a user's shell has it: privacy must not depend on it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _records(n: int = 6) -> list[dict]:
    return [{"messages": chat(f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}.")}
            for i in range(n)]


def test_store_creates_a_private_workspace_and_tightens_an_old_one(tmp_path, umask_022):
    with Store(tmp_path / "new" / "deeper" / "curate.duckdb") as store:
        store.set_setting("x", "1")
        assert mode(store.path.parent) == 0o700 and mode(store.path.parent.parent) == 0o700
        assert mode(store.path) == 0o600
    old = tmp_path / "old"
    old.mkdir()
    Store(old / "curate.duckdb").close()
    old.chmod(0o755)
    (old / "curate.duckdb").chmod(0o644)
    assert mode(old / "curate.duckdb") == 0o644  # as a workspace made before this fix
    Store(old / "curate.duckdb").close()
    assert mode(old) == 0o700 and mode(old / "curate.duckdb") == 0o600


def test_the_current_folder_is_not_locked_but_the_database_is(tmp_path, umask_022,
                                                               monkeypatch):
    project = tmp_path / "project"
    project.mkdir(mode=0o755)
    monkeypatch.chdir(project)
    with Store(Path("curate.duckdb")) as store:
        assert mode(project) == 0o755 and mode(store.path) == 0o600


def test_exports_reports_and_uploads_are_private_wherever_they_go(empty_store, tmp_path,
                                                                  umask_022):
    source = write_jsonl(tmp_path / "in.jsonl", _records() + ["not json"])
    report = import_file(empty_store, source, status="accepted", user=admin("t"))
    saved = report.save(empty_store.path.parent / IMPORT_REPORTS_DIR)
    assert mode(saved) == 0o600 and mode(saved.parent) == 0o700

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (shared / "x.jsonl").write_text("an older export, 0644\n")
    result = export_jsonl(empty_store, shared / "x.jsonl", user=admin("t"),
                          where=ExampleFilter())
    assert result.count == 6
    assert mode(result.path) == 0o600 and mode(result.manifest_path) == 0o600
    assert mode(shared) == 0o755  # the user's folder is theirs to set
    made = export_jsonl(empty_store, tmp_path / "new" / "y.jsonl", user=admin("t")).path
    assert mode(made) == 0o600 and mode(made.parent) == 0o700

    upload = save_upload(admin("t"), empty_store.path.parent, b'{"a": 1}\n')
    assert mode(upload) == 0o600 and mode(upload.parent) == 0o700


def test_the_cli_writes_only_private_files_down_to_the_checkpoints(tmp_path, model_cache):
    """Through the real CLI in a subprocess started with umask 022: init, user add, import,
    export and a tiny training run with a checkpoint every step."""
    from training.models import cached_default_model

    cached_default_model(model_cache)  # converted once, by the test, not timed by the run
    db = tmp_path / "ws" / "curate.duckdb"
    out = tmp_path / "out"
    data = write_jsonl(tmp_path / "train.jsonl", _records())
    env = {**ENV, "CURATE_MODEL_CACHE": str(model_cache)}

    def curate(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([sys.executable, "-m", "curate", *args, "--db", str(db)],
                              cwd=tmp_path, env=env, input=stdin, capture_output=True,
                              text=True, timeout=600, check=False,
                              preexec_fn=lambda: os.umask(0o022))
        assert done.returncode == 0, done.stderr
        return done.stdout

    curate("init")
    curate("user", "add", "ada", "--role", "admin", "--password-stdin",
           stdin="a long password\n")
    curate("import", str(data), "--status", "accepted")
    curate("export", str(out / "curated.jsonl"))
    curate("train", "--no-eval", "--rank", "2", "--max-seq-length", "64", "--batch-size", "2",
           "--epochs", "1", "--checkpoint-every", "1")
    found = modes_under(db.parent, out)
    files = {p: m for p, m in found.items() if Path(p).is_file()}
    folders = {p: m for p, m in found.items() if Path(p).is_dir()}
    assert any("/checkpoints/step-" in p and p.endswith(".safetensors") for p in files)
    assert any(p.endswith("training_state.safetensors") for p in files)
    assert any(IMPORT_REPORTS_DIR in p for p in files) and str(db) in files
    assert {p: oct(m) for p, m in files.items() if m != 0o600} == {}
    assert {p: oct(m) for p, m in folders.items() if m != 0o700} == {}
