"""Sign-in that survives a reload, sign-out that ends it, deep links through the sign-in, and
filters, queue and position in the URL, in a real browser."""

from __future__ import annotations

import re
import time

import pytest

from curation import Store
from tests.conftest import chat, write_jsonl
from tests.e2e.conftest import PASSWORD, sign_in

pytestmark = pytest.mark.browser
ANSWER = re.compile("Assistant")


@pytest.fixture
def tickets(tmp_path):
    return write_jsonl(tmp_path / "tickets.jsonl", [
        {"id": f"t{i}", "messages": chat(f"Ticket {i}", f"Answer {i}."),
         "label": "billing" if i % 2 else "access"}
        for i in range(1, 7)])


def wait_for_text_box(page, value: str) -> None:
    page.wait_for_function("v => [...document.querySelectorAll('textarea')]"
                           ".some(t => t.value === v)", arg=value, timeout=30_000)


def signed_in_as(page, name: str) -> None:
    page.get_by_text(f"Signed in as {name}").wait_for(timeout=30_000)


def sign_in_page(page) -> None:
    page.get_by_role("heading", name="Sign in to Curate").wait_for(timeout=30_000)


def fill_sign_in(page, name: str) -> None:
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def session_cookie(page, timeout: float = 30.0) -> dict | None:
    """The session cookie, once the page's script has set it (it runs just after the page
    that says who is signed in is drawn), or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        cookie = next((c for c in page.context.cookies() if c["name"] == "curate_session"),
                      None)
        if cookie is not None or time.monotonic() > deadline:
            return cookie
        page.wait_for_timeout(200)


def test_a_reload_keeps_the_person_signed_in_on_the_same_example_with_the_same_filters(
        browser, workspace, app_server, tickets):
    server = app_server(workspace(tickets))
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    sign_in(page, server, "rita")
    cookie = session_cookie(page)
    assert cookie is not None and cookie["sameSite"] == "Strict" and PASSWORD not in str(
        page.context.cookies())
    # Review with a filter (label billing: tickets 1, 3, 5), then move to the second example
    page.goto(f"{server.url}/review?review_label=billing")
    wait_for_text_box(page, "Answer 1.")
    page.keyboard.press("j")
    wait_for_text_box(page, "Answer 3.")
    page.wait_for_function("() => location.search.includes('id=3')", timeout=30_000)
    assert "review_label=billing" in page.url

    page.reload()
    signed_in_as(page, "rita")
    wait_for_text_box(page, "Answer 3.")
    assert "review_label=billing" in page.url and "id=3" in page.url
    page.keyboard.press("j")  # the filter still holds: next is ticket 5, not 4
    wait_for_text_box(page, "Answer 5.")

    # a page switch and back keeps the filter and the position
    page.get_by_role("link", name="Browse").click()
    page.get_by_text("Rows 1").first.wait_for(timeout=30_000)
    page.get_by_role("link", name="Review").click()
    wait_for_text_box(page, "Answer 5.")
    page.wait_for_function("() => location.search.includes('review_label=billing')",
                           timeout=30_000)

    # sign out, reload: the sign-in page, and the old token no longer works
    page.get_by_role("button", name="Sign out").click()
    sign_in_page(page)
    page.reload()
    sign_in_page(page)
    page.context.add_cookies([{**cookie, "value": cookie["value"]}])
    page.reload()
    sign_in_page(page)
    server.stop()
    with Store(server.db) as store:
        rows = store.cursor().execute(
            "SELECT user_name, revoked_at IS NOT NULL FROM sessions").fetchall()
        assert rows == [("rita", True)]


def test_a_deep_link_opened_signed_out_lands_on_its_example_after_sign_in(
        browser, workspace, app_server, tickets):
    server = app_server(workspace(tickets))
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(f"{server.url}/review?review_label=access&id=4")
    sign_in_page(page)
    fill_sign_in(page, "ravi")
    signed_in_as(page, "ravi")
    wait_for_text_box(page, "Answer 4.")
    assert "/review" in page.url and "id=4" in page.url
    page.keyboard.press("j")  # the link's filter came through too: access is 2, 4, 6
    wait_for_text_box(page, "Answer 6.")
    assert "review_label=access" in page.url
