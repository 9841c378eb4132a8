"""Filling gaps: new examples are checked for duplicates and leakage; drafts come from the
real packaged SmolLM2 model (a tiny generation, to keep the suite fast)."""

from __future__ import annotations

import pytest

from curation.auth import User
from curation.errors import WouldDuplicate
from curation.fill import add_example, find_clashes
from tests.conftest import chat
from training.drafts import draft_examples

ADMIN = User("ada", "admin")


def test_a_new_example_is_saved_pending_with_one_create_event(seeded_store):
    new = add_example(seeded_store, ADMIN, chat("How do I export my invoices as PDF?",
                                                "Open Billing, then Invoices."),
                      label="billing", tags=("gap-fill",))
    assert new.status == "pending" and new.source == "manual" and new.version == 1
    assert new.label == "billing" and new.tags == ("gap-fill",)
    [event] = seeded_store.history(new.id)
    assert event["action"] == "create" and event["actor"] == "ada"


def test_duplicates_and_leakage_are_refused_unless_forced(seeded_store):
    train_copy = chat("Question 0 about billing!", "another answer")
    assert find_clashes(seeded_store, train_copy, "train") == ["the same prompt as train "
                                                               "example #1"]
    with pytest.raises(WouldDuplicate, match="#1"):
        add_example(seeded_store, ADMIN, train_copy, label="billing")
    assert seeded_store.count() == 6
    near_eval = chat("question 4 about bugz", "x")
    assert find_clashes(seeded_store, near_eval, "train") == [
        "leakage: nearly the same prompt as eval example #5"]
    saved = add_example(seeded_store, ADMIN, near_eval, label="bugs", force=True)
    assert "leakage" in seeded_store.history(saved.id)[0]["reason"]


def test_drafts_imitate_a_label_with_the_packaged_model(seeded_store, model_cache, monkeypatch):
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    drafts = draft_examples(seeded_store, "billing", count=2, max_new_tokens=6)
    assert 1 <= len(drafts) <= 2
    for conversation in drafts:
        assert [m["role"] for m in conversation] == ["user", "assistant"]
        assert all(m["content"].strip() for m in conversation)


def test_filling_gaps_and_the_leakage_check_do_not_import_training():
    """Drafts moved to `training.drafts`: the core's fill and leakage modules import no
    training code, not even lazily inside a function."""
    import ast

    from tests.conftest import PROJECT_ROOT

    for name in ("fill.py", "leakage.py"):
        tree = ast.parse((PROJECT_ROOT / "curation" / name).read_text())
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + \
            [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert imported and not [m for m in imported if m and m.split(".")[0] == "training"]
