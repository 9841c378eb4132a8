"""Pre-labelling: a run's model answers examples, each answer with a confidence.

`predict(run_dir, rows)` answers each row's prompt with greedy decoding through the one
generation loop (`training.generate`, the model from `training.models.load_run_model`, the
adapter merged as in evaluation) and scores how sure the model is of that answer.
`score_answers` scores given answers (the eval split's stored fine-tuned answers, for
calibration) the same way, without generating.

Design decisions:
- Closed set (the run's answers are labels: `training.metrics.primary_metric` of its train
  answers says "accuracy", as evaluation decides): every known label (the distinct answers the
  run trained on) is scored as a continuation of the prompt, its tokens and the end of turn;
  the confidence is the answer's share of a softmax over the labels' total log-probabilities
  (`normalise`), so the confidences of all labels sum to 1. An answer that is no known label
  gets 0: it cannot be trusted as a label.
- Free text: the mean probability of the answer's tokens (and its end of turn) under the
  model; an empty answer is scored on its end of turn alone.
- Prompt and continuation are tokenized apart and joined, as generation appends its tokens to
  the prompt's; each prompt's continuations run as one right-padded batch.
- It runs in the calling process (the CLI, or the app's session), with `progress(done,
  total)` after each step; torch is imported inside the functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from curation.suggestions import LABEL_METHOD, TEXT_METHOD
from training import metrics as M
from training.eval import _merged, answer_budget, build_prompt, train_rows_from_run
from training.generate import END_OF_TURN, generate

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
    answers = [r["messages"][-1]["content"] for r in train_rows_from_run(run_dir)
               if r["messages"] and r["messages"][-1]["role"] == "assistant"]
    metric = M.primary_metric(answers) if answers else "token_f1"
    return metric, sorted(set(answers)) if metric == "accuracy" else []


def continuation_logprobs(model, tokenizer, prompt: list[dict[str, str]],
                          continuations: Sequence[str]) -> list[list[float]]:
    """The log-probability of each token of each continuation (followed by the end of turn)
    after the chat prompt."""
    import torch

    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    head = tokenizer(text, add_special_tokens=False)["input_ids"]
    tails = [tokenizer(c + END_OF_TURN, add_special_tokens=False)["input_ids"]
             for c in continuations]
    width = len(head) + max(len(t) for t in tails)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(tails), width), pad, dtype=torch.long)
    mask = torch.zeros((len(tails), width), dtype=torch.long)
    for k, tail in enumerate(tails):
        row = head + tail
        ids[k, :len(row)] = torch.tensor(row)
        mask[k, :len(row)] = 1
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for k, tail in enumerate(tails):
        positions = range(len(head) - 1, len(head) - 1 + len(tail))
        out.append([float(logp[k, p, t]) for p, t in zip(positions, tail)])
    return out


def confidence(model, tokenizer, prompt: list[dict[str, str]], answer: str,
               labels: Sequence[str]) -> float:
    """How sure the model is of `answer` after `prompt`: its probability normalised over
    `labels` (closed set), or its mean token probability (free text: `labels` empty)."""
    if labels:
        if answer not in labels:
            return 0.0
        totals = continuation_logprobs(model, tokenizer, prompt, list(labels))
        return normalise({lab: sum(t) for lab, t in zip(labels, totals)})[answer]
    (tokens,) = continuation_logprobs(model, tokenizer, prompt, [answer])
    return sum(math.exp(t) for t in tokens) / len(tokens)


def _load(run_dir, device):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as evaluation: see training.eval
    from training.models import load_run_model

    return load_run_model(run_dir, device=device)


def predict(run_dir: str | os.PathLike, rows: Sequence[dict[str, Any]], *,
            progress: Callable[[int, int], None] | None = None,
            device: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Each row ({"id", "version", "messages"}) answered greedily by the run's model with
    its confidence: (method, [{"id", "version", "answer", "confidence"}]) in row order."""
    metric, labels = known_answers(run_dir)
    method = LABEL_METHOD if labels else TEXT_METHOD
    if not rows:
        return method, []
    model, tokenizer = _load(run_dir, device)
    prompts = [build_prompt(r["messages"], None) for r in rows]
    budget = answer_budget(tokenizer, labels, metric, MAX_NEW_TOKENS) if labels \
        else MAX_NEW_TOKENS
    total, done = 2 * len(rows), 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    with _merged(model):
        answers = generate(model, tokenizer, prompts, max_new_tokens=budget, batch_size=BATCH,
                           on_batch=tick)
        out = []
        for row, prompt, answer in zip(rows, prompts, answers):
            out.append({"id": row["id"], "version": row["version"], "answer": answer,
                        "confidence": confidence(model, tokenizer, prompt, answer, labels)})
            tick(1)
    return method, out


def score_answers(run_dir: str | os.PathLike, rows: Sequence[dict[str, Any]],
                  answers: Sequence[str], *, device: str | None = None) -> list[float]:
    """The confidence of given answers to the rows' prompts, as `predict` scores its own."""
    _, labels = known_answers(run_dir)
    if not rows:
        return []
    model, tokenizer = _load(run_dir, device)
    with _merged(model):
        return [confidence(model, tokenizer, build_prompt(r["messages"], None), a, labels)
                for r, a in zip(rows, answers)]


__all__ = ["LABEL_METHOD", "TEXT_METHOD", "confidence", "continuation_logprobs",
           "known_answers", "normalise", "predict", "score_answers"]
