"""A preference pair in Review in a real browser: chosen and rejected side by side, the
rejected answer edited and then `w` swapping the two, saved as one audited edit (what
AppTest cannot do: it presses no keys)."""

from __future__ import annotations

import re

import pytest

from curation import Store
from tests.conftest import write_jsonl
from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.browser


def test_w_swaps_the_chosen_and_the_rejected_answer(browser, workspace, app_server, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "What colour is the sky?", "chosen": "Blue.", "rejected": "Green."}])
    db = workspace(pairs)
    server = app_server(db)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, server, "rita")
    page.get_by_role("link", name="Review").click()
    chosen = page.get_by_role("textbox", name=re.compile("Chosen answer"))
    rejected = page.get_by_role("textbox", name=re.compile("Rejected answer"))
    chosen.wait_for(timeout=30_000)
    assert (chosen.input_value(), rejected.input_value()) == ("Blue.", "Green.")
    rejected.fill("Green, at noon.")
    page.keyboard.press("Escape")  # leave the box: its text is sent, shortcuts work again
    page.wait_for_timeout(500)
    page.keyboard.press("w")
    page.get_by_text(re.compile(r"Swapped chosen and rejected.+#1 is now version 2")).first \
        .wait_for(timeout=30_000)
    chosen = page.get_by_role("textbox", name=re.compile("Chosen answer"))
    assert chosen.input_value() == "Green, at noon."
    assert page.get_by_role("textbox", name=re.compile("Rejected answer")).input_value() == \
        "Blue."
    server.stop()

    with Store(db) as store:
        ex = store.get(1)
        assert ex.messages[-1]["content"] == "Green, at noon."
        assert ex.rejected == [{"role": "assistant", "content": "Blue."}]
        assert [(e["action"], e["reason"]) for e in store.history(1)][1:] == [
            ("edit", "swapped the chosen and the rejected answer")]
