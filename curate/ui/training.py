"""Training: set up a LoRA fine-tune, launch it, watch it live, cancel or resume it, list runs.

Admins only (the "train" action). Every step (leakage check, launch, cancel, resume, the
runs recorded in the store as they are listed) is a `Workspace` method; the estimates come
from `training.estimate`. This page gathers the settings, shows what they mean for the data
at hand, and renders the run folders.

Design decisions:
- The form is generated from `TrainConfig`'s fields: one widget per field, typed by the
  field's annotation (a `Literal` becomes a select box), labelled from FIELD_LABELS, with the
  field's help text as tooltip and its default as initial value. The widgets carry no limits
  of their own: `TrainConfig.__post_init__` is the one validation, and its message (which
  names the field) is shown under the form while Launch is disabled. The method (SFT or
  DPO) sits beside the base model; DPO's own settings (beta, the SFT weight, the SFT run
  to start from, offered from the completed SFT runs) appear only when DPO is chosen.
- What a run trains on is decided at launch: a new snapshot of the accepted train examples.
  The page shows how many that is, their token-length distribution under the chosen base
  model's chat template, how many `max_seq_length` would cut, and the time per epoch
  (measured by an earlier run, or a FLOPs lower bound, labelled as such). The figures come
  from `training.estimate`; the page only caches them: token counts on the examples' ids and
  content hashes and the model, parameter counts on the weights' path and modification time;
  the machine's matrix-multiply rate is kept by `training.estimate.MACHINE_RATE` (best of
  several samples, measured again when a few minutes old).
- Leakage is previewed with `Workspace.leakage` before launch; launching over an exact or
  near copy needs an explicit tick (`allow_leakage=True`), and the library refuses
  otherwise. Same-meaning matches alone (paraphrases) are shown as a warning and never
  block, as in the library (`curation.leakage.BLOCKING_METHODS`).
- The run selector's key (`tr_view`) is only ever set before the selector is drawn: code
  that runs after it (Launch) leaves the run to show in `tr_show` for the next run of the
  script, as Streamlit refuses changes to a widget's value once it exists.
- The live view is a fragment that re-reads the run folder every POLL_SECONDS while the run
  is active (`st.fragment(run_every=...)`): training is a process of its own, so closing the
  browser changes nothing, and reopening the page shows the run where it is. When the run
  ends, the whole page reruns so the list and the buttons follow.
- The learning curve (`training.curve`): the "Learning curve" button starts its driver in a
  thread of the app's server (`Workspace.start_learning_curve`), which launches, waits for
  and evaluates the three runs one after another; closing the browser does not stop it,
  stopping the app does. The page shows the newest curve.json live (a fragment, like a run)
  with Cancel, then its plot (score against examples) and one-sentence advice.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import typing
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import streamlit as st

from curate.ui.common import flash, page_path, page_start, plain, show_error, workspace
from curation import CurateError, Example
from curation.errors import LeakageUnresolved, RunAlreadyActive
from curation.leakage import DEFAULT_TRAIN_FILTER, blocking, paraphrases
from curation.text import duration
from training.config import TrainConfig, help_text
from training.estimate import (FLOPS_PER_PARAMETER_TOKEN, MATMUL_SAMPLES, RATE_MAX_AGE,
                               count_parameters, epoch_time, model_weights, token_lengths)
from training.launcher import Run
from training.models import DEFAULT_BASE_MODEL
from training.run_folder import EVAL_FILE

S = st.session_state
POLL_SECONDS = 2.0
FIELD_LABELS = {
    "base_model": "Base model", "r": "Rank (r)", "alpha": "Alpha", "dropout": "Dropout",
    "target_modules": "Target modules", "learning_rate": "Learning rate", "epochs": "Epochs",
    "max_seq_length": "Max sequence length (tokens)", "batch_size": "Batch size",
    "warmup_ratio": "Warm-up (share of steps)", "seed": "Seed", "precision": "Precision",
    "checkpoint_every_steps": "Checkpoint every N steps",
    "keep_checkpoints": "Checkpoints kept", "method": "Method", "beta": "DPO beta",
    "sft_run": "Start from SFT run", "sft_weight": "SFT weight (chosen answers)"}
ADVANCED = ("checkpoint_every_steps", "keep_checkpoints")
DPO_FIELDS = ("beta", "sft_weight", "sft_run")  # shown when the method is DPO
FLOAT_FORMATS = {"learning_rate": ("%.1e", 1e-5)}
RESUMABLE = ("interrupted", "failed", "cancelled")
STATE_ICONS = {"starting": ":material/hourglass_top:", "running": ":material/sync:",
               "completed": ":material/task_alt:", "failed": ":material/error:",
               "cancelled": ":material/block:", "interrupted": ":material/pause_circle:"}

ws = workspace("train")
store, user = ws.store, ws.user


# --- small helpers -------------------------------------------------------------------------

def _has_eval(run: Run) -> bool:
    return (run.dir / EVAL_FILE).is_file()


def _final_loss(run: Run) -> float | None:
    return run.status.final_loss if run.state == "completed" else None


# --- the form ------------------------------------------------------------------------------

def _widget(f: dataclasses.Field, kind: Any) -> Any:
    """One input for a TrainConfig field, keyed tr_<name>, typed by its annotation."""
    key, label, help_ = f"tr_{f.name}", FIELD_LABELS.get(f.name, f.name), help_text(f.name)
    if typing.get_origin(kind) is Literal:
        options = list(typing.get_args(kind))
        return st.selectbox(label, options, index=options.index(f.default), key=key,
                            help=help_)
    if kind is int:
        return st.number_input(label, value=f.default, step=1, key=key, help=help_)
    if kind is float:
        fmt, step = FLOAT_FORMATS.get(f.name, ("%.2f", 0.01))
        return st.number_input(label, value=float(f.default), step=step, format=fmt, key=key,
                               help=help_)
    return st.text_input(label, value=f.default, key=key, help=help_)


def _sft_run_widget(f: dataclasses.Field) -> str | None:
    """The completed SFT runs a DPO run can start from (None: the base model)."""
    runs = [r.id for r in ws.runs() if r.state == "completed"
            and (r.manifest.config or {}).get("method", "sft") == "sft"]
    return st.selectbox(FIELD_LABELS[f.name], [None, *runs], key=f"tr_{f.name}",
                        format_func=lambda r: "none (the base model)" if r is None else r,
                        help=help_text(f.name))


def _config_form() -> TrainConfig | None:
    """The settings as a TrainConfig, or None (with the reason shown) when one is invalid."""
    hints = typing.get_type_hints(TrainConfig)
    named = {f.name: f for f in dataclasses.fields(TrainConfig)}
    fields = [f for f in named.values() if f.name not in
              (*ADVANCED, *DPO_FIELDS, "base_model", "method")]
    top = st.columns([3, 1])
    with top[0]:
        values = {"base_model": _widget(named["base_model"], hints["base_model"])}
    with top[1]:
        values["method"] = _widget(named["method"], hints["method"])
    if values["method"] == "dpo":
        columns = st.columns(4)
        with columns[0]:
            values["beta"] = _widget(named["beta"], hints["beta"])
        with columns[1]:
            values["sft_weight"] = _widget(named["sft_weight"], hints["sft_weight"])
        with columns[2]:
            values["sft_run"] = _sft_run_widget(named["sft_run"])
    columns = st.columns(4)
    for index, f in enumerate(fields):
        with columns[index % 4]:
            values[f.name] = _widget(f, hints[f.name])
    with st.expander("Checkpoints"):
        columns = st.columns(4)
        for index, name in enumerate(ADVANCED):
            f = next(x for x in dataclasses.fields(TrainConfig) if x.name == name)
            with columns[index]:
                values[name] = _widget(f, hints[name])
    try:
        return TrainConfig(**values)
    except CurateError as exc:
        st.error(f"**This setting is not valid:** {plain(exc)}", icon=":material/error:")
        return None


# --- the data at these settings ------------------------------------------------------------

@st.cache_data(show_spinner="Counting tokens with the base model's tokenizer…", max_entries=8)
def _token_lengths(base_model: str, content_key: tuple, _examples: list[Example]) -> list[int]:
    """`token_lengths`, cached on the model and the examples' ids and content hashes."""
    return token_lengths(base_model, [e.messages for e in _examples], ws.model_cache())


@st.cache_data(show_spinner=False, max_entries=8)
def _count_parameters(path: str, modified: float) -> int | None:
    """`count_parameters`, cached on the path and its modification time."""
    return count_parameters(Path(path))


def _parameter_count(base_model: str, cache_dir: Path) -> int | None:
    weights = model_weights(base_model, cache_dir)
    return _count_parameters(str(weights), weights.stat().st_mtime) if weights else None


def _data_section(config: TrainConfig | None, examples: list[Example],
                  runs: list[Run]) -> None:
    base_model = config.base_model if config else S.get("tr_base_model", DEFAULT_BASE_MODEL)
    max_len = config.max_seq_length if config else None
    key = tuple((e.id, e.content_hash) for e in examples)
    try:
        lengths = _token_lengths(base_model, key, examples)
    except Exception as exc:  # a model that cannot be found or loaded: say so, go on
        st.warning(f"No token counts: the tokenizer of {plain(base_model)} could not be "
                   f"loaded ({plain(type(exc).__name__)}: {plain(str(exc)[:300])}).",
                   icon=":material/warning:")
        return
    cut = sum(n > max_len for n in lengths) if max_len else 0
    kept = sum(min(n, max_len) for n in lengths) if max_len else sum(lengths)
    stats = st.container(horizontal=True)
    stats.metric("Tokens", f"{sum(lengths):,}", border=True,
                 help="All tokens of the conversations, as the base model's chat template "
                      "renders them")
    stats.metric("Median length", f"{statistics.median(lengths):,.0f}", border=True)
    stats.metric("Longest", f"{max(lengths):,}", border=True)
    stats.metric("Cut by max length", f"{cut:,}" if max_len else "—", border=True,
                 help="Conversations longer than max_seq_length; their end is cut off")
    if config:
        steps = math.ceil(len(lengths) / config.batch_size)
        stats.metric("Steps per epoch", f"{steps:,}", border=True,
                     help=f"{len(lengths)} examples in batches of {config.batch_size}")
    _histogram(lengths, max_len, cut)
    if config:
        _estimate(config, kept, runs)


def _histogram(lengths: list[int], max_len: int | None, cut: int) -> None:
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=lengths, nbinsx=min(60, max(10, len(set(lengths)))),
                                 marker={"color": "#4c78a8"},
                                 hovertemplate="%{x} tokens: %{y} conversations"
                                               "<extra></extra>"))
    if max_len and max_len <= 1.3 * max(lengths):
        fig.add_vline(x=max_len, line={"color": "#e45756", "dash": "dash"},
                      annotation_text=f"max_seq_length {max_len}: {cut} cut",
                      annotation_position="top right")
    elif max_len:  # far beyond the data: a line there would squash the histogram
        fig.add_annotation(text=f"max_seq_length {max_len}: beyond the longest, none cut",
                           xref="paper", yref="paper", x=1, y=1, showarrow=False,
                           xanchor="right", font={"color": "#e45756"})
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis_title="tokens per conversation", yaxis_title="conversations",
                      bargap=0.05)
    st.plotly_chart(fig, key="tr_lengths", config={"displaylogo": False})


def _estimate(config: TrainConfig, tokens: int, runs: list[Run]) -> None:
    estimate = epoch_time(config, tokens, runs, ws.model_cache(),
                          parameters=_parameter_count)
    if estimate is None:
        st.caption(":material/timer: No estimate of the time per epoch yet: no earlier run "
                   "of this model in this workspace, and its weights are not local to size "
                   "it. The first run's live view shows its speed and ETA.")
        return
    seconds, total = estimate.seconds, duration(estimate.seconds * config.epochs)
    speed = estimate.speed
    if speed:
        run, steps = speed.run, speed.steps
        st.markdown(
            f":material/timer: **Estimate: about {duration(seconds)} per epoch**, "
            f"{total} for {config.epochs} epoch(s): measured, "
            f"the median {speed.tokens_per_second:,.0f} tokens/s over {steps} "
            f"step{'s' if steps != 1 else ''} of run {plain(run.id)} "
            f"({plain(run.status.device or '?')}, "
            f"{plain(run.status.precision or '?')}) applied to these {tokens:,} tokens.")
        if estimate.differ:
            differ = ", ".join(FIELD_LABELS[k].lower() for k in estimate.differ)
            st.caption(f"That run's {differ} differ from these settings, and other "
                       "work on the machine changes the speed: take it as a guide.")
        return
    params, rate = estimate.parameters, estimate.flops_per_second
    st.markdown(f":material/timer: **Estimate, a lower bound: at least {duration(seconds)} "
                f"per epoch** ({total} for {config.epochs} epoch(s)), from FLOPs, not a "
                f"measurement of training: {FLOPS_PER_PARAMETER_TOKEN} × "
                f"{params / 1e6:.0f} M parameters × {tokens:,} tokens at the best "
                f"matrix-multiply rate this machine has shown in this precision "
                f"({rate / 1e9:,.0f} GFLOP/s, best of {MATMUL_SAMPLES} samples, measured "
                f"again every {RATE_MAX_AGE / 60:.0f} min). Real training is slower "
                "(attention, small matrices, the optimizer, other work on the machine); "
                "after a first run this becomes a measured figure.")


# --- leakage and launch --------------------------------------------------------------------

def _leakage_section() -> list[dict[str, Any]] | None:
    """The leaks between the accepted train examples and the eval split (shown), or None
    if the check failed (said). The leakage check reuses its stored findings when nothing
    changed, so this is instant after the first time."""
    slot = st.empty()

    def progress(fraction: float, message: str) -> None:
        slot.progress(min(1.0, max(0.0, fraction)),
                      text=plain(f"Checking the eval split for copies of train examples: "
                                 f"{message}"))

    try:
        leaks = ws.leakage(progress=progress)
    except CurateError as exc:
        slot.warning(f"The leakage check could not run: {plain(exc)}",
                     icon=":material/warning:")
        return None
    slot.empty()
    if paraphrases(leaks):
        _show_paraphrases(paraphrases(leaks))
    if blocking(leaks):
        _show_leaks(blocking(leaks))
    return blocking(leaks)


def _show_paraphrases(leaks: list[dict[str, Any]]) -> None:
    with st.container(border=True, key="tr_paraphrases"):
        st.warning(f"**{len(leaks)} eval example(s) mean the same as a train example** "
                   "(worded differently, no copy). This does not stop training; the "
                   "evaluation reports its score with and without the eval examples that "
                   "have a train copy.", icon=":material/compare_arrows:")
        _leak_table(leaks, "tr_paraphrase_table")


def _show_leaks(leaks: list[dict[str, Any]]) -> None:
    with st.container(border=True, key="tr_leaks"):
        st.warning(f"**{len(leaks)} eval example(s) duplicate train examples of this "
                   "snapshot** (exact or near copies). The model would be evaluated on "
                   "examples it has trained on, so the evaluation would overstate it. Settle "
                   "them on the Quality page (usually by rejecting the eval copy), or train "
                   "anyway.", icon=":material/join_inner:")
        _leak_table(leaks, "tr_leak_table")
        if st.button("Settle them on the Quality page", key="tr_to_quality",
                     icon=":material/cleaning_services:"):
            st.switch_page(page_path("quality"), query_params={"check": "leakage"})


def _leak_table(leaks: list[dict[str, Any]], key: str) -> None:
    st.dataframe(pd.DataFrame({
        "Eval example": [leak["eval_id"] for leak in leaks],
        "Train example": [leak["train_id"] for leak in leaks],
        "Method": [leak["method"] for leak in leaks],
        "Similarity": [leak["similarity"] for leak in leaks]}),
        hide_index=True, key=key, height=38 + 35 * min(len(leaks), 6),
        column_config={"Similarity": st.column_config.ProgressColumn(
            format="percent", min_value=0.0, max_value=1.0),
            "Eval example": st.column_config.NumberColumn(format="%d"),
            "Train example": st.column_config.NumberColumn(format="%d")})


def _launch(config: TrainConfig, allow_leakage: bool) -> None:
    try:
        run = ws.launch(config, allow_leakage=allow_leakage)
    except LeakageUnresolved as exc:
        st.error(plain(exc), icon=":material/join_inner:")
        _show_leaks(exc.leaks)
        return
    except RunAlreadyActive as exc:
        st.error(f"**Not started:** {plain(exc)}", icon=":material/block:")
        return
    except CurateError as exc:
        show_error(exc)
        return
    S.tr_show = run.id  # the run selector exists already: it follows on the rerun
    S.pop("tr_allow_leakage", None)  # the override is for this launch only
    flash("training", f"Run {run.id} started on snapshot {run.manifest.snapshot_id} "
          f"({run.manifest.examples} examples)", ":material/rocket_launch:")
    st.rerun()


def _new_run(runs: list[Run]) -> None:
    st.header("New run", anchor=False)
    examples = store.find(DEFAULT_TRAIN_FILTER)
    with st.container(border=True, key="tr_form"):
        config = _config_form()
    if examples:
        what = "the preference pairs (chosen and rejected answers) among " \
            if config is not None and config.method == "dpo" else ""
        st.markdown(f":material/dataset: Trains on {what}a new snapshot of the "
                    f"**{len(examples):,} accepted train examples** as they are at launch.")
    else:
        st.info("There are no accepted train examples to train on yet: accept some on the "
                "Review page.", icon=":material/dataset:")
        return
    _data_section(config, examples, runs)
    leaks = _leakage_section()
    allow = False
    if leaks:
        allow = st.checkbox("Train anyway: I know the evaluation will overstate the model",
                            key="tr_allow_leakage")
    blocked = config is None or (bool(leaks) and not allow)
    active = next((r for r in runs if r.active), None)
    row = st.container(horizontal=True, vertical_alignment="center")
    clicked = row.button("Launch training", key="tr_launch", type="primary",
                         icon=":material/rocket_launch:", disabled=blocked)
    curve_running = any(c.state == "running" for c in ws.curves())
    curve_clicked = row.button(
        "Learning curve", key="tr_curve_start", icon=":material/show_chart:",
        disabled=blocked or bool(active) or curve_running,
        help="Train and evaluate on nested 25%, 50% and 100% subsets of the snapshot "
             "(stratified by label, these settings and seed), one after another, then say "
             "whether more data is likely to help: a gain of at least 2 points from 50% to "
             "100% says yes, less says cleaner data or a different approach is the lever.")
    if active:
        row.caption(f"Run {plain(active.id)} is {active.state}: one run at a time per "
                    "workspace.")
    elif leaks and not allow:
        row.caption("Tick “Train anyway” above, or settle the leaks first.")
    if clicked and config is not None:
        _launch(config, allow)
    if curve_clicked and config is not None:
        _start_curve(config, allow)


# --- one run, live -------------------------------------------------------------------------

def _loss_chart(run: Run) -> None:
    import plotly.graph_objects as go

    steps = [m["step"] for m in run.metrics]
    fig = go.Figure(go.Scatter(x=steps, y=[m["loss"] for m in run.metrics], mode="lines",
                               name="loss", line={"color": "#4c78a8"},
                               hovertemplate="step %{x}: loss %{y:.4f}<extra></extra>"))
    fig.update_layout(height=280, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"title": "step", "range": [0, max(run.total_steps or 1,
                                                               max(steps, default=1))]},
                      yaxis_title="training loss")
    st.plotly_chart(fig, key="tr_loss", config={"displaylogo": False})


def _run_view(run_id: str, was_active: bool) -> None:
    run = ws.run(run_id)
    if was_active and not run.active:
        st.rerun(scope="app")  # it ended: the list and the buttons follow
    last, total = run.last, run.total_steps
    cells = st.container(horizontal=True)
    cells.metric("State", run.state, border=True)
    cells.metric("Step", f"{last.get('step', 0)}/{total or '?'}", border=True)
    cells.metric("Epoch", f"{last['epoch']:.2f}" if last else "—", border=True)
    cells.metric("Loss", f"{last['loss']:.4f}" if last else "—", border=True)
    if "reward_accuracy" in last:  # a DPO run: its implicit rewards on the batch
        cells.metric("Reward accuracy", f"{last['reward_accuracy']:.0%}", border=True,
                     help="Share of the batch's pairs whose chosen answer gains more "
                          "likelihood over the reference than the rejected one.")
        cells.metric("Reward margin", f"{last['reward_margin']:+.3f}", border=True,
                     help="Mean of beta x (chosen minus rejected log-likelihood gain over "
                          "the reference) on the batch.")
    cells.metric("Learning rate", f"{last['learning_rate']:.2e}" if last else "—",
                 border=True)
    cells.metric("Tokens/s", f"{last['tokens_per_second']:,.0f}" if last else "—",
                 border=True)
    cells.metric("ETA", duration(last.get("eta_seconds")) if run.active and last else "—",
                 border=True)
    if run.state == "failed":
        st.error(f"**Failed:** {plain(run.status.reason or 'no reason recorded')}",
                 icon=":material/error:")
    elif run.state == "interrupted":
        st.warning("The trainer stopped without recording an ending (killed, or the machine "
                   "restarted). Resume continues from its last checkpoint.",
                   icon=":material/pause_circle:")
    elif run.state == "cancelled":
        st.info(plain(run.status.reason or "cancelled"), icon=":material/block:")
    elif run.state == "starting":
        st.caption(":material/hourglass_top: Starting: loading the model and the data…")
    m, s = run.manifest, run.status
    leaked = m.leaked_pairs
    if leaked:
        st.warning(f"Trained despite {len(leaked)} eval example(s) duplicating train examples "
                   f"(override by {plain(m.leakage_overridden_by)}): "
                   "its evaluation will overstate the model.", icon=":material/join_inner:")
    if m.paraphrase_pairs:
        st.caption(f":material/compare_arrows: {len(m.paraphrase_pairs)} eval example(s) "
                   "meant the same as a train example at launch (paraphrases, not refused).")
    if run.metrics:
        _loss_chart(run)
    data = s.data
    st.caption(plain(
        f"Snapshot {m.snapshot_id} ({m.examples} examples"
        + (f", {m.extra['pairs']} train preference pairs" if m.extra.get("pairs") else "")
        + (f", DPO from SFT run {m.extra['sft_run']}" if m.extra.get("sft_run") else "")
        + (f", {data['truncated']} cut at max_seq_length" if data.get("truncated") else "")
        + f") · base model {m.base_model} · {s.device or '?'}, "
        f"{s.precision or '?'} · created by {m.created_by} at "
        f"{str(m.created_at or '')[:19].replace('T', ' ')} UTC · folder {run.dir}"))
    row = st.container(horizontal=True)
    if run.active and row.button("Cancel", key="tr_cancel", icon=":material/stop_circle:"):
        with st.spinner("Stopping the trainer…"):
            try:
                ws.cancel(run.id)
            except CurateError as exc:
                show_error(exc)
                return
        flash("training", f"Run {run.id} cancelled; Resume continues it from its last "
              "checkpoint.", ":material/block:")
        st.rerun(scope="app")
    if run.state in RESUMABLE and row.button("Resume", key="tr_resume",
                                             icon=":material/play_arrow:"):
        try:
            ws.resume(run.id)
        except CurateError as exc:
            st.error(f"**Not resumed:** {plain(exc)}", icon=":material/block:")
            return
        flash("training", f"Run {run.id} resumed from its last checkpoint",
              ":material/play_arrow:")
        st.rerun(scope="app")
    with st.expander("Settings and log"):
        st.json(m.config, expanded=False)
        log = run.dir / "trainer.log"
        tail = log.read_text(errors="replace").splitlines()[-30:] if log.is_file() else []
        st.code("\n".join(tail) or "(no log yet)", language=None)


@st.fragment(run_every=POLL_SECONDS)
def _live(run_id: str) -> None:
    _run_view(run_id, was_active=True)


@st.fragment
def _still(run_id: str) -> None:
    _run_view(run_id, was_active=False)


def _runs_table(runs: list[Run]) -> None:
    st.dataframe(pd.DataFrame({
        "Run": [r.id for r in runs],
        "State": [r.state for r in runs],
        "Snapshot": [r.manifest.snapshot_id for r in runs],
        "Examples": [r.manifest.examples for r in runs],
        "Base model": [r.manifest.base_model for r in runs],
        "Created by": [r.manifest.created_by for r in runs],
        "Created at": [str(r.manifest.created_at or "")[:19].replace("T", " ")
                       for r in runs],
        "Steps": [f"{r.last.get('step', 0)}/{r.total_steps or '?'}" for r in runs],
        "Final loss": [_final_loss(r) for r in runs],
        "Evaluated": [_has_eval(r) for r in runs]}),
        hide_index=True, key="tr_runs_table", height=38 + 35 * min(len(runs), 10),
        column_config={"Run": st.column_config.TextColumn(width="medium"),
                       "Examples": st.column_config.NumberColumn(width="small"),
                       "Steps": st.column_config.TextColumn(width="small"),
                       "Final loss": st.column_config.NumberColumn(format="%.4f",
                                                                   width="small"),
                       "Evaluated": st.column_config.CheckboxColumn(
                           help="Has a stored evaluation (the Evaluation page shows it)")})


# --- the learning curve ---------------------------------------------------------------------

def _curve_section() -> None:
    """The newest learning curve: live while it runs (with Cancel), then its plot (score
    against examples) and the one-sentence advice."""
    curves = ws.curves()
    if not curves:
        return
    st.subheader("Learning curve", anchor=False)
    if curves[0].state == "running":
        _curve_live(curves[0].id)
    else:
        _curve_view(curves[0].id, was_running=False)


@st.fragment(run_every=POLL_SECONDS)
def _curve_live(curve_id: str) -> None:
    _curve_view(curve_id, was_running=True)


def _curve_view(curve_id: str, was_running: bool) -> None:
    import plotly.graph_objects as go

    curve = ws.curve(curve_id)
    if was_running and curve.state != "running":
        st.rerun(scope="app")  # it ended: the runs and the buttons follow
    scored = [p for p in curve.points if p.get("score") is not None]
    st.caption(plain(
        f"Curve {curve.id} · {curve.state} · snapshot {curve.snapshot_id} · the fine-tuned "
        "model's score on the eval split against the number of train examples, on nested "
        "subsets stratified by label (`curate curve --show` prints it)."))
    if scored:
        metric = scored[0].get("metric") or "score"
        fig = go.Figure(go.Scatter(
            x=[p["examples"] for p in scored], y=[p["score"] for p in scored],
            mode="lines+markers", name=metric, line={"color": "#4c78a8"},
            hovertemplate="%{x} examples: %{y:.1f}<extra></extra>"))
        fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                          xaxis_title="train examples", yaxis_title=f"{metric} (points)")
        st.plotly_chart(fig, key="tr_curve", config={"displaylogo": False})
    st.dataframe(pd.DataFrame({
        "Fraction": [f"{p['fraction']:.0%}" for p in curve.points],
        "Examples": [p["examples"] for p in curve.points],
        "Run": [p.get("run_id") or "" for p in curve.points],
        "State": [p.get("state") for p in curve.points],
        "Score": [p.get("score") for p in curve.points]}),
        hide_index=True, key="tr_curve_table")
    if curve.state == "running":
        if st.button("Cancel the curve", key="tr_curve_cancel", icon=":material/stop_circle:"):
            try:
                ws.cancel_curve(curve.id)
            except CurateError as exc:
                show_error(exc)
                return
            flash("training", f"Learning curve {curve.id} is being cancelled.",
                  ":material/block:")
            st.rerun(scope="app")
        return
    if curve.reason:
        st.warning(f"The curve {curve.state}: {plain(curve.reason)}")
    (st.success if curve.advice.startswith("More data is likely") else st.info)(curve.advice)


def _start_curve(config: TrainConfig, allow_leakage: bool) -> None:
    try:
        curve = ws.start_learning_curve(config, allow_leakage=allow_leakage)
    except CurateError as exc:
        show_error(exc)
        return
    flash("training", f"Learning curve {curve.id} started: "
          + ", ".join(f"{p['examples']} examples" for p in curve.points)
          + ", trained and evaluated one after another.", ":material/show_chart:")
    st.rerun()


# --- the page ------------------------------------------------------------------------------

st.title("Training")
st.caption("Fine-tune a LoRA adapter of the base model on the accepted train examples. "
           "Training runs in a process of its own: it goes on when you close the browser, "
           "and this page shows it again when you come back.")
page_start("training", ws, empty_hint="")

runs = ws.record_runs()
if runs:
    active = next((r for r in runs if r.active), None)
    ids = [r.id for r in runs]
    if active and S.get("tr_followed") != active.id:
        S.tr_view, S.tr_followed = active.id, active.id  # a new active run is shown first
    if S.get("tr_show") in ids:  # just launched here
        S.tr_view = S.pop("tr_show")
    if S.get("tr_view") not in ids:
        S.tr_view = ids[0]
    states = {r.id: r.state for r in runs}
    header = st.container(horizontal=True, vertical_alignment="bottom")
    header.header("Run", anchor=False, width="content")
    view = header.selectbox("Run to show", ids, key="tr_view", width=420,
                            label_visibility="collapsed",
                            format_func=lambda i: f"{i} · {states[i]}")
    chosen = next(r for r in runs if r.id == view)
    if chosen.active:
        _live(view)
    else:
        _still(view)
    st.subheader("All runs", anchor=False)
    _runs_table(runs)
_curve_section()

_new_run(runs)
