"""Evaluating a run: beat the prompt-only baseline or don't deploy.

`evaluate(run_dir, eval_rows, train_rows, EvalConfig(...))` has three systems answer every
eval example with the same greedy decoding (`training.generate`), scores them
(`training.metrics`) and writes RUN_DIR/eval.json as an `EvalResult`;
`training.run_folder.read_eval(run_dir)` reads it back.

Design decisions:
- The three systems: the base model zero-shot; the base model few-shot (k accepted train
  examples as earlier user/assistant turns); the fine-tuned model (base + the run's adapter,
  no shots). The baseline is the better of the two prompt-only systems on the primary metric,
  so fine-tuning must beat the best cheap alternative, not a straw man.
- The settings are an `EvalConfig` (`training.config`): its defaults and help text serve the
  CLI and the Evaluation page alike.
- One model in memory: `training.models.load_run_model` gives the PEFT model, and the base
  systems run it inside `disable_adapter()`, which is exactly the base model (LoRA adds its
  update on top of the frozen weights; dropout is off in eval mode).
- The prompt is the example's conversation minus its final assistant turn. `system_prompt`
  replaces the example's system message(s) for all three systems alike; None keeps each
  example's own (what the fine-tuned model was trained with), "" sends none (the chat
  template may then add its default).
- Shots are picked deterministically from `seed`: the accepted train rows are shuffled once,
  then taken round-robin over their labels so the shots show different labels. The same
  shots serve every eval example (a fixed prompt, as a user would write it).
- Batched greedy generation with the shared prefix (system prompt, shots) cached once:
  `training.generate`, which says why it is our own loop. For label-like references the answer
  budget is the longest label plus a few tokens (`answer_budget`): a longer answer cannot
  match, and a rambling zero-shot model would otherwise run to `max_new_tokens` in every
  batch. Batches of 32 by default (decoding reads every weight once per step, whatever the
  batch: 32 was 1.8x faster than 8 on a 2-core CPU). The fine-tuned system runs last, with
  the adapter merged into the weights (`merge_adapter`), then unmerged.
- Idle OpenMP threads are told to sleep (`OMP_WAIT_POLICY=PASSIVE`, as the trainer does)
  when torch is not yet imported: measured on a shared 2-core machine, generating 4 tokens
  for 3 prompts took 15-30 s with spinning threads and about 1 s without.
- Contamination-aware: beside the whole eval split, every system's primary metric is also
  reported on the eval examples whose prompt is no exact or near (lexical) copy of a prompt
  the run trained on (`clean_subset`, with the duplicate checks' own test,
  `curation.leakage.lexical_copies`; same-meaning paraphrases count as clean, since the
  launch lets them through on purpose). It needs no embeddings, so it costs seconds at most
  (under one on the pilot); the verdict stays on the whole split.
- `evaluate` runs in the calling process; the app and the CLI call it in a background
  process of its own (`training.evaluate`), which never opens the store: the store is read
  only by `eval_rows_from_store` (in the launcher's process), the trainer's files by
  `train_rows_from_run`. `progress` is called as each system starts and after each batch.
  eval.json is written atomically (temporary file, rename).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from curation.errors import InvalidValue
from curation.messages import message_text
from curation.preference import undesirable
from curation.query import ExampleFilter
from training import metrics as M
from training.config import EvalConfig
from training.generate import generate
from training.run_folder import (EVAL_FILE, MANIFEST, SYSTEMS, TRAIN_FILE, EvalResult,
                                 RunManifest, now_iso, write_json)

LABEL_SLACK_TOKENS = 3
CLEAN_RULE = ("eval examples whose prompt is no exact or near (lexical) copy of a train "
              "prompt of the run; paraphrases count as clean")
EVAL_STATUSES = ("pending", "accepted", "needs_work")  # everything but rejected

Progress = Callable[[str, int, int], None]


# --- inputs ---------------------------------------------------------------------------------

def eval_rows_from_store(store) -> list[dict[str, Any]]:
    """The eval split's examples that are neither rejected nor deleted, ending with an
    assistant turn, less KTO records flagged undesirable (their answer is not a reference):
    [{"id", "messages", "label"}] in id order."""
    where = ExampleFilter(split=("eval",), status=EVAL_STATUSES)
    return [{"id": e.id, "messages": e.messages, "label": e.label}
            for e in store.find(where) if e.messages and e.messages[-1]["role"] == "assistant"
            and not undesirable(e.kind, e.desirable)]


def train_rows_from_run(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The run's accepted train examples from RUN_DIR/train.jsonl: [{"id", "messages",
    "label"}] (id: the Curate id where the file carries it)."""
    rows = []
    with open(Path(run_dir) / TRAIN_FILE, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            record = orjson.loads(line)
            # `curate`: Curate's fields; `metadata` and a top-level label: run folders
            # written before they moved under that key
            meta = record.get("curate") or record.get("metadata") or {}
            if meta.get("status", "accepted") != "accepted":
                continue
            rows.append({"id": meta.get("curate_id", record.get("id")),
                         "messages": record["messages"],
                         "label": meta.get("label", record.get("label"))})
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


# --- the evaluation -------------------------------------------------------------------------

def evaluate(run_dir: str | os.PathLike, eval_rows: Sequence[dict[str, Any]],
             train_rows: Sequence[dict[str, Any]], config: EvalConfig = EvalConfig(), *,
             progress: Progress | None = None, device: str | None = None) -> EvalResult:
    """Answer every eval row with the three systems, score them, compare fine-tuned with the
    baseline, decide, and write RUN_DIR/eval.json; returns what it wrote."""
    if not eval_rows:
        raise InvalidValue("no eval examples to evaluate on: put some examples in the eval "
                           "split (not rejected)")
    # Idle OpenMP threads sleep instead of spinning (as in the trainer): on a shared CPU the
    # spinning made generation 15-30 times slower. Takes effect if torch is not yet imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from training.models import load_run_model

    run_dir = Path(run_dir)
    manifest = RunManifest.read(run_dir / MANIFEST)
    system_prompt, max_new_tokens = config.system_prompt, config.max_new_tokens
    started = time.perf_counter()
    model, tokenizer = load_run_model(run_dir, device=device)
    chosen = pick_shots(train_rows, config.shots, config.seed)
    prompts = {
        "zero_shot": [build_prompt(r["messages"], system_prompt) for r in eval_rows],
        "few_shot": [build_prompt(r["messages"], system_prompt, chosen) for r in eval_rows],
        "fine_tuned": [build_prompt(r["messages"], system_prompt) for r in eval_rows],
    }
    references = [message_text(r["messages"][-1]) for r in eval_rows]
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

        kwargs = {"max_new_tokens": new_tokens, "batch_size": config.batch_size,
                  "on_batch": tick}
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
    comparison = M.paired_bootstrap(scores["fine_tuned"], scores[baseline_name],
                                    seed=config.seed)
    decision = M.verdict(systems[baseline_name]["primary"], systems["fine_tuned"]["primary"],
                         config.margin_points, comparison, metric=metric)
    examples = []
    for i, row in enumerate(eval_rows):
        ft, base = scores["fine_tuned"][i], scores[baseline_name][i]
        examples.append({
            "id": row.get("id"), "label": labels[i], "reference": references[i],
            **{s: predictions[s][i] for s in SYSTEMS},
            "scores": {s: scores[s][i] for s in SYSTEMS},
            "outcome": "win" if ft > base else "loss" if ft < base else "tie"})
    contamination = clean_subset(eval_rows, train_rows, scores)
    result = EvalResult(
        run_id=manifest.run_id or run_dir.resolve().name, created_at=now_iso(),
        primary_metric=metric, systems=systems,
        baseline={"system": baseline_name, **systems[baseline_name]},
        comparison={"a": "fine_tuned", "b": baseline_name, **comparison},
        verdict=decision,
        outcomes={k: sum(e["outcome"] == k for e in examples) for k in ("win", "loss", "tie")},
        settings={"system_prompt": system_prompt, "shots": config.shots,
                  "shot_ids": [s.get("id") for s in chosen],
                  "max_new_tokens": max_new_tokens, "max_new_tokens_used": new_tokens,
                  "batch_size": config.batch_size,
                  "margin_points": config.margin_points, "seed": config.seed,
                  "decoding": "greedy", "base_model": manifest.base_model,
                  "snapshot_id": manifest.snapshot_id,
                  "eval_examples": len(eval_rows), "train_examples": len(train_rows)},
        wall_seconds=round(time.perf_counter() - started, 1),
        wall_seconds_by_system=seconds, examples=examples, contamination=contamination)
    write_json(run_dir / EVAL_FILE, result.to_json())
    return EvalResult.from_json(orjson.loads(orjson.dumps(result.to_json())))  # as stored


def clean_subset(eval_rows: Sequence[dict[str, Any]], train_rows: Sequence[dict[str, Any]],
                 scores: dict[str, Sequence[float]]) -> dict[str, Any]:
    """The primary metric of each system on the whole eval split and on its clean subset
    (`CLEAN_RULE`), side by side, from the per-example `scores` ({system: [score per eval
    row]}): {"rule", "examples", "clean_examples", "copies": [{"id", "train_id", "method",
    "similarity"}], "primary": {system: {"all", "clean"}}}; "clean" is None when every eval
    example has a train copy."""
    from curation.leakage import lexical_copies

    copies = lexical_copies([r["messages"] for r in eval_rows],
                            [r["messages"] for r in train_rows])
    clean = [i for i in range(len(eval_rows)) if i not in copies]

    def mean(values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {"rule": CLEAN_RULE, "examples": len(eval_rows), "clean_examples": len(clean),
            "copies": [{"id": eval_rows[i].get("id"),
                        "train_id": train_rows[c["reference"]].get("id"),
                        "method": c["method"], "similarity": c["similarity"]}
                       for i, c in sorted(copies.items())],
            "primary": {system: {"all": mean(values),
                                 "clean": mean([values[i] for i in clean])}
                        for system, values in scores.items()}}


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


def with_margin(result: EvalResult, margin_points: float) -> EvalResult:
    """The stored result with its verdict decided again for another margin (no
    generation)."""
    decision = M.verdict(result.baseline["primary"], result.systems["fine_tuned"]["primary"],
                         margin_points, result.comparison, metric=result.primary_metric)
    return dataclasses.replace(result, verdict=decision)


__all__ = ["CLEAN_RULE", "answer_budget", "build_prompt", "clean_subset",
           "eval_rows_from_store", "evaluate", "pick_shots", "train_rows_from_run",
           "with_margin"]
