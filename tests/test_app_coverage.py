"""AppTest of the Coverage page on copies of the embedded demo workspace: the map, the gap
list, targets, and filling a gap (by hand; drafting is too slow for AppTest).

Every test opens the page with 8 clusters rather than "automatic" (which tries several k and
takes seconds more); the map test checks that the chosen k is honoured.
"""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from curation import ExampleFilter, Store
from curation.auth import User
from curation.checks.coverage import get_targets
from curation.queues import queue_size, upcoming
from tests.conftest import PROJECT_ROOT, page, chat
from tests.test_app_quality import copy_of, demo_template

RITA = User("rita", "reviewer")
ANN = User("ann", "annotator")
THIN = "security_incident"


@pytest.fixture
def demo_store(tmp_path_factory, tmp_path, file_store) -> Store:
    """A fresh copy of the embedded demo workspace (made with load_demo)."""
    copy_of(demo_template(tmp_path_factory), tmp_path / "ws")
    return file_store()


@pytest.fixture
def coverage_page(monkeypatch):
    def open_page(store: Store, user: User = RITA, k: int = 8) -> AppTest:
        monkeypatch.setenv("CURATE_DB", str(store.path))
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=90)
        at.session_state["user"] = user
        at.session_state["cov_k"] = k
        at.switch_page(page("coverage")).run()
        assert not at.exception, at.exception
        return at

    return open_page


def gaps(at: AppTest):
    return next(df.value for df in at.dataframe if "Shortfall" in df.value.columns)


def submit(at: AppTest, form: str) -> AppTest:
    [button] = [b for b in at.button if (b.key or "").startswith(f"FormSubmitter:{form}-")]
    button.click().run()
    assert not at.exception, at.exception
    return at


def test_map_and_cluster_table(coverage_page, demo_store):
    at = coverage_page(demo_store)
    [chart] = at.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    points = sum(len(trace["customdata"]) for trace in spec["data"])
    assert points == demo_store.count() - demo_store.count(ExampleFilter(status=("rejected",)))
    assert len(spec["data"]) == 8  # coloured by cluster: one trace per cluster
    assert not any("color" in t["marker"] for t in spec["data"])  # ten or fewer: the theme's
    assert "8 clusters" in [s.value for s in at.subheader]
    clusters = next(df.value for df in at.dataframe if "Top labels" in df.value.columns)
    assert len(clusters) == 8 and clusters["Size"].sum() == points
    at.selectbox(key="cov_colour").set_value("label").run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t["name"].rsplit(" (", 1)[0] for t in spec["data"]} == set(demo_store.labels())
    # past ten groups each trace has its own colour (the theme's ten would repeat)
    at.selectbox(key="cov_colour").set_value("cluster").run()
    at.number_input(key="cov_k").set_value(14).run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(spec["data"]) == 14
    colours = [t["marker"].get("color") for t in spec["data"]]
    assert None not in colours and len(set(colours)) == len(colours)


def test_map_hover_text_and_legend_escape_html(coverage_page, demo_store):
    payload = "<b>bold</b> <a href='http://example.com'>link</a> & more"
    demo_store.add(chat(payload, "answer"), actor="t", label="<i>label</i>")
    at = coverage_page(demo_store)
    at.selectbox(key="cov_colour").set_value("label").run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    [trace] = [t for t in spec["data"] if "label" in t["name"]]
    [(example_id, hover, label)] = trace["customdata"]
    assert example_id == demo_store.count()  # the example just added
    assert hover == ("&lt;b&gt;bold&lt;/b&gt; &lt;a href=&#x27;http://example.com&#x27;&gt;"
                     "link&lt;/a&gt; &amp; more")
    assert label == "&lt;i&gt;label&lt;/i&gt;" and trace["name"] == "&lt;i&gt;label&lt;/i&gt; (1)"
    everything = json.dumps(spec["data"])
    assert "<b>bold" not in everything and "<a href" not in everything
    assert "<i>" not in everything


def test_gap_list_ranks_the_thin_label_first(coverage_page, demo_store):
    at = coverage_page(demo_store)
    table = gaps(at)
    assert table["Label"].iloc[0] == THIN
    assert table["Shortfall"].iloc[0] == 14 and (table["Shortfall"].iloc[1:] == 0).all()
    assert list(table["Shortfall"]) == sorted(table["Shortfall"], reverse=True)
    assert not [w for w in at.warning if "No eval examples" in w.value]
    [held_out] = demo_store.find(ExampleFilter(label=(THIN,), split=("eval",)))
    demo_store.update(held_out.id, base_version=held_out.version, actor="t", split="train")
    at = coverage_page(demo_store)
    assert any("No eval examples for security" in w.value for w in at.warning)


def test_gap_list_shows_error_rates_and_ranks_by_what_hurts(coverage_page, demo_store):
    """With an evaluated run in the workspace, the gap list gains each label's error rate
    and ranks by shortfall x error rate; Fill a gap offers the top of that list first."""
    from curation.checks.coverage import RANK_RULE, Targets, set_targets
    from tests.conftest import admin
    from training.run_folder import EVAL_FILE, MANIFEST, write_json

    set_targets(demo_store, admin("t"), Targets(default_min=57))
    labels = demo_store.labels()
    worst = min(label for label in labels if label != THIN)
    rates = {label: 0.5 for label in labels} | {THIN: 0.0, worst: 1.0}
    run_dir = demo_store.path.parent / "runs" / "run-20250101-000000-ab12"
    run_dir.mkdir(parents=True)
    write_json(run_dir / MANIFEST, {"run_id": run_dir.name})
    write_json(run_dir / EVAL_FILE, {
        "run_id": run_dir.name, "primary_metric": "accuracy",
        "systems": {"fine_tuned": {"per_label": {
            label: {"n": 4, "accuracy": 1 - rate} for label, rate in rates.items()}}}})
    at = coverage_page(demo_store)
    table = gaps(at)
    assert table["Error rate"].tolist() == [100 * rates[label] for label in table["Label"]]
    assert table["Rank key"].tolist() == [
        short * rates[label] for label, short in zip(table["Label"], table["Shortfall"])]
    assert list(table["Rank key"]) == sorted(table["Rank key"], reverse=True)
    # the thin label lacks the most but the model gets it right: it no longer leads
    assert table["Shortfall"].max() == table.set_index("Label")["Shortfall"][THIN]
    assert table["Label"].iloc[0] == worst and table["Label"].iloc[-1] == THIN
    assert (table["Scored"] == 4).all()
    shown = [m.value.replace("\\", "").replace("\u2060", "") for m in at.markdown]
    assert any(RANK_RULE in m and f"run {run_dir.name} (accuracy" in m for m in shown)
    assert at.selectbox(key="cov_fill_label").options[0].startswith(worst)
    assert at.selectbox(key="cov_fill_label").value == worst


def test_saving_a_target_of_57_changes_the_gap_list(coverage_page, demo_store):
    at = coverage_page(demo_store)
    at.number_input(key="cov_default_min").set_value(57)
    submit(at, "cov_targets")
    assert get_targets(demo_store).default_min == 57
    table = gaps(at)
    assert (table["Want"] == 57).all()
    have = dict(zip(table["Label"], table["Train"] + table["Eval"]))
    assert dict(zip(table["Label"], table["Shortfall"])) == {
        label: max(0, 57 - n) for label, n in have.items()}
    assert (table["Shortfall"] > 0).sum() > 1  # more labels short than before
    # the Thin labels queue now holds exactly the examples of the labels short of 57
    thin = set(table["Label"][table["Shortfall"] > 0])
    expected = {e.id for e in demo_store.find() if e.label in thin and e.status != "rejected"}
    assert {i.example.id for i in upcoming(demo_store, "coverage", limit=10_000)} == expected
    assert any("Thin labels: " in c.value and "up to date" in c.value for c in at.caption)


def test_a_stale_thin_labels_queue_is_named_and_updated(coverage_page, demo_store):
    at = coverage_page(demo_store)
    assert any("out of date" in c.value and "never ran" in c.value for c in at.caption)
    at.button(key="cov_update_queue").click().run()
    assert not at.exception
    assert queue_size(demo_store, "coverage") == 6  # the thin label's examples
    assert any("up to date" in c.value for c in at.caption)


def test_annotator_cannot_save_targets(coverage_page, demo_store):
    at = coverage_page(demo_store, ANN)
    [button] = [b for b in at.button if (b.key or "").startswith("FormSubmitter:cov_targets-")]
    assert button.disabled
    assert any("needs the reviewer role" in c.value for c in at.caption)


def test_fill_a_gap_saves_a_pending_manual_example(coverage_page, demo_store):
    at = coverage_page(demo_store)
    assert at.selectbox(key="cov_fill_label").value == THIN  # the worst gap by default
    system = at.text_area(key="cov_sys").value
    thin = demo_store.find(ExampleFilter(label=(THIN,)))
    assert system and system == thin[0].messages[0]["content"]
    shown = [t.value for t in at.text]
    assert sum(t.startswith("#") for t in shown) == 5  # example prompts for inspiration
    before = demo_store.count()
    at.text_area(key="cov_user").input("Someone changed our workspace owner without asking.")
    at.text_area(key="cov_answer").input("We will lock the workspace and investigate.")
    submit(at, "cov_fill")
    assert demo_store.count() == before + 1
    [new] = demo_store.find(order_by="-id", limit=1)
    assert (new.label, new.status, new.source, new.split) == (THIN, "pending", "manual",
                                                             "train")
    assert new.messages == chat("Someone changed our workspace owner without asking.",
                                "We will lock the workspace and investigate.", system)
    assert demo_store.history(new.id)[0]["actor"] == "rita"
    assert at.text_area(key="cov_user").value == ""  # the form is ready for the next one
    assert at.button(key="cov_open_saved").label == f"Open #{new.id} in Review"


def test_a_copied_prompt_is_saved_only_with_save_anyway(coverage_page, demo_store):
    existing = demo_store.find(ExampleFilter(label=(THIN,), split=("train",)))[0]
    prompt = next(m["content"] for m in existing.messages if m["role"] == "user")
    at = coverage_page(demo_store)
    before = demo_store.count()
    at.text_area(key="cov_user").input(prompt)
    at.text_area(key="cov_answer").input("Another answer.")
    submit(at, "cov_fill")
    assert demo_store.count() == before
    assert any(f"train example \\#{existing.id}" in w.value for w in at.warning)
    submit(at, "cov_fill")  # again, without ticking the box: still refused
    assert demo_store.count() == before
    at.checkbox(key="cov_force").check()
    submit(at, "cov_fill")
    assert demo_store.count() == before + 1
    [new] = demo_store.find(order_by="-id", limit=1)
    assert new.status == "pending" and new.label == THIN
    assert demo_store.history(new.id)[0]["reason"].startswith("saved despite")
    assert not at.warning


def test_draft_button_exists(coverage_page, demo_store):
    """Smoke test: drafting runs the base model (minutes on a CPU), so it is not clicked."""
    at = coverage_page(demo_store)
    assert at.button(key="cov_draft").label == "Draft with the base model"
    assert at.number_input(key="cov_draft_count").value == 3


def test_drafts_are_edited_then_saved_as_pending_drafts_or_discarded(coverage_page, demo_store,
                                                                   monkeypatch):
    """The drafts as `draft_examples` returns them, put in session state (no model run)."""
    def open_with_drafts(*drafts) -> AppTest:
        monkeypatch.setenv("CURATE_DB", str(demo_store.path))
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=90)
        at.session_state["user"] = RITA
        at.session_state["cov_k"] = 8
        at.session_state["cov_drafts"] = [{"id": i, "label": THIN, "messages": m}
                                          for i, m in drafts]
        at.switch_page(page("coverage")).run()
        assert not at.exception, at.exception
        return at

    at = open_with_drafts(("d1", chat("Draft question one?", "Draft answer.", "Be brief.")),
                          ("d2", chat("Draft question two?", "Another answer.")))
    assert at.text_area(key="cov_dd1_user").value == "Draft question one?"
    assert at.text_area(key="cov_dd1_sys").value == "Be brief."
    before = demo_store.count()
    at.text_area(key="cov_dd1_answer").input("An edited draft answer.")
    at.button(key="cov_dd1_save").click().run()
    assert demo_store.count() == before + 1
    [new] = demo_store.find(order_by="-id", limit=1)
    assert (new.source, new.status, new.label) == ("draft", "pending", THIN)
    assert new.messages == chat("Draft question one?", "An edited draft answer.", "Be brief.")
    at.button(key="cov_dd2_discard").click().run()
    assert demo_store.count() == before + 1
    assert not [t for t in at.text_area if (t.key or "").startswith("cov_dd")]
