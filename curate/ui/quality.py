"""Quality: run the curation checks, then act on what they found, group by group.

Every check in `curation.checks.REGISTRY` but "coverage" (the Coverage page has it) is listed
with its description, its last run and a Run button; the findings of the stored last run are
shown below, in the shape their details have: duplicate groups, label issues with evidence,
or a table of flagged examples.

Design decisions:
- A run happens in this session's script thread, inside `st.status`, driven by `run_check`'s
  `progress(fraction, message)` callback. Streamlit runs every browser session in its own
  thread, so a long run (embedding, cleanlab) holds up only the session that started it; no
  lock is taken. Leaving the page mid-run stops the run; nothing is stored until it finishes.
  After a run the page reruns, so every count on it comes from the store.
- Actions (keep one, not duplicates, set label, label is right) are button callbacks over
  `curation.checks` and `curation.review`; the Keep choice starts at the example the core's
  one keeper rule (`suggest_keeper`, stated on every duplicate tab) picks among the members
  as they are now, so every tab suggests the train copy of a train/eval pair. The core
  checks the role, the page only disables what the role may not do. Their outcome is a
  toast on the next run.
- Findings are those of the last run, but what was settled since (members rejected, pairs
  marked "not duplicates", a label changed) is hidden at once, as a re-run would drop it.
  "Label is right" is stored by the core but not applied by `run_check`; this page hides such
  examples for the rest of the session.
- Data from examples is only ever shown as text (`st.text`, dataframes, widget values); the
  few Markdown strings that carry data (labels in button labels, messages) go through `plain`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from curate.ui.common import clip, flash, one_line, page_path, page_start, plain, workspace
from curation import CurateError, Example, ExampleFilter
from curation.checks import REGISTRY, Finding, dismissed_pairs, last_run, stored_findings
from curation.checks.duplicates import KEEPER_RULE, DuplicateCheck, LeakageCheck, suggest_keeper
from curation.text import turns_text

S = st.session_state
GROUPS_PER_PAGE = 10
ITEMS_PER_PAGE = 5
CLIP = 700  # characters of a turn shown in a card; Review shows the whole example
HIDDEN_HERE = "coverage"  # shown on the Coverage page
ws = workspace("view")
store, user = ws.store, ws.user
can_act = user.can("decide")
can_run = user.can("check")
CHECKS = [name for name in REGISTRY if name != HIDDEN_HERE]


# --- small helpers -------------------------------------------------------------------------

def _examples(ids: set[int] | list[int]) -> dict[int, Example]:
    """The examples with these ids, deleted ones left out, in one query."""
    if not ids:
        return {}
    return {e.id: e for e in store.find(ExampleFilter(ids=tuple(sorted(ids))))}


def _when(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


SUMMARY_LIST_ITEMS = 3  # a long list (labels too small to check) shows its count and a few


def _summary_text(summary: dict[str, Any]) -> str:
    parts = []
    for key, value in summary.items():
        if isinstance(value, (list, tuple)):
            shown = ", ".join(map(str, value[:SUMMARY_LIST_ITEMS]))
            more = len(value) - SUMMARY_LIST_ITEMS
            value = (f"{len(value)} ({shown}, and {more} more)" if more > 0
                     else shown or "none")
        parts.append(f"{key.replace('_', ' ')} {value}")
    return " · ".join(parts)


def _flagged(name: str) -> list[Finding]:
    return stored_findings(store, name)


def _open_in_review(example_id: int) -> None:
    st.switch_page(page_path("review"), query_params={"id": str(example_id)})


# --- running checks ------------------------------------------------------------------------

def _progress_to(bar, prefix: str, start: float = 0.0, share: float = 1.0
                 ) -> Callable[[float, str], None]:
    """A run_check progress callback moving `bar` over [start, start + share]."""
    def progress(fraction: float, message: str) -> None:
        done = start + share * min(1.0, max(0.0, fraction))
        bar.progress(min(1.0, done), text=plain(f"{prefix}: {message}"))

    return progress


def _run(names: list[str], force: bool) -> None:
    """Run checks one after the other in a status box, then rerun the page with the results."""
    title = REGISTRY[names[0]].title if len(names) == 1 else f"{len(names)} checks"
    failed = []
    with st.status(f"Running {title}…", expanded=True) as box:
        bar = st.progress(0.0, text="starting")
        for index, name in enumerate(names):
            check = REGISTRY[name]
            try:
                [result] = ws.run_checks([name], force=force, progress=_progress_to(
                    bar, check.title, index / len(names), 1 / len(names)))
            except CurateError as exc:
                failed.append(f"{check.title}: {exc}")
                continue
            st.text(f"{check.title}: {len(result.issues)} flagged")
        bar.progress(1.0, text="done")
        box.update(label=f"{title}: done", state="complete")
    if failed:
        flash("quality", "Some checks failed. " + " ".join(failed), ":material/error:")
    else:
        flash("quality", f"{title}: done", ":material/task_alt:")
    if len(names) == 1:
        S.q_view = names[0]
    st.rerun()


# --- actions (button callbacks) ------------------------------------------------------------

def _keep(name: str, group: tuple[int, ...], radio_key: str) -> None:
    keeper = S[radio_key]
    try:
        rejected = ws.keep_one(list(group), keeper)
    except CurateError as exc:
        flash("quality", str(exc), ":material/error:")
        return
    flash("quality", f"Kept #{keeper}; rejected "
          + (", ".join(f"#{i}" for i in rejected) or "nothing") + f" as duplicate of #{keeper}")


def _not_duplicates(name: str, group: tuple[int, ...]) -> None:
    try:
        ws.dismiss(name, list(group), "not_duplicates")
    except CurateError as exc:
        flash("quality", str(exc), ":material/error:")
        return
    flash("quality", "Marked " + ", ".join(f"#{i}" for i in group) + " as not duplicates; "
           "no duplicate check will group them again", ":material/call_split:")


def _set_label(example_id: int, base_version: int, label: str) -> None:
    try:
        after = ws.edit(example_id, base_version=base_version, label=label,
                        reason="label suggested by the label-issue check")
    except CurateError as exc:
        flash("quality", str(exc), ":material/error:")
        return
    flash("quality", f"#{example_id} is now labelled {label} (version {after.version})")


def _label_ok(name: str, example_id: int) -> None:
    try:
        ws.dismiss(name, [example_id], "label_ok")
    except CurateError as exc:
        flash("quality", str(exc), ":material/error:")
        return
    S.setdefault("q_label_ok", set()).add((name, example_id))
    flash("quality", f"Kept the label of #{example_id}", ":material/thumb_up:")


# --- findings views ------------------------------------------------------------------------

def _paginate(items: list, per_page: int, key: str) -> tuple[list, int]:
    pages = max(1, math.ceil(len(items) / per_page))
    page = min(st.pagination(pages, key=key), pages) if pages > 1 else 1
    start = (page - 1) * per_page
    return items[start:start + per_page], start


def _member(example: Example, role: str, key: str) -> None:
    """One member of a group: who it is, its prompt and answer as text, a link to Review."""
    with st.container(border=True):
        st.caption(role)
        st.text(f"#{example.id} · {example.status} · {example.split} · "
                f"label: {example.label or '(none)'}")
        st.caption("User")
        st.text(clip(turns_text(example.messages, "user", "\n\n"), CLIP) or "—")
        st.caption("Assistant")
        st.text(clip(turns_text(example.messages, "assistant", "\n\n"), CLIP) or "—")
        if st.button(f"Open #{example.id} in Review", key=f"{key}_open_{example.id}",
                     icon=":material/rate_review:", type="tertiary"):
            _open_in_review(example.id)


def _groups(name: str, findings: list[Finding]) -> None:
    """Duplicate groups (details['group'], ['similarity']), worst first; the keeper is
    suggested afresh from the members as they are now, by the core's one rule."""
    groups: dict[tuple[int, ...], dict[str, Any]] = {}
    for f in findings:
        group = tuple(f.details["group"])
        entry = groups.setdefault(group, {"train_id": f.details.get("train_id"),
                                          "method": f.details.get("method"),
                                          "similarity": 0.0, "eval_id": None})
        entry["similarity"] = max(entry["similarity"], f.details.get("similarity", 0.0))
        if "train_id" in f.details:
            entry["eval_id"] = f.example_id
    members = _examples({i for g in groups for i in g})
    dismissed = dismissed_pairs(store)
    live, settled = [], 0
    for group, entry in groups.items():
        alive = [i for i in group if i in members and members[i].status != "rejected"]
        pairs = {(a, b) for k, a in enumerate(alive) for b in alive[k + 1:]}
        if len(alive) < 2 or pairs <= dismissed:
            settled += 1
            continue
        live.append((group, entry))
    leakage = any(entry["train_id"] is not None for _, entry in groups.items())
    if leakage:
        st.info("Each group is an **eval** example and its **train twin**: the same (or "
                "nearly the same) conversation is in both splits, so the evaluation scores an "
                "example the model has trained on. Keep the train twin (rejecting the eval "
                "copy), or mark the pair as not duplicates.",
                icon=":material/join_inner:")
    st.caption(f"{len(live)} group(s) to settle" + (f"; {settled} settled since the last run "
                                                  "(hidden)" if settled else "") +
               ". Keeping one rejects the others with the reason 'duplicate of #id'.")
    if not live:
        st.success("Nothing left to settle in this check.", icon=":material/task_alt:")
        return
    shown, start = _paginate(live, GROUPS_PER_PAGE, f"q_{name}_page")
    for number, (group, entry) in enumerate(shown, start + 1):
        key = f"q_{name}_{'-'.join(map(str, group))}"
        alive = [i for i in group if i in members and members[i].status != "rejected"]
        if entry["train_id"] is not None:  # the eval example first, then its train twin
            alive.sort(key=lambda i: i != entry["eval_id"])
        keeper = suggest_keeper(members[i] for i in alive)
        with st.container(border=True, key=f"{key}_box"):
            if entry["train_id"] is not None:
                method = entry["method"] or "close"
                article = "an" if method[0] in "aeiou" else "a"
                st.markdown(f"**Leak {number}:** eval #{entry['eval_id']} is {article} "
                            f"{method} duplicate of train #{entry['train_id']} "
                            f"(similarity {entry['similarity']:.0%})")
            else:
                st.markdown(f"**Group {number}:** {len(alive)} examples, similarity "
                            f"{entry['similarity']:.0%}")
            columns = st.columns(min(3, len(alive)))
            for index, example_id in enumerate(alive):
                ex = members[example_id]
                if entry["train_id"] is not None:
                    role = ("eval example" if example_id == entry["eval_id"]
                            else "train twin")
                else:
                    role = "suggested keeper" if example_id == keeper else "member"
                with columns[index % len(columns)]:
                    _member(ex, role, key)
            row = st.container(horizontal=True, vertical_alignment="bottom")
            chosen = row.radio("Keep", alive, index=alive.index(keeper), horizontal=True,
                               key=f"{key}_keeper", disabled=not can_act, width="content",
                               format_func=lambda i, k=keeper: f"#{i}" + (
                                   " (suggested)" if i == k else ""))
            row.button(f"Keep #{chosen}, reject the others", key=f"{key}_keep",
                       type="primary", icon=":material/check:", disabled=not can_act,
                       on_click=_keep, args=(name, tuple(alive), f"{key}_keeper"))
            row.button("Not duplicates", key=f"{key}_dismiss", icon=":material/call_split:",
                       disabled=not can_act, on_click=_not_duplicates,
                       args=(name, tuple(alive)),
                       help="Remembered: no duplicate check groups these examples again.")


def _label_issues(name: str, findings: list[Finding]) -> None:
    """Likely mislabeled examples with the suggested label and the nearest examples."""
    hidden = S.get("q_label_ok", set())
    evidence = {i for f in findings for i in f.details["nearest_given"] +
                f.details["nearest_suggested"]}
    examples = _examples({f.example_id for f in findings} | evidence)
    open_ = [f for f in findings if f.example_id in examples and (name, f.example_id) not in
             hidden and examples[f.example_id].status != "rejected"
             and examples[f.example_id].label == f.details["given"]]
    st.caption(f"{len(open_)} example(s) to check, most doubtful first" +
               (f"; {len(findings) - len(open_)} settled since the last run (hidden)"
                if len(open_) < len(findings) else "") + ".")
    if not open_:
        st.success("Nothing left to check.", icon=":material/task_alt:")
        return
    st.dataframe(pd.DataFrame({
        "Id": [f.example_id for f in open_],
        "Score": [f.score for f in open_],
        "Given label": [f.details["given"] for f in open_],
        "Suggested label": [f.details["suggested"] for f in open_],
        "Probability": [f.details["probability"] for f in open_],
        "Prompt": [one_line(turns_text(examples[f.example_id].messages)) for f in open_],
    }), hide_index=True, key=f"q_{name}_table", column_config={
        "Id": st.column_config.NumberColumn(format="%d", width="small"),
        "Score": st.column_config.NumberColumn(format="%.3f", width="small",
                                               help="Label quality: lower is more doubtful"),
        "Probability": st.column_config.ProgressColumn(
            format="percent", min_value=0.0, max_value=1.0,
            help="How likely the suggested label is, by a classifier that never saw this "
                 "example"),
        "Prompt": st.column_config.TextColumn(width="large")},
        height=38 + 35 * min(len(open_), 8))
    shown, _ = _paginate(open_, ITEMS_PER_PAGE, f"q_{name}_page")
    for f in shown:
        ex, d = examples[f.example_id], f.details
        key = f"q_{name}_{ex.id}"
        with st.container(border=True, key=f"{key}_box"):
            st.markdown(f"**#{ex.id}** is labelled **{plain(d['given'])}** "
                        f"({d['given_probability']:.0%}); similar examples say "
                        f"**{plain(d['suggested'])}** ({d['probability']:.0%})")
            own, given_col, suggested_col = st.columns(3)
            with own:
                st.caption("This example: user")
                st.text(clip(turns_text(ex.messages, "user", "\n\n"), CLIP))
                st.caption("Assistant")
                st.text(clip(turns_text(ex.messages, "assistant", "\n\n"), 300))
            for column, ids, label in ((given_col, d["nearest_given"], d["given"]),
                                       (suggested_col, d["nearest_suggested"], d["suggested"])):
                with column:
                    st.caption(f"Nearest examples labelled {plain(label)}")
                    for other in ids:  # with their label now: it may have changed since
                        if other in examples:
                            near = examples[other]
                            st.text(f"#{other} · {near.label or '(no label)'}: "
                                    f"{one_line(turns_text(near.messages), 200)}")
            row = st.container(horizontal=True)
            row.button(f"Set label to {plain(d['suggested'])}", key=f"{key}_relabel",
                       type="primary", icon=":material/label:", disabled=not can_act,
                       on_click=_set_label, args=(ex.id, ex.version, d["suggested"]))
            row.button("Label is right", key=f"{key}_ok", icon=":material/thumb_up:",
                       disabled=not can_act, on_click=_label_ok, args=(name, ex.id))
            if row.button("Open in Review", key=f"{key}_open", icon=":material/rate_review:"):
                _open_in_review(ex.id)


def _table(name: str, findings: list[Finding]) -> None:
    """Any other check: its flagged examples worst first, and one to open in Review."""
    examples = _examples({f.example_id for f in findings})
    rows = [f for f in findings if f.example_id in examples]
    st.dataframe(pd.DataFrame({
        "Id": [f.example_id for f in rows],
        "Score": [f.score for f in rows],
        "Reason": [f.reason for f in rows],
        "Status": [examples[f.example_id].status for f in rows],
        "Label": [examples[f.example_id].label for f in rows],
        "Prompt": [one_line(turns_text(examples[f.example_id].messages)) for f in rows],
        "Answer": [one_line(turns_text(examples[f.example_id].messages, "assistant"))
                   for f in rows],
    }), hide_index=True, key=f"q_{name}_table", column_config={
        "Id": st.column_config.NumberColumn(format="%d", width="small"),
        "Score": st.column_config.NumberColumn(format="%.3f", width="small",
                                               help="Lower is worse"),
        "Reason": st.column_config.TextColumn(width="medium"),
        "Prompt": st.column_config.TextColumn(width="large"),
        "Answer": st.column_config.TextColumn(width="large")},
        height=38 + 35 * min(len(rows), 12))
    if rows:
        row = st.container(horizontal=True, vertical_alignment="bottom")
        pick = row.selectbox("Example", [f.example_id for f in rows], key=f"q_{name}_pick",
                             format_func=lambda i: f"#{i}", width=160)
        if row.button("Open in Review", key=f"q_{name}_open", icon=":material/rate_review:"):
            _open_in_review(pick)


def _findings(name: str) -> None:
    findings = _flagged(name)
    if last_run(store, name) is None:
        st.info("This check has not run yet." + (" Press Run above." if can_run else ""),
                icon=":material/hourglass_empty:")
        return
    if not findings:
        st.success("The last run flagged nothing.", icon=":material/task_alt:")
        return
    details = findings[0].details
    if "group" in details:
        _groups(name, findings)
    elif "suggested" in details:
        _label_issues(name, findings)
    else:
        _table(name, findings)


# --- the page ------------------------------------------------------------------------------

st.title("Quality")
st.caption("Checks for duplicates, train/eval leakage, likely mislabeled examples and "
           "outliers. Label coverage and gaps are on the Coverage page.")
if not can_act:
    st.caption(f":material/visibility: Your role ({user.role}) sees the findings; running "
               "checks and acting on them needs the reviewer role.")
page_start("quality", ws)

runs = {name: last_run(store, name) for name in CHECKS}
counts = {name: len(_flagged(name)) if runs[name] else None for name in CHECKS}

top = st.container(horizontal=True, vertical_alignment="center")
run_all = top.button("Run all checks", key="q_run_all", type="primary",
                     icon=":material/play_arrow:", disabled=not can_run)
force = top.checkbox("Recompute even if nothing changed", key="q_force", disabled=not can_run,
                     help="A check whose input is unchanged since its last run reuses its "
                          "findings; tick this to compute them again.")
top.caption("Run all also updates the Thin labels queue (coverage). "
            "Embedding and cleanlab checks take a minute or more on a CPU; the first run "
            "embeds every prompt, later runs only new or changed ones.")
if run_all:
    _run(list(REGISTRY), force)  # coverage too: it feeds the Review page's Thin labels queue

for name in CHECKS:
    check, run = REGISTRY[name], runs[name]
    with st.container(border=True, key=f"q_card_{name}"):
        about, flagged, when, action = st.columns([6, 1.2, 2.8, 1.2], vertical_alignment="center")
        about.markdown(f"**{check.title}**")
        about.caption(check.description)
        if run is None:
            flagged.metric("Flagged", "—", help="not run yet")
            when.caption("Never run.")
        else:
            flagged.metric("Flagged", f"{counts[name]:,}")
            when.caption(plain(f"Last run {_when(run['run_at'])} by {run['run_by']}: "
                               f"{_summary_text(run['summary'])}"))
        if action.button("Run", key=f"q_run_{name}", icon=":material/play_arrow:",
                         disabled=not can_run, width="stretch"):
            _run([name], force)  # here, in its card, where the person looks

with st.container(border=True):
    row = st.container(horizontal=True, vertical_alignment="center")
    row.markdown(":material/flag: Examples flagged by the label-issue, outlier and "
                 "answer-mismatch checks wait in the Review page's **Flagged as noisy** "
                 "queue, most severe first; **Labels to double-check** goes on past the "
                 "label-issue flags, lowest label quality first, where missed mislabels sit.")
    if row.button("Review the flagged examples", key="q_review_flagged",
                  icon=":material/rate_review:"):
        st.switch_page(page_path("review"), query_params={"queue": "flagged"})
    if row.button("Double-check labels", key="q_review_label_quality",
                  icon=":material/fact_check:"):
        st.switch_page(page_path("review"), query_params={"queue": "label_quality"})

st.header("Findings", anchor=False)
if st.query_params.get("check") in CHECKS:  # a link from another page: ?check=leakage
    S.q_view = st.query_params.pop("check")
if S.get("q_view") not in CHECKS:
    S.q_view = next((n for n in CHECKS if counts[n]), CHECKS[0])
view = st.segmented_control(
    "Check", CHECKS, key="q_view", required=True, label_visibility="collapsed",
    format_func=lambda n: REGISTRY[n].title + (f" ({counts[n]})" if counts[n] else ""))
st.caption(REGISTRY[view].description)
if isinstance(REGISTRY[view], (DuplicateCheck, LeakageCheck)):
    st.caption(f":material/balance: {KEEPER_RULE}")
_findings(view)
