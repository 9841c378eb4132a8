"""The guidelines in a real browser: Markdown is rendered, but no script runs and no image is
fetched from another host, on the Guidelines page and in Review's expander; a comment typed
in Review is stored with its author."""

from __future__ import annotations

import pytest

from curation import Store, comments, guidelines
from tests.conftest import admin, chat, write_jsonl
from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.browser
HOSTILE = ("# House rules\n\nAnswer **politely**.\n\n<script>window.__xss = 1</script>\n\n"
           "<img src=x onerror=\"window.__xss = 2\">\n\n"
           "![tracker](http://198.51.100.7/pixel.png)\n")


def test_guidelines_render_without_scripts_or_remote_images_and_comments_are_stored(
        browser, workspace, app_server, tmp_path):
    db = workspace(write_jsonl(tmp_path / "one.jsonl", [
        {"messages": chat("Where is my invoice?", "In Settings."), "label": "billing"}]))
    with Store(db) as store:
        guidelines.save(store, admin("ada"), HOSTILE)
    server = app_server(db)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    requests, dialogs = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, server, "ann")

    page.get_by_role("link", name="Guidelines").click()
    page.get_by_role("heading", name="House rules").first.wait_for(timeout=30_000)
    assert page.locator("strong", has_text="politely").count() >= 1  # Markdown is rendered
    page.get_by_text("<script>window.__xss = 1</script>").first.wait_for(timeout=10_000)
    page.get_by_text("[image not shown: tracker]").first.wait_for(timeout=10_000)

    page.get_by_role("link", name="Review").click()
    page.get_by_text("Guidelines (version 1)").click()
    page.get_by_role("heading", name="House rules").first.wait_for(timeout=30_000)
    box = page.get_by_role("textbox", name="Add a comment")
    box.fill("Is an invoice question always billing?")
    box.press("Tab")
    page.wait_for_timeout(700)
    page.get_by_role("button", name="Add comment").click()
    page.get_by_role("heading", name="Comments (1)").wait_for(timeout=30_000)
    page.wait_for_timeout(1000)

    assert page.evaluate("window.__xss") is None
    assert not dialogs
    assert page.locator("img[src='x'], img[src*='198.51.100.7']").count() == 0
    assert not [url for url in requests if "198.51.100.7" in url]
    server.stop()
    with Store(db) as store:
        [comment] = comments.comments(store, store.find()[0].id)
    assert (comment.author, comment.text) == ("ann", "Is an invoice question always billing?")
