"""Coverage: a map of the prompts' topics, the gap list against per-label targets, and a form
to fill a gap by hand or from base-model drafts.

Design decisions:
- The page is built in four sections; the fast ones (gap list, targets, fill a gap) are
  computed first and the map last, into a placeholder at the top, so the first visit (which
  embeds every prompt once; the store caches embeddings) never holds up the gap list.
- Clusters are kept in session state keyed by the table's fingerprint (ids and content
  hashes) and k, so a rerun (a click, a selection) does not recompute them. Labels, splits
  and statuses are read fresh on every run: they colour the map but do not move it.
- The map is a Plotly scatter. Plotly renders a few HTML tags (<b>, <br>, <a>) in hover text
  and legend names, so every string from the data is `html.escape`d before it goes in; the
  tags the page adds itself are the only ones left. Past ten groups (the automatic cluster
  count is often more) the markers take Plotly's 48 distinct colours instead of the theme's
  ten, which would repeat.
- Saving a new example goes through `curation.fill.add_example`, which refuses duplicates and
  leakage with `WouldDuplicate`; the page then shows why and a "Save anyway" checkbox, and only
  a second submit with it ticked saves (`force=True`). Drafts enter as pending, source 'draft'.
- Saving targets runs the coverage check (cheap: counts, no embeddings), whose findings are
  the Review page's Thin labels queue; the Targets section says whether that queue matches
  the store now, with an Update button for when labels changed since.
- The gap list is `Workspace.gaps`: ranked by shortfall x the fine-tuned model's error rate
  per label in the latest evaluation (the rule is stated above the table), and "Fill a gap"
  offers the labels in that order, so the first label offered is the one that hurts most.
- Data from examples is shown as text only (dataframes, `st.text`, widget values).
"""

from __future__ import annotations

import hashlib
import html
import textwrap
import uuid
from collections import Counter

import numpy as np
import pandas as pd
import streamlit as st

from curate.ui.common import flash, one_line, page_path, page_start, plain, workspace
from curation import SPLITS, CurateError, ExampleFilter
from curation.checks import load_table
from curation.checks.coverage import Targets, cluster_prompts, get_targets, thin_labels
from curation.errors import WouldDuplicate
from curation.text import first_turn, turns_text

S = st.session_state
COLOUR_BY = {"cluster": "Cluster", "label": "Label", "split": "Split", "status": "Status"}
INSPIRATION = 5
DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"
ws = workspace("view")
store, user = ws.store, ws.user
can_target = user.can("set_targets")


def _open_in_review(example_id: int) -> None:
    st.switch_page(page_path("review"), query_params={"id": str(example_id)})


# --- the map -------------------------------------------------------------------------------

def _fingerprint(table) -> str:
    digest = hashlib.sha256()
    for example_id, content in zip(table.ids, table.content_hashes):
        digest.update(f"{example_id}:{content};".encode())
    return digest.hexdigest()


def _clusters(table, k: int | None):
    """The clustering of this table for k, from session state when nothing changed."""
    key = (_fingerprint(table), k)
    cached = S.get("cov_clusters")
    if cached is not None and cached[0] == key:
        return cached[1]
    slot = st.empty()
    with slot.status(f"Embedding and clustering {len(table):,} prompts…", expanded=True):
        st.caption("The first time embeds every prompt (a minute or more for thousands, on a "
                   "CPU); the store keeps the embeddings, so later only new prompts are "
                   "embedded.")
        bar = st.progress(0.0, text="embedding")
        progress_sink.append(bar)
        table.embed()  # kept by the table: cluster_prompts reuses it
        bar.progress(1.0, text="clustering" + (" (choosing the number of clusters)"
                                               if k is None else ""))
        clusters = cluster_prompts(table, k)
    slot.empty()
    S.cov_clusters = (key, clusters)
    return clusters


def _hover(text: str) -> str:
    """Data for Plotly hover text: escaped, wrapped with our own <br>."""
    lines = textwrap.wrap(one_line(text, 240), 70) or [""]
    return "<br>".join(html.escape(line) for line in lines)


def _palette(groups: int) -> list[str] | None:
    """Marker colours for `groups` traces: None (the theme's ten) up to ten groups; past
    ten, Plotly's 24 dark then 24 light colours, so no two of the first 48 share one."""
    if groups <= 10:
        return None
    from plotly.colors import qualitative

    return qualitative.Dark24 + qualitative.Light24


def _figure(table, clusters, colour: str):
    import plotly.graph_objects as go

    values = {"cluster": [f"{c}: {clusters.names[c]}" for c in clusters.assignment],
              "label": [label or "(no label)" for label in table.labels],
              "split": table.splits, "status": table.statuses}[colour]
    fig = go.Figure()
    trace_ids: list[list[int]] = []
    kind = go.Scattergl if len(table) > 5000 else go.Scatter
    groups = sorted(set(values), key=lambda v: (int(v.split(":")[0]) if colour == "cluster"
                                                else 0, v))
    palette = _palette(len(groups))
    for n, value in enumerate(groups):
        rows = [i for i, v in enumerate(values) if v == value]
        trace_ids.append([table.ids[i] for i in rows])
        custom = np.array([[table.ids[i], _hover(table.prompt(i)),
                            html.escape(table.labels[i] or "(no label)")] for i in rows],
                          dtype=object)
        fig.add_trace(kind(
            x=clusters.coords[rows, 0], y=clusters.coords[rows, 1], mode="markers",
            name=f"{html.escape(one_line(value, 40))} ({len(rows)})", customdata=custom,
            marker={"size": 7, "opacity": 0.8,
                    **({"color": palette[n % len(palette)]} if palette else {})},
            hovertemplate="#%{customdata[0]} · %{customdata[2]}<br>%{customdata[1]}"
                          "<extra></extra>"))
    fig.update_layout(height=620, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      legend={"title": {"text": COLOUR_BY[colour] + " "},
                              "orientation": "h", "yanchor": "top", "y": -0.02},
                      dragmode="lasso",
                      xaxis={"showticklabels": False, "title": None},
                      yaxis={"showticklabels": False, "title": None})
    return fig, trace_ids


def _selected_ids(event, trace_ids: list[list[int]]) -> list[int]:
    chosen = []
    for point in event.selection.points if event else []:
        curve, index = point.get("curve_number"), point.get("point_index")
        if curve is not None and index is not None and curve < len(trace_ids) \
                and index < len(trace_ids[curve]):
            chosen.append(trace_ids[curve][index])
    return sorted(set(chosen))


def _map_section(table) -> None:
    st.header("Map of the prompts", anchor=False)
    st.caption("Each point is an example's prompt, placed by meaning (embeddings, PCA to 2-D): "
               "clumps are topics, empty stretches are what the data does not cover. Click, "
               "or draw a box or lasso, to list examples.")
    row = st.container(horizontal=True, vertical_alignment="bottom")
    k = row.number_input("Clusters", min_value=2, max_value=max(2, min(60, len(table) - 1)),
                         value=None, step=1, key="cov_k", placeholder="automatic", width=180,
                         help="Leave empty to choose the number by the best silhouette score.")
    colour = row.selectbox("Colour by", list(COLOUR_BY), format_func=COLOUR_BY.get,
                           key="cov_colour", width=180)
    try:
        clusters = _clusters(table, int(k) if k else None)
    except CurateError as exc:
        st.info(plain(exc), icon=":material/scatter_plot:")
        return
    fig, trace_ids = _figure(table, clusters, colour)
    event = st.plotly_chart(fig, key=f"cov_map_{colour}_{clusters.k}", on_select="rerun",
                            selection_mode=("points", "box", "lasso"),
                            config={"displaylogo": False})
    chosen = _selected_ids(event, trace_ids)
    with st.container():
        st.subheader(f"{clusters.k} clusters", anchor=False)
        sizes = Counter(clusters.assignment)
        labels_by = {c: Counter() for c in range(clusters.k)}
        for c, label in zip(clusters.assignment, table.labels):
            labels_by[c][label or "(no label)"] += 1
        st.dataframe(pd.DataFrame({
            "Name": clusters.names,
            "Size": [sizes[c] for c in range(clusters.k)],
            "Top labels": [", ".join(f"{lab} {n}" for lab, n in labels_by[c].most_common(3))
                           for c in range(clusters.k)]}).sort_values("Size", ascending=False),
            hide_index=True, key="cov_cluster_table", height=38 + 35 * min(clusters.k, 14),
            column_config={"Name": st.column_config.TextColumn(width="medium"),
                           "Size": st.column_config.NumberColumn(width="small"),
                           "Top labels": st.column_config.TextColumn(width="large")})
    _selection(table, clusters, chosen)


def _selection(table, clusters, chosen: list[int]) -> None:
    """The examples selected on the map, and the way into Review."""
    st.subheader(f"{len(chosen)} selected" if chosen else "Selection", anchor=False)
    if not chosen:
        st.caption("Click a point, or draw a box or a lasso on the map (the tools at its top "
                   "right), to list the examples here.")
        return
    position = {example_id: i for i, example_id in enumerate(table.ids)}
    st.dataframe(pd.DataFrame({
        "Id": chosen,
        "Label": [table.labels[position[i]] for i in chosen],
        "Split": [table.splits[position[i]] for i in chosen],
        "Status": [table.statuses[position[i]] for i in chosen],
        "Cluster": [clusters.names[clusters.assignment[position[i]]] for i in chosen],
        "Prompt": [one_line(table.prompt(position[i])) for i in chosen]}),
        hide_index=True, key="cov_selected", height=38 + 35 * min(len(chosen), 10),
        column_config={"Id": st.column_config.NumberColumn(format="%d", width="small"),
                       "Prompt": st.column_config.TextColumn(width="large")})
    row = st.container(horizontal=True, vertical_alignment="bottom")
    pick = row.selectbox("Example", chosen, format_func=lambda i: f"#{i}", key="cov_pick",
                         width=160)
    if row.button("Open in Review", key="cov_open", icon=":material/rate_review:"):
        _open_in_review(pick)
    if row.button(f"Review the selection in order, from #{chosen[0]}", key="cov_review_all",
                  icon=":material/playlist_play:"):
        _open_in_review(chosen[0])


# --- gap list and targets ------------------------------------------------------------------

def _gap_section(ranked) -> None:
    gaps = ranked.gaps
    st.header("Gap list", anchor=False)
    st.caption("The shortfall is how many examples a label lacks against its target (train "
               "and eval together, rejected ones not counted). A label without eval examples "
               "cannot be evaluated; one without train examples cannot be learned.")
    source = (f"Error rates from the evaluation of run {plain(ranked.run_id)} "
              f"({plain(ranked.metric)}, fine-tuned model)." if ranked.run_id else
              "No run has been evaluated yet, so every label counts as an error rate of 1 "
              "and the order is the shortfall's.")
    st.markdown(f":material/sort: {ranked.rule} {source}", help="Few examples and a model "
                "that fails there: that label comes first. Error rates come from the newest "
                "run that has an evaluation.")
    if not gaps:
        st.info("No example has a label yet: the gap list is per label.",
                icon=":material/label_off:")
        return
    frame = pd.DataFrame({
        "Label": [g.label for g in gaps], "Train": [g.train for g in gaps],
        "Eval": [g.eval for g in gaps], "Want": [g.want for g in gaps],
        "Shortfall": [g.shortfall for g in gaps],
        "Error rate": [None if g.error_rate is None else 100 * g.error_rate for g in gaps],
        "Scored": [g.scored for g in gaps],
        "Rank key": [g.rank_key for g in gaps],
        "Train share": [100 * g.train_share for g in gaps],
        "Eval share": [100 * g.eval_share for g in gaps]})
    left, right = st.columns([3, 2], gap="medium")
    with left:
        st.dataframe(frame, hide_index=True, key="cov_gaps", height=38 + 35 * min(len(gaps), 14),
                     column_config={
                         "Train share": st.column_config.NumberColumn(
                             format="%.1f%%", help="Share of all labelled train examples"),
                         "Eval share": st.column_config.NumberColumn(
                             format="%.1f%%", help="Share of all labelled eval examples; far "
                                                   "from the train share means eval measures "
                                                   "a different mix"),
                         "Shortfall": st.column_config.NumberColumn(
                             help="Examples still wanted to reach the target"),
                         "Error rate": st.column_config.NumberColumn(
                             format="%.0f%%", help="The fine-tuned model's error rate (1 − "
                                                   "its score) on this label's eval examples "
                                                   "in the latest evaluation; empty: not "
                                                   "scored (counts as 100%)"),
                         "Scored": st.column_config.NumberColumn(
                             help="Eval examples the error rate is measured on"),
                         "Rank key": st.column_config.NumberColumn(
                             format="%.2f", help="Shortfall × error rate: the list's order")})
    with right:
        bars = pd.DataFrame({"label": [g.label for g in gaps],
                             "train": [g.train for g in gaps], "eval": [g.eval for g in gaps],
                             "missing": [g.shortfall for g in gaps]})
        st.bar_chart(bars, x="label", y=["train", "eval", "missing"],
                     color=["#1c83e1", "#83c9ff", "#ff4b4b"], horizontal=True, sort=False,
                     x_label="", y_label="examples (missing: short of the target)",
                     height=80 + 28 * len(gaps))
    no_eval = [g.label for g in gaps if g.eval == 0]
    no_train = [g.label for g in gaps if g.train == 0]
    if no_eval:
        st.warning(f"No eval examples for {plain(', '.join(no_eval))}: training cannot be "
                   "evaluated on these labels. Move a few to eval, or write new ones below with "
                   "split eval.", icon=":material/rule:")
    if no_train:
        st.warning(f"No train examples for {plain(', '.join(no_train))}: the model cannot "
                   "learn these labels.", icon=":material/school:")


def _targets_section(targets: Targets, labels: list[str]) -> None:
    st.header("Targets", anchor=False)
    st.caption("The minimum number of examples wanted per label: a default for every label, "
               "and overrides for labels that need more or fewer.")
    overrides = targets.per_label or {}
    with st.form("cov_targets", border=True):
        default = st.number_input("Minimum examples per label", min_value=0, step=1,
                                  value=targets.default_min, key="cov_default_min",
                                  width=240)
        names = sorted(set(labels) | set(overrides))
        edited = st.data_editor(
            pd.DataFrame({"label": names, "min": [overrides.get(n) for n in names]},
                         dtype=object).astype({"min": "Int64"}),
            key="cov_overrides", hide_index=True, disabled=["label"], num_rows="fixed",
            column_config={"label": st.column_config.TextColumn("Label"),
                           "min": st.column_config.NumberColumn(
                               "Override", min_value=0, step=1,
                               help="Empty: the default applies")})
        saved = st.form_submit_button("Save targets", type="primary", icon=":material/save:",
                                      disabled=not can_target)
    if not can_target:
        st.caption(f"Changing targets needs the reviewer role; you are {user.role}.")
    if saved:
        per_label = {str(row["label"]): int(row["min"]) for _, row in edited.iterrows()
                     if pd.notna(row["min"])}
        try:
            queued = len(ws.set_coverage_targets(Targets(int(default), per_label or None))
                         .issues)
        except CurateError as exc:
            st.error(plain(exc), icon=":material/error:")
            return
        flash("coverage", f"Targets saved: {int(default)} per label, {len(per_label)} "
              f"override(s); {queued} example(s) of thin labels are in the Review queue Thin "
              "labels")
        st.rerun()
    _queue_status()


def _update_queue() -> None:
    try:
        queued = len(ws.run_checks(["coverage"])[0].issues)
    except CurateError as exc:
        flash("coverage", str(exc), ":material/error:")
        return
    flash("coverage", f"Thin labels queue updated: {queued} example(s)")


def _queue_status() -> None:
    """Whether the Review page's Thin labels queue matches the labels thin now."""
    thin = thin_labels(store)
    row = st.container(horizontal=True, vertical_alignment="center")
    if thin.current:
        row.caption(f"Review queue Thin labels: {thin.queued:,} example(s), up to date "
                    f"(coverage check last run {thin.run_at:%Y-%m-%d %H:%M} UTC).")
    else:
        row.caption("Review queue Thin labels: out of date" + (
            f" (coverage check last run {thin.run_at:%Y-%m-%d %H:%M} UTC)" if thin.run_at
            else " (the coverage check never ran)") + f"; {thin.examples:,} example(s) of "
            "thin labels now. Update it here or with `curate coverage`.")
    row.button("Update the queue", key="cov_update_queue", icon=":material/refresh:",
               disabled=not can_target, on_click=_update_queue)


# --- fill a gap ----------------------------------------------------------------------------

def _messages(system: str, user_text: str, answer: str) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system.strip() else []
    return head + [{"role": "user", "content": user_text},
                   {"role": "assistant", "content": answer}]


def _save_new(label: str) -> None:
    messages = _messages(S.cov_sys, S.cov_user, S.cov_answer)
    try:
        saved = ws.add_example(messages, label=label, tags=tuple(S.cov_tags),
                               split=S.cov_split, force=bool(S.get("cov_force")))
    except WouldDuplicate as exc:
        S.cov_dup = str(exc)
        return
    except CurateError as exc:
        S.cov_fill_error = str(exc)
        return
    S.cov_dup = S.cov_fill_error = None
    S.cov_force = False
    S.cov_user = S.cov_answer = ""
    S.cov_saved = saved.id
    flash("coverage", f"Saved #{saved.id} as a pending example of {label}")


def _save_draft(draft_id: str) -> None:
    draft = next(d for d in S.cov_drafts if d["id"] == draft_id)
    p = f"cov_d{draft_id}"
    messages = _messages(S[f"{p}_sys"], S[f"{p}_user"], S[f"{p}_answer"])
    try:
        saved = ws.add_example(messages, label=draft["label"], source="draft",
                               split="train", force=bool(S.get(f"{p}_force")))
    except CurateError as exc:
        draft["error"] = str(exc)
        draft["duplicate"] = isinstance(exc, WouldDuplicate)
        return
    S.cov_drafts = [d for d in S.cov_drafts if d["id"] != draft_id]
    flash("coverage", f"Saved draft as #{saved.id}, pending review")


def _discard_draft(draft_id: str) -> None:
    S.cov_drafts = [d for d in S.cov_drafts if d["id"] != draft_id]


def _fill_section(gaps) -> None:
    st.header("Fill a gap", anchor=False)
    if not gaps:
        st.caption("Label some examples first: gaps are per label.")
        return
    shortfall = {g.label: g.shortfall for g in gaps}
    label = st.selectbox("Label", list(shortfall), key="cov_fill_label",
                         format_func=lambda lab: lab + (f" (short by {shortfall[lab]})"
                                                        if shortfall[lab] else ""),
                         help="Ordered as the gap list: the label that hurts most (shortfall "
                              "× the model's error rate there) first.")
    known = [e for e in store.find(ExampleFilter(label=(label,)), limit=500)
             if e.status != "rejected"]
    known.sort(key=lambda e: e.status != "accepted")
    if S.get("cov_sys_for") != label:
        systems = Counter(first_turn(e.messages, "system") for e in known)
        S.cov_sys = systems.most_common(1)[0][0] if systems else ""
        S.cov_sys_for = label
    left, right = st.columns([3, 2], gap="medium")
    with right, st.container(border=True):
        st.caption(f"Example prompts of this label ({min(INSPIRATION, len(known))} of "
                   f"{len(known)}), for inspiration")
        for e in known[:INSPIRATION]:
            st.text(f"#{e.id}: {one_line(turns_text(e.messages), 300)}")
    with left:
        with st.form("cov_fill", border=True):
            st.text_area("System prompt", key="cov_sys", height=80,
                         help="Pre-filled with the label's most common system prompt.")
            st.text_area("User message", key="cov_user", height=100)
            st.text_area("Assistant answer", key="cov_answer", height=140)
            tag_col, split_col = st.columns(2)
            tag_col.multiselect("Tags", store.tags(), key="cov_tags", accept_new_options=True)
            split_col.selectbox("Split", SPLITS, key="cov_split")
            if S.get("cov_dup"):
                st.warning(plain(S.cov_dup), icon=":material/content_copy:")
                st.checkbox("Save anyway", key="cov_force",
                            help="Tick and save again to keep it despite the match.")
            st.form_submit_button("Save as a pending example", type="primary",
                                  icon=":material/add:", on_click=_save_new, args=(label,))
        if S.get("cov_fill_error"):
            st.error(plain(S.cov_fill_error), icon=":material/error:")
        if S.get("cov_saved") and st.button(f"Open #{S.cov_saved} in Review",
                                            key="cov_open_saved",
                                            icon=":material/rate_review:"):
            _open_in_review(S.cov_saved)
    _drafts(label)


def _drafts(label: str) -> None:
    model = store.setting("base_model") or DEFAULT_BASE_MODEL
    with st.container(border=True):
        st.subheader("Drafts from the base model", anchor=False)
        st.caption(f"The base model ({plain(model)}) writes new examples of this label from a "
                   "few of its examples. Drafts are saved as pending with source 'draft', so a "
                   "person reviews each one before it can be trained on.")
        row = st.container(horizontal=True, vertical_alignment="bottom")
        count = row.number_input("Drafts", min_value=1, max_value=5, value=3, step=1,
                                 key="cov_draft_count", width=120)
        if row.button("Draft with the base model", key="cov_draft", icon=":material/edit_note:"):
            with st.status(f"Drafting {count} examples with {model} on CPU, about a minute "
                           "each (the first time also prepares the model)…",
                           expanded=True) as box:
                try:
                    drafted = ws.draft_examples(label, count=int(count))
                except (CurateError, ImportError, OSError, RuntimeError) as exc:
                    # a missing or broken model is the person's to fix, not a crash
                    box.update(label="Drafting failed", state="error")
                    st.error(plain(f"{type(exc).__name__}: {exc}"), icon=":material/error:")
                    drafted = None
                if drafted is not None:
                    S.cov_drafts = S.get("cov_drafts", []) + [
                        {"id": uuid.uuid4().hex[:8], "label": label, "messages": m}
                        for m in drafted]
                    box.update(label=f"{len(drafted)} draft(s) ready", state="complete",
                               expanded=False)
        for draft in S.get("cov_drafts", []):
            p = f"cov_d{draft['id']}"
            with st.container(border=True, key=f"{p}_box"):
                st.caption(f"Draft of {plain(draft['label'])}")
                messages = draft["messages"]
                st.text_area("System prompt", first_turn(messages, "system"), key=f"{p}_sys",
                             height=68)
                st.text_area("User message", turns_text(messages), key=f"{p}_user")
                st.text_area("Assistant answer", first_turn(messages, "assistant"),
                             key=f"{p}_answer")
                if draft.get("error"):
                    st.warning(plain(draft["error"]), icon=":material/content_copy:")
                    if draft.get("duplicate"):
                        st.checkbox("Save anyway", key=f"{p}_force")
                buttons = st.container(horizontal=True)
                buttons.button("Save as pending draft", key=f"{p}_save", type="primary",
                               icon=":material/save:", on_click=_save_draft, args=(draft["id"],))
                buttons.button("Discard", key=f"{p}_discard", icon=":material/delete:",
                               on_click=_discard_draft, args=(draft["id"],))


# --- the page ------------------------------------------------------------------------------

st.title("Coverage")
page_start("coverage", ws)

progress_sink: list = []  # the map's progress bar, once it exists


def _embedding_progress(fraction: float, message: str) -> None:
    if progress_sink:
        progress_sink[-1].progress(min(1.0, max(0.0, fraction)), text=plain(message))


table = load_table(store, progress=_embedding_progress)
targets = get_targets(store)
ranked = ws.gaps()

map_area = st.container()
with st.container():
    _gap_section(ranked)
with st.container():
    _targets_section(targets, store.labels())
with st.container():
    _fill_section(ranked.gaps)
with map_area:
    _map_section(table)
