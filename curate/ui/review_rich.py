"""Review of a conversation with tool calls, tool replies, text parts, names or weights.

The pair editor of `curate/ui/review.py` (system prompt, then user + assistant pairs that can
be moved, added and removed) fits plain text chats only. A conversation that uses OpenAI's
extras (`curation.messages.is_rich`) is shown here instead, turn by turn, in its stored order.

Design decisions:
- Every text is editable: a string content, or each text part of a list content (one box per
  part, so the parts stay parts). Everything else is read-only and the page says so: the tool
  calls (function name and pretty-printed arguments, in a code block), the tool definitions
  (in an expander), the roles, names, weights and the turn order. Editing them by hand would
  break the call/reply pairing the import checked; re-import the file to change them.
- The draft is the stored messages with the edited texts put back, so saving never loses
  a key: tool calls, ids, weights and the conversation's tools go back exactly as stored.
- Data is only shown as text: widget values, `st.code`, `st.text`; captions that name data
  (a function name, a call id, a participant's name) go through `plain`.
"""

from __future__ import annotations

from typing import Any

import orjson
import streamlit as st

from curate.ui.common import plain
from curation import Example
from curation.messages import CONVERSATION_KEYS, pretty_arguments, tool_calls

_ICONS = {"system": ":material/settings:", "developer": ":material/settings:",
          "user": ":material/person:", "assistant": ":material/smart_toy:",
          "tool": ":material/build:", "function": ":material/build:"}


def _title(m: dict[str, Any]) -> str:
    role = m["role"]
    words = {"system": "System", "developer": "Developer", "user": "User",
             "assistant": "Assistant", "tool": "Tool reply", "function": "Function reply"}[role]
    if role == "tool":
        words += f" to call {plain(m.get('tool_call_id', ''))}"
    if m.get("name"):
        words += f" (name: {plain(m['name'])})"
    if m.get("weight") == 0:
        words += " · weight 0: context only, not trained on"
    return f"{_ICONS.get(role, '')} {words}"


def conversation(ex: Example, prefix: str) -> None:
    """The turns of a rich conversation: texts editable, tool structure read-only."""
    st.caption(":material/info: This conversation has tool calls, text parts, names or "
               "weights. Its texts are editable here; the tool calls, tool definitions, "
               "roles, names, weights and turn order are shown read-only (re-import the file "
               "to change them).")
    top = {k: ex.messages[0][k] for k in CONVERSATION_KEYS if k in ex.messages[0]}
    if top:
        names = [(t.get("function") or t).get("name", "?") for t in
                 (top.get("tools") or []) + (top.get("functions") or [])]
        with st.expander(f"Tools available ({len(names)}): {plain(', '.join(names))}"):
            st.code(orjson.dumps(top, option=orjson.OPT_INDENT_2).decode(), language="json")
    for i, m in enumerate(ex.messages):
        with st.container(border=True, key=f"rv_turn_{i}"):
            st.caption(_title(m))
            content = m.get("content")
            if isinstance(content, str):
                if content or not tool_calls(m):
                    st.text_area(m["role"], content, key=f"{prefix}_m{i}", height="content",
                                 persist_state="session", label_visibility="collapsed")
            elif isinstance(content, list):
                for k, part in enumerate(content):
                    st.text_area(f"{m['role']} part {k + 1}", part["text"],
                                 key=f"{prefix}_m{i}_p{k}", height="content",
                                 persist_state="session",
                                 label_visibility="visible" if len(content) > 1
                                 else "collapsed")
            for call_id, name, arguments in tool_calls(m):
                st.caption(":material/call_made: Tool call"
                           + (f" {plain(call_id)}" if call_id else "") + " (read-only)")
                st.code(f"{name}({pretty_arguments(arguments)})", language="python")
    if ex.needs_answer:
        with st.container(border=True, key="rv_turn_answer"):
            st.caption(f"{_ICONS['assistant']} Assistant")
            st.text_area("Assistant answer", "", key=f"{prefix}_answer", height="content",
                         persist_state="session", label_visibility="collapsed",
                         placeholder="Needs an answer: write the assistant's reply",
                         help="This prompt was imported without an answer; it is not "
                              "exported or trained on until this box is filled and saved.")


def draft(ex: Example, prefix: str) -> list[dict[str, Any]]:
    """The stored messages with the texts as they stand in the widgets."""
    out = []
    for i, m in enumerate(ex.messages):
        content = m.get("content")
        if isinstance(content, str):
            m = {**m, "content": st.session_state.get(f"{prefix}_m{i}", content)}
        elif isinstance(content, list):
            m = {**m, "content": [
                {**part, "text": st.session_state.get(f"{prefix}_m{i}_p{k}", part["text"])}
                for k, part in enumerate(content)]}
        out.append(m)
    answer = st.session_state.get(f"{prefix}_answer", "") if ex.needs_answer else ""
    if answer.strip():
        out.append({"role": "assistant", "content": answer})
    return out
