"""Pre-label, route and accept a suggestion in a real browser, on a real evaluated tiny run.

The path an SME and an ML engineer take together: the engineer pre-labels prompts that came
in without answers with the evaluated run's model and routes them by confidence on the
Evaluation page; the reviewer opens the Model suggestions queue from there and accepts a
suggestion with one key. The thresholds are set so that any known-label answer lands in the
middle band (the tiny run is far from sure of anything), which makes the path deterministic.
"""

from __future__ import annotations

import pytest

from curation import ExampleFilter, Store, import_file
from curation import suggestions as SG
from curation.auth import add_user
from tests.conftest import admin, write_jsonl
from tests.e2e.conftest import PASSWORD, sign_in
from tests.test_failures import evaluated  # noqa: F401 (the one real tiny run, evaluated)
from tests.test_training import RUN_TIMEOUT

pytestmark = pytest.mark.browser
ADA = admin("ada")
PROMPTS = ["Ticket: my new card has still not arrived", "Ticket: why was I billed twice?"]


def test_pre_label_route_and_accept_a_suggestion_with_one_key(
        browser, app_server, evaluated, model_cache, monkeypatch, tmp_path):  # noqa: F811
    path, result = evaluated
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(model_cache))
    with Store(path) as store:
        add_user(store, ADA, "ada", "admin", password=PASSWORD)
        import_file(store, write_jsonl(tmp_path / "prompts.jsonl",
                                       [{"messages": [{"role": "user", "content": p}]}
                                        for p in PROMPTS]), user=ADA, unanswered=True)
        prompts = [e.id for e in store.find() if e.needs_answer]
        pending = [e.id for e in store.find(ExampleFilter(split=("train",),
                                                          status=("pending",)))]
        SG.set_thresholds(store, ADA, 0.9999, 0.0001)
    assert len(prompts) == 2
    server = app_server(path)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    sign_in(page, server, "ada")
    page.get_by_role("link", name="Evaluation").click()
    page.get_by_role("heading", name="Pre-label and calibration").wait_for(timeout=60_000)
    page.get_by_role("button", name="Pre-label").click()
    page.get_by_text(f"Run {result.run_id} pre-labelled").wait_for(timeout=RUN_TIMEOUT * 1000)
    page.get_by_role("button", name="Route").click()
    page.get_by_text("Routed ").first.wait_for(timeout=60_000)
    page.get_by_role("link", name="Review Model suggestions").click()
    suggestion = page.get_by_role("button", name="Accept suggestion")
    suggestion.wait_for(timeout=30_000)
    shown = int(page.url.split("id=")[1].split("&")[0])
    assert shown in pending  # the queue holds pending train examples only
    page.keyboard.press("m")
    page.get_by_text(f"Accepted #{shown}").wait_for(timeout=30_000)
    server.stop()
    with Store(path) as store:
        example = store.get(shown)
        last = store.history(shown)[-1]
        still_routable = [s[0] for s in store.routable_suggestions(result.run_id)]
    assert example.status == "accepted" and example.updated_by == "ada"
    assert (last["action"], last["actor"]) == ("accept", "ada")
    assert last["reason"].startswith(f"accepted the suggestion of run {result.run_id}")
    assert example.label == example.messages[-1]["content"]  # the suggested label, as answer
    assert shown not in still_routable  # no longer pending
