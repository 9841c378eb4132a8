"""The store under faults: damaged files, doctor, backup and restore, failed imports, empty
files, and regular expressions DuckDB cannot run. Real DuckDB files, damaged for real."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from streamlit.testing.v1 import AppTest

from curation import ExampleFilter, InvalidValue, Store, UnreadableFile, import_file
from curation.auth import User
from curation.errors import StoreCorrupt
from curation.maintenance import backup, backup_dir, doctor
from tests.conftest import admin, PROJECT_ROOT, chat, page, write_jsonl

ADMIN = User("ada", "admin")
DAMAGE = ("zero_bytes", "random_bytes", "truncated", "bad_wal", "bad_wal_header")


def _store_with(path: Path, n: int, tmp_path: Path) -> None:
    records = [{"messages": chat(f"question {i} " + "words " * 20, f"answer {i}"),
                "label": "l"} for i in range(n)]
    with Store(path) as store:
        import_file(store, write_jsonl(tmp_path / f"seed{n}.jsonl", records), user=admin("seeder"))


def _leave_a_wal(path: Path) -> None:
    """Commit five reviews in a process that dies before any checkpoint: they live in the WAL."""
    code = ("import os\nfrom curation import Store\ns = Store(os.environ['DB'])\n"
            "s.cursor().execute(\"SET checkpoint_threshold='1GB'\")\n"
            "for i in range(1, 6):\n    s.update(i, base_version=1, actor='x', status='accepted')\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "DB": str(path)}, check=True)
    assert Path(f"{path}.wal").stat().st_size > 0


def damage(kind: str, path: Path, tmp_path: Path) -> Path:
    """A workspace at `path` damaged in one of the ways a disk or a person damages files;
    returns the file the message must name."""
    _store_with(path, 500, tmp_path)
    if kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "random_bytes":
        path.write_bytes(os.urandom(300_000))
    elif kind == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    else:
        _leave_a_wal(path)
        wal = Path(f"{path}.wal")
        data = bytearray(wal.read_bytes())
        # a byte in an entry fails its checksum; the first byte of the log's header made
        # DuckDB skip the whole log, and its five reviews, without an error
        data[0 if kind == "bad_wal_header" else len(data) * 3 // 4] ^= 0xFF
        wal.write_bytes(bytes(data))
        return wal
    return path


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_store_raises_store_corrupt_naming_the_file(tmp_path, kind):
    path = tmp_path / "ws" / "curate.duckdb"
    named = damage(kind, path, tmp_path)
    before = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(StoreCorrupt) as caught:
        Store(path)
    message = str(caught.value)
    assert f"{named} is damaged" in message or f"{named}, the write-ahead log" in message
    assert "curate doctor" in message
    assert sorted(p.name for p in path.parent.iterdir()) == before  # nothing changed


@pytest.mark.parametrize("kind", DAMAGE)
def test_the_cli_reports_a_damaged_store_in_one_line(tmp_path, kind):
    path = tmp_path / "ws" / "curate.duckdb"
    named = damage(kind, path, tmp_path)
    result = subprocess.run([sys.executable, "-m", "curate", "stats", "--db", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(named) in lines[0] and "curate doctor" in lines[0]


@pytest.mark.parametrize("kind", ("zero_bytes", "bad_wal", "bad_wal_header"))
def test_the_app_shows_a_damaged_store_as_a_message(tmp_path, monkeypatch, kind):
    path = tmp_path / "ws" / "curate.duckdb"
    named = damage(kind, path, tmp_path)
    monkeypatch.setenv("CURATE_DB", str(path))
    monkeypatch.setenv("CURATE_SINGLE_USER", "1")
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    text = re.sub(r"\\(.)", r"\1", at.error[0].value).replace("\u2060", "")
    assert str(named) in text and "curate doctor" in text


def test_query_time_damage_is_named_by_the_cli(tmp_path):
    """A flipped byte in a data block opens fine and fails when a query reads the block."""
    path = tmp_path / "ws" / "curate.duckdb"
    _store_with(path, 20_000, tmp_path)
    data = bytearray(path.read_bytes())
    for block in range(12_288, len(data) - 3 * 262_144, 262_144):  # the data, not the catalog
        for i in range(block + 100_000, block + 100_064):
            data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    result = subprocess.run([sys.executable, "-m", "curate", "export", "--db", str(path),
                             str(tmp_path / "out.jsonl")],
                            capture_output=True, text=True, timeout=120)
    if result.returncode == 0:
        pytest.skip("the flipped bytes fell in a block this export does not read")
    assert "Traceback" not in result.stderr
    assert f"{path} is damaged" in result.stderr


@pytest.mark.parametrize("kind", DAMAGE)
def test_doctor_sets_damaged_files_aside_and_the_store_opens_again(tmp_path, kind):
    path = tmp_path / "ws" / "curate.duckdb"
    damage(kind, path, tmp_path)
    originals = {p.name: p.read_bytes() for p in path.parent.iterdir() if p.is_file()}
    report = doctor(path, user=ADMIN)
    assert report.problem and "damaged" in report.problem
    # every original file still exists, byte for byte, under its set-aside name
    assert len(report.set_aside) == len(originals)
    for aside in map(Path, report.set_aside):
        assert aside.read_bytes() == originals[aside.name.split(".doctor-")[0]]
    with Store(path) as store:
        count = store.count()
        accepted = store.count(ExampleFilter(status=("accepted",)))
    assert report.counts["examples"] == count
    if kind == "bad_wal":  # the file and the log's good start: the first reviews survive
        assert count == 500 and 0 < accepted < 5
        assert "write-ahead log" in report.kept
    elif kind == "bad_wal_header":  # no entry of the log can be trusted: the file alone
        assert count == 500 and accepted == 0
        assert "without its write-ahead log" in report.kept
    else:  # nothing readable and no backup
        assert count == 0 and "empty workspace" in report.kept


def test_doctor_restores_the_newest_backup_when_the_file_is_lost(tmp_path):
    path = tmp_path / "ws" / "curate.duckdb"
    _store_with(path, 300, tmp_path)
    with Store(path) as store:
        made = backup(store, user=ADMIN)
    path.write_bytes(os.urandom(50_000))
    report = doctor(path, user=ADMIN)
    assert made.path in report.kept
    assert report.counts == {"examples": 300, "events": 300, "snapshots": 0}
    with Store(path) as store:
        assert store.count() == 300


def test_doctor_on_a_healthy_store_changes_nothing(seeded_store):
    seeded_store.close()
    names = sorted(p.name for p in seeded_store.path.parent.iterdir())
    report = doctor(seeded_store.path, user=ADMIN)
    assert report.problem is None and report.counts["examples"] == 6
    assert "no damage found" in report.summary()
    assert sorted(p.name for p in seeded_store.path.parent.iterdir()) == names


def test_backup_is_consistent_and_restores_by_doctor(tmp_path):
    path = tmp_path / "ws" / "curate.duckdb"
    _store_with(path, 50, tmp_path)
    with Store(path) as store:
        store.update(1, base_version=1, actor="rev", status="accepted")
        result = backup(store, tmp_path / "safe", user=ADMIN)
        assert Path(result.path).parent == tmp_path / "safe"
        assert oct(Path(result.path).stat().st_mode & 0o777) == "0o600"
        with pytest.raises(InvalidValue, match="already exists"):
            backup(store, result.path, user=ADMIN)
        store.update(2, base_version=1, actor="rev", status="rejected")  # after the backup
    report = doctor(path, user=ADMIN, restore=result.path)
    assert len(report.set_aside) == 1 and Path(report.set_aside[0]).exists()
    with Store(path) as store:
        assert store.get(1).status == "accepted" and store.get(2).status == "pending"
        assert len(store.history(1)) == 2
        # the id sequence came along: a new example does not reuse an id
        import_file(store, write_jsonl(tmp_path / "new.jsonl", [{"messages": chat("n", "m")}]),
                    user=admin("t"))
        assert store.find(order_by="-id", limit=1)[0].id == 51


def test_a_killed_backups_copy_is_removed_by_the_next_backup(seeded_store, tmp_path):
    """kill -9 during `curate backup` left a hidden copy of the whole workspace beside the
    target forever (its name held the time, so no later backup matched it)."""
    folder = tmp_path / "safe"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process that is gone, as a killed backup's is
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        first = backup(seeded_store, folder, user=ADMIN)
        killed = [folder / f".ws-20260101T000000Z.duckdb.curate-backup-{dead.pid}.partial{end}"
                  for end in ("", ".wal")]
        running = folder / f".ws-20260101T000001Z.duckdb.curate-backup-{live.pid}.partial"
        for leftover in (*killed, running):
            leftover.write_bytes(b"half a copy")
        second = backup(seeded_store, folder / "second.duckdb", user=ADMIN)
    finally:
        live.kill()
        live.wait()
    assert not any(p.exists() for p in killed) and running.exists()  # a live one is kept
    assert sorted(second.removed) == sorted(map(str, killed))
    assert f"removed {killed[0]}, left by a backup that was killed" in second.summary()
    assert first.removed == ()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [Path(first.path).name, "second.duckdb", running.name])


def test_the_backups_folder_is_private_whatever_the_umask(seeded_store):
    old = os.umask(0o022)
    try:
        result = backup(seeded_store, user=ADMIN)
    finally:
        os.umask(old)
    assert os.stat(Path(result.path).parent).st_mode & 0o777 == 0o700
    assert os.stat(result.path).st_mode & 0o777 == 0o600


def test_a_directory_in_place_of_the_file_is_named_not_a_traceback(tmp_path):
    from curation.errors import StoreUnreadable

    path = tmp_path / "ws" / "curate.duckdb"
    path.mkdir(parents=True)
    with pytest.raises(StoreUnreadable, match=re.escape(f"{path} cannot be opened")):
        Store(path)


def test_backup_and_doctor_need_the_admin_role(seeded_store):
    from curation.errors import PermissionDenied

    with pytest.raises(PermissionDenied):
        backup(seeded_store, user=User("rita", "reviewer"))
    with pytest.raises(PermissionDenied):
        doctor(seeded_store.path, user=User("rita", "reviewer"))


def test_cli_backup_and_doctor(tmp_path):
    path = tmp_path / "ws" / "curate.duckdb"
    _store_with(path, 10, tmp_path)
    run = [sys.executable, "-m", "curate"]
    made = subprocess.run(run + ["backup", "--db", str(path), "--json"], capture_output=True,
                          text=True, timeout=120, check=True)
    info = orjson.loads(made.stdout)
    assert info["counts"]["examples"] == 10 and Path(info["path"]).parent == backup_dir(path)
    path.write_bytes(b"")
    fixed = subprocess.run(run + ["doctor", "--db", str(path)], capture_output=True, text=True,
                           timeout=120)
    assert fixed.returncode == 0, fixed.stderr
    assert "set aside" in fixed.stdout and "10 examples" in fixed.stdout


def test_a_migration_backs_the_old_file_up_first(tmp_path, monkeypatch, caplog):
    from curation.store import _schema

    path = tmp_path / "old.duckdb"
    _store_with(path, 7, tmp_path)
    old = len(_schema.MIGRATIONS)
    monkeypatch.setattr(_schema, "MIGRATIONS",
                        _schema.MIGRATIONS + [("notes", "CREATE TABLE notes (body VARCHAR);")])
    with Store(path) as store:
        assert store.schema_version() == old + 1
    made = list(backup_dir(path).glob(f"old-schema{old}-*.duckdb"))
    assert len(made) == 1 and str(made[0]) in caplog.text
    with Store(path):  # already current: no second backup
        pass
    assert len(list(backup_dir(path).iterdir())) == 1
    monkeypatch.undo()
    with Store(made[0]) as copy:
        assert copy.schema_version() == old and copy.count() == 7


# --- imports under faults --------------------------------------------------------------------

def test_a_failed_import_gives_its_space_back(tmp_path):
    path = tmp_path / "ws" / "curate.duckdb"
    _store_with(path, 2_000, tmp_path)
    before = path.stat().st_size
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        for i in range(60_000):
            f.write(orjson.dumps({"messages": chat(f"q {i} " + "lorem " * 30, f"a {i}")}) + b"\n")
        f.write(b'{"messages": "\xff"}\n')  # not UTF-8 at the very end: the import rolls back
    with Store(path) as store:
        with pytest.raises(Exception, match="not UTF-8"):
            import_file(store, big, user=admin("t"))
        assert store.count() == 2_000
        assert path.stat().st_size <= before + 1_000_000


def test_a_killed_import_gives_its_space_back_on_reopen(tmp_path):
    path = tmp_path / "ws" / "curate.duckdb"
    _store_with(path, 2_000, tmp_path)
    before = path.stat().st_size
    big = tmp_path / "big.jsonl"
    write_jsonl(big, [{"messages": chat(f"q {i} " + "lorem " * 30, f"a {i}")}
                      for i in range(150_000)])
    code = ("import os, sys\nfrom curation import Store, User, import_file\n"
            "s = Store(sys.argv[1]); import_file(s, sys.argv[2], user=User('t', 'admin'))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(big)],
                            env={**os.environ, "CURATE_IMPORT_WORKERS": "0"})
    try:
        while path.stat().st_size < before + 20_000_000 and proc.poll() is None:
            pass
    finally:
        proc.kill()
        proc.wait()
    if path.stat().st_size < before + 20_000_000:
        pytest.skip("the import finished before it could be killed")
    with Store(path) as store:
        assert store.count() == 2_000
    assert path.stat().st_size <= before + 1_000_000


@pytest.mark.parametrize("name,content", [
    ("empty.jsonl", b""), ("empty.csv", b""), ("blank.jsonl", b"\n\n  \n"),
    ("blank.csv", b"\r\n\r\n"), ("array.json", b"[]"), ("array.jsonl", b" [ ]\n"),
    ("header.csv", b"prompt,completion\n"),
])
def test_a_file_without_records_is_an_error_whatever_its_kind(seeded_store, tmp_path, name,
                                                               content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableFile, match=re.escape(str(path)) + " holds no records"):
        import_file(seeded_store, path, user=admin("t"))
    assert seeded_store.count() == 6


def test_the_cli_refuses_an_empty_jsonl(tmp_path, empty_store):
    empty_store.close()
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "curate", "import", str(path), "--db",
                             str(empty_store.path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "holds no records" in result.stderr


# --- regular expressions ---------------------------------------------------------------------

UNSUPPORTED = {"(?=x)y": "invalid perl operator", r"(a)\1": "invalid escape sequence",
               "(.*){1,32000}": "invalid repetition size"}


@pytest.mark.parametrize("pattern", UNSUPPORTED)
def test_a_pattern_re2_cannot_run_is_refused_with_its_reason(pattern):
    re.compile(pattern)  # Python accepts it: the check must be RE2's
    with pytest.raises(InvalidValue, match=re.escape(UNSUPPORTED[pattern])):
        ExampleFilter(search=pattern, regex=True)


def test_supported_patterns_still_search(seeded_store):
    assert seeded_store.count(ExampleFilter(search=r"question [0-2] about \w+ing",
                                            regex=True)) == 2


@pytest.mark.parametrize("page_name", ("browse", "review"))
@pytest.mark.parametrize("pattern", UNSUPPORTED)
def test_pages_show_one_line_for_an_unsupported_pattern(seeded_store, monkeypatch, page_name,
                                                        pattern):
    monkeypatch.setenv("CURATE_DB", str(seeded_store.path))
    monkeypatch.delenv("CURATE_SINGLE_USER", raising=False)
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
    at.session_state["user"] = ADMIN
    at.switch_page(page(page_name)).run()
    at.toggle(key=f"{page_name}_regex").set_value(True)
    at.text_input(key=f"{page_name}_search").set_value(pattern).run()
    assert not at.exception
    messages = [re.sub(r"\\(.)", r"\1", e.value) for e in at.sidebar.error]
    assert any("is not a regular expression the search engine (RE2) supports" in m
               and UNSUPPORTED[pattern] in m for m in messages)


@pytest.mark.parametrize("page_name", ("browse", "review"))
def test_an_unsupported_pattern_selects_nothing_not_everything(seeded_store, monkeypatch,
                                                               page_name):
    """The refused search used to be dropped: the page then showed (and a bulk action or the
    Review queue served) every example, as if nothing had been asked for."""
    monkeypatch.setenv("CURATE_DB", str(seeded_store.path))
    monkeypatch.delenv("CURATE_SINGLE_USER", raising=False)
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
    at.session_state["user"] = ADMIN
    at.switch_page(page(page_name)).run()
    shows_example = [s.value for s in at.subheader if s.value.startswith("Example #")] \
        if page_name == "review" else [d.value for d in at.dataframe if len(d.value)]
    assert shows_example  # the page shows examples before the search
    at.toggle(key=f"{page_name}_regex").set_value(True)
    at.text_input(key=f"{page_name}_search").set_value("(?=x)y").run()
    assert not at.exception and at.sidebar.error
    assert not [s.value for s in at.subheader if s.value.startswith("Example #")]
    assert not [d.value for d in at.dataframe if len(d.value)]
    assert not [b for b in at.button if b.key and "bulk" in b.key and not b.disabled]
