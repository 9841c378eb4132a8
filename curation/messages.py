"""Chat messages beyond plain text: tool calls, tool replies, content parts, weights, names.

OpenAI's chat fine-tuning format allows more than `{role, content}` text turns, and teams'
files use it: a `developer` role, a per-message `name`, a `weight` (0 or 1) on assistant turns,
assistant turns with `tool_calls` (their content null or absent) answered by `tool` turns with
a `tool_call_id`, content given as a list of text parts, a top-level `tools` list (and the
legacy `functions` / `function_call` / `function` role). This module validates such messages,
keeps them exactly as given, and reads text out of them for everything that wants text.

Design decisions:
- Lossless storage in the one `messages` column: every message key is kept as given (only
  text is cleaned: CR/CRLF to LF, as for plain turns), so no migration is needed and the
  version history, snapshots, undo and revert carry them unchanged. A plain `{role, content}`
  conversation is stored exactly as before (same JSON, same `content_hash`).
- The conversation-level keys (`tools`, `functions`, `parallel_tool_calls`, top-level in an
  OpenAI record) are kept on the *first stored message* under the same names
  (`CONVERSATION_KEYS`): they belong to the conversation, not to any turn, and this keeps
  them inside the hashed, versioned `messages` JSON. `split_conversation` takes them off
  again: the OpenAI export writes them back at the top level and training passes them to the
  chat template. A first message carrying them is therefore valid stored form (and accepted
  on import, where the top-level form is the usual one; both at once is refused).
- Turn order with tools: an optional system (or developer) turn first; then a user turn, and
  an assistant turn; an assistant turn with `tool_calls` is followed by one `tool` reply per
  call (any order, each `tool_call_id` one of its calls) or ends the conversation; after the
  replies comes an assistant turn again. `function_call` / `function` follow the same rule.
  A conversation never ends on a tool reply: there would be nothing to train on after it.
- `weight` (0 or 1) is allowed on assistant turns only, as OpenAI documents. A `weight: 0`
  turn stays in the conversation as context and is masked from the loss in training.
- Content parts: `[{"type": "text", "text": ...}]`; image, audio and file parts are refused
  as `unsupported_modality` unless media is dropped (`drop_media`), which removes them.
- `message_text` is the one way to read a message as text (text parts joined by a newline,
  "" for a null content); `search_text` adds tool-call names and arguments, so text search
  and duplicate checks see them.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
CONVERSATION_KEYS = ("tools", "functions", "parallel_tool_calls")
MEDIA_KEYS = ("images", "videos", "audios")
MEDIA_PLACEHOLDER = re.compile(r"<(?:image|video|audio)>\n?")
_MEDIA_PARTS = ("image_url", "input_image", "input_audio", "audio", "file", "image", "video")
_KEYS = {"system": {"name"}, "developer": {"name"}, "user": {"name"},
         "assistant": {"name", "weight", "tool_calls", "function_call", "refusal"},
         "tool": {"tool_call_id", "name"}, "function": {"name"}}


def message_text(message: dict[str, Any]) -> str:
    """The text of a message: its content, or its text parts joined by a newline ("" if the
    content is null or absent, as on an assistant turn that only calls tools)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content
                         if isinstance(p, dict) and p.get("type") == "text")
    return ""


def tool_calls(message: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(id, function name, arguments as text) of each call an assistant turn makes (the legacy
    `function_call` counts as one call without an id)."""
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        calls.append((call.get("id", ""), function.get("name", ""),
                      _arguments_text(function.get("arguments", ""))))
    if isinstance(message.get("function_call"), dict):
        function = message["function_call"]
        calls.append(("", function.get("name", ""), _arguments_text(function.get("arguments", ""))))
    return calls


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()


def pretty_arguments(arguments: str) -> str:
    """Arguments JSON indented for reading; as given when it is not JSON."""
    try:
        return orjson.dumps(orjson.loads(arguments), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return arguments


def search_text(messages: list[dict[str, Any]]) -> str:
    """Every turn's text, one after another, with each tool call as `name(arguments)`."""
    if not is_rich(messages):  # the common case, as fast as before
        return "\n".join([m["content"] for m in messages])
    lines = []
    for m in messages:
        text, calls = message_text(m), tool_calls(m)
        if text or not calls:
            lines.append(text)
        lines += [f"{name}({arguments})" for _, name, arguments in calls]
    return "\n".join(lines)


def is_rich(messages: list[dict[str, Any]]) -> bool:
    """Whether a conversation uses anything beyond plain system/user/assistant text turns."""
    return any(len(m) != 2 or type(m.get("content")) is not str
               or m.get("role") not in ("system", "user", "assistant") for m in messages)


def canonical(message: dict[str, Any]) -> dict[str, Any]:
    """The message with its keys in stored order: role, content, then the others sorted
    (what `check_message` returns, so the hash of a stored conversation is that of its
    `messages` column whatever order a file gave the keys in)."""
    if len(message) == 2 and "content" in message:
        return {"role": message["role"], "content": message["content"]}
    out = {"role": message["role"]}
    if "content" in message:
        out["content"] = message["content"]
    return {**out, **{k: message[k] for k in sorted(message) if k not in out}}


def split_conversation(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                dict[str, Any]]:
    """The messages without the conversation-level keys, and those keys (`tools`, ...) as an
    OpenAI record has them at its top level."""
    if not messages or not any(k in messages[0] for k in CONVERSATION_KEYS):
        return messages, {}
    first = {k: v for k, v in messages[0].items() if k not in CONVERSATION_KEYS}
    top = {k: messages[0][k] for k in CONVERSATION_KEYS if k in messages[0]}
    return [first, *messages[1:]], top


def strip_media_placeholders(text: str) -> str:
    """`<image>`, `<video>` and `<audio>` (and a newline right after each) removed, and the
    text's ends trimmed; what is left of a turn once its media is dropped."""
    return MEDIA_PLACEHOLDER.sub("", text).strip() if MEDIA_PLACEHOLDER.search(text) else text


# --- validation ----------------------------------------------------------------------------

def check_message(message: dict, at: str, index: int, max_chars: int, check_text,
                  error, *, drop_media: bool = False) -> dict[str, Any]:
    """One message validated and cleaned, in `canonical` key order (role, content, then the
    others sorted). `check_text(value, where, max_chars, required=)` and `error(code, message,
    field)` come from `curation.formats`, so codes and messages stay one set."""
    role = message["role"]
    if role not in ROLES:
        raise error("unrecognized_role", f"{at}.role is {role!r}; expected system, developer, "
                                         "user, assistant or tool", f"{at}.role")
    allowed = _KEYS[role] | ({"role", "content"}) | (set(CONVERSATION_KEYS) if index == 0
                                                     else set())
    extra = sorted(set(message) - allowed)
    if extra:
        if "weight" in extra:
            raise error("message_unrecognized_key", f"{at} is a {role} turn with `weight`; "
                        "weight is allowed on assistant turns only", f"{at}.weight")
        raise error("message_unrecognized_key",
                    f"{at} has unrecognized key(s) {', '.join(extra)}", at)
    calls = role == "assistant" and ("tool_calls" in message or "function_call" in message)
    if "content" not in message and not calls:
        raise error("message_missing_key", f"{at} has no `content`", f"{at}.content")
    out: dict[str, Any] = {"role": role}
    if "content" in message:
        out["content"] = _check_content(message["content"], f"{at}.content", max_chars,
                                        check_text, error, required=not calls,
                                        drop_media=drop_media)
    for key, value in sorted(message.items()):
        if key in out:
            continue
        where = f"{at}.{key}"
        if key == "weight" and (type(value) is not int or value not in (0, 1)):
            raise error("wrong_type", f"{where} must be 0 or 1, not {value!r}", where)
        if key in ("name", "tool_call_id", "refusal") and not (
                isinstance(value, str) and value.strip()):
            raise error("wrong_type", f"{where} must be non-empty text", where)
        if key == "tool_calls":
            _check_tool_calls(value, where, error)
        if key == "function_call":
            _check_function(value, where, error, arguments=True)
        if key in ("tools", "functions"):
            _check_tools(value, where, error, key)
        if key == "parallel_tool_calls" and not isinstance(value, bool):
            raise error("wrong_type", f"{where} must be true or false", where)
        out[key] = value
    if role == "tool" and "tool_call_id" not in message:
        raise error("message_missing_key", f"{at} is a tool reply without `tool_call_id`",
                    f"{at}.tool_call_id")
    if role == "function" and "name" not in message:
        raise error("message_missing_key", f"{at} is a function reply without `name`",
                    f"{at}.name")
    return out


def _check_content(content: Any, where: str, max_chars: int, check_text, error, *,
                   required: bool, drop_media: bool) -> Any:
    if content is None and not required:
        return None
    if not isinstance(content, list):  # text, or the error check_text gives a non-text
        return check_text(content, where, max_chars, required=required)
    parts = []
    for k, part in enumerate(content):
        at = f"{where}[{k}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _MEDIA_PARTS:
            if drop_media:
                continue
            raise error("unsupported_modality", f"{at} is an {kind} part; Curate keeps text "
                        "only (drop the media with --drop-media to keep the text)", at)
        if kind != "text" or not isinstance(part.get("text"), str):
            raise error("wrong_type", f"{at} must be a text part "
                        '{"type": "text", "text": ...}', at)
        parts.append({**part, "text": check_text(part["text"], f"{at}.text", max_chars,
                                                 required=False)})
    if required and not any(p["text"].strip() for p in parts):
        raise error("missing_content", f"{where} has no text", where)
    return parts


def _check_tool_calls(calls: Any, where: str, error) -> None:
    if not isinstance(calls, list) or not calls:
        raise error("wrong_type", f"{where} must be a non-empty list of tool calls", where)
    for k, call in enumerate(calls):
        at = f"{where}[{k}]"
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise error("wrong_type", f'{at} must be {{"id", "type": "function", "function": '
                        '{"name", "arguments"}}', at)
        if not (isinstance(call.get("id"), str) and call["id"].strip()):
            raise error("message_missing_key", f"{at} has no `id`", f"{at}.id")
        if call.get("type", "function") != "function":
            raise error("wrong_type", f"{at}.type is {call.get('type')!r}; expected 'function'",
                        f"{at}.type")
        _check_function(call["function"], f"{at}.function", error, arguments=True)


def _check_function(function: Any, where: str, error, *, arguments: bool) -> None:
    if not isinstance(function, dict):
        raise error("wrong_type", f"{where} must be an object with a name", where)
    if not (isinstance(function.get("name"), str) and function["name"].strip()):
        raise error("message_missing_key", f"{where} has no `name`", f"{where}.name")
    if arguments and not isinstance(function.get("arguments", ""), (str, dict)):
        raise error("wrong_type", f"{where}.arguments must be JSON text", f"{where}.arguments")


def _check_tools(tools: Any, where: str, error, key: str) -> None:
    if not isinstance(tools, list):
        raise error("wrong_type", f"`{key}` must be a list", where)
    for k, tool in enumerate(tools):
        at = f"{where}[{k}]"
        if key == "functions":
            _check_function(tool, at, error, arguments=False)
        elif not isinstance(tool, dict) or "type" not in tool:
            raise error("wrong_type", f'{at} must be a tool object {{"type": "function", '
                        '"function": {...}}', at)
        elif tool["type"] == "function":
            _check_function(tool.get("function"), f"{at}.function", error, arguments=False)


def check_tool_turns(messages: list[dict[str, Any]], where: str, unanswered: bool,
                     error) -> None:
    """The turn-order rule for a conversation with tool turns (see the module docstring)."""
    start = 1 if messages[0]["role"] in ("system", "developer") else 0
    if not any(m["role"] == "assistant" for m in messages) and not unanswered:
        raise error("example_missing_assistant_message", f"`{where}` has no assistant turn",
                    where)
    if start == len(messages):
        raise error("invalid_turn_order", f"`{where}` has no user turn", where)
    state, pending = "start", set()
    for i in range(start, len(messages)):
        m, at = messages[i], f"{where}[{i}]"
        role = m["role"]
        if role in ("system", "developer"):
            raise error("invalid_turn_order", f"{at} is a {role} turn; only the first turn "
                        "may be system or developer", f"{at}.role")
        if state in ("calls", "fcall") and role not in ("tool", "function"):
            raise error("invalid_turn_order", f"{at} is {role}, but {where}[{i - 1}] calls "
                        "tools: its tool replies must come first", f"{at}.role")
        if state == "replies" and role not in ("tool", "function") and pending:
            raise error("invalid_turn_order", f"tool call(s) {', '.join(sorted(pending))} "
                        f"before {at} have no tool reply", f"{at}.role")
        if role == "user":
            if state not in ("start", "answer"):
                raise error("invalid_turn_order", f"{at} is user; turns must alternate user, "
                            "assistant (after tool replies comes an assistant turn)",
                            f"{at}.role")
            state = "user"
        elif role == "assistant":
            if state not in ("user", "replies"):
                raise error("invalid_turn_order", f"{at} is assistant; turns must alternate "
                            "user, assistant", f"{at}.role")
            ids = {c["id"] for c in m.get("tool_calls") or []}
            state = "calls" if ids else "fcall" if "function_call" in m else "answer"
            pending = ids
        elif role == "tool":
            if state not in ("calls", "replies") or m["tool_call_id"] not in pending:
                raise error("invalid_turn_order", f"{at} replies to tool call "
                            f"{m['tool_call_id']!r}, which the assistant turn before it does "
                            "not make (or was answered already)", f"{at}.tool_call_id")
            pending.discard(m["tool_call_id"])
            state = "replies"
        else:  # function (legacy)
            if state not in ("fcall", "replies"):
                raise error("invalid_turn_order", f"{at} is a function reply without an "
                            "assistant function_call before it", f"{at}.role")
            state = "replies"
    last = messages[-1]["role"]
    if state == "replies":
        raise error("invalid_turn_order", f"`{where}` ends with a {last} reply; an assistant "
                    "turn must follow the tool replies", where)
    if state == "user" and not unanswered:
        raise error("invalid_turn_order", f"`{where}` ends with a user turn; the last turn "
                    "must be assistant", where)
