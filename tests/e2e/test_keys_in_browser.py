"""Review's keyboard in a real browser: the paused-shortcuts hint, Esc, Ctrl+Enter, label keys
1-9 and undo (u); what AppTest cannot do, since it runs no JavaScript and presses no keys."""

from __future__ import annotations

import re

import pytest

from curation import Store
from tests.conftest import chat, write_jsonl
from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.browser
ANSWER = re.compile("Assistant")
HINT = "[data-testid='curate-shortcuts-paused']"


@pytest.fixture
def tickets(tmp_path):
    return write_jsonl(tmp_path / "tickets.jsonl", [
        {"id": f"t{i}", "messages": chat(f"Ticket {i}: the invoice total looks wrong",
                                         f"Original answer {i}."), "label": label}
        for i, label in ((1, "billing"), (2, "access"), (3, "bugs"))])


def hint_shown(page) -> bool:
    return page.locator(HINT).is_visible()


def wait_for_text(page, pattern: str) -> None:
    page.get_by_text(re.compile(pattern)).first.wait_for(timeout=30_000)


def test_paused_hint_esc_ctrl_enter_label_keys_and_undo(browser, workspace, app_server,
                                                        tickets):
    db = workspace(tickets)
    server = app_server(db)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, server, "rita")
    page.get_by_role("link", name="Review").click()
    box = page.get_by_role("textbox", name=ANSWER).first
    box.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    assert not hint_shown(page)

    # typing in a field: shortcuts are paused, and the page says so; "a" is just a letter
    box.click()
    page.locator(HINT).wait_for(state="visible", timeout=5_000)
    box.fill("Typed answer")
    box.press("End")
    page.keyboard.type(" a")
    assert box.input_value() == "Typed answer a"
    # Ctrl+Enter saves the typed text (the field is left first, so the text is committed)
    page.keyboard.press("Control+Enter")
    wait_for_text(page, r"Saved #1 is now version 2")
    assert not hint_shown(page)

    # a field has focus again, Esc leaves it, and then a label key works
    reason = page.get_by_role("textbox", name="Reason or comment")
    reason.click()
    page.locator(HINT).wait_for(state="visible", timeout=5_000)
    page.keyboard.press("Escape")
    page.locator(HINT).wait_for(state="hidden", timeout=5_000)
    page.keyboard.press("3")  # labels alphabetically: access, billing, bugs
    wait_for_text(page, r"Unsaved edits to label")
    page.keyboard.press("a")  # accept, with the label
    page.get_by_role("heading", name="Example #2").wait_for(timeout=30_000)

    # u: the accept is undone and example 1 is shown again, as it was before
    page.keyboard.press("u")
    page.get_by_role("heading", name="Example #1").wait_for(timeout=30_000)
    wait_for_text(page, r"accept of #1; it is back as it was before")
    assert page.get_by_role("textbox", name=ANSWER).first.input_value() == "Typed answer a"
    server.stop()

    with Store(db) as store:
        example = store.get(1)
        assert [(e["action"], e["actor"]) for e in store.history(1)] == [
            ("create", "setup"), ("edit", "rita"), ("accept", "rita"), ("revert", "rita")]
        accepted = store.history(1)[2]["after"]
        assert accepted == {"label": "bugs", "status": "accepted"}
        assert example.status == "pending" and example.label == "billing"
        assert example.messages[-1]["content"] == "Typed answer a"
        assert example.version == 4


def test_after_a_filter_is_touched_the_hint_shows_and_esc_brings_the_keys_back(
        browser, workspace, app_server, tickets):
    """The focus stays in a sidebar filter after it is used, which pauses every shortcut:
    the page says so, and Esc gives the keys back."""
    server = app_server(workspace(tickets))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, server, "rita")
    page.get_by_role("link", name="Review").click()
    page.get_by_role("heading", name="Example #1").wait_for(timeout=30_000)
    search = page.get_by_role("textbox", name="Search all turns")
    search.fill("invoice")
    search.press("Enter")
    page.wait_for_timeout(1500)
    page.locator(HINT).wait_for(state="visible", timeout=5_000)
    page.keyboard.press("j")  # typed into the search box, not a shortcut
    page.wait_for_timeout(1000)
    assert search.input_value() == "invoicej"
    assert page.get_by_role("heading", name="Example #1").is_visible()
    search.fill("invoice")
    page.keyboard.press("Escape")
    page.locator(HINT).wait_for(state="hidden", timeout=5_000)
    page.keyboard.press("j")
    page.get_by_role("heading", name="Example #2").wait_for(timeout=30_000)
