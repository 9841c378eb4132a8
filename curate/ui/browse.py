"""Browse: the examples as a sortable, paginated table, with bulk actions on selected rows.

Design decisions:
- Never the whole store: one page of rows (`Store.find(limit, offset)`) and `Store.count`.
- Filters, sort, page size and page are query parameters (`curate.ui.url_state`): a reload,
  a page switch or a shared link shows the same rows; saved views name them per person.
- The table's widget key carries a digest of the filters, sort, page and a counter that every
  bulk action bumps. A new key is a new table in the browser, so a row selection never
  silently carries over onto different rows after paging, sorting or an action.
- The role rules live in `curation.review.bulk`, which refuses what the role may not do; the
  page only disables those actions and says which role they need.
- A prompt imported without an answer shows "(needs an answer)" in the assistant column;
  the sidebar's Answer filter finds them all.
- A bulk action applies to the selected rows or to all N rows matching the filters (every
  page). "All matching" asks first, showing N and the filters; on confirmation the core
  checks that the filters still select N (`review.bulk_matching`) and changes nothing if not.
  Every bulk action is one batch; the person's latest batch is offered for undo under the
  action (`curation.undo.undo_batch`: each example back to its version before, audited;
  examples changed since are left alone and listed).
- Data is shown as text only: table cells and widget values. Error messages, which can carry
  data (a label, a user name), are escaped before they reach a Markdown-rendering call.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import pandas as pd
import streamlit as st

from curate.ui.common import (NEEDS_ANSWER_MARK, filter_form, filter_keys, flash, one_line,
                              page_path, page_start, plain, workspace)
from curate.ui.url_state import saved_views_panel
from curation import SPLITS, CurateError, Example
from curation.auth import User, min_role
from curation.errors import PermissionDenied
from curation.review import BULK_ACTIONS, BULK_PERMISSION
from curation.text import first_turn

SORT_COLUMNS = {"id": "Id", "updated_at": "Updated at", "created_at": "Created at",
                "label": "Label", "status": "Status"}
PAGE_SIZES = (25, 50, 100)
PREVIEW_CHARS = 120
ACTION_LABELS = {"accept": "Accept", "reject": "Reject", "set_label": "Set label",
                 "add_tag": "Add tag", "remove_tag": "Remove tag", "move_split": "Move to split",
                 "delete": "Delete (move to the bin)", "restore": "Restore from the bin"}


def needed_role(action: str) -> str:
    """The lowest role that may apply a bulk action, as `curation.review.bulk` checks it."""
    return min_role(BULK_PERMISSION[action])


def may(user: User, action: str) -> bool:
    return user.can(BULK_PERMISSION[action])


def rows_text(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def table(rows: list[Example]) -> pd.DataFrame:
    return pd.DataFrame({
        "Id": [e.id for e in rows],
        "External id": [e.external_id for e in rows],
        "Status": [e.status for e in rows],
        "Split": [e.split for e in rows],
        "Label": [e.label for e in rows],
        "Tags": [list(e.tags) for e in rows],
        "First user turn": [one_line(first_turn(e.messages, "user"), PREVIEW_CHARS) for e in rows],
        "Assistant turn": [f"({NEEDS_ANSWER_MARK})" if e.needs_answer else
                           one_line(first_turn(e.messages, "assistant"), PREVIEW_CHARS)
                           for e in rows],
        "Version": [e.version for e in rows],
        "Updated by": [e.updated_by for e in rows],
        "Updated at": [e.updated_at for e in rows],
    })


COLUMN_CONFIG = {
    "Id": st.column_config.NumberColumn(format="%d", width="small"),
    "Version": st.column_config.NumberColumn(format="%d", width="small"),
    "Tags": st.column_config.ListColumn(),
    "First user turn": st.column_config.TextColumn(width="large"),
    "Assistant turn": st.column_config.TextColumn(width="large"),
    "Updated at": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
}

ws = workspace("view")
store, user = ws.store, ws.user
st.title("Browse")

KEEP = {"bind": "query-params", "persist_state": "session"}  # in the URL, across pages
where = filter_form(store, "browse")
with st.sidebar:
    in_bin = st.toggle("Show deleted (the bin)", key="browse_deleted", **KEEP,
                       help="Deleted examples are kept, out of queues and exports; an admin "
                            "can restore them from here.")
saved_views_panel(ws, "browse", {**filter_keys("browse"), "browse_deleted": False,
                                 "browse_sort": next(iter(SORT_COLUMNS)),
                                 "browse_direction": "Ascending",
                                 "browse_page_size": PAGE_SIZES[0]})
if in_bin:
    where = replace(where, deleted=True)
    st.caption("The bin: deleted examples. They are in no queue and no export until restored.")

page_start("browse", ws, empty_hint="")

sort_col, dir_col, size_col = st.columns([2, 2, 1], vertical_alignment="bottom")
sort = sort_col.selectbox("Sort by", list(SORT_COLUMNS), format_func=SORT_COLUMNS.get,
                          key="browse_sort", **KEEP)
descending = dir_col.radio("Direction", ["Ascending", "Descending"], horizontal=True,
                           key="browse_direction", **KEEP) == "Descending"
page_size = size_col.selectbox("Rows per page", PAGE_SIZES, key="browse_page_size", **KEEP)
order_by = ("-" if descending else "") + sort

view = hashlib.sha1(repr((where, order_by, page_size)).encode()).hexdigest()[:12]

total = store.count(where)
if total == 0:
    if in_bin:
        st.info("The bin is empty: no deleted example matches these filters.",
                icon=":material/delete:")
    elif store.count() == 0:
        st.info("This workspace has no examples yet. An admin imports them on the "
                "Import / Export page, or with `curate import FILE`.")
    else:
        st.info("No example matches these filters. Clear some filters in the sidebar.",
                icon=":material/filter_alt_off:")
    st.stop()

num_pages = max(1, math.ceil(total / page_size))
# A new filter, sort or page size starts at page 1; a reload or a link keeps `?browse_page=N`.
if st.session_state.get("browse_view") not in (None, view):
    st.session_state["browse_page"] = 1
st.session_state["browse_view"] = view
if st.session_state.get("browse_page", 1) > num_pages:
    st.session_state["browse_page"] = num_pages
page = min(st.pagination(num_pages, key="browse_page", **KEEP) if num_pages > 1 else 1,
           num_pages)
offset = (page - 1) * page_size
rows = store.find(where, order_by=order_by, limit=page_size, offset=offset)
st.caption(f"Rows {offset + 1:,}–{offset + len(rows):,} of {total:,}")

generation = st.session_state.setdefault("browse_generation", 0)
table_key = f"browse_table_{view}_{page}_{generation}"
if st.session_state.get("browse_table_key") != table_key:
    st.session_state["browse_table_key"] = table_key
    st.session_state["browse_select_all"] = False
event = st.dataframe(table(rows), key=table_key, on_select="rerun",
                     selection_mode="multi-row", hide_index=True, column_config=COLUMN_CONFIG,
                     height=38 + 35 * min(len(rows), 15))
select_all = st.checkbox(f"Select all {rows_text(len(rows))} on this page",
                         key="browse_select_all")
picked = [i for i in event.selection.rows if 0 <= i < len(rows)]
selected = rows if select_all else [rows[i] for i in sorted(picked)]
selected_ids = [e.id for e in selected]

act_col, open_col = st.columns([3, 2], gap="large")

with act_col:
    st.subheader("Bulk action")
    st.caption(f"{len(selected_ids)} of {rows_text(len(rows))} on this page selected. Tick "
               "rows in the table's left margin, or select all.")
    scope = st.radio("Apply to", ["selected", "matching"], horizontal=True, key="browse_scope",
                     format_func=lambda s: (f"Selected rows ({len(selected_ids)})"
                                            if s == "selected" else
                                            f"All {rows_text(total)} matching the filters"),
                     help="All matching: every row of every page that the filters select, "
                          "after a confirmation that shows how many.")
    everything = scope == "matching"
    actions = ["restore"] if in_bin else [a for a in BULK_ACTIONS if a != "restore"]
    action = st.selectbox(
        "Action", actions, key=f"browse_action_{'bin' if in_bin else 'live'}",
        format_func=lambda a: ACTION_LABELS[a] + ("" if may(user, a) else
                                                  f" ({needed_role(a)} or higher)"))
    allowed = may(user, action)
    value = None
    if action == "set_label":
        value = st.selectbox("Label", store.labels(), index=None, accept_new_options=True,
                             placeholder="Choose a label or type a new one",
                             key="browse_value_label", disabled=not allowed)
    elif action == "add_tag":
        value = st.selectbox("Tag to add", store.tags(), index=None, accept_new_options=True,
                             placeholder="Choose a tag or type a new one",
                             key="browse_value_add_tag", disabled=not allowed)
    elif action == "remove_tag":
        present = sorted({t for e in selected for t in e.tags}) or store.tags()
        value = st.selectbox("Tag to remove", present, index=None,
                             placeholder="Choose a tag", key="browse_value_remove_tag",
                             disabled=not allowed)
    elif action == "move_split":
        value = st.selectbox("Split", SPLITS, key="browse_value_split", disabled=not allowed)
    reason = st.text_input("Reason" if action == "reject" else
                           "Reason (optional, kept in the audit log)",
                           key="browse_reason", disabled=not allowed,
                           placeholder="Why the selected examples are rejected"
                           if action == "reject" else "")
    missing = None
    if not allowed:
        missing = (f"Your role ({user.role}) cannot do this: "
                   f"{ACTION_LABELS[action].lower()} needs the {needed_role(action)} role.")
    elif not selected_ids and not everything:
        missing = "Select at least one row."
    elif action in ("set_label", "add_tag", "remove_tag", "move_split") and not (value or
                                                                                 "").strip():
        missing = "Choose a value for this action."
    elif action == "reject" and not reason.strip():
        missing = "Rejecting needs a reason, for the annotator who picks the examples up next."
    if missing:
        st.caption(missing)
    if everything:
        if st.button(f"{ACTION_LABELS[action]}: all {rows_text(total)} matching…",
                     type="primary", key="browse_apply", disabled=missing is not None):
            st.session_state["browse_confirm"] = {"action": action, "value": value,
                                                  "reason": reason or None, "n": total,
                                                  "where": where}
        confirm = st.session_state.get("browse_confirm")
        if confirm and ((confirm["action"], confirm["where"], confirm["value"],
                         confirm["reason"]) != (action, where, value, reason or None)):
            confirm = st.session_state["browse_confirm"] = None  # the form changed: ask again
        if confirm:
            filters = where.describe()
            st.warning(f"{ACTION_LABELS[action]}: **all {rows_text(confirm['n'])}** matching "
                       + (plain(", ".join(f"{k} = {v}" for k, v in filters.items()))
                          if filters else "(no filter: every example)")
                       + ", on every page, not only this one. You can undo the whole batch "
                       "afterwards.", icon=":material/warning:")
            row = st.container(horizontal=True)
            if row.button(f"Confirm: {ACTION_LABELS[action].lower()} "
                          f"{rows_text(confirm['n'])}", type="primary",
                          key="browse_confirm_apply"):
                st.session_state["browse_confirm"] = None
                try:
                    with st.spinner(f"{ACTION_LABELS[action]}: {rows_text(confirm['n'])}, one "
                                    "by one…"):
                        result = ws.bulk_matching(where, action, expected=confirm["n"],
                                                  value=confirm["value"],
                                                  reason=confirm["reason"])
                except CurateError as exc:
                    st.error(plain(str(exc)), icon=":material/error:")
                else:
                    flash("browse", f"{ACTION_LABELS[action]}: {result.summary()}.",
                          ":material/done_all:", kind="success", details=result.skipped())
                    st.session_state["browse_generation"] = generation + 1
                    st.rerun()
            if row.button("Cancel", key="browse_confirm_cancel"):
                st.session_state["browse_confirm"] = None
                st.rerun()
    elif st.button(f"{ACTION_LABELS[action]}: {len(selected_ids)} selected", type="primary",
                   key="browse_apply", disabled=missing is not None):
        try:
            result = ws.bulk(selected_ids, action, value, reason or None)
        except PermissionDenied as exc:
            st.error(f"Not allowed: {plain(str(exc))}", icon=":material/block:")
        except CurateError as exc:
            st.error(plain(str(exc)), icon=":material/error:")
        else:
            flash("browse", f"{ACTION_LABELS[action]}: {result.summary()}.",
                  ":material/done_all:", kind="success", details=result.skipped())
            st.session_state["browse_generation"] = generation + 1
            st.rerun()

    batch = ws.last_batch()
    if batch:
        with st.container(border=True):
            st.caption(f"Your last bulk action: {ACTION_LABELS.get(batch['action'], '')} "
                       f"({plain(batch['scope'])}), {batch['changed']:,} changed, "
                       f"{batch['created_at']:%Y-%m-%d %H:%M} UTC")
            if st.button("Undo this batch", key="browse_undo_batch", icon=":material/undo:",
                         help="Every example the batch changed goes back to its version "
                              "before, audited as a revert; examples changed since are left "
                              "as they are."):
                try:
                    undone = ws.undo_batch(batch["id"])
                except CurateError as exc:
                    st.error(plain(str(exc)), icon=":material/error:")
                else:
                    flash("browse", f"Undone: {undone.summary()}.", ":material/undo:",
                          kind="success", details=undone.skipped)
                    st.session_state["browse_generation"] = generation + 1
                    st.rerun()

with open_col:
    st.subheader("Open in Review")
    ids = [e.id for e in rows]
    open_id = st.selectbox("Example", ids, format_func=lambda i: f"#{i}",
                           index=ids.index(selected_ids[0]) if len(selected_ids) == 1 else 0,
                           help="One of the examples on this page; selecting one row picks it.")
    if st.button("Open in Review", icon=":material/rate_review:", key="browse_open"):
        st.switch_page(page_path("review"), query_params={"id": str(open_id)})
