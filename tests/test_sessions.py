"""Sign-in sessions (start, resume, expiry, sign-out, tampering) and saved views per person."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner

from curate.cli import main
from curation import InvalidValue, Store, PermissionDenied, SessionInvalid, UnknownUser, User
from curation.auth import add_user, set_role
from curation.sessions import (SESSION_HOURS, delete_view, end_session, end_user_sessions,
                               open_sessions, resume_session, save_view, saved_views,
                               start_session)
from curation.store import utcnow
from tests.conftest import admin

PASSWORD = "long-enough-1"


@pytest.fixture
def people(empty_store):
    add_user(empty_store, admin("setup"), "rita", "reviewer", password=PASSWORD)
    add_user(empty_store, admin("setup"), "ann", "annotator", password=PASSWORD)
    return empty_store


def test_a_session_resumes_as_its_account_until_it_expires(people):
    now = utcnow()
    session = start_session(people, User("rita", "reviewer"), now=now)
    assert session.expires_at == now + timedelta(hours=SESSION_HOURS)
    assert resume_session(people, session.token, now=now + timedelta(hours=11)) == \
        User("rita", "reviewer")
    with pytest.raises(SessionInvalid, match="expired"):
        resume_session(people, session.token, now=now + timedelta(hours=SESSION_HOURS))


def test_only_the_hash_of_the_token_is_stored(people):
    session = start_session(people, User("rita", "reviewer"))
    stored = people.cursor().execute("SELECT token_hash FROM sessions").fetchall()
    assert len(stored) == 1 and session.token not in stored[0][0]
    assert len(stored[0][0]) == 64


def test_sign_out_revokes_the_token_server_side(people):
    first = start_session(people, User("rita", "reviewer"))
    second = start_session(people, User("rita", "reviewer"))
    assert end_session(people, first.token) is True
    with pytest.raises(SessionInvalid, match="signed out"):
        resume_session(people, first.token)
    assert end_session(people, first.token) is False  # already signed out
    assert resume_session(people, second.token).name == "rita"  # other devices stay in


def test_a_tampered_or_made_up_token_is_refused(people):
    token = start_session(people, User("rita", "reviewer")).token
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(SessionInvalid, match="unknown"):
        resume_session(people, flipped)
    for bad in ("", "rita", token + "x", token[:-1] + "!", None):
        with pytest.raises(SessionInvalid, match="malformed"):
            resume_session(people, bad)
    assert end_session(people, "not a token") is False
    assert resume_session(people, token).name == "rita"


def test_a_resumed_session_carries_the_current_role(people):
    token = start_session(people, User("ann", "annotator")).token
    set_role(people, admin("setup"), "ann", "reviewer")
    assert resume_session(people, token) == User("ann", "reviewer")


def test_no_session_for_an_account_that_does_not_exist(people):
    with pytest.raises(UnknownUser):
        start_session(people, User("local", "admin"))
    with pytest.raises(InvalidValue):
        start_session(people, User("rita", "reviewer"), hours=0)


def test_an_admin_signs_every_session_of_a_person_out(people):
    tokens = [start_session(people, User("rita", "reviewer")).token for _ in range(2)]
    other = start_session(people, User("ann", "annotator")).token
    assert sorted(s["user"] for s in open_sessions(people, admin("boss"))) == \
        ["ann", "rita", "rita"]
    with pytest.raises(PermissionDenied):
        end_user_sessions(people, User("rita", "reviewer"), "rita")
    assert end_user_sessions(people, admin("boss"), "rita") == 2
    for token in tokens:
        with pytest.raises(SessionInvalid):
            resume_session(people, token)
    assert resume_session(people, other).name == "ann"
    assert [s["user"] for s in open_sessions(people, admin("boss"))] == ["ann"]


def test_long_ended_sessions_are_forgotten_on_the_next_sign_in(people):
    old = utcnow() - timedelta(days=30)
    start_session(people, User("rita", "reviewer"), now=old)
    start_session(people, User("ann", "annotator"))
    names = people.cursor().execute("SELECT user_name FROM sessions").fetchall()
    assert names == [("ann",)]


# --- saved views ----------------------------------------------------------------------------

def test_saved_views_belong_to_their_owner(people):
    rita, ann = User("rita", "reviewer"), User("ann", "annotator")
    save_view(people, rita, "review", "Billing to check",
              {"queue": "pending", "review_label": ["billing", "access"]})
    save_view(people, rita, "browse", "Rejected", {"browse_status": ["rejected"]})
    save_view(people, ann, "review", "Billing to check", {"queue": "flagged"})
    mine = saved_views(people, rita, "review")
    assert [(v.name, v.params) for v in mine] == [
        ("Billing to check", {"queue": "pending", "review_label": ["billing", "access"]})]
    assert [v.page for v in saved_views(people, rita)] == ["browse", "review"]
    assert saved_views(people, ann, "review")[0].params == {"queue": "flagged"}


def test_saving_a_name_again_replaces_the_view_and_delete_removes_it(people):
    rita = User("rita", "reviewer")
    save_view(people, rita, "review", "Mine", {"queue": "pending"})
    save_view(people, rita, "review", "  Mine  ", {"queue": "flagged"})
    assert [(v.name, v.params) for v in saved_views(people, rita, "review")] == [
        ("Mine", {"queue": "flagged"})]
    delete_view(people, rita, "review", "Mine")
    assert saved_views(people, rita, "review") == []
    with pytest.raises(InvalidValue, match="no saved view called 'Mine'"):
        delete_view(people, rita, "review", "Mine")


def test_a_saved_view_is_checked(people):
    rita = User("rita", "reviewer")
    with pytest.raises(InvalidValue, match="needs a name"):
        save_view(people, rita, "review", "   ", {})
    with pytest.raises(InvalidValue, match="pages review, browse"):
        save_view(people, rita, "training", "x", {})
    with pytest.raises(InvalidValue, match="'queue'"):
        save_view(people, rita, "review", "x", {"queue": 3})
    with pytest.raises(InvalidValue, match="at most 80"):
        save_view(people, rita, "review", "x" * 81, {})
    assert saved_views(people, rita) == []


def test_curate_user_sign_out_ends_every_session_of_the_account(people):
    token = start_session(people, User("rita", "reviewer")).token
    other = start_session(people, User("ann", "annotator")).token
    people.close()  # the CLI opens the file itself
    result = CliRunner().invoke(main, ["user", "sign-out", "rita", "--db", str(people.path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "signed out 1 open session of rita"
    with Store(people.path) as store:
        with pytest.raises(SessionInvalid, match="signed out"):
            resume_session(store, token)
        assert resume_session(store, other).name == "ann"


def test_curate_user_sessions_lists_who_is_signed_in_as_json(people):
    import json

    start_session(people, User("rita", "reviewer"))
    ended = start_session(people, User("ann", "annotator")).token
    end_session(people, ended)
    people.close()
    result = CliRunner().invoke(main, ["user", "sessions", "--json", "--db", str(people.path)])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert row["user"] == "rita" and row["expires"] > row["started"]


def test_an_admin_sees_who_is_signed_in_on_overview(seeded_store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PROJECT_ROOT

    add_user(seeded_store, admin("setup"), "rita", "reviewer", password=PASSWORD)
    start_session(seeded_store, User("rita", "reviewer"))
    monkeypatch.setenv("CURATE_DB", str(seeded_store.path))
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
    at.session_state["user"] = User("ada", "admin")
    at.run()
    assert not at.exception, at.exception
    [table] = [d.value for d in at.dataframe if "since (UTC)" in d.value.columns
               and "example" not in d.value.columns]
    assert list(table["who"]) == ["rita"]
    at.session_state["user"] = User("rita", "reviewer")
    at.run()
    assert not [d for d in at.dataframe if "since (UTC)" in d.value.columns]
