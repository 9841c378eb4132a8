"""Filling coverage gaps: new examples written by an SME, or drafted by the base model.

Design decisions:
- Every new example is checked before it is saved: against train for exact and near
  duplicates, and against eval for leakage (a new train example that copies an eval one, or
  the reverse). A hit is refused with `WouldDuplicate` naming the example, unless the SME
  saves it anyway, consciously (`force=True`).
- Drafts come from the base LLM (SmolLM2-135M-Instruct by default), prompted few-shot with
  accepted examples of the label. They enter as `pending` with source `draft`, so a person
  reviews every one before it can be trained on. Few-shot examples are the accepted ones of the
  label, or its pending ones while none is accepted yet.
"""

from __future__ import annotations

import random
from curation.auth import User, require
from curation.checks.duplicates import normalize
from curation.errors import CurateError, InvalidValue
from curation.query import ExampleFilter
from curation.store import Example, Store

NEAR_SIMILARITY = 0.9
QUESTION_TOKENS = 60


class WouldDuplicate(CurateError):
    """A new example duplicates a stored one (or would leak between train and eval)."""


def _prompt(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages if m["role"] == "user")


def find_clashes(store: Store, messages: list[dict[str, str]], split: str) -> list[str]:
    """Why saving these messages in `split` would duplicate or leak; empty when it is fine."""
    from rapidfuzz import process
    from rapidfuzz.distance import Indel

    new = normalize(_prompt(messages))
    clashes = []
    for other_split in ("train", "eval"):
        stored = store.find(ExampleFilter(split=(other_split,)))
        prompts = {e.id: normalize(_prompt(e.messages)) for e in stored
                   if e.status != "rejected"}
        match = process.extractOne(new, prompts, scorer=Indel.normalized_similarity,
                                   score_cutoff=NEAR_SIMILARITY)
        if match is None:
            continue
        _, similarity, example_id = match
        kind = "the same prompt as" if similarity >= 1.0 else "nearly the same prompt as"
        if other_split == split:
            clashes.append(f"{kind} {other_split} example #{example_id}")
        else:
            clashes.append(f"leakage: {kind} {other_split} example #{example_id}")
    return clashes


def add_example(store: Store, user: User, messages: list[dict[str, str]], *,
                label: str | None, tags: tuple[str, ...] = (), split: str = "train",
                source: str = "manual", force: bool = False) -> Example:
    """Save a new pending example after the duplicate and leakage checks."""
    require(user, "edit")
    clashes = find_clashes(store, messages, split)
    if clashes and not force:
        raise WouldDuplicate("not saved: it has " + "; ".join(clashes) +
                             ". Change it, or save anyway if the difference matters.")
    reason = ("saved despite: " + "; ".join(clashes)) if clashes else None
    return store.add(messages, actor=user.name, label=label, tags=tags, source=source,
                     split=split, status="pending", reason=reason)


def draft_examples(store: Store, label: str, *, count: int = 3, shots: int = 4,
                   seed: int = 0, max_new_tokens: int = 120) -> list[list[dict[str, str]]]:
    """Draft conversations for `label` with the base model, few-shot from its examples."""
    if count < 1:
        raise InvalidValue("ask for at least one draft")
    examples = (store.find(ExampleFilter(label=(label,), status=("accepted",)))
                or store.find(ExampleFilter(label=(label,), status=("pending", "needs_work"))))
    if not examples:
        raise InvalidValue(f"drafts need at least one example of {label!r} to imitate")
    from training.models import load_model, model_cache

    model, tokenizer = load_model(store.setting("base_model"), model_cache(store))
    rng = random.Random(seed)
    system = next((m["content"] for m in examples[0].messages if m["role"] == "system"), None)
    asks = [_ask_for_question(label, rng.sample(examples, min(shots, len(examples))))
            for _ in range(count)]
    questions = [q for q in _generate(model, tokenizer, asks, QUESTION_TOKENS, seed) if q]
    conversations = [([{"role": "system", "content": system}] if system else []) +
                     [{"role": "user", "content": q}] for q in questions]
    answers = _generate(model, tokenizer, conversations, max_new_tokens, seed + 1)
    return [c + [{"role": "assistant", "content": a}]
            for c, a in zip(conversations, answers) if a]


def _ask_for_question(label: str, shown: list[Example]) -> list[dict[str, str]]:
    samples = "\n".join(f"- {_prompt(e.messages)}" for e in shown)
    return [{"role": "user", "content":
             f"Here are customer messages of the kind '{label}':\n{samples}\n\n"
             "Write one new, different customer message of the same kind. "
             "Reply with the message only."}]


def _generate(model, tokenizer, conversations: list[list[dict[str, str]]],
              max_new_tokens: int, seed: int) -> list[str]:
    """Sampled replies to several conversations in one batch (left-padded)."""
    import torch

    texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
             for c in conversations]
    tokenizer.padding_side = "left"
    inputs = tokenizer(texts, return_tensors="pt", padding=True).to(model.device)
    torch.manual_seed(seed)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True,
                                temperature=0.7, top_p=0.9,
                                pad_token_id=tokenizer.pad_token_id)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    return [t.strip().strip('"').strip()
            for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
