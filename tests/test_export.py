"""export_jsonl against real DuckDB files: temporary files of exports killed with kill -9 are
recognisable and removed by the next export (never a live export's), and a reused snapshot is
said in the result, the manifest and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import orjson
import pytest

from curation import ExampleFilter, Store, export_jsonl, import_file
from curation.exporter import STALE_TEMP_SECONDS
from tests.conftest import admin, PROJECT_ROOT, chat, write_jsonl

# An export that stops, for good, after writing 50 lines: the test kills it there (or lets it
# live), so the moment is deterministic. Only the rows fed to the writer are slowed down.
PAUSED_EXPORT = textwrap.dedent("""
    import sys, time
    from curation import Store, User, export_jsonl
    store = Store(sys.argv[1])
    rows = store.snapshot_rows

    def paused(snapshot_id):
        for i, row in enumerate(rows(snapshot_id)):
            if i == 50:
                print("writing", flush=True)
                time.sleep(600)
            yield row

    store.snapshot_rows = paused
    export_jsonl(store, sys.argv[2], user=User("child", "admin"))
""")


def accepted_store(path, n: int = 200) -> None:
    with Store(path) as store:
        records = [{"messages": chat(f"question {i}", "answer " * 50)} for i in range(n)]
        import_file(store, write_jsonl(path.parent / f"{path.stem}.jsonl", records),
                    status="accepted", user=admin("t"))


def start_paused_export(db, out) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", PAUSED_EXPORT, str(db), str(out)],
                             cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert child.stdout.readline().strip() == "writing"
    return child


def temp_files(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_killed_exports_temp_file_is_removed_by_the_next_export(tmp_path):
    db, out = tmp_path / "a.duckdb", tmp_path / "exports" / "train.jsonl"
    other_db = tmp_path / "b.duckdb"
    accepted_store(db)
    accepted_store(other_db)
    # another store's export, paused while writing into the same folder, stays alive
    live = start_paused_export(other_db, out.parent / "other.jsonl")
    try:
        [live_file] = temp_files(out.parent)
        child = start_paused_export(db, out)
        [left] = [n for n in temp_files(out.parent) if n != live_file]
        assert left.startswith(f".train.jsonl.curate-export-{child.pid}-")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert temp_files(out.parent) == sorted([left, live_file]) and not out.exists()

        result = subprocess.run([sys.executable, "-m", "curate", "export", str(out),
                                 "--db", str(db)], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=120, check=False,
                                env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
        assert result.returncode == 0, result.stderr
        assert f"removed {out.parent / left}, left by an export that was killed" in result.stderr
        assert temp_files(out.parent) == [live_file]  # the live export's file is untouched
        assert len(out.read_bytes().splitlines()) == 200
    finally:
        live.kill()
        live.wait(timeout=30)


def test_a_temp_file_of_a_live_pid_is_kept_unless_old_and_unlocked(seeded_store, tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    mine = exports / f".x.jsonl.curate-export-{os.getpid()}-0123abcd.tmp"  # pid alive, unlocked
    mine.write_bytes(b"partial")
    other = exports / ".notes.tmp"  # not ours: never touched
    other.write_bytes(b"keep")
    export_jsonl(seeded_store, exports / "y.jsonl", where=ExampleFilter(), user=admin("t"))
    assert mine.exists() and other.exists()
    old = mine.stat().st_mtime - STALE_TEMP_SECONDS - 5
    os.utime(mine, (old, old))  # its pid was reused by a process that is not an export
    result = export_jsonl(seeded_store, exports / "y.jsonl", where=ExampleFilter(), user=admin("t"))
    assert not mine.exists() and other.exists()
    assert result.removed_temp_files == (mine,)


# --- a reused snapshot is said, not silent ---------------------------------------------------

def test_a_reused_snapshot_is_said_in_the_result_and_the_manifest(seeded_store, tmp_path):
    first = export_jsonl(seeded_store, tmp_path / "a.jsonl", where=ExampleFilter(),
                         user=admin("t"), snapshot_name="ux-openai")
    assert not first.snapshot_reused and first.note is None
    again = export_jsonl(seeded_store, tmp_path / "b.jsonl", where=ExampleFilter(), user=admin("t"),
                         snapshot_name="second name")
    assert again.snapshot_reused and again.snapshot.id == first.snapshot.id
    assert again.note == (f"same content as snapshot ux-openai ({first.snapshot.id}): reused; "
                          "it keeps its name, not 'second name'")
    manifest = orjson.loads(again.manifest_path.read_bytes())
    assert manifest["snapshot_reused"] is True and manifest["note"] == again.note
    assert orjson.loads(first.manifest_path.read_bytes())["snapshot_reused"] is False
    # changed data: a new snapshot, nothing reused
    example = seeded_store.find()[0]
    seeded_store.update(example.id, base_version=example.version, actor="t", label="other")
    third = export_jsonl(seeded_store, tmp_path / "c.jsonl", where=ExampleFilter(), user=admin("t"))
    assert not third.snapshot_reused and third.snapshot.id != first.snapshot.id


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_export_says_a_snapshot_was_reused(seeded_store, tmp_path, as_json):
    db = seeded_store.path
    seeded_store.close()
    cli = [sys.executable, "-m", "curate", "export", "--db", str(db), "--status",
           "pending", "--name", "ux-openai"] + (["--json"] if as_json else [])
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    runs = [subprocess.run(cli[:4] + [str(tmp_path / f"{i}.jsonl")] + cli[4:], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, timeout=120, env=env,
                           check=False)
            for i in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr
    if as_json:
        first, second = (json.loads(r.stdout) for r in runs)
        assert (first["snapshot_reused"], second["snapshot_reused"]) == (False, True)
        assert second["note"] == f"same content as snapshot ux-openai " \
                                 f"({first['snapshot_id']}): reused"
    else:
        assert "reused" not in runs[0].stdout
        assert runs[1].stdout.startswith("same content as snapshot ux-openai (snap-")
        assert "): reused\n" in runs[1].stdout


@pytest.mark.parametrize("kind", ["fifo", "manifest_fifo", "folder"])
def test_an_export_refuses_to_replace_what_is_not_a_regular_file(seeded_store, tmp_path, kind):
    """The temp file's rename replaced whatever had the target's name: `curate export
    /dev/full` as root turned the device into a file. A pipe stands in for a device here."""
    from curation import InvalidValue

    target = tmp_path / "out.jsonl"
    special = tmp_path / ("out.manifest.json" if kind == "manifest_fifo" else "out.jsonl")
    if kind == "folder":
        special.mkdir()
    else:
        os.mkfifo(special)
    with pytest.raises(InvalidValue, match="exists and is not a regular file"):
        export_jsonl(seeded_store, target, where=ExampleFilter(), user=admin("t"))
    assert not special.is_file() and (special.is_dir() if kind == "folder"
                                      else os.path.exists(special))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert seeded_store.snapshots() == []  # refused before anything was made


# An export over an earlier one that stops, for good, once its file is renamed into place
# (LLaMA-Factory's dataset_info.json is written next, then the manifest).
PAUSED_AFTER_RENAME = textwrap.dedent("""
    import sys, time
    import curation.exporter as exporter
    from curation import ExampleFilter, Store, User, export_jsonl

    def paused(*args):
        print("renamed", flush=True)
        time.sleep(600)

    exporter._add_dataset_info = paused
    export_jsonl(Store(sys.argv[1]), sys.argv[2], where=ExampleFilter(),
                 user=User("child", "admin"))
""")


def test_a_kill_after_the_new_file_lands_never_leaves_the_old_manifest_beside_it(tmp_path):
    db, out = tmp_path / "a.duckdb", tmp_path / "exports" / "train.jsonl"
    manifest = out.with_name("train.manifest.json")
    accepted_store(db, n=20)
    with Store(db) as store:
        store.add(chat("a pending question", "its answer"), actor="t")
        first = export_jsonl(store, out, user=admin("t"))  # the 20 accepted ones
    assert first.count == 20 and json.loads(manifest.read_text())["count"] == 20
    child = subprocess.Popen([sys.executable, "-c", PAUSED_AFTER_RENAME, str(db), str(out)],
                             cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    try:
        assert child.stdout.readline().strip() == "renamed"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    assert len(out.read_bytes().splitlines()) == 21  # the new file, every example
    assert not manifest.exists()  # not the first export's, which says 20 other lines


@pytest.mark.parametrize("target", ["own_db", "other_db", "dataset_info"])
def test_an_export_refuses_a_database_or_the_folders_dataset_list(seeded_store, tmp_path,
                                                                  target):
    """`curate export workspace/curate.duckdb` replaced the workspace with JSONL and said it
    wrote it; `curate export dataset_info.json` replaced LLaMA-Factory's dataset list."""
    from curation import InvalidValue

    if target == "other_db":
        path = tmp_path / "backup.duckdb"
        accepted_store(path, n=3)
    elif target == "dataset_info":
        path = tmp_path / "dataset_info.json"
        export_jsonl(seeded_store, tmp_path / "first.jsonl", where=ExampleFilter(),
                     user=admin("t"))
    else:
        path = seeded_store.path
    before = path.read_bytes()
    snapshots = seeded_store.snapshots()
    expected = {"own_db": "is this workspace's database", "other_db": "is a DuckDB database",
                "dataset_info": "LLaMA-Factory's list of the datasets"}[target]
    with pytest.raises(InvalidValue, match=expected):
        export_jsonl(seeded_store, path, where=ExampleFilter(), user=admin("t"))
    assert path.read_bytes() == before and seeded_store.snapshots() == snapshots
    assert seeded_store.count() > 0
