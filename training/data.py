"""Training data: a run folder's `train.jsonl` turned into token ids, loss masks and batches.

Design decisions:
- The input is the OpenAI chat JSONL that `curation.exporter.write_snapshot` writes (one
  `{"messages": [...]}` per line); nothing here opens the store.
- Each conversation is rendered with the base model's own chat template, so training sees
  exactly what generation will see (the default system prompt included where the template
  adds one).
- Loss only on what the assistant says: `labels` is -100 everywhere except the assistant turns'
  tokens, including the end-of-turn token (`<|im_end|>`) closing each one, so the model learns
  to stop. The spans are found in characters, not tokens: the template renders the
  conversation prefix by prefix (up to the assistant's header, then through its turn), and
  the full text is tokenized once with offsets. A token is trained on only if it lies
  wholly inside a span; this stays right where BPE merges across a boundary, unlike
  comparing token lists of prefixes. `return_assistant_tokens_mask` is not used: it needs a
  `{% generation %}` block that SmolLM2's template (like most) lacks. A template that does not
  render prefixes as prefixes of the whole is refused with a clear message.
- Tool calls, tool replies, content parts and `weight` (OpenAI's extras, kept by the store,
  see `curation.messages`): `weight: 0` assistant turns are context, masked from the loss
  like user turns; the other assistant turns (tool calls included) are trained on. A
  template that supports tools (its source mentions `tool_calls`) gets the messages and
  `tools=` as they are; SmolLM2's (and any other text-only template) gets them rendered as
  text, Hermes/Qwen style (`to_text_messages`; docs/formats.md states the rendering):
  tools listed in the system turn between `<tools>` tags, each call as
  `<tool_call>{"name", "arguments"}</tool_call>` after the turn's text, replies as `tool`
  turns, `developer` as `system`, text parts joined by newlines.
- Truncation keeps the start (the prompt) and cuts the end; a conversation left with no
  assistant token is skipped and counted.
- Batches by length: examples are sorted by length and cut into batches of `batch_size`
  neighbours, and the order of the batches is shuffled per epoch with `seed + epoch`. Padding
  stays small, and the plan is a pure function of (lengths, batch size, seed, epoch), so a
  resumed run rebuilds it and continues at the saved batch index.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from curation.errors import EmptyTrainingSet, InvalidValue
from curation.messages import CONVERSATION_KEYS, is_rich, message_text, split_conversation

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One conversation as token ids, with labels masked to the assistant's tokens."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def target_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass(frozen=True)
class TrainData:
    """The encoded examples of a run and counts describing them."""

    examples: list[Encoded]
    report: dict[str, Any]

    def lengths(self) -> list[int]:
        return [len(e.input_ids) for e in self.examples]


def read_conversations(path: str | Path) -> list[list[dict[str, str]]]:
    """The `messages` of every line of an OpenAI chat JSONL file; a bad line names itself."""
    path = Path(path)
    conversations = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidValue(f"{path.name} line {number} is not JSON: {exc}") from None
            messages = record.get("messages") if isinstance(record, dict) else None
            if (not isinstance(messages, list) or not messages
                    or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                               and isinstance(m.get("content"), (str, list, type(None)))
                               for m in messages)):
                raise InvalidValue(f"{path.name} line {number} has no valid `messages` list "
                                   "(role strings, text content)")
            top = {k: record[k] for k in CONVERSATION_KEYS if k in record}
            if top:  # the export lifts the conversation's tools to the top level
                messages = [{**messages[0], **top}, *messages[1:]]
            conversations.append(messages)
    return conversations


def supports_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders tool calls itself."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return isinstance(template, str) and "tool_calls" in template


def to_text_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """A conversation with tool calls, tool replies and text parts as plain {role, content}
    text turns, for a chat template without tool support (see the module docstring)."""
    messages, top = split_conversation(messages)
    out = []
    for m in messages:
        role = "system" if m["role"] == "developer" else m["role"]
        text = message_text(m)
        calls = [orjson.dumps({"name": (c.get("function") or {}).get("name"),
                               "arguments": _arguments(c.get("function") or {})}).decode()
                 for c in m.get("tool_calls") or []]
        if isinstance(m.get("function_call"), dict):
            calls.append(orjson.dumps({"name": m["function_call"].get("name"),
                                       "arguments": _arguments(m["function_call"])}).decode())
        parts = [text] if text else []
        parts += [f"<tool_call>\n{call}\n</tool_call>" for call in calls]
        out.append({"role": role, "content": "\n".join(parts)})
    tools = (top.get("tools") or []) + [{"type": "function", "function": f}
                                        for f in top.get("functions") or []]
    if tools:
        block = "<tools>\n" + "\n".join(orjson.dumps(t).decode() for t in tools) + "\n</tools>"
        if out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{block}"
                      if out[0]["content"] else block}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def _arguments(function: dict[str, Any]) -> Any:
    """Arguments as the JSON value they hold (text that is not JSON stays text)."""
    arguments = function.get("arguments", "")
    if isinstance(arguments, str):
        try:
            return orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return arguments
    return arguments


def template_input(tokenizer, messages: list[dict[str, Any]]
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages (and keyword arguments, e.g. `tools=`) to give `apply_chat_template`."""
    if not is_rich(messages):
        return messages, {}
    if supports_tools(tokenizer):
        plain, top = split_conversation(messages)
        plain = [{k: v for k, v in m.items() if k != "weight"} for m in plain]
        return plain, ({"tools": top["tools"]} if top.get("tools") else {})
    return to_text_messages(messages), {}


def render_chat(tokenizer, messages: list[dict[str, Any]], *,
                generation_prompt: bool) -> str:
    """The conversation as the chat template renders it (tool turns as `template_input`
    gives them)."""
    messages, kwargs = template_input(tokenizer, messages)
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation_prompt, **kwargs)


def _render(tokenizer, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    return render_chat(tokenizer, messages, generation_prompt=generation_prompt)


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the (start, end) character spans of the assistant's
    turns that are trained on (not `weight: 0`), each ending after the end-of-turn token."""
    if is_rich(messages) and not supports_tools(tokenizer):
        # rendered as text turns: the same turns, one more (a system turn) when the tools
        # needed one; `weight` is read from the original messages
        shift = len(to_text_messages(messages)) - len(messages)
        weights = [None] * shift + [m.get("weight") for m in messages]
        messages = to_text_messages(messages)
    else:
        weights = [m.get("weight") for m in messages]
    text = _render(tokenizer, messages, generation_prompt=False)
    eos = tokenizer.eos_token or ""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or weights[i] == 0:
            continue
        if i == 0:
            raise InvalidValue("a conversation cannot start with an assistant turn")
        header = _render(tokenizer, messages[:i], generation_prompt=True)
        through = _render(tokenizer, messages[:i + 1], generation_prompt=False)
        if not (text.startswith(header) and text.startswith(through)
                and len(header) <= len(through)):
            raise InvalidValue("the base model's chat template does not render a conversation "
                               "prefix as a prefix of the whole; its assistant turns cannot be "
                               "located for the loss mask")
        turn = text[len(header):len(through)]
        if eos and eos in turn:
            end = len(header) + turn.rindex(eos) + len(eos)
        else:
            end = len(header) + len(turn.rstrip())
        spans.append((len(header), end))
    return text, spans


def encode(tokenizer, messages: list[dict[str, str]], max_seq_length: int, *,
           skip_assistant_turns: int = 0) -> Encoded:
    """Token ids of the rendered conversation, cut to `max_seq_length`, with labels equal to
    the ids on the assistant's tokens and IGNORE_INDEX elsewhere (and on the first
    `skip_assistant_turns` assistant turns: those of a preference pair's prompt)."""
    text, spans = assistant_spans(tokenizer, messages)
    spans = spans[skip_assistant_turns:]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    s = 0
    for k, (start, end) in enumerate(offsets):
        while s < len(spans) and spans[s][1] <= start:
            s += 1
        if s < len(spans) and end > start and spans[s][0] <= start and end <= spans[s][1]:
            labels[k] = ids[k]
    truncated = len(ids) > max_seq_length
    return Encoded(ids[:max_seq_length], labels[:max_seq_length], truncated)


def load_train_data(path: str | Path, tokenizer, max_seq_length: int) -> TrainData:
    """Encode every conversation of `path`; EmptyTrainingSet when nothing is left to train."""
    conversations = read_conversations(path)
    if not conversations:
        raise EmptyTrainingSet(f"{Path(path).name} has no examples: the snapshot selected "
                               "none (accept some train examples first)")
    examples, skipped, truncated = [], 0, 0
    for messages in conversations:
        item = encode(tokenizer, messages, max_seq_length)
        truncated += item.truncated
        if item.target_tokens == 0:
            skipped += 1
            continue
        examples.append(item)
    if not examples:
        raise EmptyTrainingSet(f"none of the {len(conversations)} examples has an assistant "
                               f"token within max_seq_length={max_seq_length}; raise it")
    lengths = [len(e.input_ids) for e in examples]
    report = {"examples": len(examples), "skipped_no_target": skipped,
              "truncated": truncated, "tokens": sum(lengths),
              "target_tokens": sum(e.target_tokens for e in examples),
              "max_length": max(lengths), "mean_length": round(sum(lengths) / len(lengths), 1)}
    return TrainData(examples, report)


def plan_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of example indices for one epoch: length-sorted neighbours, batch order
    shuffled with `seed + epoch` (ties in length broken by index, so the plan is stable)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    random.Random(seed * 100_003 + epoch).shuffle(batches)
    return batches


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of padded positions in a batch plan (0 = no waste)."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths) / padded if padded else 0.0


def collate(examples: list[Encoded], pad_token_id: int) -> dict[str, Any]:
    """Right-padded tensors: input_ids, attention_mask and labels (IGNORE_INDEX on padding)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
