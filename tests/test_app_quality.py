"""AppTest of the Quality page on real demo workspaces: running checks, duplicate groups and
their actions, label issues with evidence, roles.

The demo workspace is built (imported and embedded with the packaged model) once per test
session and copied for each test that changes it; label issues are computed once per module.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from curation import Store, import_file
from curation.auth import User
from curation.errors import PermissionDenied
from curation.checks import REGISTRY, dismiss, last_run, load_table, run_check, stored_findings
from curation.demo import load_demo
from curation.checks.duplicates import KEEPER_RULE
from curation.queues import queue_size
from tests.conftest import (PROJECT_ROOT, admin, chat, page, plant_train_eval_pairs,
                            unescaped, write_jsonl)

RITA = User("rita", "reviewer")
ANN = User("ann", "annotator")
SHOWN = [name for name in REGISTRY if name != "coverage"]


def demo_template(tmp_path_factory) -> Path:
    """The demo workspace with every prompt embedded, built once per test session."""
    path = tmp_path_factory.getbasetemp() / "demo_template" / "curate.duckdb"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        with Store(path) as store:
            load_demo(store, user=admin("demo"))
            load_table(store).embed()
    return path


def copy_of(template: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, folder / "curate.duckdb")
    return folder / "curate.duckdb"


@pytest.fixture
def demo_store(tmp_path_factory, tmp_path, file_store) -> Store:
    """A fresh copy of the demo workspace (made with load_demo) for a test that changes it."""
    copy_of(demo_template(tmp_path_factory), tmp_path / "ws")
    return file_store()


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Store:
    """A demo workspace with label issues and leakage computed once for the module."""
    path = copy_of(demo_template(tmp_path_factory), tmp_path_factory.mktemp("noisy"))
    store = Store(path)
    run_check(store, "label_issues", user=admin("setup"))
    run_check(store, "leakage", user=admin("setup"))
    yield store
    store.close()


@pytest.fixture
def quality_page(monkeypatch):
    def open_page(store: Store, user: User = RITA) -> AppTest:
        monkeypatch.setenv("CURATE_DB", str(store.path))
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60)
        at.session_state["user"] = user
        at.switch_page(page("quality")).run()
        assert not at.exception, at.exception
        return at

    return open_page


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    return at


def group_keys(at: AppTest, check: str) -> list[str]:
    """The groups shown, as their member ids joined by '-' (from the Keep buttons' keys)."""
    pattern = re.compile(rf"q_{check}_([\d-]+)_keep$")
    return [m.group(1) for b in at.button if b.key and (m := pattern.match(b.key))]


def test_page_lists_every_registered_check_but_coverage(quality_page, demo_store):
    at = quality_page(demo_store)
    bold = [m.value for m in at.markdown]
    captions = [c.value for c in at.caption]
    for name in SHOWN:
        check = REGISTRY[name]
        assert f"**{check.title}**" in bold
        assert check.description in captions
        assert not at.button(key=f"q_run_{name}").disabled
    assert "q_run_coverage" not in [b.key for b in at.button]
    assert [m.value for m in at.metric] == ["—"] * len(SHOWN)  # nothing has run yet
    assert any("has not run yet" in i.value for i in at.info)


def test_running_exact_duplicates_from_the_page_shows_six_groups(quality_page, demo_store):
    at = quality_page(demo_store)
    click(at, "q_run_exact_duplicates")
    assert last_run(demo_store, "exact_duplicates")["run_by"] == "rita"
    assert at.segmented_control(key="q_view").value == "exact_duplicates"
    assert len(group_keys(at, "exact_duplicates")) == 6
    assert "12" in [m.value for m in at.metric]
    assert any("done" in unescaped(t.value) for t in at.toast)
    # members are shown with their text, as text
    first = [int(i) for i in group_keys(at, "exact_duplicates")[0].split("-")]
    prompt = next(m["content"] for m in demo_store.get(first[0]).messages if m["role"] == "user")
    assert prompt in [t.value for t in at.text]


def test_keep_one_rejects_the_others_and_the_group_is_gone_after_a_rerun(quality_page,
                                                                       demo_store):
    at = quality_page(demo_store)
    click(at, "q_run_exact_duplicates")
    group = group_keys(at, "exact_duplicates")[0]
    a, b = (int(i) for i in group.split("-"))
    radio = at.radio(key=f"q_exact_duplicates_{group}_keeper")
    keeper = a if radio.value == b else b  # the one not suggested
    radio.set_value(keeper).run()
    other = b if keeper == a else a
    keep = at.button(key=f"q_exact_duplicates_{group}_keep")
    assert keep.label == f"Keep #{keeper}, reject the others"
    click(at, keep.key)
    assert demo_store.get(other).status == "rejected"
    assert demo_store.history(other)[-1]["reason"] == f"duplicate of #{keeper}"
    assert demo_store.get(keeper).status != "rejected"
    assert group not in group_keys(at, "exact_duplicates")  # settled: hidden at once
    click(at, "q_run_exact_duplicates")
    assert len(group_keys(at, "exact_duplicates")) == 5
    assert not {a, b} & {f.example_id for f in stored_findings(demo_store, "exact_duplicates")}


def test_not_duplicates_is_remembered(quality_page, demo_store):
    at = quality_page(demo_store)
    click(at, "q_run_exact_duplicates")
    group = group_keys(at, "exact_duplicates")[0]
    members = {int(i) for i in group.split("-")}
    click(at, f"q_exact_duplicates_{group}_dismiss")
    assert all(demo_store.get(i).status != "rejected" for i in members)
    click(at, "q_run_exact_duplicates")
    assert group not in group_keys(at, "exact_duplicates")
    assert len(group_keys(at, "exact_duplicates")) == 5
    assert not members & {f.example_id for f in stored_findings(demo_store, "exact_duplicates")}
    again = quality_page(demo_store)  # a new session: still not shown
    assert len(group_keys(again, "exact_duplicates")) == 5


def test_annotator_sees_findings_but_cannot_run_or_act(quality_page, demo_store):
    run_check(demo_store, "exact_duplicates", user=admin("setup"))
    at = quality_page(demo_store, ANN)
    assert at.button(key="q_run_all").disabled
    assert all(at.button(key=f"q_run_{name}").disabled for name in SHOWN)
    groups = group_keys(at, "exact_duplicates")
    assert len(groups) == 6
    assert at.button(key=f"q_exact_duplicates_{groups[0]}_keep").disabled
    assert at.button(key=f"q_exact_duplicates_{groups[0]}_dismiss").disabled
    assert any("annotator" in c.value and "needs the reviewer role" in c.value
               for c in at.caption)
    with pytest.raises(PermissionDenied):
        dismiss(demo_store, ANN, "exact_duplicates",
                [int(i) for i in groups[0].split("-")], "not_duplicates")


def test_group_members_are_shown_as_text_never_markdown(quality_page, empty_store, tmp_path):
    payload = "<script>alert(1)</script> ![x](http://example.com/a.png) **bold**"
    write_jsonl(tmp_path / "bad.jsonl", [  # the same once punctuation is ignored
        {"label": "<img src=x onerror=alert(1)>", "messages": chat(payload + end, payload)}
        for end in ("", "!")])
    import_file(empty_store, tmp_path / "bad.jsonl", user=admin("t"))
    at = quality_page(empty_store)
    click(at, "q_run_exact_duplicates")
    assert len(group_keys(at, "exact_duplicates")) == 1
    assert payload in [t.value for t in at.text]
    rendered = [e.value for kind in ("markdown", "caption", "info", "success", "warning",
                                     "error", "toast") for e in getattr(at, kind)]
    assert not any("<script>" in v or "](http" in v or "<img" in v for v in rendered)


def label_issue_cards(at: AppTest) -> list[int]:
    pattern = re.compile(r"q_label_issues_(\d+)_relabel$")
    return [int(m.group(1)) for b in at.button if b.key and (m := pattern.match(b.key))]


def test_label_ok_is_applied_by_later_runs(noisy):
    """Runs first of the module's label-issue tests, while the findings can be reused."""
    example_id = stored_findings(noisy, "label_issues")[-1].example_id
    dismiss(noisy, RITA, "label_issues", [example_id], "label_ok")
    result = run_check(noisy, "label_issues", user=admin("t"))
    assert example_id not in {f.example_id for f in result.issues}


def test_label_issue_evidence_carries_the_labels_it_claims(noisy):
    for finding in stored_findings(noisy, "label_issues")[:5]:
        d = finding.details
        assert {noisy.get(i).label for i in d["nearest_given"]} == {d["given"]}
        assert {noisy.get(i).label for i in d["nearest_suggested"]} == {d["suggested"]}


def test_label_issues_show_the_suggestion_and_evidence_and_set_the_label(quality_page, noisy):
    at = quality_page(noisy)
    at.segmented_control(key="q_view").set_value("label_issues").run()
    worst = stored_findings(noisy, "label_issues")[0]
    d = worst.details
    assert label_issue_cards(at)[0] == worst.example_id
    table = next(df.value for df in at.dataframe if "Suggested label" in df.value.columns)
    assert table["Id"].iloc[0] == worst.example_id
    assert table["Suggested label"].iloc[0] == d["suggested"]
    assert any(f"#{worst.example_id}" in m.value and "similar examples say" in m.value
               for m in at.markdown)
    texts = [t.value for t in at.text]
    for other in d["nearest_given"] + d["nearest_suggested"]:  # with their current label
        assert any(t.startswith(f"#{other} · {noisy.get(other).label}: ") for t in texts)
    assert any(unescaped(c.value) == f"Nearest examples labelled {d['suggested']}"
               for c in at.caption)
    button = at.button(key=f"q_label_issues_{worst.example_id}_relabel")
    assert unescaped(button.label) == f"Set label to {d['suggested']}"
    before = noisy.get(worst.example_id)
    click(at, button.key)
    after = noisy.get(worst.example_id)
    assert after.label == d["suggested"] and after.version == before.version + 1
    edits = [e for e in noisy.history(worst.example_id) if e["action"] != "create"
             and e["actor"] == "rita"]
    assert [e["action"] for e in edits] == ["edit"]
    assert edits[0]["after"] == {"label": d["suggested"]}
    assert worst.example_id not in label_issue_cards(at)


def test_label_is_right_is_stored_and_hidden(quality_page, noisy):
    at = quality_page(noisy)
    at.segmented_control(key="q_view").set_value("label_issues").run()
    example_id = label_issue_cards(at)[0]
    click(at, f"q_label_issues_{example_id}_ok")
    assert example_id not in label_issue_cards(at)
    rows = noisy.cursor().execute(
        "SELECT subject, decision, decided_by FROM finding_decisions WHERE check_name = "
        "'label_issues'").fetchall()
    assert (str(example_id), "label_ok", "rita") in rows


def test_leakage_is_explained_as_eval_example_and_train_twin(quality_page, noisy):
    at = quality_page(noisy)
    at.segmented_control(key="q_view").set_value("leakage").run()
    assert any("train twin" in i.value for i in at.info)
    leaks = group_keys(at, "leakage")
    assert len(leaks) == len(stored_findings(noisy, "leakage")) > 0
    assert {"eval example", "train twin"} <= {c.value for c in at.caption}


@pytest.mark.parametrize(("button", "queue"), [("q_review_flagged", "flagged"),
                                                ("q_review_label_quality", "label_quality")])
def test_pointers_open_the_label_queues_in_review(quality_page, noisy, button, queue):
    at = quality_page(noisy)
    click(at, button)
    assert at.title[0].value == "Review"
    assert at.selectbox(key="rv_queue").value == queue


def test_a_link_naming_a_check_opens_its_findings(monkeypatch, noisy):
    """Other pages link here with ?check=NAME (the Training page's "Settle them" sends
    leakage); an unknown name is ignored."""
    monkeypatch.setenv("CURATE_DB", str(noisy.path))

    def shown(wanted: str | None) -> str:
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60)
        at.session_state["user"] = RITA
        if wanted:
            at.query_params["check"] = wanted
        at.switch_page(page("quality")).run()
        assert not at.exception, at.exception
        return at.segmented_control(key="q_view").value

    default = shown(None)
    other = next(name for name in ("exact_duplicates", "label_issues") if name != default)
    assert shown(other) == other
    assert shown("no_such_check") == default


def test_open_in_review_opens_that_example(quality_page, noisy):
    at = quality_page(noisy)
    at.segmented_control(key="q_view").set_value("label_issues").run()
    example_id = label_issue_cards(at)[0]
    click(at, f"q_label_issues_{example_id}_open")
    assert at.title[0].value == "Review"
    assert any(s.value == f"Example #{example_id}" for s in at.subheader)


@pytest.mark.parametrize("check", ["exact_duplicates", "near_duplicates", "semantic_duplicates",
                                   "leakage"])
def test_keep_on_every_tab_keeps_the_train_copy_and_rejects_the_eval_one(quality_page,
                                                                        file_store, check):
    store = file_store()
    planted = plant_train_eval_pairs(store)
    at = quality_page(store)
    click(at, f"q_run_{check}")
    assert at.segmented_control(key="q_view").value == check
    assert any(KEEPER_RULE in c.value for c in at.caption)  # the rule, stated on the tab
    shown = {frozenset(int(i) for i in g.split("-")): g for g in group_keys(at, check)}
    pairs = [pair for pair in planted.values() if frozenset(pair) in shown]
    assert pairs  # every tab shows at least one planted train/eval pair
    for train_id, eval_id in pairs:
        group = shown[frozenset((train_id, eval_id))]
        assert at.radio(key=f"q_{check}_{group}_keeper").value == train_id
        click(at, f"q_{check}_{group}_keep")
        assert store.get(eval_id).status == "rejected"
        assert store.history(eval_id)[-1]["reason"] == f"duplicate of #{train_id}"
        assert store.get(train_id).status == "pending"


def test_run_all_also_runs_coverage_which_feeds_the_thin_labels_queue(quality_page, file_store):
    store = file_store()
    plant_train_eval_pairs(store)
    at = quality_page(store)
    click(at, "q_run_all")
    assert all(last_run(store, name) for name in REGISTRY)
    assert queue_size(store, "coverage") == len(store.find())  # every label is under 20


def test_special_tokens_findings_name_the_token_and_turn(quality_page, empty_store):
    bad = empty_store.add([{"role": "user", "content": "Say bye"},
                           {"role": "assistant", "content": "Bye<|im_end|>"}], actor="t")
    empty_store.add([{"role": "user", "content": "Say hi"},
                     {"role": "assistant", "content": "Hi"}], actor="t")
    at = quality_page(empty_store)
    click(at, "q_run_special_tokens")
    table = next(d.value for d in at.dataframe if "Reason" in d.value.columns)
    assert table["Id"].tolist() == [bad.id]
    assert table["Reason"].tolist() == ["<|im_end|> in messages[1] (assistant)"]


def test_a_long_list_in_a_run_summary_shows_its_count_and_the_first_few(quality_page,
                                                                         empty_store, tmp_path):
    labels = [f"intent_{i}" for i in range(7)]  # one example each: too few to cross-check
    write_jsonl(tmp_path / "small.jsonl", [
        {"label": label, "messages": chat(f"question {label}", f"answer {label}")}
        for label in labels])
    import_file(empty_store, tmp_path / "small.jsonl", user=admin("t"))
    run_check(empty_store, "label_issues", user=admin("t"))
    assert last_run(empty_store, "label_issues")["summary"]["labels_too_small"] == labels
    at = quality_page(empty_store)
    [summary] = [unescaped(c.value) for c in at.caption if "labels too small" in c.value]
    assert "labels too small 7 (intent_0, intent_1, intent_2, and 4 more)" in summary
    assert "intent_3" not in summary
