"""Quality checks on the demo data: they must find what data/README.md says is planted.

One demo workspace per module (embedding it with the real packaged MiniLM model is the slow
part); tests that change it make their own.
"""

from __future__ import annotations

import json

import pytest

from curation import ExampleFilter, Store
from curation.auth import User
from curation.checks import (REGISTRY, dismiss, dismissed_pairs, keep_one, load_table,
                             run_check, stored_findings)
from curation.checks.coverage import Targets, cluster_prompts, gap_list
from curation.checks.duplicates import KEEPER_RULE, normalize, suggest_keeper
from curation.demo import load_demo
from tests.conftest import PROJECT_ROOT, admin, plant_train_eval_pairs

PLANTED = json.loads((PROJECT_ROOT / "data" / "demo" / "planted.json").read_text())
REVIEWER = User("rita", "reviewer")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("demo") / "curate.duckdb")
    load_demo(store, user=admin("demo"))
    yield store
    store.close()


def external(store: Store) -> dict[int, str]:
    return {e.id: e.external_id for e in store.find()}


def groups(store: Store, check: str) -> set[tuple[str, ...]]:
    ext = external(store)
    return {tuple(sorted(ext[i] for i in f.details["group"]))
            for f in stored_findings(store, check)}


def test_every_check_has_a_name_title_and_description():
    assert {"exact_duplicates", "near_duplicates", "semantic_duplicates", "leakage",
            "label_issues", "outliers", "answer_mismatch", "coverage"} <= set(REGISTRY)
    for name, check in REGISTRY.items():
        assert check.name == name and check.title and len(check.description) > 40


def test_normalize_ignores_case_spaces_punctuation_and_unicode_variants():
    assert normalize("  Hello,   WORLD!! ") == normalize("hello world") == "hello world"
    assert normalize("ﬁle") == normalize("file")
    assert normalize("cancel my plan") != normalize("cancel my plans")


def test_exact_duplicates_are_exactly_the_planted_ones(demo):
    result = run_check(demo, "exact_duplicates", user=admin("t"))
    assert groups(demo, "exact_duplicates") == {tuple(p) for p in PLANTED["exact_duplicates"]}
    assert result.summary["groups"] == 6 and result.summary["removable"] == 6
    for finding in result.findings:
        assert 0.0 <= finding.score <= 1.0


def test_near_duplicates_are_exactly_the_planted_ones(demo):
    run_check(demo, "near_duplicates", user=admin("t"))
    assert groups(demo, "near_duplicates") == {tuple(p) for p in PLANTED["near_duplicates"]}


def test_semantic_duplicates_include_the_planted_copies_and_little_else(demo):
    run_check(demo, "semantic_duplicates", user=admin("t"))
    found = groups(demo, "semantic_duplicates")
    planted = {tuple(p) for p in PLANTED["exact_duplicates"] + PLANTED["near_duplicates"]}
    assert len(found & planted) >= 9
    assert len(found - planted) <= 3


def test_leakage_flags_eval_examples_copied_from_train(demo):
    result = run_check(demo, "leakage", user=admin("t"))
    ext = external(demo)
    splits = {e.external_id: e.split for e in demo.find()}
    expected = {pair for pair in map(tuple, PLANTED["exact_duplicates"] +
                                     PLANTED["near_duplicates"])
                if {splits[pair[0]], splits[pair[1]]} == {"train", "eval"}}
    flagged = {tuple(sorted(ext[i] for i in f.details["group"])) for f in result.issues}
    assert flagged >= expected and expected
    assert all(splits[ext[f.example_id]] == "eval" for f in result.issues)


def test_label_issues_find_most_planted_mislabels_with_evidence(demo):
    result = run_check(demo, "label_issues", user=admin("t"))
    ext = external(demo)
    truth = {m["id"]: m["true"] for m in PLANTED["mislabeled"]}
    flagged = {ext[f.example_id]: f for f in result.issues}
    found = set(flagged) & set(truth)
    assert len(found) >= 9, sorted(set(truth) - found)
    worst = [ext[f.example_id] for f in result.issues[:15]]
    assert len(set(worst) & set(truth)) >= 9
    suggested_right = sum(flagged[i].details["suggested"] == truth[i] for i in found)
    assert suggested_right >= 0.8 * len(found)
    evidence = flagged[sorted(found)[0]].details
    assert len(evidence["nearest_given"]) == 3 and len(evidence["nearest_suggested"]) == 3


def test_coverage_finds_the_thin_label_and_names_clusters(demo):
    table = load_table(demo)
    gaps = gap_list(table, Targets(default_min=20))
    assert gaps[0].label == PLANTED["thin_label"] and gaps[0].shortfall == 14
    assert all(g.shortfall == 0 for g in gaps[1:])
    clusters = cluster_prompts(table, k=8)
    assert len(clusters.names) == 8 and clusters.coords.shape == (len(table), 2)
    assert any("export" in name for name in clusters.names)
    assert any("cancel" in name for name in clusters.names)


def test_gaps_rank_by_shortfall_times_error_rate():
    """Few examples and a model that fails there first; an unscored label counts as failing
    every time; ties go to the higher error rate, then the shortfall order."""
    from curation.checks.coverage import Gap, rank_gaps
    from curation.errors import InvalidValue

    def gap(label, shortfall, have=1):
        return Gap(label, have, 0, have + shortfall, shortfall, 0.1, 0.0)

    gaps = [gap("thin_easy", 18), gap("thin_hard", 10), gap("mid_hard", 5),
            gap("full_hard", 0, have=30), gap("full_easy", 0, have=30), gap("unscored", 6),
            gap("tie_low", 4), gap("tie_high", 2)]
    rates = {"thin_easy": 0.1, "thin_hard": 0.9, "mid_hard": 0.8, "full_hard": 0.7,
             "full_easy": 0.0, "tie_low": 0.5, "tie_high": 1.0}
    ranked = rank_gaps(gaps, rates, {"thin_hard": 4, "unscored": 9})
    # keys: thin_hard 9, unscored 6 (x1), mid_hard 4, tie_high 2 (rate 1) and tie_low 2
    # (rate 0.5), thin_easy 1.8, full_hard 0 (rate 0.7), full_easy 0 (rate 0)
    assert [g.label for g in ranked] == ["thin_hard", "unscored", "mid_hard", "tie_high",
                                         "tie_low", "thin_easy", "full_hard", "full_easy"]
    assert [g.rank_key for g in ranked] == [9.0, 6.0, 4.0, 2.0, 2.0, 1.8, 0.0, 0.0]
    by_label = {g.label: g for g in ranked}
    assert by_label["unscored"].error_rate is None and by_label["unscored"].scored == 0
    assert by_label["thin_hard"].scored == 4 and by_label["thin_hard"].shortfall == 10
    # no evaluation at all: the plain shortfall order of the gap list
    plain = rank_gaps(gaps, {})
    assert [g.label for g in plain] == [g.label for g in sorted(
        gaps, key=lambda g: (-g.shortfall, g.train + g.eval, g.label))]
    with pytest.raises(InvalidValue, match="'thin_hard'"):
        rank_gaps(gaps, {"thin_hard": 1.5})


def test_a_second_run_reuses_findings_and_embeddings(demo):
    first = run_check(demo, "semantic_duplicates", user=admin("t"))
    rows = demo.cursor().execute("SELECT count(*) FROM embeddings").fetchone()[0]
    again = run_check(demo, "semantic_duplicates", user=admin("t"))
    assert again.summary == first.summary
    assert demo.cursor().execute("SELECT count(*) FROM embeddings").fetchone()[0] == rows


def test_dismissed_and_resolved_duplicates_do_not_come_back(tmp_path):
    with Store(tmp_path / "curate.duckdb") as store:
        load_demo(store, user=admin("demo"))
        ext = {e.external_id: e.id for e in store.find()}
        a, b = (ext[x] for x in PLANTED["exact_duplicates"][0])
        c, d = (ext[x] for x in PLANTED["exact_duplicates"][1])
        run_check(store, "exact_duplicates", user=admin("t"))
        dismiss(store, REVIEWER, "exact_duplicates", [a, b], "not_duplicates")
        rejected = keep_one(store, REVIEWER, [c, d], keeper=c)
        assert rejected == [d]
        assert store.get(d).status == "rejected"
        assert store.history(d)[-1]["reason"] == f"duplicate of #{c}"
        result = run_check(store, "exact_duplicates", user=admin("t"))
        assert result.summary["groups"] == 4
        flagged = {f.example_id for f in result.issues}
        assert not flagged & {a, b, c, d}


def test_not_duplicates_holds_for_every_duplicate_check(tmp_path):
    """A pair marked 'not duplicates' under one check is not flagged by another."""
    with Store(tmp_path / "curate.duckdb") as store:
        load_demo(store, user=admin("demo"))
        ext = {e.external_id: e.id for e in store.find()}
        a, b = sorted(ext[x] for x in PLANTED["exact_duplicates"][0])
        assert {a, b} <= {f.example_id for f in
                          run_check(store, "exact_duplicates", user=admin("t")).issues}
        dismiss(store, REVIEWER, "near_duplicates", [b, a], "not_duplicates")
        assert dismissed_pairs(store) == {(a, b)}
        flagged = {f.example_id for f in run_check(store, "exact_duplicates",
                                                   user=admin("t")).issues}
        assert not flagged & {a, b}


def test_leakage_names_the_strongest_method_for_every_eval_copy(empty_store):
    """Two eval copies older than their train original are both exact leaks (not one exact
    and one merely 'semantic', which would only warn), and find_leakage gives each pair its
    method: exact and near block a launch, the paraphrase does not."""
    from curation.leakage import blocking, find_leakage, paraphrases
    from tests.conftest import chat

    store = empty_store
    answer = "Thanks for asking: here is how."
    first = store.add(chat("How do I export my data to CSV?", answer), actor="t",
                      split="eval", status="accepted").id
    second = store.add(chat("how do i export my data to csv", answer), actor="t",
                       split="eval", status="accepted").id
    original = store.add(chat("How do I export my data to CSV", answer), actor="t",
                         split="train", status="accepted").id
    planted = plant_train_eval_pairs(store)
    for train_id, _ in planted.values():
        e = store.get(train_id)
        store.update(train_id, base_version=e.version, actor="t", status="accepted")
    found = {x["eval_id"]: x for x in find_leakage(store, admin("t"))}
    assert {i: (found[i]["train_id"], found[i]["method"]) for i in (first, second)} == {
        first: (original, "exact"), second: (original, "exact")}
    for kind, (train_id, eval_id) in planted.items():
        assert (found[eval_id]["train_id"], found[eval_id]["method"]) == (train_id, kind)
    assert {x["eval_id"] for x in blocking(found.values())} == {
        first, second, planted["exact"][1], planted["near"][1]}
    assert [x["eval_id"] for x in paraphrases(found.values())] == [planted["semantic"][1]]


def test_every_duplicate_check_and_leakage_suggest_the_train_copy(empty_store):
    """The eval copies are older, accepted and longer: only the train-over-eval rule keeps
    the train copies, and every check and `suggest_keeper` must apply it."""
    planted = plant_train_eval_pairs(empty_store)
    found_in = {kind: set() for kind in planted}
    for check in ("exact_duplicates", "near_duplicates", "semantic_duplicates", "leakage"):
        for finding in run_check(empty_store, check, user=admin("t")).issues:
            for kind, pair in planted.items():
                if set(pair) <= set(finding.details["group"]):
                    found_in[kind].add(check)
                    assert finding.details["keeper"] == pair[0], (check, kind, finding)
                    if finding.example_id == pair[1]:  # the eval copy is what goes
                        assert "suggested keeper" not in finding.reason
    assert found_in["exact"] == {"exact_duplicates", "semantic_duplicates", "leakage"}
    assert found_in["near"] >= {"near_duplicates", "leakage"}  # MiniLM: a typo, cosine < 0.95
    assert found_in["semantic"] == {"semantic_duplicates", "leakage"}
    for train_id, eval_id in planted.values():
        assert suggest_keeper([empty_store.get(eval_id), empty_store.get(train_id)]) == train_id
        assert keep_one(empty_store, REVIEWER, [eval_id, train_id],
                        suggest_keeper(empty_store.find(ExampleFilter(ids=(eval_id, train_id))))
                        ) == [eval_id]
        assert empty_store.get(eval_id).status == "rejected"
    assert "train copy is kept" in KEEPER_RULE
    assert KEEPER_RULE in (PROJECT_ROOT / "docs" / "quality.md").read_text().replace("\n", " ")
