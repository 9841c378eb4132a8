"""Drafts for coverage gaps: new examples of a label written by the base model.

Design decisions:
- Drafts come from the base LLM (SmolLM2-135M-Instruct by default), prompted few-shot with
  examples of the label: first a new user message, then the model's answer to it. Few-shot
  examples are the accepted ones of the label, or its pending ones while none is accepted
  yet. They enter as `pending` with source `draft` (saved with `curation.fill.add_example`,
  which checks them for duplicates and leakage), so a person reviews every one before it can
  be trained on.
- Sampled, not greedy (temperature 0.7, top-p 0.9), so several drafts differ from each
  other; generation is `training.generate`'s loop, the one evaluation uses.
- This lives in `training` (it loads a model); the core (`curation`) does not import it.
"""

from __future__ import annotations

import random

from curation.errors import InvalidValue
from curation.text import first_turn, turns_text
from curation.query import ExampleFilter
from curation.store import Example, Store
from training.generate import Sampling, generate

QUESTION_TOKENS = 60
TEMPERATURE, TOP_P = 0.7, 0.9


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
    system = first_turn(examples[0].messages, "system") or None
    asks = [ask_for_question(label, rng.sample(examples, min(shots, len(examples))))
            for _ in range(count)]
    questions = [q for q in _sampled(model, tokenizer, asks, QUESTION_TOKENS, seed) if q]
    conversations = [([{"role": "system", "content": system}] if system else []) +
                     [{"role": "user", "content": q}] for q in questions]
    answers = _sampled(model, tokenizer, conversations, max_new_tokens, seed + 1)
    return [c + [{"role": "assistant", "content": a}]
            for c, a in zip(conversations, answers) if a]


def ask_for_question(label: str, shown: list[Example]) -> list[dict[str, str]]:
    """The chat asking the model for one new user message like those `shown`."""
    samples = "\n".join(f"- {turns_text(e.messages)}" for e in shown)
    return [{"role": "user", "content":
             f"Here are customer messages of the kind '{label}':\n{samples}\n\n"
             "Write one new, different customer message of the same kind. "
             "Reply with the message only."}]


def _sampled(model, tokenizer, conversations: list[list[dict[str, str]]],
             max_new_tokens: int, seed: int) -> list[str]:
    """Sampled replies to several conversations in one batch, quotes around them dropped."""
    replies = generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                       batch_size=max(1, len(conversations)),
                       sampling=Sampling(TEMPERATURE, TOP_P, seed))
    return [r.strip().strip('"').strip() for r in replies]


__all__ = ["ask_for_question", "draft_examples"]
