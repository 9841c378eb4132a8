"""Pre-labelling: a run's model answers examples, each answer with a confidence.

`predict(run_dir, rows)` answers each row's prompt with the run's model (from
`training.models.load_run_model`, the adapter merged as in evaluation) and says how sure the
model is of that answer. `eval_confidences` gives the same answers and confidences for the
eval split, for calibration.

Design decisions:
- Closed set (the run's answers are labels: `training.metrics.primary_metric` of its train
  answers says "accuracy", as evaluation decides): every known label (the distinct answers the
  run trained on) is scored as a continuation of the prompt, its tokens and the end of turn;
  the answer is the most probable label and its confidence the label's share of a softmax over
  the labels' total log-probabilities (`normalise`), so the confidences of all labels sum to 1.
  Nothing is generated: the answer is always a known label (a greedy answer can be a
  fragment, or empty from a weak model), and scoring the labels is all the work.
- Free text: greedy decoding through the one generation loop (`training.generate`), and the
  confidence is the mean probability of the answer's tokens (and its end of turn); an empty
  answer is scored on its end of turn alone. Calibration scores the evaluation's own greedy
  answers the same way.
- Prompt and continuation are tokenized apart and joined, as generation appends its tokens to
  the prompt's. The prompt runs once and its key/value cache is copied for its continuations
  (as generation shares a prefix), which run as one right-padded batch: the labels are a few
  tokens each, so scoring ten of them costs little more than the prompt.
- It runs in the calling process (the CLI, or the app's session), with `progress(done,
  total)` after each step; torch is imported inside the functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from curation.messages import message_text
from curation.suggestions import LABEL_METHOD, TEXT_METHOD
from training import metrics as M
from training.eval import _merged, build_prompt, train_rows_from_run
from training.generate import END_OF_TURN, cache_of, forward_names, generate

BATCH = 16
MAX_NEW_TOKENS = 128


def normalise(logprobs: dict[str, float]) -> dict[str, float]:
    """Softmax over total log-probabilities: each label's probability among the labels."""
    if not logprobs:
        return {}
    top = max(logprobs.values())
    weights = {k: math.exp(v - top) for k, v in logprobs.items()}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def known_answers(run_dir: str | os.PathLike) -> tuple[str, list[str]]:
    """The run's primary metric, decided as evaluation decides it from its train answers, and
    its known labels (the distinct train answers; empty for free text)."""
    answers = [message_text(r["messages"][-1]) for r in train_rows_from_run(run_dir)
               if r["messages"] and r["messages"][-1]["role"] == "assistant"]
    metric = M.primary_metric(answers) if answers else "token_f1"
    return metric, sorted(set(answers)) if metric == "accuracy" else []


def continuation_logprobs(model, tokenizer, prompt: list[dict[str, str]],
                          continuations: Sequence[str]) -> list[list[float]]:
    """The log-probability of each token of each continuation (followed by the end of turn)
    after the chat prompt. The prompt runs once; its key/value cache is copied for the
    continuations, which run as one right-padded batch."""
    import torch

    from training.data import render_chat

    text = render_chat(tokenizer, prompt, generation_prompt=True)
    head = tokenizer(text, add_special_tokens=False)["input_ids"]
    tails = [tokenizer(c + END_OF_TURN, add_special_tokens=False)["input_ids"]
             for c in continuations]
    width = max(len(t) for t in tails)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(tails), width), pad, dtype=torch.long)
    mask = torch.zeros((len(tails), len(head) + width), dtype=torch.long)
    mask[:, :len(head)] = 1
    for k, tail in enumerate(tails):
        ids[k, :len(tail)] = torch.tensor(tail)
        mask[k, len(head):len(head) + len(tail)] = 1
    device = next(model.parameters()).device
    cache_arg, last_only = forward_names(model)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([head], device=device), use_cache=True, **last_only)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # each first token
        cache = cache_of(out)
        cache.batch_repeat_interleave(len(tails))
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       **{cache_arg: cache}).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
    return [[float(first[tail[0]])] + [float(logp[k, j - 1, tail[j]])
                                       for j in range(1, len(tail))]
            for k, tail in enumerate(tails)]


def label_probabilities(model, tokenizer, prompt: list[dict[str, str]],
                        labels: Sequence[str]) -> dict[str, float]:
    """Each label's probability after `prompt`, normalised over `labels`."""
    totals = continuation_logprobs(model, tokenizer, prompt, list(labels))
    return normalise({lab: sum(t) for lab, t in zip(labels, totals)})


def confidence(model, tokenizer, prompt: list[dict[str, str]], answer: str,
               labels: Sequence[str]) -> float:
    """How sure the model is of `answer` after `prompt`: its probability normalised over
    `labels` (closed set; 0 for an answer that is no label), or its mean token probability
    (free text: `labels` empty)."""
    if labels:
        if answer not in labels:
            return 0.0
        return label_probabilities(model, tokenizer, prompt, labels)[answer]
    (tokens,) = continuation_logprobs(model, tokenizer, prompt, [answer])
    return sum(math.exp(t) for t in tokens) / len(tokens)


def most_probable_label(model, tokenizer, prompt: list[dict[str, str]],
                        labels: Sequence[str]) -> tuple[str, float]:
    """The closed-set answer: the most probable label and its normalised probability (ties
    go to the label first in sorted order)."""
    probs = label_probabilities(model, tokenizer, prompt, labels)
    best = max(sorted(probs), key=lambda lab: probs[lab])
    return best, probs[best]


def _load(run_dir, device):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as evaluation: see training.eval
    from training.models import load_run_model

    return load_run_model(run_dir, device=device)


def predict(run_dir: str | os.PathLike, rows: Sequence[dict[str, Any]], *,
            progress: Callable[[int, int], None] | None = None,
            device: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Each row ({"id", "version", "messages"}) answered by the run's model with its
    confidence: (method, [{"id", "version", "answer", "confidence"}]) in row order."""
    _, labels = known_answers(run_dir)
    method = LABEL_METHOD if labels else TEXT_METHOD
    if not rows:
        return method, []
    model, tokenizer = _load(run_dir, device)
    prompts = [build_prompt(r["messages"], None) for r in rows]
    with _merged(model):
        answered = _answer(model, tokenizer, prompts, labels, progress)
    return method, [{"id": r["id"], "version": r["version"], "answer": a, "confidence": c}
                    for r, (a, c) in zip(rows, answered)]


def _answer(model, tokenizer, prompts: list, labels: list[str],
            progress: Callable[[int, int], None] | None) -> list[tuple[str, float]]:
    """(answer, confidence) per prompt: the most probable label, or greedy text scored."""
    out: list[tuple[str, float]] = []
    if labels:
        for prompt in prompts:
            out.append(most_probable_label(model, tokenizer, prompt, labels))
            if progress:
                progress(len(out), len(prompts))
        return out
    total, done = 2 * len(prompts), 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    answers = generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS,
                       batch_size=BATCH, on_batch=tick)
    for prompt, answer in zip(prompts, answers):
        out.append((answer, confidence(model, tokenizer, prompt, answer, [])))
        tick(1)
    return out


def eval_confidences(run_dir: str | os.PathLike, rows: Sequence[dict[str, Any]],
                     answers: Sequence[str], *, device: str | None = None
                     ) -> tuple[str, list[str], list[float]]:
    """What pre-labelling would answer to the eval rows, with its confidence, for
    calibration: (method, answers, confidences). Closed set: the most probable label,
    predicted afresh; free text: the evaluation's own greedy `answers`, scored."""
    _, labels = known_answers(run_dir)
    method = LABEL_METHOD if labels else TEXT_METHOD
    if not rows:
        return method, [], []
    model, tokenizer = _load(run_dir, device)
    prompts = [build_prompt(r["messages"], None) for r in rows]
    with _merged(model):
        if labels:
            answered = _answer(model, tokenizer, prompts, labels, None)
            return method, [a for a, _ in answered], [c for _, c in answered]
        return method, list(answers), [confidence(model, tokenizer, p, a, [])
                                       for p, a in zip(prompts, answers)]


__all__ = ["confidence", "continuation_logprobs", "eval_confidences", "known_answers",
           "label_probabilities", "most_probable_label", "normalise", "predict"]
