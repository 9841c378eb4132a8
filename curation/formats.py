"""Import and export formats: pure converters between records and conversations.

Every input format is turned into one shape, a `Draft`: the conversation as chat messages
(`[{"role": ..., "content": ...}]`) plus the metadata we keep (external id, label, tags).
Export goes the other way, one function per format, with Curate's fields under one `curate`
key (or none: `plain`), see the output section. `docs/formats.md` is the spec; the
round-trip tests hold the two directions to it.

Design decisions:
- A record that breaks a rule raises `RecordError(code, message, field)`. The codes follow
  OpenAI's data-preparation checks where one exists, so people recognise them; `CODES` lists
  them all with the sentence the docs and the import report show.
- One conversation rule for every format: an optional system turn first, then user and
  assistant turns alternating, starting with user and ending with assistant. That is what
  chat fine-tuning trains on, and it makes every export format lossless (Alpaca carries earlier
  turns in `history`, as LLaMA-Factory does).
- Unknown top-level keys are ignored (datasets carry extra columns); unknown keys inside a
  message are refused, because dropping them would silently change what is trained on.
- OpenAI's fine-tuning extras (tool calls and `tool` replies, a top-level `tools` list, text
  parts, `weight`, `name`, the `developer` role) are accepted and kept as given, the
  conversation's `tools` on its first stored message (no migration: `curation.messages`
  states the rules and why). LLaMA-Factory's ShareGPT tool turns (`function_call`,
  `observation`, a `tools` column) are stored as those same OpenAI tool calls.
- Media are refused, not dropped: a record with `images`/`videos`/`audios` (or an image part)
  is `unsupported_modality` unless the import drops media on purpose (`drop_media`), which
  also removes the `<image>`/`<video>`/`<audio>` placeholders from the texts.
- Unanswered prompts (`unanswered=True`, `curate import --unanswered`): the conversation may
  then end with a user turn instead (no assistant turn at all, or a multi-turn conversation
  whose last user turn waits for its answer): an openai/sharegpt conversation ending with a
  user turn, an Alpaca record with no or a blank `output`, a prompt with no or a blank
  `completion`, a mapped row with no response column or an empty cell. Such an example
  *needs an answer* (`needs_answer`): the shape itself is the mark, so it can never disagree
  with the text. Without the flag each of these is rejected as before, and the message says
  that `--unanswered` would keep it.
- Preference pairs and KTO records (`chosen`/`rejected`, `preferred_output`, a boolean
  `label` with a `completion`, `kto_tag`) are detected before the formats whose keys they
  share and read by `curation.preference`, into a Draft of kind 'preference' (with the
  rejected continuation) or 'kto' (with its flag); docs/formats.md, "Preference data".
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from curation import messages as _messages

InputFormat = Literal["auto", "openai", "alpaca", "prompt_completion", "sharegpt", "mapped",
                      "preference", "kto"]
OutputFormat = Literal["openai", "alpaca", "prompt_completion", "bedrock", "vertex",
                       "trl_preference", "openai_dpo"]
INPUT_FORMATS: tuple[str, ...] = ("auto", "openai", "alpaca", "prompt_completion", "sharegpt",
                                  "mapped")
OUTPUT_FORMATS: tuple[str, ...] = ("openai", "alpaca", "prompt_completion", "bedrock", "vertex")
# preference pairs and KTO records (`curation.preference` reads them, and writes pairs: an
# export format of a snapshot, not a writer of one conversation like OUTPUT_FORMATS)
INPUT_FORMATS += ("preference", "kto")
EXPORT_FORMATS: tuple[str, ...] = OUTPUT_FORMATS + ("trl_preference", "openai_dpo")
MAPPING_TARGETS: tuple[str, ...] = ("prompt", "response", "system", "label", "id", "tags")
DEFAULT_MAX_FIELD_CHARS = 100_000
# Between an Alpaca `instruction` and a non-blank `input` on import: one newline, as
# LLaMA-Factory joins them, so the user turn is what LLaMA-Factory would train on.
DEFAULT_ALPACA_SEPARATOR = "\n"

CODES: dict[str, str] = {
    "invalid_json": "The line is not valid JSON.",
    "invalid_csv": "The CSV row cannot be read: a NUL character, or another error of the CSV "
                   "reader.",
    "data_type": "The record is not a JSON object.",
    "unknown_format": "The record has none of the keys of a known format "
                      "(messages, instruction/output, prompt/completion, conversations).",
    "missing_messages_list": "`messages` (or `conversations`) is missing, not a list, or empty.",
    "message_missing_key": "A message lacks its role or its content key.",
    "message_unrecognized_key": "A message has a key its role does not take (OpenAI's: role, "
                                "content, name; assistant: weight, tool_calls, "
                                "function_call; tool: tool_call_id).",
    "unrecognized_role": "A role other than system, developer, user, assistant or tool "
                         "(ShareGPT: system, human, gpt, function_call, observation).",
    "missing_content": "A message or required field is empty or only whitespace.",
    "example_missing_assistant_message": "The conversation has no assistant turn.",
    "invalid_turn_order": "The system turn is not first, or user and assistant turns do not "
                          "alternate starting with user and ending with assistant.",
    "missing_field": "A field the format requires (or a mapped column) is missing.",
    "wrong_type": "A field has the wrong type, for example a number where text is expected.",
    "field_too_long": "A text field is longer than the configured maximum.",
    "nan_value": "The record contains NaN or Infinity, which is not valid JSON.",
    "lone_surrogate": "A string contains a lone UTF-16 surrogate (an invalid character).",
    "unsupported_modality": "The record carries images, videos or audio (`images`, `videos`, "
                            "`audios`, or a non-text content part); Curate keeps text only. "
                            "Import with --drop-media to keep the text without the media.",
    "duplicate_in_file": "The same example (conversation and label, and no other external "
                         "id) appeared earlier in the same file; it is imported once.",
}

# Appended to a rejection that `--unanswered` would have accepted.
UNANSWERED_HINT = ("; to keep it as a prompt that needs an answer, import with --unanswered "
                   "(in the app: tick 'Prompts without an answer')")

_ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                   "assistant": "assistant"}


class RecordError(Exception):
    """One input record breaks a rule: `code` is a key of CODES, `field` where it happened."""

    def __init__(self, code: str, message: str, field: str | None = None):
        assert code in CODES, code
        self.code = code
        self.message = message
        self.field = field
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class Draft:
    """A validated conversation with the metadata an import keeps."""

    messages: list[dict[str, str]]
    label: str | None = None
    tags: tuple[str, ...] = ()
    external_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # preference data (`curation.preference`): 'sft', 'preference' (with the rejected
    # continuation) or 'kto' (with its desirable flag)
    kind: str = "sft"
    rejected: list[dict[str, Any]] | None = None
    desirable: bool | None = None


# --- normalisation and hashing ---------------------------------------------------------------

def clean_text(text: str) -> str:
    """Line endings to LF; the text is otherwise stored exactly as given."""
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def content_hash(messages: list[dict[str, Any]]) -> str:
    """SHA-256 of the conversation exactly as stored: the JSON of its messages (every key: a
    tool call or a weight is part of what is trained on).

    No Unicode normalisation, no trimming: texts that differ in any character are different
    conversations (a tokenizer sees them differently, and Curate never changes a text), so an
    import drops only a record that is truly a repeat. Looser sameness (case, spaces, Unicode
    variants) is the exact-duplicates check's job, shown to the SME. The bytes hashed are those
    of the `messages` column, so a migration can compute it in SQL: `sha256(messages)`.
    """
    return hashlib.sha256(orjson.dumps([_messages.canonical(m) for m in messages])).hexdigest()


def needs_answer(messages: list[dict[str, str]]) -> bool:
    """Whether a (valid) conversation waits for its answer: it ends with a user turn."""
    return bool(messages) and messages[-1]["role"] == "user"


def search_text(messages: list[dict[str, Any]]) -> str:
    """All turns' texts, one after another (text parts joined, each tool call as
    `name(arguments)`): what text search and embeddings read."""
    return _messages.search_text(messages)


# --- the conversation rule -------------------------------------------------------------------

def check_conversation(messages: Any, max_chars: int = DEFAULT_MAX_FIELD_CHARS,
                       where: str = "messages", *, unanswered: bool = False,
                       drop_media: bool = False) -> list[dict[str, Any]]:
    """Validate a list of messages; return it with line endings cleaned.
    `unanswered`: it may also end with a user turn (a prompt that needs an answer).

    Plain {role, content} text turns follow the conversation rule above; messages with tool
    calls, tool replies, content parts, `weight` or `name` (OpenAI's fine-tuning extras) are
    checked and kept as given by `curation.messages` (see there for their rules).
    `drop_media`: image/audio/file content parts are removed instead of refused."""
    if not isinstance(messages, list) or not messages:
        raise RecordError("missing_messages_list", f"`{where}` must be a non-empty list", where)
    cleaned, rich = [], False
    for i, message in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(message, dict):
            raise RecordError("wrong_type", f"{at} must be an object with role and content", at)
        if "role" not in message:
            raise RecordError("message_missing_key", f"{at} has no `role`", f"{at}.role")
        role, content = message["role"], message.get("content")
        if (len(message) == 2 and "content" in message and role in _ROLES
                and isinstance(content, str)):
            cleaned.append({"role": role,
                            "content": check_text(content, f"{at}.content", max_chars)})
            continue
        rich = True
        if not isinstance(role, str):
            raise RecordError("unrecognized_role", f"{at}.role is {role!r}; expected system, "
                              "developer, user, assistant or tool", f"{at}.role")
        cleaned.append(_messages.check_message(message, at, i, max_chars, _check_text_kw,
                                               RecordError, drop_media=drop_media))
    if rich:
        _messages.check_tool_turns(cleaned, where, unanswered, RecordError)
    else:
        _check_turn_order(cleaned, where, unanswered)
    return cleaned


def _check_text_kw(value: Any, where: str, max_chars: int, *, required: bool = True) -> str:
    return check_text(value, where, max_chars, required=required)


def _check_turn_order(messages: list[dict[str, str]], where: str, unanswered: bool) -> None:
    roles = [m["role"] for m in messages]
    if "assistant" not in roles and not unanswered:
        raise RecordError("example_missing_assistant_message",
                          f"`{where}` has no assistant turn", where)
    turns = roles[1:] if roles[0] == "system" else roles
    if not turns:
        raise RecordError("invalid_turn_order", f"`{where}` has no user turn", where)
    if "system" in turns:
        i = roles.index("system", 1 if roles[0] == "system" else 0)
        raise RecordError("invalid_turn_order",
                          f"{where}[{i}] is a system turn; only the first turn may be system",
                          f"{where}[{i}].role")
    expected = ["user", "assistant"] * (len(turns) // 2 + 1)
    for i, (got, want) in enumerate(zip(turns, expected)):
        if got != want:
            at = i + (len(roles) - len(turns))
            raise RecordError("invalid_turn_order",
                              f"{where}[{at}] is {got}; turns must alternate user, assistant",
                              f"{where}[{at}].role")
    if turns[-1] != "assistant" and not (unanswered and turns[-1] == "user"):
        raise RecordError("invalid_turn_order",
                          f"`{where}` ends with a {turns[-1]} turn; the last turn must be "
                          "assistant", where)


def check_text(value: Any, where: str, max_chars: int, *, required: bool = True,
               field: str | None = None) -> str:
    """A non-empty string within the length limit, line endings cleaned. Messages name the
    value as `where`; errors carry `field` (default: `where`)."""
    field = field or where
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError("nan_value", f"{where} is {value}", field)
    if not isinstance(value, str):
        raise RecordError("wrong_type", f"{where} must be text, not {_type_name(value)}", field)
    if required and not value.strip():
        raise RecordError("missing_content", f"{where} is empty", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError("lone_surrogate", f"{where} contains a lone surrogate", field) from None
    if len(value) > max_chars:
        raise RecordError("field_too_long",
                          f"{where} has {len(value):,} characters; the maximum is {max_chars:,}",
                          field)
    return clean_text(value)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


# --- metadata shared by all JSON formats -----------------------------------------------------

def _metadata(record: dict, max_chars: int,
              columns: dict[str, str] | None = None) -> dict[str, Any]:
    """Label, tags and external id; `columns` names the user's column of each (mapped input),
    which errors then name instead of the key.

    A record that carries a `curate` object (what `curate export` writes) takes them from it:
    `curate.label`, `curate.tags`, `curate.external_id`; errors then name those fields. Other
    records (and files exported before that object existed) give them at top level."""
    ours = record.get("curate") if columns is None else None
    if ours is not None and not isinstance(ours, dict):
        raise RecordError("wrong_type", f"curate must be an object (Curate's fields, as "
                          f"`curate export` writes them), not {_type_name(ours)}", "curate")
    if isinstance(ours, dict):
        record = {"label": ours.get("label"), "tags": ours.get("tags"),
                  "id": ours.get("external_id")}
        columns = {"label": "curate.label", "tags": "curate.tags", "id": "curate.external_id"}

        def at(key: str) -> tuple[str, str]:
            return columns[key], columns[key]
    else:
        def at(key: str) -> tuple[str, str]:  # (how a message names it, the error's field)
            name = (columns or {}).get(key)
            return (f"column `{name}` ({key})", name) if name else (key, key)

    label = record.get("label")
    where, name = at("label")
    if isinstance(label, float) and not math.isfinite(label):
        raise RecordError("nan_value", f"{where} is {label}", name)
    if label is not None:
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise RecordError("wrong_type", f"{where} must be text, not {_type_name(label)}",
                              name)
        label = check_text(str(label), where, max_chars, required=False,
                           field=name).strip() or None
    tags = record.get("tags")
    if tags is None:
        tags = ()
    elif isinstance(tags, str):
        tags = split_tags(tags)
    elif isinstance(tags, (list, tuple)) and all(isinstance(t, str) for t in tags):
        tags = tuple(dict.fromkeys(t.strip() for t in tags if t.strip()))
    else:
        where, name = at("tags")
        raise RecordError("wrong_type", f"{where} must be a list of text", name)
    ext = record.get("id")
    if ext == "":
        ext = None
    if ext is not None:
        where, name = at("id")
        if isinstance(ext, bool) or not isinstance(ext, (str, int)):
            raise RecordError("wrong_type", f"{where} must be text or a number, not "
                                            f"{_type_name(ext)}", name)
        ext = check_text(str(ext), where, max_chars, field=name)
    return {"label": label, "tags": tuple(tags), "external_id": ext}


def split_tags(text: str) -> tuple[str, ...]:
    """Tags written in one cell: separated by commas, semicolons or pipes."""
    for sep in ";|":
        text = text.replace(sep, ",")
    return tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


# --- input formats ---------------------------------------------------------------------------

def detect_format(record: dict) -> str:
    """Which input format a JSON record is in, from its keys."""
    from curation.preference import detect as preference_kind

    if (kind := preference_kind(record)) is not None:  # before the keys they share
        return kind
    if "messages" in record:
        return "openai"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record or "output" in record:
        return "alpaca"
    if "prompt" in record or "completion" in record:
        return "prompt_completion"
    raise RecordError("unknown_format",
                      "no `messages`, `conversations`, `instruction`/`output` or "
                      f"`prompt`/`completion` key (keys: {', '.join(sorted(record)) or 'none'})")


def to_draft(record: Any, fmt: str = "auto", mapping: dict[str, str] | None = None,
             max_chars: int = DEFAULT_MAX_FIELD_CHARS, *, unanswered: bool = False,
             drop_media: bool = False,
             alpaca_separator: str = DEFAULT_ALPACA_SEPARATOR) -> Draft:
    """Turn one parsed record into a validated Draft, or raise RecordError. `unanswered`:
    a record without an answer becomes a conversation ending with its user turn.

    Without it, a record refused only for lacking its answer (it would pass with it) gets
    UNANSWERED_HINT appended to its message: found by validating it again, which costs
    time on rejected records only.

    `drop_media`: a record with `images`/`videos`/`audios` (or image/audio content parts) is
    imported without them, its `<image>`/`<video>`/`<audio>` placeholders removed; without it
    such a record is refused as `unsupported_modality`. `alpaca_separator` joins an Alpaca
    `instruction` and a non-blank `input` into the user turn."""
    try:
        return _to_draft(record, fmt, mapping, max_chars, unanswered, drop_media,
                         alpaca_separator)
    except RecordError as err:
        if unanswered or err.code == "unsupported_modality":
            raise
        try:
            _to_draft(record, fmt, mapping, max_chars, True, drop_media, alpaca_separator)
        except RecordError:
            raise err from None
        raise RecordError(err.code, err.message + UNANSWERED_HINT, err.field) from None


def _to_draft(record: Any, fmt: str, mapping: dict[str, str] | None, max_chars: int,
              unanswered: bool, drop_media: bool = False,
              alpaca_separator: str = DEFAULT_ALPACA_SEPARATOR) -> Draft:
    if not isinstance(record, dict):
        raise RecordError("data_type", f"the record is {_type_name(record)}, not an object")
    if fmt == "mapped":
        return from_mapped(record, mapping or {}, max_chars, unanswered)
    if fmt in ("auto", "openai") and "messages" in record:
        draft = _openai_fast(record, max_chars)
        if draft is not None:
            return draft
    media = _media(record, drop_media)
    if fmt == "auto":
        fmt = detect_format(record)
    if fmt in ("preference", "kto"):
        from curation import preference

        return preference.to_draft(record, fmt, max_chars)
    if fmt == "alpaca":
        messages = from_alpaca(record, max_chars, unanswered, separator=alpaca_separator)
    elif fmt in ("openai", "sharegpt"):
        reader = {"openai": from_openai, "sharegpt": from_sharegpt}[fmt]
        messages = reader(record, max_chars, unanswered, drop_media=drop_media)
    else:
        messages = from_prompt_completion(record, max_chars, unanswered)
    if media:
        messages = _drop_placeholders(messages, max_chars, unanswered)
    return Draft(messages=messages, **_metadata(record, max_chars))


def _media(record: dict, drop_media: bool) -> bool:
    """Whether the record carries media (`images`, `videos`, `audios`, non-empty) to drop;
    unsupported_modality when it does and `drop_media` is off."""
    found = [k for k in _messages.MEDIA_KEYS if record.get(k) not in (None, "", [], {})]
    if found and not drop_media:
        raise RecordError("unsupported_modality", f"the record has {' and '.join(found)}; "
                          "Curate keeps text only (import with --drop-media to keep the text "
                          "and drop the media)", found[0])
    return bool(found)


def _drop_placeholders(messages: list[dict[str, Any]], max_chars: int,
                       unanswered: bool) -> list[dict[str, Any]]:
    """The conversation with its media placeholders removed, checked again (a turn that was
    only `<image>` is now empty: missing_content)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            m = {**m, "content": _messages.strip_media_placeholders(content)}
        elif isinstance(content, list):
            m = {**m, "content": [{**p, "text": _messages.strip_media_placeholders(p["text"])}
                                  if p.get("type") == "text" else p for p in content]}
        out.append(m)
    return check_conversation(out, max_chars, unanswered=unanswered)


def _openai_fast(record: dict, max_chars: int) -> Draft | None:
    """The Draft of an OpenAI chat record in the common, clean shape, or None for anything else.

    Same result as the general path (`from_openai` and `_metadata`) wherever it returns one: it
    only accepts what that path accepts unchanged (plain str fields, no CR, no lone surrogates,
    roles in order, list tags), and leaves every other record, and so every error, to it. It is
    about twice as fast, which matters on an import of many records.
    """
    messages = record["messages"]
    if type(messages) is not list or not messages or any(
            k in record for k in _messages.CONVERSATION_KEYS + _messages.MEDIA_KEYS):
        return None
    cleaned, roles = [], []
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return None
        role, content = message.get("role"), message.get("content")
        if (type(content) is not str or role not in _ROLES or len(content) > max_chars
                or "\r" in content or not content.strip() or not _encodable(content)):
            return None
        cleaned.append({"role": role, "content": content})
        roles.append(role)
    turns = roles[1:] if roles[0] == "system" else roles
    half = len(turns) // 2
    if (not turns or len(turns) % 2 or turns[0::2].count("user") != half
            or turns[1::2].count("assistant") != half):
        return None
    ours = record.get("curate")  # our own export: Curate's fields under one key
    if ours is None:
        label, tags, ext = record.get("label"), record.get("tags"), record.get("id")
    elif type(ours) is dict:
        label, tags, ext = ours.get("label"), ours.get("tags"), ours.get("external_id")
    else:
        return None
    if label is not None:
        if (type(label) is not str or len(label) > max_chars or "\r" in label
                or not _encodable(label)):
            return None
        label = label.strip() or None
    if tags is None:
        tags = ()
    elif type(tags) is list and all(type(t) is str for t in tags):
        tags = tuple(dict.fromkeys(t.strip() for t in tags if t.strip()))
    else:
        return None
    if ext == "":
        ext = None
    elif ext is not None and (type(ext) is not str or len(ext) > max_chars or "\r" in ext
                              or not ext.strip() or not _encodable(ext)):
        return None
    return Draft(messages=cleaned, label=label, tags=tags, external_id=ext)


def _encodable(text: str) -> bool:
    """True unless the text holds a lone surrogate (ASCII text is checked in constant time)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _blank(value: Any) -> bool:
    """No answer given: the value is missing (None) or blank text."""
    return value is None or (isinstance(value, str) and not value.strip())


def from_openai(record: dict, max_chars: int, unanswered: bool = False, *,
                drop_media: bool = False) -> list[dict[str, Any]]:
    """OpenAI chat: `messages`, with the top-level `tools` / `functions` /
    `parallel_tool_calls` kept on the first message (see `curation.messages`)."""
    if "messages" not in record:
        raise RecordError("missing_messages_list", "no `messages` key", "messages")
    return check_conversation(_with_conversation_keys(record, record["messages"], "messages"),
                              max_chars, unanswered=unanswered, drop_media=drop_media)


def _with_conversation_keys(record: dict, messages: Any, where: str) -> Any:
    """`messages` with the record's top-level `tools` / `functions` / `parallel_tool_calls`
    moved onto its first message, where Curate keeps them (see `curation.messages`);
    `messages` as given when there are none or it is not a list of messages."""
    top = {k: record[k] for k in _messages.CONVERSATION_KEYS
           if k in record and record[k] is not None}
    if top and isinstance(messages, list) and messages and isinstance(messages[0], dict):
        both = sorted(set(top) & set(messages[0]))
        if both:
            raise RecordError("wrong_type", f"`{both[0]}` is given both at the top level and in "
                              f"{where}[0]; keep one", both[0])
        messages = [{**messages[0], **top}, *messages[1:]]
    return messages


def from_alpaca(record: dict, max_chars: int, unanswered: bool = False, *,
                separator: str = DEFAULT_ALPACA_SEPARATOR) -> list[dict[str, str]]:
    """The user turn is `instruction`, or `instruction + separator + input` when `input` is
    not blank (LLaMA-Factory's default: one newline)."""
    no_answer = unanswered and _blank(record.get("output"))
    for key in ("instruction",) if no_answer else ("instruction", "output"):
        if key not in record:
            raise RecordError("missing_field", f"Alpaca record has no `{key}`", key)
    instruction = check_text(record["instruction"], "instruction", max_chars)
    if not no_answer:
        check_text(record["output"], "output", max_chars)
    if record.get("system"):
        check_text(record["system"], "system", max_chars)
    extra_input = record.get("input") or ""
    extra_input = check_text(extra_input, "input", max_chars, required=False)
    prompt = f"{instruction}{separator}{extra_input}" if extra_input.strip() else instruction
    messages = []
    if record.get("system"):
        messages.append({"role": "system", "content": record["system"]})
    history = record.get("history") or []
    if not isinstance(history, list):
        raise RecordError("wrong_type", "history must be a list of [instruction, output] pairs",
                          "history")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise RecordError("wrong_type", f"history[{i}] must be a [instruction, output] pair",
                              f"history[{i}]")
        messages += [{"role": "user", "content": pair[0]},
                     {"role": "assistant", "content": pair[1]}]
    messages.append({"role": "user", "content": prompt})
    if not no_answer:
        messages.append({"role": "assistant", "content": record["output"]})
    return check_conversation(messages, max_chars, unanswered=no_answer)


def from_prompt_completion(record: dict, max_chars: int,
                           unanswered: bool = False) -> list[dict[str, str]]:
    """TRL's prompt-completion, text or message lists; a top-level `tools` (as TRL's
    SFTTrainer reads it) is kept with the conversation, as for openai."""
    completion = record.get("completion")
    no_answer = unanswered and (_blank(completion) or completion == [])
    for key in ("prompt",) if no_answer else ("prompt", "completion"):
        if key not in record:
            raise RecordError("missing_field", f"prompt/completion record has no `{key}`", key)
    prompt = record["prompt"]
    if no_answer:
        if isinstance(prompt, list):
            return check_conversation(_with_conversation_keys(record, prompt, "prompt"),
                                      max_chars, "prompt", unanswered=True)
        check_text(prompt, "prompt", max_chars)
        return check_conversation(_with_conversation_keys(
            record, [{"role": "user", "content": prompt}], "prompt"), max_chars,
            unanswered=True)
    if isinstance(prompt, list) != isinstance(completion, list):
        raise RecordError("wrong_type", "prompt and completion must both be text or both be "
                                        "message lists", "completion")
    if isinstance(prompt, list):
        if not completion:
            raise RecordError("missing_content", "completion must hold an assistant turn",
                              "completion")
        messages = check_conversation(_with_conversation_keys(record, prompt + completion,
                                                              "prompt"),
                                      max_chars, "prompt+completion")
        if any(m.get("role") != "assistant" for m in completion if isinstance(m, dict)):
            raise RecordError("invalid_turn_order", "completion may hold assistant turns only",
                              "completion")
        return messages
    check_text(prompt, "prompt", max_chars)
    check_text(completion, "completion", max_chars)
    return check_conversation(_with_conversation_keys(
        record, [{"role": "user", "content": prompt},
                 {"role": "assistant", "content": completion}], "prompt"), max_chars)


def from_sharegpt(record: dict, max_chars: int, unanswered: bool = False, *,
                  drop_media: bool = False) -> list[dict[str, Any]]:
    """ShareGPT `conversations` (`from`/`value`), with LLaMA-Factory's tool turns: a
    `function_call` turn (its value the JSON `{"name", "arguments"}`, or a list of them)
    becomes an assistant turn with OpenAI `tool_calls` (ids `call_<turn>_<k>`, arguments as
    JSON text), an `observation` turn a `tool` reply to the call(s) before it, and a `tools`
    column (JSON text or a list of function definitions) the conversation's `tools`. Stored
    so, the conversation exports as valid OpenAI fine-tuning data and trains through the same
    path as OpenAI tool calls; the turn texts are kept exactly."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RecordError("missing_messages_list", "`conversations` must be a non-empty list",
                          "conversations")
    messages: list[dict[str, Any]] = []
    if record.get("system"):
        check_text(record["system"], "system", max_chars)
        messages.append({"role": "system", "content": record["system"]})
    calls: list[str] = []  # ids of the last function_call turn's calls not yet answered
    for i, turn in enumerate(turns):
        at = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise RecordError("wrong_type", f"{at} must be an object with from and value", at)
        for key in ("from", "value"):
            if key not in turn:
                raise RecordError("message_missing_key", f"{at} has no `{key}`", f"{at}.{key}")
        extra = sorted(set(turn) - {"from", "value"})
        if extra:
            raise RecordError("message_unrecognized_key",
                              f"{at} has unrecognized key(s) {', '.join(extra)}", at)
        source = turn["from"] if isinstance(turn["from"], str) else None
        role = _SHAREGPT_ROLES.get(source) if source else None
        if source == "function_call":
            message = _sharegpt_call(turn["value"], at, i, max_chars)
            calls = [c["id"] for c in message["tool_calls"]]
            messages.append(message)
            continue
        if source == "observation":
            check_text(turn["value"], f"{at}.value", max_chars)
            call_id = calls.pop(0) if len(calls) > 1 else calls[0] if calls else f"call_{i}"
            messages.append({"role": "tool", "content": turn["value"], "tool_call_id": call_id})
            continue
        if role is None:
            raise RecordError("unrecognized_role", f"{at}.from is {turn['from']!r}; expected "
                                                   "system, human, gpt, function_call or "
                                                   "observation", f"{at}.from")
        check_text(turn["value"], f"{at}.value", max_chars)
        messages.append({"role": role, "content": turn["value"]})
    tools = _sharegpt_tools(record.get("tools"))
    if tools:
        messages[0] = {**messages[0], "tools": tools}
    return check_conversation(messages, max_chars, "conversations", unanswered=unanswered,
                              drop_media=drop_media)


def _sharegpt_call(value: Any, at: str, turn: int, max_chars: int) -> dict[str, Any]:
    """An assistant turn with `tool_calls` from a ShareGPT `function_call` turn's value."""
    check_text(value, f"{at}.value", max_chars)
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise RecordError("wrong_type", f'{at} is a function_call whose value is not JSON '
                          '{"name": ..., "arguments": ...}', f"{at}.value") from None
    parsed = parsed if isinstance(parsed, list) else [parsed]
    tool_calls = []
    for k, call in enumerate(parsed):
        if not (isinstance(call, dict) and isinstance(call.get("name"), str)
                and call["name"].strip()):
            raise RecordError("wrong_type", f'{at} is a function_call without a "name"',
                              f"{at}.value")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        tool_calls.append({"id": f"call_{turn}_{k}", "type": "function",
                           "function": {"name": call["name"], "arguments": arguments}})
    return {"role": "assistant", "content": None, "tool_calls": tool_calls}


def _sharegpt_tools(value: Any) -> list[dict[str, Any]]:
    """The `tools` column as OpenAI tools: JSON text or a list of function definitions (each
    wrapped as `{"type": "function", "function": ...}` unless it already is a tool)."""
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RecordError("wrong_type", "`tools` is not JSON (a list of function "
                              "definitions)", "tools") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RecordError("wrong_type", "`tools` must be a list of function definitions", "tools")
    return [t if "type" in t and "function" in t else {"type": "function", "function": t}
            for t in value]


def from_mapped(record: dict, mapping: dict[str, str], max_chars: int,
                unanswered: bool = False) -> Draft:
    """A CSV row or JSON object with user-named columns (`prompt=text,response=answer,...`).

    Every error names the user's column (`query`), never an internal field
    (`messages[0].content`): the mapped texts are checked column by column, and the
    conversation they make (optional system, user, assistant) then meets the turn order rule.
    `unanswered`: no response column, a record without its key or an empty cell gives a
    conversation ending with the user turn.
    """
    def column(target: str, required: bool) -> Any:
        name = mapping.get(target)
        if name is None:
            return None
        if name not in record:
            if required:
                raise RecordError("missing_field", f"column `{name}` (mapped to {target}) is "
                                                   "missing", name)
            return None
        return record[name]

    def text(target: str, value: Any) -> str:
        name = mapping[target]
        return check_text(value, f"column `{name}` ({target})", max_chars, field=name)

    messages = []
    system = column("system", False)
    if system not in (None, ""):
        messages.append({"role": "system", "content": text("system", system)})
    prompt = column("prompt", True)
    response = column("response", not unanswered)
    messages.append({"role": "user", "content": text("prompt", prompt)})
    if not (unanswered and _blank(response)):
        messages.append({"role": "assistant", "content": text("response", response)})
    label, tags, ext = column("label", False), column("tags", False), column("id", False)
    meta = _metadata({"label": label if label != "" else None,
                      "tags": tags,
                      "id": ext if ext != "" else None}, max_chars, mapping)
    return Draft(messages=messages, **meta)


def parse_mapping(text: str | None, *, unanswered: bool = False) -> dict[str, str]:
    """`prompt=text,response=answer,label=category` -> {target: column}; targets are checked.
    `unanswered`: the response may be left out (prompts that need an answer)."""
    from curation.errors import InvalidValue

    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        target, sep, column = part.partition("=")
        target, column = target.strip(), column.strip()
        if not sep or not column:
            raise InvalidValue(f"mapping entry {part!r} must look like TARGET=COLUMN")
        if target not in MAPPING_TARGETS:
            raise InvalidValue(f"mapping target {target!r} is not one of "
                               f"{', '.join(MAPPING_TARGETS)}")
        mapping[target] = column
    if mapping:
        check_mapping(mapping, unanswered=unanswered)
    return mapping


def check_mapping(mapping: dict[str, str], *, unanswered: bool = False) -> None:
    """InvalidValue unless the mapping names a prompt column and, without `unanswered`, a
    response column."""
    from curation.errors import InvalidValue

    if unanswered and "prompt" not in mapping:
        raise InvalidValue("a mapping needs at least prompt=COLUMN")
    if not unanswered and not {"prompt", "response"} <= set(mapping):
        raise InvalidValue("a mapping needs at least prompt=COLUMN and response=COLUMN (with "
                           "--unanswered, prompt=COLUMN alone imports prompts that need an "
                           "answer)")


# --- output formats --------------------------------------------------------------------------
#
# Curate's own fields ride under one key, `curate`, never at top level: TRL reserves `label`
# (KTO) and refuses `{"messages", "label"}`, and `metadata` is no key of OpenAI's schema.
# `plain=True` leaves them out, so a file holds only the keys its consumer documents (OpenAI,
# Bedrock and Vertex uploads). Importing a file with the object restores external id, label
# and tags from it (`_metadata`).

CURATE_KEY = "curate"
# The export formats that import reads back; bedrock and vertex are for uploads only.
ROUND_TRIP_FORMATS: tuple[str, ...] = ("openai", "alpaca", "prompt_completion")
BEDROCK_SCHEMA_VERSION = "bedrock-conversation-2024"
OPENAI_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
# A LLaMA-Factory `dataset_info.json` entry per export format it reads; the others have none.
LLAMA_FACTORY_ENTRIES: dict[str, dict[str, Any]] = {
    "openai": {"formatting": "sharegpt", "columns": {"messages": "messages"},
               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                        "assistant_tag": "assistant", "system_tag": "system"}},
    "alpaca": {"formatting": "alpaca",
               "columns": {"prompt": "instruction", "query": "input", "response": "output",
                           "system": "system", "history": "history"}},
}


def _common(external_id: str | None, label: str | None, tags: tuple[str, ...] | list[str],
            metadata: dict[str, Any], plain: bool = False) -> dict[str, Any]:
    """Curate's fields of one exported line: `{"curate": {...}}`, or `{}` when `plain`."""
    if plain:
        return {}
    return {CURATE_KEY: {"external_id": external_id, "label": label, "tags": list(tags),
                         **metadata}}


def _system_and_turns(messages: list[dict[str, str]],
                      fmt: str) -> tuple[str | None, list[dict]]:
    """The system text (or None) and the other turns of a text-only conversation. Formats
    whose turns are text (alpaca, bedrock, vertex) refuse anything else (a tool call, a
    `tool` or `developer` turn, content parts, a per-message `weight` or `name`) with
    InvalidValue, rather than drop it: the openai export keeps such turns as they are."""
    for i, m in enumerate(messages):
        role = m.get("role")
        if (set(m) != {"role", "content"} or not isinstance(m["content"], str)
                or role not in ("system", "user", "assistant") or (role == "system" and i > 0)):
            from curation.errors import InvalidValue

            defined = sorted(set(m) & set(_messages.CONVERSATION_KEYS))
            if defined:
                raise InvalidValue(f"the conversation defines {', '.join(defined)} (tool "
                                   f"definitions), which the {fmt} export cannot hold (it "
                                   "writes text turns only); export as openai instead")
            what = ", ".join(sorted(set(m) - {"role", "content"})) or (
                "content that is not text" if not isinstance(m.get("content"), str)
                else f"a {role} turn")
            raise InvalidValue(f"turn {i} ({role}) has {what}, which the {fmt} export cannot "
                               "hold (it writes text turns only); export as openai instead")
    if messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return None, messages


def to_openai(messages: list[dict[str, str]], *, external_id=None, label=None, tags=(),
              metadata=None, plain: bool = False) -> dict[str, Any]:
    messages, top = _messages.split_conversation(messages)  # `tools` back at the top level
    return {"messages": messages, **top,
            **_common(external_id, label, tags, metadata or {}, plain)}


def to_alpaca(messages: list[dict[str, str]], *, external_id=None, label=None, tags=(),
              metadata=None, plain: bool = False) -> dict[str, Any]:
    """`system` and `history` are always written ("" and [] when there are none):
    LLaMA-Factory fails with KeyError('history') on a file where no row has them. `input` is
    "": the last user turn is `instruction` exactly as stored, whatever separator joined it."""
    system, turns = _system_and_turns(messages, "alpaca")
    pairs = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns), 2)]
    out: dict[str, Any] = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1],
                           "system": system or "", "history": pairs[:-1]}
    return {**out, **_common(external_id, label, tags, metadata or {}, plain)}


def to_prompt_completion(messages: list[dict[str, str]], *, external_id=None, label=None,
                         tags=(), metadata=None, plain: bool = False) -> dict[str, Any]:
    """TRL's conversational prompt-completion form; `tools` at the top level, where TRL's
    SFTTrainer reads them."""
    messages, top = _messages.split_conversation(messages)
    return {"prompt": messages[:-1], "completion": messages[-1:], **top,
            **_common(external_id, label, tags, metadata or {}, plain)}


def to_bedrock(messages: list[dict[str, str]], *, external_id=None, label=None, tags=(),
               metadata=None, plain: bool = False) -> dict[str, Any]:
    """Amazon Bedrock's conversation format (`bedrock-conversation-2024`, Nova fine-tuning):
    `system` (only when there is a system turn) and `messages` of text content blocks."""
    system, turns = _system_and_turns(messages, "bedrock")
    out: dict[str, Any] = {"schemaVersion": BEDROCK_SCHEMA_VERSION}
    if system is not None:
        out["system"] = [{"text": system}]
    out["messages"] = [{"role": m["role"], "content": [{"text": m["content"]}]} for m in turns]
    return {**out, **_common(external_id, label, tags, metadata or {}, plain)}


def to_vertex(messages: list[dict[str, str]], *, external_id=None, label=None, tags=(),
              metadata=None, plain: bool = False) -> dict[str, Any]:
    """Vertex AI Gemini supervised tuning: `systemInstruction` (only when there is a system
    turn) and `contents`, whose roles are `user` and `model`, each with text `parts`."""
    system, turns = _system_and_turns(messages, "vertex")
    out: dict[str, Any] = {}
    if system is not None:
        out["systemInstruction"] = {"role": "system", "parts": [{"text": system}]}
    out["contents"] = [{"role": "model" if m["role"] == "assistant" else "user",
                        "parts": [{"text": m["content"]}]} for m in turns]
    return {**out, **_common(external_id, label, tags, metadata or {}, plain)}


def llama_factory_reads(messages: list[dict[str, Any]]) -> bool:
    """Whether LLaMA-Factory's `sharegpt` reading with OpenAI's tags (the openai export's
    entry) takes this conversation: text turns of the roles system (first only), user and
    assistant. A tool call, a tool reply or a developer turn it skips ("Invalid role tag
    ... Skipping this abnormal example"); content parts are not text."""
    return all(isinstance(m.get("content"), str) and not m.get("tool_calls")
               and (m["role"] in ("user", "assistant") or (i == 0 and m["role"] == "system"))
               for i, m in enumerate(messages))


def llama_factory_entry(fmt: str, file_name: str) -> dict[str, Any] | None:
    """The LLaMA-Factory `dataset_info.json` entry for an export file, or None for a format
    LLaMA-Factory does not read (prompt_completion, bedrock, vertex)."""
    entry = LLAMA_FACTORY_ENTRIES.get(fmt)
    return None if entry is None else {"file_name": file_name, **copy.deepcopy(entry)}


WRITERS = {"openai": to_openai, "alpaca": to_alpaca, "prompt_completion": to_prompt_completion,
           "bedrock": to_bedrock, "vertex": to_vertex}
