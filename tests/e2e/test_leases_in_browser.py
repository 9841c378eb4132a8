"""Three reviewers in three browser contexts work the same Review queue at once: each is
served their own examples (leases), nobody meets a conflict dialog, every decision is in the
audit and the counts per person are right. Each round, every reviewer presses `a` on the
example on their screen; the three examples on screen are checked to be different first."""

from __future__ import annotations

import os
import re

import pytest

from curation import Store
from curation.auth import add_user
from tests.conftest import admin, chat, write_jsonl
from tests.e2e.conftest import PASSWORD, sign_in

pytestmark = pytest.mark.browser
# the acceptance run is 60 each: CURATE_E2E_DECISIONS=60 (1.5-2 minutes here)
DECISIONS_EACH = int(os.environ.get("CURATE_E2E_DECISIONS", "8"))
REVIEWERS = ("rita", "ravi", "rosa")
HEADING = re.compile(r"^Example #\d+$")


def shown_id(page) -> int:
    heading = page.get_by_role("heading", name=HEADING).first
    heading.wait_for(timeout=60_000)
    return int(heading.inner_text().removeprefix("Example #"))


def wait_for_other_example(page, example_id: int) -> None:
    page.wait_for_function(
        "id => [...document.querySelectorAll('h3')].some(h => /^Example #\\d+$/.test("
        "h.innerText.trim()) && h.innerText.trim() !== 'Example #' + id)",
        arg=example_id, timeout=60_000)


def test_three_reviewers_in_one_queue_never_get_the_same_example(
        browser, workspace, app_server, tmp_path):
    total = DECISIONS_EACH * len(REVIEWERS) + 6
    db = workspace(write_jsonl(tmp_path / "tickets.jsonl", [
        {"id": f"t{i}", "messages": chat(f"Ticket {i}: where is my parcel?", f"Answer {i}."),
         "label": "shipping"} for i in range(total)]))
    with Store(db) as store:
        add_user(store, admin("setup"), "rosa", "reviewer", password=PASSWORD)
    server = app_server(db)
    pages = {}
    for name in REVIEWERS:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pages[name] = context.new_page()
        sign_in(pages[name], server, name)
        pages[name].get_by_role("link", name="Review").click()
    decided: dict[str, list[int]] = {name: [] for name in REVIEWERS}
    for _ in range(DECISIONS_EACH):
        on_screen = {name: shown_id(page) for name, page in pages.items()}
        assert len(set(on_screen.values())) == len(REVIEWERS), on_screen  # never the same
        for name, page in pages.items():
            page.keyboard.press("a")
            decided[name].append(on_screen[name])
        for name, page in pages.items():
            wait_for_other_example(page, on_screen[name])
            assert page.get_by_text(re.compile("was changed by")).count() == 0
            assert page.get_by_role("button", name="Overwrite with mine").count() == 0
    server.stop()
    every = [i for ids in decided.values() for i in ids]
    assert len(every) == len(set(every)) == DECISIONS_EACH * len(REVIEWERS)
    with Store(db) as store:
        for name, ids in decided.items():
            for example_id in ids:
                events = [(e["action"], e["actor"]) for e in store.history(example_id)
                          if e["action"] != "create"]
                assert events == [("accept", name)], (example_id, events)
        accepts = [r for r in store.activity(days=1) if r[1] == "accept"]
        assert sorted((actor, n) for actor, _, n in accepts) == [
            (name, DECISIONS_EACH) for name in sorted(REVIEWERS)]
        assert store.counts_by("status") == {"accepted": DECISIONS_EACH * len(REVIEWERS),
                                             "pending": 6}
