"""Evaluating a run: beat the prompt-only baseline or don't deploy.

`evaluate(run_dir, eval_rows, train_rows, system_prompt=...)` has three systems answer every
eval example with the same greedy decoding, scores them (`training.metrics`) and writes
RUN_DIR/eval.json; `read_eval(run_dir)` reads it back.

Design decisions:
- The three systems: the base model zero-shot; the base model few-shot (k accepted train
  examples as earlier user/assistant turns); the fine-tuned model (base + the run's adapter,
  no shots). The baseline is the better of the two prompt-only systems on the primary metric,
  so fine-tuning must beat the best cheap alternative, not a straw man.
- One model in memory: `load_run_model` gives the PEFT model, and the base systems run it
  inside `disable_adapter()`, which is exactly the base model (LoRA adds its update on top of
  the frozen weights; dropout is off in eval mode).
- The prompt is the example's conversation minus its final assistant turn. `system_prompt`
  replaces the example's system message(s) for all three systems alike; None keeps each
  example's own (what the fine-tuned model was trained with), "" sends none (the chat
  template may then add its default).
- Shots are picked deterministically from `seed`: the accepted train rows are shuffled once,
  then taken round-robin over their labels so the shots show different labels. The same
  shots serve every eval example (a fixed prompt, as a user would write it).
- Batched generation: prompts are sorted by length (less padding), left-padded, decoded
  greedily up to `max_new_tokens`, stopping at `<|im_end|>` (the tokenizer's end of turn).
  Our own greedy loop over the model's forward rather than `model.generate`, for one reason:
  every prompt of a system starts with the same tokens (the system prompt and, few-shot,
  all the shots), so those are run once and their key/value cache is copied into each
  batch; each row's own tokens are left-padded after that prefix, the padding masked and
  positions counted without it, as `generate` does for left padding. Checked against
  `generate` on Banking77 prompts: the same answers, and few-shot (10 shots) 5x faster.
  Only the last position's logits are computed. For label-like references the answer
  budget is the longest label plus a few tokens (`answer_budget`): a longer answer cannot
  match, and a rambling zero-shot model would otherwise run to `max_new_tokens` in every
  batch. Batches of 32 by default (decoding reads every weight once per step, whatever the
  batch: 32 was 1.8x faster than 8 on a 2-core CPU). The fine-tuned system runs last, with
  the adapter merged into the weights (`merge_adapter`), then unmerged.
- Idle OpenMP threads are told to sleep (`OMP_WAIT_POLICY=PASSIVE`, as the trainer does)
  when torch is not yet imported: measured on a shared 2-core machine, generating 4 tokens
  for 3 prompts took 15-30 s with spinning threads and about 1 s without.
- `evaluate` runs in the calling process; the app and the CLI call it in a background
  process of its own (`training.evaluate`), which never opens the store: the store is read
  only by `eval_rows_from_store` (in the launcher), the trainer's files by
  `train_rows_from_run`. `progress` is called as each system starts and after each batch.
  eval.json is written atomically (temporary file, rename).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from curation.errors import InvalidValue
from curation.query import ExampleFilter
from training import metrics as M
from training.trainer import TRAIN_FILE, now_iso, read_json, write_json

EVAL_FILE = "eval.json"
DEFAULT_SHOTS, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MARGIN_POINTS = 3, 32, 5.0  # CLI, app, library
END_OF_TURN = "<|im_end|>"
MIN_SHARED_PREFIX = 8  # shorter shared prefixes are not worth a cache
LABEL_SLACK_TOKENS = 3
SYSTEMS = ("zero_shot", "few_shot", "fine_tuned")
EVAL_STATUSES = ("pending", "accepted", "needs_work")  # everything but rejected

Progress = Callable[[str, int, int], None]


# --- inputs ---------------------------------------------------------------------------------

def eval_rows_from_store(store) -> list[dict[str, Any]]:
    """The eval split's examples that are neither rejected nor deleted, ending with an
    assistant turn: [{"id", "messages", "label"}] in id order."""
    where = ExampleFilter(split=("eval",), status=EVAL_STATUSES)
    return [{"id": e.id, "messages": e.messages, "label": e.label}
            for e in store.find(where) if e.messages and e.messages[-1]["role"] == "assistant"]


def train_rows_from_run(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The run's accepted train examples from RUN_DIR/train.jsonl: [{"id", "messages",
    "label"}] (id: the Curate id where the file carries it)."""
    rows = []
    with open(Path(run_dir) / TRAIN_FILE, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            record = orjson.loads(line)
            meta = record.get("metadata") or {}
            if meta.get("status", "accepted") != "accepted":
                continue
            rows.append({"id": meta.get("curate_id", record.get("id")),
                         "messages": record["messages"], "label": record.get("label")})
    return rows


# --- prompts --------------------------------------------------------------------------------

def pick_shots(train_rows: Sequence[dict[str, Any]], k: int, seed: int = 0) -> list[dict]:
    """k train rows, deterministic for `seed`, round-robin over labels (different labels
    first)."""
    usable = [r for r in train_rows
              if r["messages"] and r["messages"][-1]["role"] == "assistant"]
    order = list(range(len(usable)))
    random.Random(seed).shuffle(order)
    by_label: dict[Any, list[dict]] = {}
    for i in order:
        by_label.setdefault(usable[i].get("label"), []).append(usable[i])
    queues, picked = list(by_label.values()), []
    while len(picked) < k and any(queues):
        for queue in queues:
            if queue and len(picked) < k:
                picked.append(queue.pop(0))
    return picked


def build_prompt(messages: Sequence[dict[str, str]], system_prompt: str | None,
                 shots: Sequence[dict[str, Any]] = ()) -> list[dict[str, str]]:
    """The chat to send: system prompt, the shots' turns, then the example's turns up to (not
    including) its final assistant answer."""
    turns = list(messages[:-1]) if messages and messages[-1]["role"] == "assistant" \
        else list(messages)
    own_system = [m for m in turns if m["role"] == "system"]
    turns = [m for m in turns if m["role"] != "system"]
    if system_prompt is None:
        head = own_system
    else:
        head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    shot_turns = [m for s in shots for m in s["messages"] if m["role"] != "system"]
    return head + shot_turns + turns


def generate(model, tokenizer, prompts: Sequence[list[dict[str, str]]], *,
             max_new_tokens: int, batch_size: int,
             on_batch: Callable[[int], None] | None = None) -> list[str]:
    """Greedy answers to chat prompts, batched, stopping at end of turn. The tokens all
    prompts start with (system prompt, shots) are run once and their key/value cache reused."""
    import copy

    import torch

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
             for p in prompts]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    stop = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    stops = [stop] if isinstance(stop, int) and stop != tokenizer.unk_token_id else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stops:
        stops.append(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    shared = shared_prefix_length(ids)
    answers: list[str] = [""] * len(texts)
    with torch.inference_mode():
        prefix = None
        if shared >= MIN_SHARED_PREFIX:
            out = model(input_ids=torch.tensor([ids[0][:shared]], device=device),
                        use_cache=True, **_forward_names(model)[1])
            prefix = _cache_of(out)
        else:
            shared = 0
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            cache = None
            if prefix is not None:
                cache = copy.deepcopy(prefix)
                cache.batch_repeat_interleave(len(chunk))
            rows = _greedy(model, [ids[i][shared:] for i in chunk], cache, shared,
                           max_new_tokens=max_new_tokens, stops=stops, pad=pad, device=device)
            for i, row in zip(chunk, rows):
                answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
            if on_batch:
                on_batch(len(chunk))
    return answers


def shared_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """Tokens every sequence starts with, leaving each at least one token of its own."""
    if not ids:
        return 0
    first, limit = ids[0], min(len(x) for x in ids) - 1
    n = 0
    while n < limit and all(x[n] == first[n] for x in ids):
        n += 1
    return n


def _forward_names(model) -> tuple[str, dict[str, int]]:
    """The forward argument that takes the key/value cache (`cache` in transformers 5.x,
    `past_key_values` before) and the option computing only the last position's logits."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    last = {name: 1 for name in ("logits_to_keep", "num_logits_to_keep") if name in params}
    return ("cache" if "cache" in params else "past_key_values"), dict(list(last.items())[:1])


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _greedy(model, rows: list[list[int]], cache, shared: int, *, max_new_tokens: int,
            stops: list[int], pad: int, device) -> list[list[int]]:
    """Greedy decoding of a batch after `shared` cached prefix tokens: each row is padded on
    the left of its own tokens (between the prefix and them), the padding masked out and the
    positions counted without it, as left-padded generation does. Returns each row's new
    tokens up to (not including) its end of turn."""
    import torch

    cache_arg, last_only = _forward_names(model)
    n, width = len(rows), max(len(r) for r in rows)
    input_ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for k, row in enumerate(rows):
        input_ids[k, width - len(row):] = torch.tensor(row)
        mask[k, shared + width - len(row):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    input_ids, mask, positions = input_ids.to(device), mask.to(device), positions.to(device)
    stop_ids = torch.tensor(stops, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    new: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                    use_cache=True, **last_only, **{cache_arg: cache})
        cache = _cache_of(out)
        token = out.logits[:, -1].argmax(-1)
        token = torch.where(done, torch.full_like(token, stops[0]), token)
        new.append(token)
        done |= torch.isin(token, stop_ids)
        if bool(done.all()):
            break
        input_ids = token[:, None]
        mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=1)
        positions = positions[:, -1:] + 1
    tokens = torch.stack(new, dim=1).tolist()
    return [row[:next((j for j, t in enumerate(row) if t in stops), len(row))]
            for row in tokens]


# --- the evaluation -------------------------------------------------------------------------

def evaluate(run_dir: str | os.PathLike, eval_rows: Sequence[dict[str, Any]],
             train_rows: Sequence[dict[str, Any]], *, system_prompt: str | None,
             shots: int = DEFAULT_SHOTS, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
             batch_size: int = 32, margin_points: float = DEFAULT_MARGIN_POINTS, seed: int = 0,
             progress: Progress | None = None, device: str | None = None) -> dict[str, Any]:
    """Answer every eval row with the three systems, score them, compare fine-tuned with the
    baseline, decide, and write RUN_DIR/eval.json; returns what it wrote."""
    if not eval_rows:
        raise InvalidValue("no eval examples to evaluate on: put some examples in the eval "
                           "split (not rejected)")
    if shots < 0 or max_new_tokens < 1 or batch_size < 1:
        raise InvalidValue("shots must be >= 0, max_new_tokens and batch_size >= 1")
    # Idle OpenMP threads sleep instead of spinning (as in the trainer): on a shared CPU the
    # spinning made generation 15-30 times slower. Takes effect if torch is not yet imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from training.runs import load_run_model, read_run

    run_dir = Path(run_dir)
    run = read_run(run_dir)
    started = time.perf_counter()
    model, tokenizer = load_run_model(run_dir, device=device)
    chosen = pick_shots(train_rows, shots, seed)
    prompts = {
        "zero_shot": [build_prompt(r["messages"], system_prompt) for r in eval_rows],
        "few_shot": [build_prompt(r["messages"], system_prompt, chosen) for r in eval_rows],
        "fine_tuned": [build_prompt(r["messages"], system_prompt) for r in eval_rows],
    }
    references = [r["messages"][-1]["content"] for r in eval_rows]
    metric = M.primary_metric(references)
    new_tokens = answer_budget(tokenizer, references, metric, max_new_tokens)
    total, done = len(eval_rows) * len(SYSTEMS), 0
    predictions: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for system in SYSTEMS:
        def tick(n: int, system=system) -> None:
            nonlocal done
            done += n
            if progress:
                progress(system, done, total)

        kwargs = {"max_new_tokens": new_tokens, "batch_size": batch_size, "on_batch": tick}
        tick(0)  # this system starts
        began = time.perf_counter()
        if system == "fine_tuned":  # last: the adapter is merged into the weights for speed
            with _merged(model):
                predictions[system] = generate(model, tokenizer, prompts[system], **kwargs)
        else:
            with model.disable_adapter():
                predictions[system] = generate(model, tokenizer, prompts[system], **kwargs)
        seconds[system] = round(time.perf_counter() - began, 1)

    labels = [r.get("label") for r in eval_rows]
    systems = {s: M.score_system(predictions[s], references, metric=metric, labels=labels)
               for s in SYSTEMS}
    baseline_name = ("few_shot" if systems["few_shot"]["primary"] >
                     systems["zero_shot"]["primary"] else "zero_shot")
    scores = {s: M.example_scores(predictions[s], references, metric) for s in SYSTEMS}
    comparison = M.paired_bootstrap(scores["fine_tuned"], scores[baseline_name], seed=seed)
    decision = M.verdict(systems[baseline_name]["primary"], systems["fine_tuned"]["primary"],
                         margin_points, comparison, metric=metric)
    examples = []
    for i, row in enumerate(eval_rows):
        ft, base = scores["fine_tuned"][i], scores[baseline_name][i]
        examples.append({
            "id": row.get("id"), "label": labels[i], "reference": references[i],
            **{s: predictions[s][i] for s in SYSTEMS},
            "scores": {s: scores[s][i] for s in SYSTEMS},
            "outcome": "win" if ft > base else "loss" if ft < base else "tie"})
    result = {
        "run_id": run.id, "created_at": now_iso(), "primary_metric": metric,
        "systems": systems, "baseline": {"system": baseline_name, **systems[baseline_name]},
        "comparison": {"a": "fine_tuned", "b": baseline_name, **comparison},
        "verdict": decision,
        "outcomes": {k: sum(e["outcome"] == k for e in examples)
                     for k in ("win", "loss", "tie")},
        "settings": {"system_prompt": system_prompt, "shots": shots,
                     "shot_ids": [s.get("id") for s in chosen],
                     "max_new_tokens": max_new_tokens, "max_new_tokens_used": new_tokens,
                     "batch_size": batch_size,
                     "margin_points": margin_points, "seed": seed, "decoding": "greedy",
                     "base_model": run.manifest.get("base_model"),
                     "snapshot_id": run.manifest.get("snapshot_id"),
                     "eval_examples": len(eval_rows), "train_examples": len(train_rows)},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "wall_seconds_by_system": seconds,
        "examples": examples,
    }
    write_json(run_dir / EVAL_FILE, result)
    return result


@contextlib.contextmanager
def _merged(model):
    """The adapter merged into the base weights (one matrix product per layer instead of
    three), unmerged afterwards; a model without `merge_adapter` runs as it is."""
    if not hasattr(model, "merge_adapter"):
        yield
        return
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()


def answer_budget(tokenizer, references: Sequence[str], metric: str,
                  max_new_tokens: int) -> int:
    """New tokens to generate: for label-like answers (accuracy) the longest reference's
    tokens plus LABEL_SLACK_TOKENS (room for the end of turn and trailing punctuation), at
    most `max_new_tokens`: a longer answer cannot be an exact match anyway. Free text keeps
    `max_new_tokens`."""
    if metric != "accuracy" or not references:
        return max_new_tokens
    longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references)
    return max(1, min(max_new_tokens, longest + LABEL_SLACK_TOKENS))


def read_eval(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The stored evaluation of a run, or None when it has not been evaluated."""
    value = read_json(Path(run_dir) / EVAL_FILE)
    return value or None


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The metrics of each system (zero_shot, few_shot, baseline, fine_tuned) and the
    verdict: what `curate eval --json` prints."""
    return {"run_id": result.get("run_id"), "primary_metric": result.get("primary_metric"),
            **{s: result["systems"][s] for s in SYSTEMS}, "baseline": result["baseline"],
            "comparison": result.get("comparison"), "outcomes": result.get("outcomes"),
            "verdict": result["verdict"], "settings": result.get("settings"),
            "created_at": result.get("created_at")}


def with_margin(result: dict[str, Any], margin_points: float) -> dict[str, Any]:
    """The stored result with its verdict decided again for another margin (no
    generation)."""
    metric = result["primary_metric"]
    decision = M.verdict(result["baseline"]["primary"], result["systems"]["fine_tuned"]
                         ["primary"], margin_points, result["comparison"], metric=metric)
    return {**result, "verdict": decision}


__all__ = ["DEFAULT_MARGIN_POINTS", "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_SHOTS", "EVAL_FILE",
           "SYSTEMS", "build_prompt", "eval_rows_from_store", "evaluate",
           "generate", "pick_shots", "read_eval", "summary", "train_rows_from_run",
           "with_margin"]
