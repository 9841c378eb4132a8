"""The Review page in a real browser: keyboard decisions, two reviewers at once, safe text."""

from __future__ import annotations

import re

import pytest

from curation import Store
from tests.conftest import chat, write_jsonl
from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.browser
ANSWER = re.compile("Assistant")


@pytest.fixture
def three_tickets(tmp_path):
    return write_jsonl(tmp_path / "tickets.jsonl", [
        {"id": f"t{i}", "messages": chat(f"Ticket {i}: the invoice total looks wrong",
                                         f"Original answer {i}."), "label": "billing"}
        for i in (1, 2, 3)])


def open_review(page) -> None:
    page.get_by_role("link", name="Review").click()
    page.get_by_role("textbox", name=ANSWER).first.wait_for(timeout=30_000)


def answer_box(page):
    return page.get_by_role("textbox", name=ANSWER).first


def edit_answer_and_press(page, text: str, key: str) -> None:
    box = answer_box(page)
    box.fill(text)
    box.press("Tab")  # leaving the box sends its text to the server
    page.wait_for_timeout(700)
    page.keyboard.press(key)


def wait_for_text_box(page, value: str) -> None:
    page.wait_for_function("v => [...document.querySelectorAll('textarea')]"
                           ".some(t => t.value === v)", arg=value, timeout=30_000)


def decisions(store: Store, example_id: int) -> list[tuple[str, str]]:
    return [(e["action"], e["actor"]) for e in store.history(example_id)
            if e["action"] != "create"]


def test_reviewer_edits_an_answer_and_accepts_it_with_the_keyboard(
        browser, workspace, app_server, three_tickets):
    db = workspace(three_tickets)
    server = app_server(db)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, server, "rita")
    open_review(page)
    assert answer_box(page).input_value() == "Original answer 1."
    edit_answer_and_press(page, "Edited answer, checked against the invoice.", "a")
    wait_for_text_box(page, "Original answer 2.")
    server.stop()
    with Store(db) as store:
        example = store.get(1)
        assert example.status == "accepted" and example.version == 2
        assert example.messages[-1]["content"] == "Edited answer, checked against the invoice."
        assert example.updated_by == "rita"
        assert decisions(store, 1) == [("accept", "rita")]
        assert store.get(2).status == "pending"


def test_two_reviewers_saving_the_same_example_get_a_conflict_not_a_lost_update(
        browser, workspace, app_server, three_tickets):
    db = workspace(three_tickets)
    server = app_server(db)
    pages = {}
    for name in ("rita", "ravi"):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pages[name] = context.new_page()
        sign_in(pages[name], server, name)
        open_review(pages[name])
    ravi = pages["ravi"]
    wait_for_text_box(ravi, "Original answer 2.")  # rita holds the first one (a lease)
    ravi.keyboard.press("k")  # back to it: readable, with who holds it
    ravi.get_by_text(re.compile(r"rita is working on example #1")).wait_for(timeout=30_000)
    edit_answer_and_press(pages["rita"], "Rita's answer.", "a")
    wait_for_text_box(pages["rita"], "Original answer 3.")  # ravi holds the second

    edit_answer_and_press(ravi, "Ravi's answer.", "a")  # on the version rita replaced
    conflict = ravi.get_by_text(re.compile(r"was changed by rita"))
    conflict.wait_for(timeout=30_000)
    assert ravi.get_by_text("Rita's answer.").count() >= 1  # what the other person changed
    assert answer_box(ravi).input_value() == "Ravi's answer."  # my edit is not lost
    ravi.get_by_role("button", name="Overwrite with mine").click()
    wait_for_text_box(ravi, "Original answer 2.")
    server.stop()
    with Store(db) as store:
        example = store.get(1)
        assert example.messages[-1]["content"] == "Ravi's answer."
        assert example.version == 3 and example.status == "accepted"
        assert decisions(store, 1) == [("accept", "rita"), ("accept", "ravi")]
        history = store.history(1)
        assert history[1]["after"]["messages"][-1]["content"] == "Rita's answer."
        assert history[2]["before"]["messages"][-1]["content"] == "Rita's answer."


PAYLOADS = [
    "<script>window.__xss = 1</script>",
    "<img src=x onerror=\"window.__xss = 2\">",
    "![tracker](http://198.51.100.7/pixel.png)",
    "[click me](http://198.51.100.7/phish) and **bold** :red[colour]",
]


def test_html_script_and_markdown_in_examples_show_as_literal_text(
        browser, workspace, app_server, tmp_path):
    records = [{"messages": chat(payload, f"reply {payload}"), "label": "x<b>y</b>",
                "tags": ["<i>t</i>"]} for payload in PAYLOADS]
    server = app_server(workspace(write_jsonl(tmp_path / "payloads.jsonl", records)))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    requests, dialogs = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, server, "rita")

    open_review(page)
    for payload in PAYLOADS:  # each shows literally in its text box, in queue order
        wait_for_text_box(page, payload)
        page.keyboard.press("j")

    page.get_by_role("link", name="Browse").click()
    page.get_by_text("Rows 1").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src='x'], img[src*='198.51.100.7']").count() == 0
    assert page.locator("a[href*='198.51.100.7']").count() == 0
    assert not dialogs
    assert not [url for url in requests if "198.51.100.7" in url]
    assert all(url.startswith((server.url, "data:", "blob:", "about:")) for url in requests), \
        [u for u in requests if not u.startswith(server.url)]
