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
- Idle OpenMP threads are told to sleep (`OMP_WAIT_POLICY=PASSIVE`, as the trainer does)
  when torch is not yet imported: measured on a shared 2-core machine, generating 4 tokens
  for 3 prompts took 15-30 s with spinning threads and about 1 s without.
- The evaluation runs in the app/CLI process; the store is read only by
  `eval_rows_from_store`, the trainer's files by `train_rows_from_run`. eval.json is written
  atomically (temporary file, rename).
"""

from __future__ import annotations

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
    """Greedy answers to chat prompts, batched and left-padded, stopping at end of turn."""
    import torch

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
             for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    tokenizer.padding_side = "left"
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = [stop] if isinstance(stop, int) and stop != tokenizer.unk_token_id else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    device = next(model.parameters()).device
    answers: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 temperature=None, top_p=None, top_k=None,
                                 eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        for i, row in zip(chunk, new):
            answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
        if on_batch:
            on_batch(len(chunk))
    return answers


# --- the evaluation -------------------------------------------------------------------------

def evaluate(run_dir: str | os.PathLike, eval_rows: Sequence[dict[str, Any]],
             train_rows: Sequence[dict[str, Any]], *, system_prompt: str | None,
             shots: int = 3, max_new_tokens: int = 32, batch_size: int = 8,
             margin_points: float = 5.0, seed: int = 0, progress: Progress | None = None,
             device: str | None = None) -> dict[str, Any]:
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
    total, done = len(eval_rows) * len(SYSTEMS), 0
    predictions: dict[str, list[str]] = {}
    for system in SYSTEMS:
        def tick(n: int, system=system) -> None:
            nonlocal done
            done += n
            if progress:
                progress(system, done, total)

        kwargs = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "on_batch": tick}
        if system == "fine_tuned":
            predictions[system] = generate(model, tokenizer, prompts[system], **kwargs)
        else:
            with model.disable_adapter():
                predictions[system] = generate(model, tokenizer, prompts[system], **kwargs)

    references = [r["messages"][-1]["content"] for r in eval_rows]
    labels = [r.get("label") for r in eval_rows]
    metric = M.primary_metric(references)
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
                     "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                     "margin_points": margin_points, "seed": seed, "decoding": "greedy",
                     "base_model": run.manifest.get("base_model"),
                     "snapshot_id": run.manifest.get("snapshot_id"),
                     "eval_examples": len(eval_rows), "train_examples": len(train_rows)},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "examples": examples,
    }
    write_json(run_dir / EVAL_FILE, result)
    return result


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


__all__ = ["EVAL_FILE", "SYSTEMS", "build_prompt", "eval_rows_from_store", "evaluate",
           "generate", "pick_shots", "read_eval", "summary", "train_rows_from_run",
           "with_margin"]
