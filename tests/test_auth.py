"""Roles checked in the core for every mutating action, and sign-in that neither tells names
apart by its timing nor lets anyone guess passwords without limit."""

from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path

import orjson
import pytest
from streamlit.testing.v1 import AppTest

from curation import ExampleFilter, PermissionDenied, User, export_jsonl, import_file
from curation.auth import (
    ROLES,
    SignInThrottle,
    add_user,
    set_role,
    sign_in,
    users,
)
from curation.checks import dismiss, keep_one, run_check
from curation.errors import TooManySignIns, UnknownUser
from curation.checks.coverage import Targets, get_targets, set_targets
from curation.demo import load_demo
from curation.exporter import write_snapshot
from curation.uploads import save_upload
from tests.conftest import PROJECT_ROOT, chat, write_jsonl
from training.config import TrainConfig
from training.launcher import cancel, launch, read_run, resume
from training.evaluate import cancel_eval
from training.run_folder import EVAL_STATUS, MANIFEST, STATUS

ANNOTATOR, REVIEWER, ADMIN = (User("ann", "annotator"), User("rita", "reviewer"),
                              User("ada", "admin"))
PASSWORD = "correct horse"

# Each mutating core function, called as `user`, with the lowest role that may call it.
ACTIONS = {
    "import_file": "admin", "export_jsonl": "admin", "write_snapshot": "admin",
    "load_demo": "admin", "save_upload": "admin", "add_user": "admin", "set_role": "admin",
    "launch": "admin", "resume": "admin", "cancel": "admin", "cancel_eval": "admin",
    "run_check": "reviewer", "set_targets": "reviewer", "dismiss": "reviewer",
    "keep_one": "reviewer",
}
CHEAP = set(ACTIONS) - {"launch", "resume"}  # these two start a real trainer when allowed


@pytest.fixture
def workspace(seeded_store, tmp_path):
    """The seeded store, an input file, a snapshot, an account and an interrupted run folder;
    returns (store, call) where call(name, user) runs the named action as that user."""
    store = seeded_store
    add_user(store, ADMIN, "ann", "annotator", password=PASSWORD)
    snapshot = store.snapshot(ExampleFilter(), actor="setup")
    data = write_jsonl(tmp_path / "more.jsonl", [{"messages": chat("new one", "answer")}])
    run_dir = store.path.parent / "runs" / "run-x"
    run_dir.mkdir(parents=True)
    (run_dir / MANIFEST).write_bytes(orjson.dumps({"run_id": "run-x"}))
    (run_dir / STATUS).write_bytes(orjson.dumps({"state": "interrupted"}))
    # an evaluation just queued (no process yet): cancelling it marks it cancelled
    (run_dir / EVAL_STATUS).write_bytes(orjson.dumps({"run_id": "run-x", "state": "queued"}))
    calls = {
        "import_file": lambda u: import_file(store, data, user=u),
        "export_jsonl": lambda u: export_jsonl(store, tmp_path / "out" / "x.jsonl", user=u,
                                               where=ExampleFilter()),
        "write_snapshot": lambda u: write_snapshot(store, snapshot.id,
                                                   tmp_path / "out" / "snap.jsonl", user=u),
        "load_demo": lambda u: load_demo(store, user=u),
        "save_upload": lambda u: save_upload(u, store.path.parent, b'{"a": 1}\n'),
        "add_user": lambda u: add_user(store, u, "eve", "admin", password=PASSWORD),
        "set_role": lambda u: set_role(store, u, "ann", "admin"),
        "launch": lambda u: launch(store, u, TrainConfig()),
        "resume": lambda u: resume(store, u, "run-x"),
        "cancel": lambda u: cancel(u, run_dir),
        "cancel_eval": lambda u: cancel_eval(u, run_dir, timeout=1),
        "run_check": lambda u: run_check(store, "exact_duplicates", user=u, force=True),
        "set_targets": lambda u: set_targets(store, u, Targets(default_min=3)),
        "dismiss": lambda u: dismiss(store, u, "near_duplicates", [1, 2], "not_duplicates"),
        "keep_one": lambda u: keep_one(store, u, [1, 2], 1),
    }
    return store, lambda name, user: calls[name](user)


def _state(store, folder: Path) -> tuple:
    """Every row of every table of the store, and every file under `folder` with a digest of
    its bytes: what a refused action must leave exactly as it was."""
    cur = store.cursor()
    tables = [r[0] for r in cur.execute("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema = 'main' ORDER BY 1").fetchall()]
    rows = {t: sorted(map(repr, cur.execute(f'SELECT * FROM "{t}"').fetchall()))
            for t in tables}
    files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(folder.rglob("*")) if p.is_file() and ".duckdb" not in p.name}
    return rows, files


REFUSED = [(name, user) for name, role in ACTIONS.items() for user in (ANNOTATOR, REVIEWER)
           if ROLES.index(user.role) < ROLES.index(role)]


@pytest.mark.parametrize("name, user", REFUSED, ids=[f"{n}-{u.role}" for n, u in REFUSED])
def test_a_role_below_the_action_is_refused_and_nothing_is_written(workspace, tmp_path, name,
                                                                   user):
    store, call = workspace
    before = _state(store, tmp_path)
    with pytest.raises(PermissionDenied, match=f"{user.name} is an? {user.role}"):
        call(name, user)
    assert _state(store, tmp_path) == before


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_the_lowest_allowed_role_may_and_it_changes_the_workspace(workspace, tmp_path, name):
    """The counterpart of the refusals: the same call by the lowest role that may do it
    changes the store or its files, so 'nothing written' above can fail."""
    store, call = workspace
    user = {"admin": ADMIN, "reviewer": REVIEWER}[ACTIONS[name]]
    before = _state(store, tmp_path)
    call(name, user)
    assert _state(store, tmp_path) != before


def test_each_outcome_is_what_the_action_says(workspace):
    store, call = workspace
    call("set_role", ADMIN)
    assert {u.name: u.role for u in users(store)}["ann"] == "admin"
    call("set_targets", REVIEWER)
    assert get_targets(store).default_min == 3
    call("cancel", ADMIN)
    assert read_run(store.path.parent / "runs" / "run-x").state == "cancelled"
    report = call("import_file", ADMIN)
    assert report.imported == 1
    assert store.find()[-1].created_by == "ada"


def test_a_name_in_place_of_a_user_is_a_clear_type_error(seeded_store):
    with pytest.raises(TypeError, match="must be a curation.auth.User"):
        run_check(seeded_store, "exact_duplicates", user="ada")


# --- sign-in ----------------------------------------------------------------------------------

class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def accounts(empty_store):
    add_user(empty_store, ADMIN, "rita", "reviewer", password=PASSWORD)
    add_user(empty_store, ADMIN, "sso", "reviewer", email="sso@example.com")
    return empty_store


def _seconds(attempt) -> float:
    began = time.perf_counter()
    with pytest.raises(UnknownUser):
        attempt()
    return time.perf_counter() - began


def test_unknown_names_take_as_long_as_wrong_passwords(accounts):
    """Before: a wrong password took ~114 ms (argon2), an unknown name ~0.4 ms."""
    throttle = SignInThrottle(max_failures=10_000)
    times: dict[str, list[float]] = {"known": [], "unknown": [], "no password": []}
    for i in range(7):  # interleaved, so load on the machine hits all three alike
        times["known"].append(_seconds(lambda: sign_in(accounts, "rita", "wrong password",
                                                       throttle=throttle)))
        times["unknown"].append(_seconds(lambda i=i: sign_in(accounts, f"nobody{i}", "wrong",
                                                         throttle=throttle)))
        times["no password"].append(_seconds(lambda: sign_in(accounts, "sso", "anything",
                                                             throttle=throttle)))
    known = statistics.median(times["known"])
    for kind in ("unknown", "no password"):
        assert statistics.median(times[kind]) > known / 4, times


def test_ten_failures_lock_the_name_out_from_every_client_until_it_expires(accounts):
    clock = Clock()
    throttle = SignInThrottle(clock=clock)
    for i in range(10):
        with pytest.raises(UnknownUser):
            sign_in(accounts, "rita", f"guess {i}", client=f"10.0.0.{i}", throttle=throttle)
    with pytest.raises(TooManySignIns, match=r"for this user name; try again in 1 min 00 s "
                                             r"\(after \d\d:\d\d:\d\d UTC\)") as locked:
        sign_in(accounts, "rita", PASSWORD, client="10.0.1.1", throttle=throttle)
    assert locked.value.retry_after == 60
    clock.now += 59
    with pytest.raises(TooManySignIns, match="try again in 1 s"):
        sign_in(accounts, "rita", PASSWORD, client="10.0.1.1", throttle=throttle)
    clock.now += 1
    assert sign_in(accounts, "rita", PASSWORD, client="10.0.1.1", throttle=throttle).name == "rita"


def test_an_unknown_name_is_locked_out_exactly_like_a_known_one(accounts):
    clock = Clock()
    throttle = SignInThrottle(max_failures=3, clock=clock)
    messages = {}
    for name in ("rita", "nobody"):
        for _ in range(3):
            with pytest.raises(UnknownUser):
                sign_in(accounts, name, "wrong", throttle=throttle)
        with pytest.raises(TooManySignIns) as locked:
            sign_in(accounts, name, "wrong", throttle=throttle)
        messages[name] = str(locked.value).split(" (after")[0]
    assert messages["rita"] == messages["nobody"]


def test_ten_failures_lock_the_client_out_for_every_name(accounts):
    clock = Clock()
    throttle = SignInThrottle(clock=clock)
    for i in range(10):  # a spray over many names from one address
        with pytest.raises(UnknownUser):
            sign_in(accounts, f"user{i}", "password1", client="203.0.113.7", throttle=throttle)
    with pytest.raises(TooManySignIns, match="from this address; try again in 1 min 00 s"):
        sign_in(accounts, "rita", PASSWORD, client="203.0.113.7", throttle=throttle)
    # rita herself, elsewhere, is not locked out by that address
    assert sign_in(accounts, "rita", PASSWORD, client="198.51.100.2", throttle=throttle)
    clock.now += 60
    assert sign_in(accounts, "rita", PASSWORD, client="203.0.113.7", throttle=throttle)


def test_repeated_lockouts_double_up_to_a_cap_and_always_expire(accounts):
    clock = Clock()
    throttle = SignInThrottle(max_failures=2, lockout=60, max_lockout=200, clock=clock)
    waits = []
    for _ in range(4):
        for _ in range(2):
            with pytest.raises(UnknownUser):
                sign_in(accounts, "rita", "wrong", throttle=throttle)
        with pytest.raises(TooManySignIns) as locked:
            sign_in(accounts, "rita", PASSWORD, throttle=throttle)
        waits.append(locked.value.retry_after)
        clock.now += locked.value.retry_after
    assert waits == [60, 120, 200, 200]
    assert sign_in(accounts, "rita", PASSWORD, throttle=throttle).role == "reviewer"
    # a success clears the name's count: the next lock-out starts short again
    for _ in range(2):
        with pytest.raises(UnknownUser):
            sign_in(accounts, "rita", "wrong", throttle=throttle)
    with pytest.raises(TooManySignIns) as locked:
        sign_in(accounts, "rita", PASSWORD, throttle=throttle)
    assert locked.value.retry_after == 60


def test_the_sign_in_page_says_when_to_try_again(monkeypatch, accounts):
    import curation.auth

    monkeypatch.setattr(curation.auth, "SIGN_IN_THROTTLE", SignInThrottle(max_failures=2))
    monkeypatch.setenv("CURATE_DB", str(accounts.path))
    monkeypatch.delenv("CURATE_SINGLE_USER", raising=False)
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30).run()
    at.text_input[0].input("rita")
    for _ in range(2):
        at.text_input[1].input("wrong password")
        at.button[0].click().run()
        assert "wrong password" in at.error[0].value
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert "try again in 1 min 00 s" in at.error[0].value
    assert at.title[0].value == "Sign in to Curate" and not at.metric
