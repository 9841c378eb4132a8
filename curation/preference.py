"""Preference data: examples with two answers to one prompt, for DPO-style training.

A preference pair is a prompt (the turns up to the answer), the chosen answer and the
rejected one. Training (`training/dpo.py`) reads pairs through this type only, so the way the
store keeps them can change without touching the trainer.

Design decisions:
- A preference example is an ordinary example whose `messages` are the prompt plus the
  CHOSEN continuation, with the rejected continuation kept beside it (`rejected`, JSON turns)
  and `kind = 'preference'`. Review, search, the duplicate and leakage checks and an SFT
  export therefore read a pair as the conversation it teaches, unchanged; only the preference
  exports, `preference_pairs` and the Review page's side-by-side view read the rejected answer.
  A KTO record (one completion with a boolean `label`, desirable or not) is `kind = 'kto'`
  with its flag in `desirable`. Versions, snapshots, revert and undo carry all three columns.
- The continuation is every turn after the prompt's last user turn (one assistant turn in
  Curate's conversation rule), so `prompt + chosen` and `prompt + rejected` are both valid
  conversations: each is checked with the same conversation rule as any example.
- An example's content hash covers what makes it that example: for a pair the rejected
  answer too (`example_hash`), so two pairs that share a prompt and chosen answer but reject
  different answers are both imported, not skipped as repeats; an SFT example's hash is the
  plain conversation hash as before.
- Input shapes (docs/formats.md, "Preference"): TRL's explicit prompt (`prompt`, `chosen`,
  `rejected`, each text or a message list) and implicit prompt (`chosen`/`rejected` full
  conversations or texts sharing a prefix, split where they first differ, as TRL's
  `extract_prompt` does), OpenAI's DPO form (`input.messages`, `preferred_output`,
  `non_preferred_output`), LLaMA-Factory's ranking form (ShareGPT `conversations` with
  `chosen`/`rejected` turn objects, or Alpaca `instruction`/`input` with `chosen`/`rejected`
  texts), and KTO (`prompt`, `completion`, boolean `label`; or LLaMA-Factory's `kto_tag`).
- Pairs from SME edits (`record_edit_pair`): when a reviewer changes an assistant answer that
  a model wrote (a draft, source `draft`; an accepted pre-label suggestion; or an import
  marked as model output, tag `model-output`), the edited answer is chosen and the model's
  rejected, saved as a new pending preference example (source `sme-edit`, its create event
  naming the edited example and version). Only an edit of the model's own text makes a pair
  (a second edit of the SME's text does not: its rejected side would be human-written). The
  pair is written in the edit's own transaction (`Store.update(..., then=...)`), so a crash
  stores both or neither; the workspace setting `preference_pairs_from_edits` ('on', the
  default, or 'off') turns it off.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from curation.errors import InvalidValue
from curation.messages import canonical

if TYPE_CHECKING:  # auth and the store import this module (`example_hash`): no cycle at run time
    from curation.auth import User
    from curation.formats import Draft
    from curation.store import Example, Store

Message = dict[str, Any]
KINDS: tuple[str, ...] = ("sft", "preference", "kto")
INPUT_FORMATS: tuple[str, ...] = ("preference", "kto")
OUTPUT_FORMATS: tuple[str, ...] = ("trl_preference", "openai_dpo")
MODEL_OUTPUT_TAG = "model-output"  # an imported answer a model wrote (`--model-output`)
EDIT_PAIR_SOURCE = "sme-edit"
EDIT_PAIRS_KEY = "preference_pairs_from_edits"
_EDIT_PAIR_REASON = "pair from the edit of example #{id} (version {version})"


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a chosen and a rejected continuation (each a list of assistant turns)."""

    example_id: int
    prompt: tuple[Message, ...]
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]
    split: str = "train"


# --- the shape of a pair -----------------------------------------------------------------------

def split_answer(messages: list[Message]) -> tuple[list[Message], list[Message]]:
    """(prompt, continuation): the continuation is every turn after the last user turn."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return messages[:last_user + 1], messages[last_user + 1:]


def check_rejected(messages: list[Message], rejected: Any, max_chars: int,
                   where: str = "rejected") -> list[Message]:
    """The rejected continuation of a conversation, validated: `prompt + rejected` must meet
    the conversation rule (RecordError otherwise, naming `where`)."""
    from curation.formats import RecordError, check_conversation

    if not isinstance(rejected, list) or not rejected:
        raise RecordError("missing_content", f"`{where}` must hold the rejected answer", where)
    prompt, _ = split_answer(messages)
    full = check_conversation(prompt + rejected, max_chars, where)
    return full[len(prompt):]


def example_hash(messages: list[Message], kind: str = "sft",
                 rejected: list[Message] | None = None, desirable: bool | None = None) -> str:
    """The content hash of an example: the conversation's (`formats.content_hash`) for SFT;
    for a pair or KTO record the rejected answer and the flag are part of it."""
    return hash_bytes(orjson.dumps([canonical(m) for m in messages]), kind, rejected,
                      desirable)


def hash_bytes(messages_json: bytes, kind: str, rejected: list[Message] | None,
               desirable: bool | None) -> str:
    """`example_hash` of a conversation already serialised (as the importer has it)."""
    if kind in ("sft", "", None):
        return hashlib.sha256(messages_json).hexdigest()
    extra = orjson.dumps({"kind": kind, "rejected": rejected, "desirable": desirable},
                         option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(messages_json + b"\n" + extra).hexdigest()


# --- import: recognising the shapes ------------------------------------------------------------

def detect(record: dict) -> str | None:
    """'preference' or 'kto' when a record has a preference shape's keys, else None."""
    if "chosen" in record and "rejected" in record:
        return "preference"
    if "preferred_output" in record or "non_preferred_output" in record:
        return "preference"
    if "kto_tag" in record or ("completion" in record and isinstance(record.get("label"), bool)):
        return "kto"
    return None


def to_draft(record: dict, fmt: str, max_chars: int) -> Draft:
    """A validated Draft (kind 'preference' or 'kto') of one record, or RecordError."""
    from curation.formats import Draft, RecordError, _metadata

    if fmt == "kto":
        messages, desirable = _kto(record, max_chars)
        meta = _metadata({k: v for k, v in record.items() if k != "label"}, max_chars)
        return Draft(messages=messages, kind="kto", desirable=desirable, **meta)
    if "preferred_output" in record or "non_preferred_output" in record:
        prompt, chosen, rejected, where = _openai_dpo(record)
    elif "chosen" in record and "rejected" in record:
        prompt, chosen, rejected, where = _chosen_rejected(record, max_chars)
    else:
        raise RecordError("missing_field", "a preference record needs `chosen` and `rejected` "
                          "(or OpenAI's `preferred_output` and `non_preferred_output`)",
                          "chosen")
    from curation.formats import check_conversation

    messages = check_conversation(prompt + chosen, max_chars, where[0])
    rejected = check_rejected(messages, rejected, max_chars, where[1])
    if [m["content"] for m in rejected] == [m["content"] for m in messages[len(prompt):]]:
        raise RecordError("missing_content", "the chosen and the rejected answer are the same",
                          "rejected")
    return Draft(messages=messages, kind="preference", rejected=rejected,
                 **_metadata(record, max_chars))


def _turns(value: Any, where: str, role: str = "assistant") -> list[Message]:
    """Text -> one turn of `role`; a message list as given (validated by the caller)."""
    from curation.formats import RecordError

    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value
    raise RecordError("wrong_type", f"{where} must be text or a list of messages", where)


def _sharegpt_turn(value: Any, where: str) -> Message:
    from curation.formats import _SHAREGPT_ROLES, RecordError

    if not (isinstance(value, dict) and "from" in value and "value" in value):
        raise RecordError("wrong_type", f"{where} must be a turn object with from and value",
                          where)
    role = _SHAREGPT_ROLES.get(value["from"]) if isinstance(value["from"], str) else None
    if role != "assistant":
        raise RecordError("unrecognized_role", f"{where}.from is {value['from']!r}; the "
                          "answer must be a gpt turn", f"{where}.from")
    return {"role": "assistant", "content": value["value"]}


def _chosen_rejected(record: dict, max_chars: int):
    """TRL explicit/implicit and LLaMA-Factory ranking: (prompt, chosen, rejected, where)."""
    from curation.formats import RecordError, check_text, from_alpaca, from_sharegpt

    chosen, rejected = record["chosen"], record["rejected"]
    if isinstance(chosen, list) != isinstance(rejected, list):
        raise RecordError("wrong_type", "chosen and rejected must both be text or both be "
                          "message lists", "rejected")
    if "conversations" in record:  # LLaMA-Factory ranking, ShareGPT
        prompt = from_sharegpt(record, max_chars, unanswered=True)
        return (prompt, [_sharegpt_turn(chosen, "chosen")],
                [_sharegpt_turn(rejected, "rejected")], ("conversations+chosen", "rejected"))
    if "instruction" in record:  # LLaMA-Factory ranking, Alpaca
        prompt = from_alpaca({**record, "output": None}, max_chars, unanswered=True)
        return (prompt, _turns(chosen, "chosen"), _turns(rejected, "rejected"),
                ("instruction+chosen", "rejected"))
    if "prompt" in record:  # TRL explicit prompt
        prompt = record["prompt"]
        if isinstance(prompt, str):
            check_text(prompt, "prompt", max_chars)
        return (_turns(prompt, "prompt", "user"), _turns(chosen, "chosen"),
                _turns(rejected, "rejected"), ("prompt+chosen", "prompt+rejected"))
    # TRL implicit prompt: the shared beginning is the prompt
    if isinstance(chosen, str) and isinstance(rejected, str):
        cut = _common_text_prefix(chosen, rejected)
        if not chosen[:cut].strip():
            raise RecordError("missing_content", "chosen and rejected share no prompt text at "
                              "their start (implicit prompt)", "chosen")
        return ([{"role": "user", "content": chosen[:cut]}],
                [{"role": "assistant", "content": chosen[cut:]}],
                [{"role": "assistant", "content": rejected[cut:]}], ("chosen", "rejected"))
    if isinstance(chosen, list) and isinstance(rejected, list):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        if n == 0:
            raise RecordError("missing_content", "chosen and rejected share no prompt turns "
                              "(implicit prompt)", "chosen")
        return chosen[:n], chosen[n:], rejected[n:], ("chosen", "rejected")
    raise RecordError("wrong_type", "chosen and rejected must both be text or both be message "
                      "lists", "rejected")


def _common_text_prefix(a: str, b: str) -> int:
    """Where two texts first differ, moved back before a space (TRL's `extract_prompt`)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if 0 < n < min(len(a), len(b)) + 1 and a[n - 1] == " ":
        n -= 1
    return n


def _openai_dpo(record: dict):
    from curation.formats import RecordError

    source = record.get("input")
    if not isinstance(source, dict) or "messages" not in source:
        raise RecordError("missing_messages_list", "OpenAI DPO record needs `input` with "
                          "`messages`", "input.messages")
    if source.get("tools"):
        raise RecordError("wrong_type", "input.tools (tool definitions) are not kept for "
                          "preference pairs; remove them or import the record as chat",
                          "input.tools")
    for key in ("preferred_output", "non_preferred_output"):
        if key not in record:
            raise RecordError("missing_field", f"OpenAI DPO record has no `{key}`", key)
    return (_turns(source["messages"], "input.messages", "user"),
            _turns(record["preferred_output"], "preferred_output"),
            _turns(record["non_preferred_output"], "non_preferred_output"),
            ("input.messages+preferred_output", "non_preferred_output"))


def _kto(record: dict, max_chars: int) -> tuple[list[Message], bool]:
    from curation.formats import RecordError, from_prompt_completion, from_sharegpt

    if "kto_tag" in record:
        flag, where = record["kto_tag"], "kto_tag"
        messages = from_sharegpt(record, max_chars)
    else:
        flag, where = record.get("label"), "label"
        for key in ("prompt", "completion"):
            if key not in record:
                raise RecordError("missing_field", f"KTO record has no `{key}`", key)
        prompt = record.get("prompt")
        messages = from_prompt_completion(
            {"prompt": [{"role": "user", "content": prompt}] if isinstance(prompt, str)
             and isinstance(record.get("completion"), list) else prompt,
             "completion": record.get("completion")}, max_chars)
    if not isinstance(flag, bool):
        raise RecordError("wrong_type", f"{where} must be true (desirable) or false "
                          "(undesirable)", where)
    return messages, flag


# --- reading pairs -----------------------------------------------------------------------------

def pair_of(row: dict) -> PreferencePair:
    """The pair of a snapshot row (or Example fields) of kind 'preference'."""
    prompt, chosen = split_answer(row["messages"])
    return PreferencePair(row["id"], tuple(prompt), tuple(chosen),
                          tuple(row["rejected"] or ()), row["split"])


def preference_pairs(store: Store, snapshot_id: str) -> list[PreferencePair]:
    """The preference pairs of a snapshot (its examples of kind 'preference'), in snapshot
    order (by example id); its SFT and KTO examples are not pairs and are left out."""
    return [pair_of(row) for row in store.snapshot_rows(snapshot_id)
            if row.get("kind") == "preference"]


# --- export ------------------------------------------------------------------------------------

def to_trl_preference(row: dict, common: dict[str, Any]) -> dict[str, Any]:
    """TRL's conversational preference form with an explicit prompt."""
    pair = pair_of(row)
    return {"prompt": list(pair.prompt), "chosen": list(pair.chosen),
            "rejected": list(pair.rejected), **common}


def to_openai_dpo(row: dict, common: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's preference fine-tuning (DPO) form."""
    pair = pair_of(row)
    return {"input": {"messages": list(pair.prompt)},
            "preferred_output": list(pair.chosen),
            "non_preferred_output": list(pair.rejected), **common}


WRITERS = {"trl_preference": to_trl_preference, "openai_dpo": to_openai_dpo}


def undesirable(kind: str | None, desirable: bool | None) -> bool:
    """Whether an example of this kind and flag is a KTO record whose answer is flagged
    undesirable: never taught by SFT, never a reference."""
    return kind == "kto" and desirable is False


def left_out_note(counts: dict[str, int]) -> str | None:
    """A sentence on the snapshot's examples an export left out by kind: not pairs (a
    preference export), KTO answers flagged undesirable (an SFT export)."""
    n = counts.get("not_preference", 0)
    if n:
        return (f"{n:,} example{'s' if n != 1 else ''} of the snapshot "
                f"{'are' if n != 1 else 'is'} not a preference pair (SFT or KTO) and "
                f"{'were' if n != 1 else 'was'} left out of this preference export")
    n = counts.get("undesirable", 0)
    if n:
        return (f"{n:,} KTO record{'s' if n != 1 else ''} of the snapshot "
                f"{'are' if n != 1 else 'is'} flagged undesirable and "
                f"{'were' if n != 1 else 'was'} left out: an SFT file teaches every answer "
                "it holds")
    return None


# --- review: swap -------------------------------------------------------------------------------

def swapped(messages: list[Message], rejected: list[Message]) -> tuple[list[Message],
                                                                     list[Message]]:
    """(messages, rejected) with the chosen and the rejected answer exchanged."""
    prompt, chosen = split_answer(messages)
    return prompt + list(rejected), chosen


def swap(store: Store, user: User, example_id: int, *, base_version: int,
         **changes: Any) -> Example:
    """Exchange the chosen and the rejected answer of a pair (with any pending `changes`,
    swapped too): one edit, audited as such."""
    from curation.review import edit

    current = store.get(example_id)
    if current.kind != "preference":
        raise InvalidValue(f"example #{example_id} is not a preference pair: it has no "
                           "rejected answer to swap with")
    messages, rejected = swapped(changes.pop("messages", current.messages),
                                 changes.pop("rejected", current.rejected))
    return edit(store, user, example_id, base_version=base_version,
                reason="swapped the chosen and the rejected answer", messages=messages,
                rejected=rejected, **changes)


# --- pairs from SME edits ----------------------------------------------------------------------

def edit_pairs_enabled(store: Store) -> bool:
    """Whether an SME's edit of a model's answer records a preference pair (default on)."""
    return (store.setting(EDIT_PAIRS_KEY) or "on") != "off"


def set_edit_pairs(store: Store, user: User, on: bool) -> bool:
    """Turn pairs from SME edits on or off for the workspace (reviewers and admins)."""
    from curation.auth import require

    require(user, "set_targets")
    store.set_setting(EDIT_PAIRS_KEY, "on" if on else "off")
    return on


def model_answer(store: Store, example: Example) -> str | None:
    """The text of the example's last answer if a model wrote it and nobody changed it since:
    a draft's or a model-output import's first answer, or an accepted suggestion's."""
    answer = split_answer(example.messages)[1]
    if example.kind != "sft" or len(answer) != 1 or answer[0]["role"] != "assistant":
        return None
    text = answer[0].get("content")
    if not isinstance(text, str) or set(answer[0]) != {"role", "content"}:
        return None  # text parts, a tool call, a weight: not a plain answer to pair
    if example.source == "draft" or MODEL_OUTPUT_TAG in example.tags:
        first = split_answer(store.version(example.id, 1)["messages"])[1]
        if first and first[-1]["content"] == text:
            return text
    if text in store.suggested_answers(example.id):
        return text
    return None


def record_edit_pair(store: Store, user: User, before: Example, after: Example
                     ) -> int | None:
    """Within the transaction of an edit from `before` to `after` (its `then`): when it
    changed an answer a model wrote, save the pair (the edited answer chosen, the model's
    rejected) as a new pending preference example; its id (None when no pair is due or the
    setting is off)."""
    if not edit_pairs_enabled(store):
        return None
    original = model_answer(store, before)
    if original is None or not original.strip():
        return None  # no model answer, or a blank one: nothing to prefer the edit over
    prompt, answer = split_answer(after.messages)
    if (len(answer) != 1 or answer[0]["content"] == original
            or prompt != split_answer(before.messages)[0]):
        return None  # the answer is unchanged, or the prompt changed: not a pair of one prompt
    return store.insert_new(after.messages, actor=user.name, label=after.label, tags=(),
                            source=EDIT_PAIR_SOURCE, split=after.split, status="pending",
                            reason=_EDIT_PAIR_REASON.format(id=before.id, version=after.version),
                            kind="preference",
                            rejected=[{"role": "assistant", "content": original}])


def edit_pair_hook(store: Store, user: User, before: Example | None):
    """The `then` of an edit's `Store.update` (or submission) from `before`: records the pair
    in the edit's transaction; None when the edit does not touch the conversation."""
    if before is None:
        return None
    return lambda after: record_edit_pair(store, user, before, after)


def edit_pairs_of(store: Store, example_id: int) -> list[int]:
    """The ids of the pairs recorded from edits of one example."""
    return store.created_with_reason(_EDIT_PAIR_REASON.format(id=example_id, version="%"))


def kinds_of(rows: Iterable[dict]) -> dict[str, int]:
    """How many rows of each kind."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get("kind") or "sft"] = counts.get(row.get("kind") or "sft", 0) + 1
    return counts
