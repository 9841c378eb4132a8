"""Evaluation: does the fine-tuned model beat the prompt-only baseline by enough to deploy?

Admins only (the "train" action). For a completed run, the page starts its evaluation in a
background process (`Workspace.start_evaluation`, the step `curate eval` takes too) and
follows it live (phase, answers, ETA,
Cancel) in a fragment that re-reads the run folder every POLL_SECONDS: the evaluation goes on
when the page is left, and any session shows it again (the running one is selected first).
Then it shows what RUN_DIR/eval.json holds: the scoreboard of the three systems and the
baseline (the primary metric also without the eval examples that copy a train example, side
by side), the verdict (decided again for another margin by `Workspace.evaluation`), the per-label
breakdown, and every eval example's answers side by side, filtered by outcome and label.
Below, any runs can be compared: the settings that differ and their metrics; for two runs,
what changed in the training data per label beside each label's score (`Workspace.compare_runs`).
An evaluated run can pre-label (`Workspace.predict`, as `curate predict`), and its confidence is
checked against the eval split (`Workspace.calibration`: bands, ECE, a reliability diagram).
Its suggestions are then routed by the thresholds (`Workspace.route`, as `curate route`): the
page shows the share in each band, the auto band's precision on the QA sample reviewed so far
and on the eval split, links to the two review queues, and undoes the auto-accepts.

Design decisions:
- Only what eval.json stores is shown; nothing is recomputed but the verdict for a new
  margin. The prompt of an example is not in eval.json: it is read from the workspace as the
  example is now (said on the page), with a link to it on the Review page.
- "Max eval examples" evaluates the first N eval examples (in id order) for a quick look;
  eval.json records how many were used.
- Runs are listed with `Workspace.record_runs` on every full run of the page (one follows
  the end of an evaluation), so the store's `training_runs` carries each run's evaluation
  summary; the evaluator itself never opens the store.
- Scores are shown in points (hundredths), as the margin is stated.
- Pre-label sits here, not on Review: it needs a run and its evaluation (the default run is
  chosen by verdict), and calibration reads that evaluation. It runs in the session's process
  with a progress bar (a background process like the evaluator's is future work).
- Labels and answers are data: shown as text in tables and `st.text`, escaped in chart
  labels (Plotly reads a little HTML) and in Markdown (`plain`).
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd
import streamlit as st

from curate.ui.common import (clip, flash, one_line, page_path, page_start, plain, show_error,
                              workspace)
from curation import CurateError, ExampleFilter
from curation.errors import EvaluationAlreadyActive
from curation.text import duration, turns_text
from training.config import EvalConfig, default, help_text
from training.evaluate import EvalJob
from training.launcher import Run
from training.run_folder import SYSTEMS, EvalResult

S = st.session_state
METRICS = ("accuracy", "macro_f1", "token_f1", "rouge_l")
METRIC_NAMES = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "token_f1": "Token F1",
                "rouge_l": "ROUGE-L"}
SYSTEM_NAMES = {"zero_shot": "Zero-shot", "few_shot": "Few-shot", "fine_tuned": "Fine-tuned"}
OUTCOMES = {"all": "All", "win": "Wins", "loss": "Losses", "tie": "Ties"}
PER_PAGE = 10
CLIP = 600
POLL_SECONDS = 2

ws = workspace("train")
store, user = ws.store, ws.user


def _points(value: float | None) -> float | None:
    return None if value is None else round(value * 100, 1)


def _chart_text(text: str) -> str:
    return html.escape(one_line(text, 40))


# --- running an evaluation -----------------------------------------------------------------

def _eval_form(run: Run, key: str) -> None:
    """Settings of an evaluation and the button that runs it (then the page reruns)."""
    with st.form(key, border=True):
        replace = st.checkbox("Use one system prompt for all three systems", key=f"{key}_sp_on",
                              help=help_text("system_prompt", EvalConfig))
        prompt = st.text_area("System prompt", key=f"{key}_sp", height=80,
                              placeholder="e.g. Answer with the ticket's category only.")
        columns = st.columns(4)
        shots = columns[0].number_input("Few-shot examples (k)", min_value=0,
                                        value=default("shots", EvalConfig), step=1,
                                        key=f"{key}_shots",
                                        help=help_text("shots", EvalConfig))
        max_new = columns[1].number_input("Max new tokens", min_value=1,
                                          value=default("max_new_tokens", EvalConfig), step=1,
                                          key=f"{key}_max_new",
                                          help=help_text("max_new_tokens", EvalConfig))
        margin = columns[2].number_input("Margin (points)",
                                         value=default("margin_points", EvalConfig), step=1.0,
                                         key=f"{key}_margin",
                                         help=help_text("margin_points", EvalConfig))
        limit = columns[3].number_input("Max eval examples", min_value=0, value=0, step=10,
                                        key=f"{key}_limit",
                                        help="0: every eval example (not rejected); else the "
                                             "first N, for a quick look.")
        submitted = st.form_submit_button("Evaluate", type="primary",
                                          icon=":material/play_arrow:")
    if not submitted:
        return
    try:
        config = EvalConfig(system_prompt=prompt if replace else None, shots=int(shots),
                            max_new_tokens=int(max_new), margin_points=float(margin))
        job = ws.start_evaluation(run.id, config, limit=int(limit) or None)
    except EvaluationAlreadyActive as exc:
        st.error(f"**Not started:** {plain(exc)}", icon=":material/block:")
        return
    except CurateError as exc:
        show_error(exc)
        return
    flash("evaluation", f"Evaluation of run {job.run_id} started on "
          f"{job.status.examples} eval examples", ":material/task_alt:")
    st.rerun()


def _job_view(run_id: str, was_active: bool) -> None:
    """The run's evaluation while it runs: phase, answers, ETA, Cancel; when it ends, the
    whole page runs again and shows the result."""
    job = ws.evaluation_job(run_id)
    if job is None:
        return
    if was_active and not job.active:
        st.rerun(scope="app")  # it ended: the result (or the reason) follows
    if not job.active:
        return
    phase = SYSTEM_NAMES.get(job.phase or "", "loading the model")
    with st.container(border=True, key="ev_job"):
        st.progress(job.done / job.total if job.total else 0.0,
                    text=f"Evaluating run {job.run_id}: {job.done}/{job.total} answers "
                         f"({phase})")
        cells = st.container(horizontal=True)
        cells.metric("State", job.state, border=True)
        cells.metric("Phase", phase, border=True)
        cells.metric("Answers", f"{job.done}/{job.total}", border=True)
        cells.metric("ETA (estimate)", duration(job.eta_seconds), border=True)
        st.caption(plain(
            f"Started by {job.status.requested_by} at "
            f"{str(job.status.requested_at or '')[:19].replace('T', ' ')} UTC on "
            f"{job.status.examples} eval examples, in a process of its own (pid "
            f"{job.pid}): it goes on when you leave this page or close the browser."))
        if st.button("Cancel evaluation", key="ev_cancel", icon=":material/stop_circle:"):
            with st.spinner("Stopping the evaluation…"):
                try:
                    ws.cancel_evaluation(job.run_id)
                except CurateError as exc:
                    show_error(exc)
                    return
            flash("evaluation", f"Evaluation of run {job.run_id} cancelled",
                  ":material/task_alt:")
            st.rerun(scope="app")


@st.fragment(run_every=POLL_SECONDS)
def _live(run_id: str) -> None:
    _job_view(run_id, was_active=True)


def _ended(job: EvalJob | None, result: EvalResult | None) -> None:
    """Why the latest evaluation did not complete, when it did not."""
    if job is None or job.active or job.state == "completed":
        return
    earlier = " The result below is from an earlier evaluation." if result else ""
    if job.state == "failed":
        st.error(f"**The last evaluation failed:** "
                 f"{plain(job.status.reason or 'no reason recorded')}.{earlier}",
                 icon=":material/error:")
    elif job.state == "interrupted":
        st.warning("The last evaluation stopped without recording an ending (killed, or the "
                   f"machine restarted); evaluate again to redo it.{earlier}",
                   icon=":material/pause_circle:")
    else:
        st.info(f"The last evaluation was cancelled.{earlier}", icon=":material/block:")


# --- the scoreboard ------------------------------------------------------------------------

def _scoreboard(result: EvalResult) -> None:
    systems, primary = result.systems, result.primary_metric
    base = result.baseline["system"]
    shown = [m for m in METRICS if m in systems["fine_tuned"]]
    names = [METRIC_NAMES[m] + (" (primary)" if m == primary else "") for m in shown]
    table = pd.DataFrame({
        "Zero-shot": [_points(systems["zero_shot"][m]) for m in shown],
        f"Few-shot (k={result.settings['shots']})":
            [_points(systems["few_shot"][m]) for m in shown],
        f"Baseline ({SYSTEM_NAMES[base].lower()})": [_points(systems[base][m]) for m in shown],
        "Fine-tuned": [_points(systems["fine_tuned"][m]) for m in shown],
        "Fine-tuned − baseline": [round((systems["fine_tuned"][m] - systems[base][m]) * 100, 1)
                                  for m in shown]}, index=names)
    clean = result.contamination.get("primary")
    if clean:  # the primary metric without the eval examples that have a train copy
        name = f"{METRIC_NAMES[primary]}, no train copy"
        values = [clean[s]["clean"] for s in ("zero_shot", "few_shot", base, "fine_tuned")]
        table.loc[name] = [_points(v) for v in values] + [
            None if None in (values[3], values[2]) else round((values[3] - values[2]) * 100, 1)]
    table.index.name = "Metric (points)"
    styled = table.style.format("{:.1f}", na_rep="–").apply(
        lambda row: ["font-weight: bold; background-color: rgba(255, 200, 0, 0.18)"
                     if row.name.endswith("(primary)") else "" for _ in row], axis=1)
    st.dataframe(styled, key="ev_scoreboard", height=38 + 35 * len(table))
    if clean:
        c = result.contamination
        st.caption(plain(
            f"“No train copy”: the {c['clean_examples']} of {c['examples']} {c['rule']}. "
            + (f"{len(c['copies'])} eval example(s) have one: "
               + ", ".join(f"#{x['id']} ~ train #{x['train_id']} ({x['method']})"
                           for x in c["copies"][:5])
               + (" and more" if len(c["copies"]) > 5 else "") + "."
               if c["copies"] else "No eval example has one, so both rows agree.")))
    else:
        st.caption("This evaluation predates the “no train copy” figure; evaluate again to "
                   "see the score without eval examples that copy a train example.")
    _bars(result, shown)


PREFERENCE_SYSTEMS = {"base": "Base model", "sft": "SFT run (start)", "tuned": "DPO-tuned"}


def _preference(p: dict[str, Any]) -> None:
    """A DPO run's pairwise preference accuracy on the eval split's pairs, per system."""
    st.subheader("Pairwise preference accuracy", anchor=False)
    table = pd.DataFrame({
        "Accuracy (points)": [_points(v["accuracy"]) for v in p["systems"].values()],
        "Mean margin (log-likelihood)": [v["mean_margin"] for v in p["systems"].values()]},
        index=[PREFERENCE_SYSTEMS.get(s, s) for s in p["systems"]])
    table.index.name = "System"
    st.dataframe(table.style.format("{:.1f}", na_rep="–", subset=["Accuracy (points)"]),
                 key="ev_preference")
    st.caption(plain(
        f"Share of the {p['pairs']} held-out preference pairs where the model gives the chosen "
        f"answer a higher log-likelihood ({p['aggregate']} over its tokens) than the rejected "
        f"one; {p['gain_points']:+.1f} points over the "
        f"{PREFERENCE_SYSTEMS.get(p['reference'], p['reference']).lower()}."
        + (f" {p['skipped']} pair(s) skipped (cut to nothing by max_seq_length, or both "
           "sides equal)." if p.get("skipped") else "")))


def _bars(result: EvalResult, shown: list[str]) -> None:
    import plotly.graph_objects as go

    base = result.baseline["system"]
    fig = go.Figure()
    colours = {"zero_shot": "#bab0ac", "few_shot": "#9ecae9", "fine_tuned": "#4c78a8"}
    for system in SYSTEMS:
        name = SYSTEM_NAMES[system] + (" (baseline)" if system == base else "")
        values = [_points(result.systems[system][m]) for m in shown]
        fig.add_trace(go.Bar(x=[METRIC_NAMES[m] for m in shown], y=values, name=name,
                             marker={"color": colours[system]}, text=values,
                             textposition="outside", texttemplate="%{text:.1f}"))
    fig.update_layout(barmode="group", height=300, yaxis={"title": "points",
                                                          "range": [0, 110]},
                      margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      legend={"orientation": "h", "y": -0.15})
    st.plotly_chart(fig, key="ev_bars", config={"displaylogo": False})


def _verdict(run_id: str, result: EvalResult) -> None:
    stored = result.verdict["margin_points"]
    row = st.container(horizontal=True, vertical_alignment="bottom")
    margin = row.number_input("Margin (points)", value=float(stored), step=1.0, key="ev_margin",
                              width=180, help="Judge again with another margin; nothing is "
                                              "generated again.")
    judged = result if margin == stored else ws.evaluation(run_id, margin=margin)
    verdict = judged.verdict
    if margin != stored:
        row.caption(f"Judged again with a {margin:g}-point margin; the stored evaluation used "
                    f"{stored:g}.")
    text = f"**{verdict['decision'].capitalize()}.** {plain(verdict['reason'])}."
    if verdict["decision"] == "deploy":
        st.success(text, icon=":material/rocket_launch:")
    else:
        st.error(text, icon=":material/do_not_disturb_on:")
    c, o, s = result.comparison, result.outcomes, result.settings
    st.caption(
        f"Paired bootstrap over {c['n_examples']} examples ({c['n_resamples']} resamples): "
        f"fine-tuned minus baseline {c['mean_diff'] * 100:+.1f} points, 95% interval "
        f"[{c['ci_low'] * 100:+.1f}, {c['ci_high'] * 100:+.1f}], p = {c['p_value']:.3f}. "
        f"Per example: {o.get('win', 0)} wins, {o.get('loss', 0)} losses, "
        f"{o.get('tie', 0)} ties.")
    prompt = s.get("system_prompt")
    st.caption(plain(
        f"Evaluated {str(result.created_at or '')[:19].replace('T', ' ')} UTC in "
        f"{'?' if result.wall_seconds is None else result.wall_seconds} s on "
        f"{s['eval_examples']} eval examples; "
        f"{s['decoding']} decoding, up to {s['max_new_tokens']} new tokens; few-shot "
        f"examples {', '.join(f'#{i}' for i in s.get('shot_ids') or []) or 'none'}; system "
        "prompt " + ("each example's own" if prompt is None else
                     "none" if prompt == "" else repr(clip(prompt, 200))) + "."))


def _per_label(result: EvalResult) -> None:
    systems, metric = result.systems, result.primary_metric
    per = {s: systems[s].get("per_label") for s in SYSTEMS}
    if not per["fine_tuned"]:
        st.caption("The eval examples carry no labels, so there is no per-label breakdown.")
        return
    base = result.baseline["system"]
    labels = list(per["fine_tuned"])
    table = pd.DataFrame({
        "Label": labels,
        "Examples": [per["fine_tuned"][lab]["n"] for lab in labels],
        **{SYSTEM_NAMES[s] + (" (baseline)" if s == base else ""):
           [_points(per[s][lab][metric]) for lab in labels] for s in SYSTEMS},
        "Fine-tuned − baseline": [round((per["fine_tuned"][lab][metric] -
                                         per[base][lab][metric]) * 100, 1) for lab in labels]})
    st.dataframe(table, hide_index=True, key="ev_per_label",
                 height=38 + 35 * min(len(labels), 12),
                 column_config={"Label": st.column_config.TextColumn(width="medium"),
                                **{c: st.column_config.NumberColumn(format="%.1f")
                                   for c in table.columns if c not in ("Label", "Examples")}})
    import plotly.graph_objects as go

    fig = go.Figure()
    for system, colour in (("zero_shot", "#bab0ac"), ("few_shot", "#9ecae9"),
                           ("fine_tuned", "#4c78a8")):
        fig.add_trace(go.Bar(x=[_chart_text(lab) for lab in labels],
                             y=[_points(per[system][lab][metric]) for lab in labels],
                             name=SYSTEM_NAMES[system] + (" (baseline)" if system == base
                                                          else ""),
                             marker={"color": colour}))
    fig.update_layout(barmode="group", height=300, yaxis={"title": f"{metric} (points)",
                                                          "range": [0, 105]},
                      margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      legend={"orientation": "h", "y": -0.3})
    st.plotly_chart(fig, key="ev_per_label_chart", config={"displaylogo": False})


# --- the outputs, side by side -------------------------------------------------------------

def _prompts(ids: list[int]) -> dict[int, str]:
    """The user turns of these examples as they are now in the workspace."""
    found = store.find(ExampleFilter(ids=tuple(sorted(ids)))) if ids else []
    return {e.id: turns_text(e.messages, sep="\n\n") for e in found}


def _outputs(result: EvalResult) -> None:
    examples, base = result.examples, result.baseline["system"]
    counts = {k: len(examples) if k == "all" else sum(e["outcome"] == k for e in examples)
              for k in OUTCOMES}
    row = st.container(horizontal=True, vertical_alignment="bottom")
    outcome = row.segmented_control("Outcome", list(OUTCOMES), key="ev_outcome",
                                    default="all", required=True,
                                    format_func=lambda k: f"{OUTCOMES[k]} ({counts[k]})",
                                    help="Win: the fine-tuned model scores higher than the "
                                         "baseline on this example; loss: lower; tie: equal.")
    labels = sorted({str(e["label"]) for e in examples if e.get("label") is not None})
    chosen = row.multiselect("Label", labels, key="ev_labels", width=360,
                             placeholder="all labels")
    rows = [e for e in examples if (outcome == "all" or e["outcome"] == outcome)
            and (not chosen or str(e.get("label")) in chosen)]
    st.dataframe(pd.DataFrame({
        "Id": [e["id"] for e in rows],
        "Label": [e.get("label") for e in rows],
        "Outcome": [e["outcome"] for e in rows],
        "Reference": [e["reference"] for e in rows],
        f"Baseline ({SYSTEM_NAMES[base].lower()})": [e[base] for e in rows],
        "Fine-tuned": [e["fine_tuned"] for e in rows]}),
        hide_index=True, key="ev_outputs", height=38 + 35 * min(max(len(rows), 1), 8),
        column_config={"Id": st.column_config.NumberColumn(format="%d", width="small")})
    if not rows:
        st.caption("No example matches these filters.")
        return
    pages = max(1, math.ceil(len(rows) / PER_PAGE))
    page = min(st.pagination(pages, key="ev_page"), pages) if pages > 1 else 1
    shown = rows[(page - 1) * PER_PAGE: page * PER_PAGE]
    prompts = _prompts([e["id"] for e in shown if isinstance(e.get("id"), int)])
    st.caption("The prompt is the example as it is now in the workspace; the answers are "
               "those stored with the evaluation.")
    for e in shown:
        with st.container(border=True, key=f"ev_example_{e['id']}"):
            head = st.container(horizontal=True, vertical_alignment="center")
            head.markdown(f"**#{e['id']}** · label {plain(e.get('label') or '(none)')} · "
                          f"**{e['outcome']}**")
            if isinstance(e.get("id"), int):
                head.page_link(page_path("review"), label=f"Open #{e['id']} in Review",
                               icon=":material/rate_review:", query_params={"id": e["id"]})
            st.caption("Prompt (user)")
            st.text(clip(prompts.get(e["id"], "(no longer in the workspace)")))
            columns = st.columns(3)
            for column, (title, text, score) in zip(columns, (
                    ("Reference", e["reference"], None),
                    (f"Baseline ({SYSTEM_NAMES[base].lower()})", e[base], e["scores"][base]),
                    ("Fine-tuned", e["fine_tuned"], e["scores"]["fine_tuned"]))):
                with column:
                    st.caption(title + ("" if score is None else f" · score {score:.2f}"))
                    st.text(clip(text) or "(empty answer)")


# --- comparing runs ------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _prelabel(run_id: str) -> None:
    """Pre-label with this run's model, the thresholds, and calibration on the eval split."""
    from curation.suggestions import band_name

    st.caption("The run's model answers the selected train examples; each answer is stored "
               "as a suggestion beside the example (Review shows it), never over anyone's "
               "text. For label answers, the answer is the most probable of the labels the run "
               "trained on and its confidence that probability, normalised over those labels; "
               "for free text, the answer is generated greedily and its confidence is the "
               "mean probability of its tokens. It runs in this session: stay on the page "
               "until it ends.")
    high, low = ws.thresholds()
    with st.form("ev_thresholds", border=False):
        left, right, go = st.columns([2, 2, 1], vertical_alignment="bottom")
        new_high = left.number_input("High threshold", 0.0, 1.0, high, 0.01, key="ev_high")
        new_low = right.number_input("Low threshold", 0.0, 1.0, low, 0.01, key="ev_low")
        if go.form_submit_button("Save thresholds"):
            try:
                ws.set_thresholds(new_high, new_low)
                flash("evaluation", f"Thresholds saved: {new_high:g} and {new_low:g}.")
                st.rerun()
            except CurateError as exc:
                show_error(exc)
    statuses = st.multiselect("Pre-label train examples with status",
                              ["pending", "needs_work", "accepted", "rejected"],
                              default=["pending"], key="ev_pl_status")
    left, right = st.columns(2)
    if left.button("Pre-label", key="ev_prelabel", icon=":material/smart_toy:",
                   disabled=not statuses):
        bar = st.progress(0.0, text="pre-labelling")
        try:
            done = ws.predict(run_id, status=tuple(statuses),
                              progress=lambda d, t: bar.progress(min(d / t, 1.0),
                                                                 text="pre-labelling"))
            counts = ", ".join(f"{n} {band_name(b, *done.thresholds)}"
                               for b, n in done.bands.items())
            flash("evaluation", f"Run {run_id} pre-labelled {len(done.suggestions)} examples "
                  f"({counts}).", kind="success")
            st.rerun()
        except CurateError as exc:
            show_error(exc)
    if right.button("Check calibration on the eval split", key="ev_calibrate"):
        with st.spinner("Scoring the eval answers..."):
            try:
                S["ev_calibration"] = ws.calibration(run_id)
            except CurateError as exc:
                show_error(exc)
    figures = S.get("ev_calibration")
    if figures and figures["run_id"] == run_id:
        _calibration(figures)


def _calibration(figures: dict[str, Any]) -> None:
    import plotly.graph_objects as go

    ece = "-" if figures["ece"] is None else f"{figures['ece']:.3f}"
    st.text(f"{figures['examples']} eval examples, confidence by {figures['method']}: "
            f"expected calibration error {ece}.")
    st.dataframe(pd.DataFrame([
        {"band": name, "confidence": b["range"], "examples": b["examples"],
         "share": None if b["share"] is None else round(b["share"] * 100, 1),
         "accuracy": None if b["accuracy"] is None else round(b["accuracy"] * 100, 1)}
        for name, b in figures["bands"].items()]), hide_index=True, key="ev_bands")
    bins = [b for b in figures["bins"] if b["examples"]]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line={"dash": "dot", "color": "#bab0ac"}))
    fig.add_trace(go.Bar(x=[(b["lower"] + b["upper"]) / 2 for b in bins],
                         y=[b["accuracy"] for b in bins], width=0.09, name="accuracy",
                         text=[b["examples"] for b in bins], texttemplate="n=%{text}",
                         marker={"color": "#4c78a8"}))
    fig.update_layout(height=300, xaxis={"title": "confidence", "range": [0, 1]},
                      yaxis={"title": "accuracy", "range": [0, 1.05]},
                      margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      legend={"orientation": "h", "y": -0.25})
    st.plotly_chart(fig, key="ev_reliability", config={"displaylogo": False})


def _routing(run_id: str) -> None:
    """Route this run's suggestions by the thresholds, the last routing's bands and the auto
    band's measured precision, links to the two queues, and undo."""
    from curation.routing import DEFAULT_QA_SHARE, QA_SAMPLE, SUGGESTIONS
    from curation.suggestions import band, band_name

    high, low = ws.thresholds()
    st.caption(f"Each pending train example with this run's suggestion goes by the thresholds: "
               f"{band_name('high', high, low)} it is accepted with the model's answer (audited "
               f"as model:{run_id}, reversible) and a random QA sample of those goes to people "
               f"to measure precision; {band_name('middle', high, low)} it goes to the Model "
               f"suggestions queue (m accepts); {band_name('low', high, low)} it stays with "
               "people, without a suggestion. A confident answer that differs from the "
               "example's own answer never replaces it: it goes to Model suggestions.")
    waiting = store.routable_suggestions(run_id)
    bands = [band(conf, high, low) for *_, conf, _ in waiting]
    st.text(f"{len(waiting):,} pending train examples have this run's suggestion: "
            + ", ".join(f"{bands.count(b):,} {band_name(b, high, low)}"
                        for b in ("high", "middle", "low")) + ".")
    with st.form("ev_route", border=False):
        share, seed, go = st.columns([2, 2, 1], vertical_alignment="bottom")
        qa_share = share.number_input("QA sample share", 0.0, 1.0, DEFAULT_QA_SHARE, 0.01,
                                      key="ev_qa_share",
                                      help="Share of the auto-accepted examples people check.")
        qa_seed = seed.number_input("Seed", 0, 2**31 - 1, 0, 1, key="ev_qa_seed",
                                    help="The same examples and seed give the same sample.")
        if go.form_submit_button("Route", icon=":material/alt_route:",
                                 disabled=not waiting or not user.can("decide")):
            bar = st.progress(0.0, text="auto-accepting")
            try:
                done = ws.route(run_id, qa_share=float(qa_share), seed=int(qa_seed),
                                progress=lambda d, t: bar.progress(d / t,
                                                                   text="auto-accepting"))
                flash("evaluation", f"Routed {done.routed:,} examples: "
                      f"{len(done.auto_accepted):,} auto-accepted "
                      f"({len(done.qa_sample):,} in the QA sample), "
                      f"{len(done.suggested) + len(done.disagreed):,} to Model suggestions, "
                      f"{len(done.left):,} left to people.", kind="success")
                st.rerun()
            except CurateError as exc:
                show_error(exc)
    status = ws.routing_status()
    if status is None:
        st.caption("Nothing routed yet.")
        return
    _routing_status(status)
    links = st.container(horizontal=True)
    links.page_link(page_path("review"), label="Review Model suggestions",
                    icon=":material/smart_toy:", query_params={"queue": SUGGESTIONS})
    links.page_link(page_path("review"), label="Review the QA sample",
                    icon=":material/fact_check:", query_params={"queue": QA_SAMPLE})
    with st.popover("Undo auto-accepts", icon=":material/undo:",
                    disabled=not user.can("revert")):
        st.caption(f"Puts every example run {status['run_id']} auto-accepted that nobody has "
                   "changed since back to pending, with its previous answer: audited as a "
                   "revert by you.")
        if st.button(f"Undo the auto-accepts of {status['run_id']}", key="ev_unroute",
                     type="primary"):
            try:
                undone = ws.revert_auto_accepts(status["run_id"])
                flash("evaluation", f"{len(undone):,} auto-accepted examples are pending again.",
                      kind="success")
                st.rerun()
            except CurateError as exc:
                show_error(exc)


def _routing_status(status: dict[str, Any]) -> None:
    import plotly.graph_objects as go

    shares = status["shares"]
    parts = [("Auto-accepted", status["auto"], shares["auto_accepted"], "#54a24b"),
             ("Model suggestions", status["middle"] + status["disagreed"], shares["review"],
              "#f58518"),
             ("Left to people", status["low"], shares["left"], "#bab0ac")]
    st.caption(plain(f"Last routing: run {status['run_id']}, {status['routed']:,} examples, by "
                     f"{status['run_by']} at {status['run_at']:%Y-%m-%d %H:%M} UTC."))
    fig = go.Figure()
    for name, count, share, colour in parts:
        fig.add_trace(go.Bar(y=["routed"], x=[(share or 0) * 100], orientation="h", name=name,
                             marker={"color": colour}, text=f"{name}: {count:,}",
                             textposition="inside", insidetextanchor="middle",
                             hovertemplate=f"{name}: {count:,} (%{{x:.0f}}%)<extra></extra>"))
    fig.update_layout(barmode="stack", height=120, showlegend=False,
                      xaxis={"title": "share of the routed examples (%)", "range": [0, 100]},
                      yaxis={"visible": False}, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    st.plotly_chart(fig, key="ev_routing_shares", config={"displaylogo": False})
    qa, ev = status["qa"], status["eval"]
    left, right = st.columns(2)
    left.metric("Auto band precision, QA sample",
                "—" if qa["precision"] is None else f"{qa['precision']:.1%}",
                help="Share of the reviewed QA sample whose model answer people accepted as is.")
    left.caption(f"{qa['reviewed']:,} of {qa['sampled']:,} sampled examples reviewed.")
    right.metric("Auto band accuracy, eval split",
                 "—" if not ev or ev["accuracy"] is None else f"{ev['accuracy']:.1%}",
                 help="Accuracy of the fine-tuned answers at the auto band's confidence on "
                      "the eval split (from the calibration check).")
    right.caption(f"{ev['examples']:,} eval answers at confidence {ev['range']}." if ev else
                  "Check calibration on the eval split (above) to measure it.")


def _compare(runs: list[Run]) -> None:
    by_id = {r.id: r for r in runs}
    chosen = st.multiselect("Runs to compare", list(by_id), key="ev_compare",
                            placeholder="choose two or more runs",
                            format_func=lambda i: f"{i} · {by_id[i].state}")
    if len(chosen) < 2:
        st.caption("Choose two or more runs to see the settings that differ and their "
                   "metrics side by side.")
        return
    picked = [by_id[i] for i in chosen]
    settings: dict[str, list[Any]] = {
        "snapshot": [r.manifest.snapshot_id for r in picked],
        "train examples": [r.manifest.examples for r in picked]}
    keys = sorted({k for r in picked for k in r.manifest.config})
    for k in keys:
        settings[k] = [r.manifest.config.get(k) for r in picked]
    differ = {k: v for k, v in settings.items() if len({repr(x) for x in v}) > 1}
    st.markdown("**Settings that differ**")
    if differ:
        st.dataframe(pd.DataFrame({r.id: [_fmt(v[n]) for v in differ.values()]
                                   for n, r in enumerate(picked)}, index=list(differ)),
                     key="ev_config_diff", height=38 + 35 * len(differ))
    else:
        st.caption("None: these runs used the same snapshot and settings.")
    results = {r.id: ws.evaluation(r.id) for r in picked}
    rows: dict[str, list[str]] = {"state": [r.state for r in picked],
                                  "final loss": [_fmt(r.status.final_loss)
                                                 for r in picked]}

    def add(name: str, get) -> None:
        rows[name] = [get(results[r.id]) if results[r.id] else "not evaluated"
                      for r in picked]

    add("primary metric", lambda x: x.primary_metric)
    for s in SYSTEMS:
        add(SYSTEM_NAMES[s], lambda x, s=s: f"{x.systems[s]['primary'] * 100:.1f}")
    add("baseline", lambda x: f"{x.baseline['primary'] * 100:.1f} "
                              f"({SYSTEM_NAMES[x.baseline['system']].lower()})")
    add("fine-tuned − baseline", lambda x: f"{x.verdict['difference_points']:+.1f}")
    add("verdict", lambda x: f"{x.verdict['decision']} "
                             f"({x.verdict['margin_points']:g}-point margin)")
    add("significant", lambda x: "yes" if x.comparison["significant"] else "no")
    add("eval examples", lambda x: str(x.settings["eval_examples"]))
    st.markdown("**Metrics** (points)")
    st.dataframe(pd.DataFrame({r.id: [v[n] for v in rows.values()]
                               for n, r in enumerate(picked)}, index=list(rows)),
                 key="ev_compare_metrics", height=38 + 35 * len(rows))
    if len(picked) == 2:
        _data_diff(picked[0].id, picked[1].id)


def _data_diff(before: str, after: str) -> None:
    """Which curation changed which score: the training data's changes per label beside the
    fine-tuned model's per-label score, from the first run chosen to the second."""
    try:
        comparison = ws.compare_runs(before, after)
    except CurateError as exc:
        show_error(exc)
        return
    st.markdown(f"**What changed in the training data** ({plain(before)} → {plain(after)}): "
                f"{comparison.data.summary()}")
    rows = comparison.per_label
    metric = comparison.metric or "score"
    st.dataframe(pd.DataFrame({
        "Label": [str(r["label"]) if r["label"] is not None else "(none)" for r in rows],
        "Train examples": [f"{r['train_before']} → {r['train_after']}" for r in rows],
        "Added": [r["added"] for r in rows], "Removed": [r["removed"] for r in rows],
        "Relabelled in": [r["relabelled_in"] for r in rows],
        "Relabelled out": [r["relabelled_out"] for r in rows],
        "Edited": [r["edited"] for r in rows],
        f"{metric} before": [r["score_before"] for r in rows],
        f"{metric} after": [r["score_after"] for r in rows],
        "Change (points)": [r["score_change"] for r in rows]}),
        hide_index=True, key="ev_compare_data", height=38 + 35 * min(len(rows), 12))
    if comparison.metric is None:
        st.caption("Scores need both runs evaluated.")


# --- the page ------------------------------------------------------------------------------

st.title("Evaluation")
st.caption("Does the fine-tuned model beat the best prompt-only baseline (the base model "
           "zero-shot or with a few examples in the prompt) on the eval split, by enough to "
           "deploy?")
page_start("evaluation", ws, empty_hint="")

runs = ws.record_runs()
completed = [r for r in runs if r.state == "completed"]
if not completed:
    st.info("No completed training run yet: start one on the Training page.",
            icon=":material/model_training:")
    st.page_link(page_path("training"), label="Go to Training", icon=":material/model_training:")
    st.stop()

evaluated = {r.id: ws.evaluation(r.id) for r in completed}
jobs = {r.id: ws.evaluation_job(r.id) for r in completed}
ids = [r.id for r in completed]
running = next((j for j in jobs.values() if j and j.active), None)
if running and S.get("ev_followed") != running.run_id:
    S.ev_run, S.ev_followed = running.run_id, running.run_id  # a running one is shown first
if S.get("ev_run") not in ids:
    S.ev_run = next((i for i in ids if evaluated[i]), ids[0])


def _run_label(i: str) -> str:
    job = jobs[i]
    if job and job.active:
        return f"{i} · evaluating ({job.done}/{job.total} answers)"
    return f"{i} · " + ("evaluated" if evaluated[i] else "not evaluated yet")


run_id = st.selectbox("Run", ids, key="ev_run", width=520, format_func=_run_label)
run = next(r for r in completed if r.id == run_id)
result, job = evaluated[run_id], jobs[run_id]
st.caption(plain(f"Snapshot {run.manifest.snapshot_id} "
                 f"({run.manifest.examples} train examples) · base model "
                 f"{run.manifest.base_model} · final loss "
                 f"{_fmt(run.status.final_loss)}"))
leaked = run.manifest.leaked_pairs
if leaked:
    st.warning(f"This run was trained despite {len(leaked)} eval example(s) duplicating its "
               "train examples: the evaluation overstates the model on them (eval "
               + ", ".join(f"#{x['eval_id']}" for x in leaked[:10]) + ").",
               icon=":material/join_inner:")

if job and job.active:
    _live(run_id)
elif running:
    st.caption(f"Run {plain(running.run_id)} is being evaluated now: one evaluation at a time "
               "per workspace.")
_ended(job, result)
if result is None:
    if not (job and job.active):
        st.info("This run has not been evaluated yet. The three systems answer every eval "
                "example; on a CPU that takes a few seconds per example. The evaluation runs "
                "in a process of its own: it goes on when you leave this page.",
                icon=":material/hourglass_empty:")
        _eval_form(run, "ev_form")
else:
    st.header("Scoreboard", anchor=False)
    _verdict(run.id, result)
    _scoreboard(result)
    if result.preference:
        _preference(result.preference)
    if not (job and job.active):
        with st.expander("Evaluate again with other settings"):
            _eval_form(run, "ev_rerun")
    st.header("Per label", anchor=False)
    _per_label(result)
    st.header("Answers side by side", anchor=False)
    _outputs(result)
    st.header("Pre-label and calibration", anchor=False)
    _prelabel(run.id)
    st.header("Route by confidence", anchor=False)
    _routing(run.id)

st.header("Compare runs", anchor=False)
_compare(runs)
