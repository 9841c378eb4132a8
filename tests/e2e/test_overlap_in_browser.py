"""Overlap 2 in a real browser: two reviewers in two browser contexts decide the same
examples blind, disagreements land in the Adjudication queue, and the Cohen's kappa the
Overview page shows is the one scikit-learn computes."""

from __future__ import annotations

import re

import pytest
from sklearn.metrics import cohen_kappa_score

from curation import Store
from curation.agreement import set_overlap
from curation.auth import add_user
from tests.conftest import admin, chat, write_jsonl
from tests.e2e.conftest import PASSWORD, sign_in
from tests.e2e.test_review_in_browser import open_review, wait_for_text_box

pytestmark = pytest.mark.browser
# what each reviewer decides on tickets 1-4 (x: reject, with a reason)
KEYS = {"rita": ["a", "a", "x", "a"], "ravi": ["a", "x", "x", "x"]}


def decide(page, key: str, next_answer: str | None) -> None:
    if key == "x":
        reason = page.get_by_role("textbox", name="Reason or comment")
        reason.fill("not a billing question")
        reason.press("Tab")  # leaving the box sends its text to the server
        page.wait_for_timeout(700)
    page.keyboard.press(key)
    if next_answer:
        wait_for_text_box(page, next_answer)
    else:
        page.get_by_text("Nothing left in this queue").wait_for(timeout=30_000)


def test_two_reviewers_disagree_and_kappa_is_scikit_learns(browser, workspace, app_server,
                                                         tmp_path):
    db = workspace(write_jsonl(tmp_path / "tickets.jsonl", [
        {"messages": chat(f"Ticket {i}: my invoice is wrong", f"Original answer {i}."),
         "label": "billing"} for i in (1, 2, 3, 4)]))
    with Store(db) as store:
        set_overlap(store, admin("setup"), 2)
        add_user(store, admin("setup"), "ada", "admin", password=PASSWORD)
    server = app_server(db)
    for name in ("rita", "ravi"):  # ravi opens Review after rita has decided on all four
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        sign_in(page, server, name)
        open_review(page)
        if name == "ravi":
            page.get_by_text(re.compile("1 of 2 independent decisions recorded")).wait_for(
                timeout=30_000)
            assert page.get_by_text(re.compile("rita")).count() == 0  # blind
        for i, key in enumerate(KEYS[name]):
            decide(page, key, f"Original answer {i + 2}." if i < 3 else None)

    adjudicator = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    sign_in(adjudicator, server, "ada")
    verdict = {"a": "accept · billing", "x": "reject · billing"}
    expected = cohen_kappa_score([verdict[k] for k in KEYS["ravi"]],
                                 [verdict[k] for k in KEYS["rita"]])
    table = adjudicator.locator("table").filter(has_text="Cohen's kappa")
    table.wait_for(timeout=30_000)
    row = table.locator("tr").filter(has_text="ravi")
    assert f"{expected:.3f}" in row.inner_text()
    assert expected == pytest.approx(0.2)

    adjudicator.get_by_role("link", name="Review").click()  # the admin settles ticket 2
    adjudicator.get_by_text("Nothing left in this queue").wait_for(timeout=30_000)
    adjudicator.locator(".st-key-rv_queue").get_by_role("combobox").click()
    adjudicator.get_by_role("option").filter(has_text="Adjudication").click()
    panel = adjudicator.locator(".st-key-rv_adjudication")
    panel.wait_for(timeout=30_000)
    for shown in ("rita", "ravi", "accept", "reject", "not a billing question"):
        assert panel.get_by_text(shown, exact=True).count() >= 1, shown
    adjudicator.evaluate("document.activeElement.blur()")  # out of the queue's select box
    adjudicator.keyboard.press("a")
    wait_for_text_box(adjudicator, "Original answer 4.")
    server.stop()
    with Store(db) as store:
        assert [store.get(i).status for i in (1, 2, 3, 4)] == [
            "accepted", "accepted", "rejected", "pending"]
        assert [v["state"] for v in store.unsettled_votes(4)] == ["disputed", "disputed"]
        events = [(e["action"], e["actor"]) for i in (1, 2, 3) for e in store.history(i)
                  if e["action"] != "create"]
        assert events == [("accept", "ravi"), ("accept", "ada"), ("reject", "ravi")]
        assert store.history(2)[-1]["reason"] == (
            "adjudicated (rita: accept · billing; ravi: reject · billing)")
        assert len(store.rated_rounds()) == 8  # every decision recorded
