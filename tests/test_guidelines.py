"""Guidelines (versions, diff, safe rendering), the guidelines version of decisions and the
"decided under older guidelines" filter, label descriptions, comments, roles and the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import duckdb
import pytest

from curation import ExampleFilter, InvalidValue, PermissionDenied, Store, guidelines, review
from curation import comments as comments_core
from curation.auth import User
from curation.errors import ExampleNotFound
from curation.store import _schema
from tests.conftest import chat

ADA, RITA, ANN = User("ada", "admin"), User("rita", "reviewer"), User("ann", "annotator")
OLDER = ExampleFilter(older_guidelines=True)


# --- versions and diff ----------------------------------------------------------------------

def test_each_save_is_a_new_version_with_who_when_and_note(empty_store):
    assert guidelines.current(empty_store) is None and guidelines.history(empty_store) == []
    first = guidelines.save(empty_store, ADA, "# Rules\nBe precise.\n", note="first")
    second = guidelines.save(empty_store, ADA, "# Rules\nBe precise and kind.\n")
    assert (first.version, second.version) == (1, 2)
    assert guidelines.current(empty_store).text == "# Rules\nBe precise and kind.\n"
    assert guidelines.get(empty_store, 1).text == "# Rules\nBe precise.\n"
    assert [(g.version, g.saved_by, g.note) for g in guidelines.history(empty_store)] == [
        (2, "ada", None), (1, "ada", "first")]
    assert first.saved_at <= second.saved_at


def test_the_diff_between_two_versions_is_a_unified_diff(empty_store):
    guidelines.save(empty_store, ADA, "# Rules\nBe precise.\nCite the policy.\n")
    guidelines.save(empty_store, ADA, "# Rules\nBe precise and kind.\nCite the policy.\n")
    diff = guidelines.diff(empty_store, 1, 2)
    assert diff[:2] == ["--- version 1", "+++ version 2"]
    assert "-Be precise." in diff and "+Be precise and kind." in diff
    assert " Cite the policy." in diff
    assert "+# Rules" in guidelines.diff(empty_store, 0, 1)  # from nothing


def test_saving_refuses_empty_unchanged_and_stale_text(empty_store):
    with pytest.raises(InvalidValue, match="empty"):
        guidelines.save(empty_store, ADA, "  \n")
    guidelines.save(empty_store, ADA, "v1")
    with pytest.raises(InvalidValue, match="same as version 1"):
        guidelines.save(empty_store, ADA, "v1")
    guidelines.save(empty_store, User("bob", "admin"), "v2 by bob", base_version=1)
    with pytest.raises(InvalidValue, match=r"changed by bob .* \(now version 2; you edited "
                                           "version 1"):
        guidelines.save(empty_store, ADA, "v2 by ada", base_version=1)
    assert guidelines.current_version(empty_store) == 2
    assert guidelines.current(empty_store).text == "v2 by bob"
    with pytest.raises(InvalidValue, match="no version 7; there are versions 1 to 2"):
        guidelines.get(empty_store, 7)


@pytest.mark.parametrize("user", [RITA, ANN], ids=lambda u: u.role)
def test_only_admins_edit_guidelines_and_label_descriptions(empty_store, user):
    with pytest.raises(PermissionDenied, match="'edit_guidelines' needs the admin role"):
        guidelines.save(empty_store, user, "my rules")
    with pytest.raises(PermissionDenied):
        guidelines.set_label_description(empty_store, user, "billing", "money")
    assert guidelines.history(empty_store) == []
    assert guidelines.label_descriptions(empty_store) == {}


# --- rendering safely -----------------------------------------------------------------------

def test_safe_markdown_neutralises_html_and_remote_images():
    text = ("# Title\n<script>alert(1)</script>\n![logo](http://evil.example/p.png)\n"
            "![ref][x] and <img src=https://evil.example/q.png>\n"
            "Keep `a < b` and **bold**.\n```\n<b>code</b> ![c](http://x/y.png)\n```\nafter")
    safe = guidelines.safe_markdown(text)
    assert "<script" not in safe and "<img" not in safe
    assert "&lt;script>alert(1)&lt;/script>" in safe
    assert "![" not in safe.split("```")[0] and "![" not in safe.split("```")[2]
    assert "[image not shown: logo] `http://evil.example/p.png`" in safe
    assert "!\\[ref][x]" in safe
    assert "Keep `a < b` and **bold**." in safe  # code spans as they were
    assert "```\n<b>code</b> ![c](http://x/y.png)\n```" in safe  # fenced code untouched
    assert safe.startswith("# Title\n") and safe.endswith("\nafter")


# --- decisions record the guidelines version -------------------------------------------------

def _two_examples(store: Store) -> tuple[int, int]:
    return (store.add(chat("q1", "a1"), actor="seed").id,
            store.add(chat("q2", "a2"), actor="seed").id)


def test_every_decision_records_the_guidelines_version_in_its_audit_event(empty_store):
    first, second = _two_examples(empty_store)
    review.decide(empty_store, RITA, first, "accept", base_version=1)
    guidelines.save(empty_store, ADA, "v1")
    review.decide(empty_store, RITA, second, "reject", base_version=1, reason="off topic")
    guidelines.save(empty_store, ADA, "v2")
    review.decide(empty_store, RITA, first, "needs_work", base_version=2, reason="redo")

    def decision_versions(example_id):
        by_event = empty_store.event_guidelines_versions(example_id)
        return [(e["action"], by_event[e["id"]]) for e in empty_store.history(example_id)]

    assert decision_versions(first) == [("create", None), ("accept", None), ("needs_work", 2)]
    assert decision_versions(second) == [("create", None), ("reject", 1)]
    under = guidelines.decided_under(empty_store, second)
    assert (under.action, under.actor, under.version, under.current) == ("reject", "rita", 1, 2)
    assert under.outdated
    assert not guidelines.decided_under(empty_store, first).outdated
    assert guidelines.decided_under(empty_store, empty_store.add(chat("q", "a"),
                                                                actor="x").id) is None


def test_the_older_guidelines_filter_finds_what_a_change_affects(empty_store):
    first, second = _two_examples(empty_store)
    third = empty_store.add(chat("q3", "a3"), actor="seed", status="accepted").id  # imported
    review.decide(empty_store, RITA, first, "accept", base_version=1)
    assert empty_store.count(OLDER) == 0  # no guidelines: nothing is older
    guidelines.save(empty_store, ADA, "v1")
    assert empty_store.example_ids(OLDER) == [first]  # decided before there were any
    review.decide(empty_store, RITA, second, "reject", base_version=1, reason="no")
    assert empty_store.example_ids(OLDER) == [first]
    guidelines.save(empty_store, ADA, "v2")
    assert empty_store.example_ids(OLDER) == [first, second]
    review.decide(empty_store, RITA, first, "accept", base_version=2, reason="re-checked")
    assert empty_store.example_ids(OLDER) == [first, second]  # accepted again: no change
    review.decide(empty_store, RITA, first, "reject", base_version=2, reason="re-checked")
    assert empty_store.example_ids(OLDER) == [second]
    review.bulk(empty_store, RITA, [second], "accept")  # a bulk decision counts too
    assert empty_store.example_ids(OLDER) == []
    assert third not in empty_store.example_ids(ExampleFilter(older_guidelines=True,
                                                              status=("accepted",)))
    assert OLDER.describe() == {"older_guidelines": True}


# --- label descriptions ---------------------------------------------------------------------

def test_label_descriptions_are_set_replaced_and_removed_by_admins(empty_store):
    saved = guidelines.set_label_description(empty_store, ADA, " billing ",
                                             "Questions about invoices and charges.",
                                             "Why was I charged twice?")
    assert (saved.label, saved.example, saved.updated_by) == (
        "billing", "Why was I charged twice?", "ada")
    guidelines.set_label_description(empty_store, ADA, "billing", "Money matters.")
    guidelines.set_label_description(empty_store, ADA, "access", "Sign-in problems.")
    described = guidelines.label_descriptions(empty_store)
    assert list(described) == ["access", "billing"]
    assert (described["billing"].description, described["billing"].example) == (
        "Money matters.", None)
    assert guidelines.set_label_description(empty_store, ADA, "billing", "  ") is None
    assert list(guidelines.label_descriptions(empty_store)) == ["access"]
    with pytest.raises(InvalidValue, match="name the label"):
        guidelines.set_label_description(empty_store, ADA, " ", "x")


# --- comments -------------------------------------------------------------------------------

def test_any_role_comments_and_the_thread_keeps_who_when_and_text(empty_store):
    first, second = _two_examples(empty_store)
    one = comments_core.add_comment(empty_store, ANN, first, "  Is this about refunds?  ")
    two = comments_core.add_comment(empty_store, RITA, first, "Yes, see section 2.")
    comments_core.add_comment(empty_store, ADA, second, "Duplicate of #1?")
    thread = comments_core.comments(empty_store, first)
    assert [(c.author, c.text) for c in thread] == [("ann", "Is this about refunds?"),
                                                   ("rita", "Yes, see section 2.")]
    assert thread[0].id == one.id and thread[1].id == two.id and one.at <= two.at
    assert comments_core.comment_counts(empty_store, [first, second, 999]) == {first: 2,
                                                                               second: 1}
    assert empty_store.get(first).version == 1  # a comment is not a change to the example
    assert [e["action"] for e in empty_store.history(first)] == ["create"]


def test_empty_long_and_orphan_comments_are_refused(empty_store):
    (first, _) = _two_examples(empty_store)
    with pytest.raises(InvalidValue, match="empty"):
        comments_core.add_comment(empty_store, ANN, first, "   ")
    with pytest.raises(InvalidValue, match="at most 2,000"):
        comments_core.add_comment(empty_store, ANN, first, "x" * 2001)
    with pytest.raises(ExampleNotFound, match="#999"):
        comments_core.add_comment(empty_store, ANN, 999, "hello")
    assert comments_core.comments(empty_store, first) == []


def test_the_example_filter_finds_examples_by_comment_text(empty_store):
    first, second = _two_examples(empty_store)
    third = empty_store.add(chat("q3", "a3"), actor="seed").id
    comments_core.add_comment(empty_store, ANN, first, "Refund policy unclear")
    comments_core.add_comment(empty_store, RITA, second, "wrong label")
    assert empty_store.example_ids(ExampleFilter(comment="REFUND")) == [first]
    assert empty_store.example_ids(ExampleFilter(comment="*")) == [first, second]
    assert empty_store.example_ids(ExampleFilter(comment="nothing like it")) == []
    assert empty_store.example_ids(ExampleFilter(comment="label", search="q2")) == [second]
    assert third in empty_store.example_ids(ExampleFilter())


# --- migration and CLI ----------------------------------------------------------------------

def test_a_workspace_from_before_the_migration_gains_the_tables(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR "
                "NOT NULL, applied_at TIMESTAMP)")
    ours = next(n for n, (name, _) in enumerate(_schema.MIGRATIONS) if "guidelines" in name)
    for version, (name, sql) in enumerate(_schema.MIGRATIONS[:ours], start=1):
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, name])
    con.execute("INSERT INTO events VALUES (nextval('event_id_seq'), 1, 'accept', 'old', "
                "now(), 2, NULL, NULL, NULL)")
    con.close()
    with Store(path) as store:
        assert store.schema_version() == len(_schema.MIGRATIONS)
        assert store.event_guidelines_versions(1) == {1: None}
        assert guidelines.current(store) is None


def _curate(*args, cwd, input_text=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "curate", *args], check=False, cwd=cwd,
                          env=env, capture_output=True, text=True, input=input_text,
                          timeout=120)


def test_cli_sets_shows_and_lists_versions_as_json(tmp_path):
    (tmp_path / "g1.md").write_text("# Rules\nBe precise.\n")
    (tmp_path / "g2.md").write_text("# Rules\nBe kind.\n")
    db = ["--db", "ws/curate.duckdb"]
    assert _curate("init", *db, cwd=tmp_path).returncode == 0  # show does not create one
    empty = _curate("guidelines", "show", *db, "--json", cwd=tmp_path)
    assert empty.returncode == 0 and json.loads(empty.stdout) == {"version": 0, "text": ""}
    for name, note in (("g1.md", "first"), ("g2.md", "kinder")):
        done = _curate("guidelines", "set", name, *db, "--note", note, "--actor", "ada",
                       cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert "guidelines version 2 saved by ada" in done.stdout
    shown = json.loads(_curate("guidelines", "show", *db, "--version", "1", "--json",
                               cwd=tmp_path).stdout)
    assert (shown["version"], shown["text"], shown["note"]) == (1, "# Rules\nBe precise.\n",
                                                                "first")
    assert _curate("guidelines", "show", *db, cwd=tmp_path).stdout == "# Rules\nBe kind.\n"
    listed = json.loads(_curate("guidelines", "history", *db, "--json", cwd=tmp_path).stdout)
    assert [(v["version"], v["saved_by"], v["note"]) for v in listed] == [
        (2, "ada", "kinder"), (1, "ada", "first")]
    missing = _curate("guidelines", "show", *db, "--version", "9", cwd=tmp_path)
    assert missing.returncode == 1 and "no version 9" in missing.stderr


def test_two_admins_saving_at_once_make_one_version_each_or_a_refusal(empty_store):
    """Concurrent saves from threads of one process (the app's sessions): no version number
    is given twice and no DuckDB error escapes; a refused save names who saved."""
    import threading

    guidelines.save(empty_store, ADA, "v1")
    outcomes, barrier = [], threading.Barrier(4)

    def save(i):
        barrier.wait()
        try:
            outcomes.append(guidelines.save(empty_store, User(f"admin{i}", "admin"),
                                            f"text {i}", base_version=1).version)
        except InvalidValue as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    saved = [o for o in outcomes if isinstance(o, int)]
    assert saved == [2] and len(outcomes) == 4
    assert all(re.search(r"changed by (admin\d at [^(]+|another admin at the same moment) \(now "
                         r"version 2; you edited version 1\)", o)
               for o in outcomes if isinstance(o, str)), outcomes
    assert [g.version for g in guidelines.history(empty_store)] == [2, 1]


def test_needs_attention_names_the_decisions_under_older_guidelines(empty_store):
    from curate.workspace import Workspace

    first, _ = _two_examples(empty_store)
    review.decide(empty_store, RITA, first, "accept", base_version=1)
    ws = Workspace(empty_store, RITA)
    assert not [a for a in ws.needs_attention() if a.page == "guidelines"]
    guidelines.save(empty_store, ADA, "v1")
    [said] = [a for a in ws.needs_attention() if a.page == "guidelines"]
    assert said.message.startswith("1 examples were decided under older guidelines")


def test_the_demo_comes_with_guidelines_and_label_descriptions_it_was_reviewed_under(tmp_path):
    from curation.demo import load_demo

    with Store(tmp_path / "demo.duckdb") as store:
        load_demo(store, user=ADA)
        assert guidelines.current(store).version == 1
        assert "security_incident" in guidelines.current(store).text
        assert set(guidelines.label_descriptions(store)) == set(store.labels())
        assert store.count(ExampleFilter(status=("accepted",))) > 100
        assert store.count(ExampleFilter(older_guidelines=True)) == 0
