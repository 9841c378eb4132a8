"""Acceptance run on real data: the default pilot LoRA run on 10 Banking77 intents.

    .venv/bin/python bench/pilot_banking77.py [--out DIR] [--seed 77] [--json RESULT.json]

What it does, through the same library calls the app and the CLI make:
1. Picks 10 intents of Banking77 (`random.Random(seed).sample` of the 77 sorted names), 50
   training queries of each from ../shared/datasets/banking77/train.csv (seeded sample) and
   every official test.csv query of those intents as the eval split (40 each).
2. Writes them as chat examples (system prompt, user = the query, assistant = the intent
   label; label = the intent) and imports them into a fresh workspace (a temporary folder, or
   `--out`) with `curation.import_file`: the training queries as accepted train examples,
   the test queries as accepted eval examples.
3. Leakage: Banking77 is templated, so some test queries repeat (or nearly repeat) training
   queries. `curation.leakage.find_leakage` (the leakage check `launch` itself runs: exact, near
   and same-meaning duplicates) lists them; each leaked eval example is rejected in the store
   with the reason, so the evaluation only counts queries the model has not seen. The script
   prints how many, and which.
4. Launches the default pilot run, `training.launcher.launch(store, admin, TrainConfig())`
   (what `curate train` and the Training page call; `launch` refuses leakage, so it passing
   also checks step 3), waits for it with `training.launcher.wait`, printing progress.
5. Evaluates it as `curate eval` does: `training.eval.evaluate` on the store's eval rows
   (rejected ones left out) with the run's accepted train rows as the source of shots: the
   base model zero-shot, few-shot with `--shots` (default 10: one example of every intent, so
   the prompt-only baseline sees every label) and the fine-tuned model, all with the same
   system prompt and greedy decoding.
6. Prints the baseline (the better prompt-only system), the fine-tuned model, the verdict
   and the wall times (leakage check, training from launch to completion, each system's
   evaluation, total), then the targets: training and evaluation together under 15 minutes,
   the fine-tuned model at least 40 points of accuracy above the baseline.

The system prompt is what a user would write for this task and is the same for all three
systems (and in the training examples): it asks for the intent label only.

The data set is not part of Curate; without ../shared/datasets/banking77 (or `--data DIR`)
the script stops with a message saying where it expects it. `--set NAME=VALUE` changes a
TrainConfig setting for experiments; the acceptance figures are for the defaults.

Steps 1 to 3 and the options that choose the data are `build_pilot` and `add_pilot_options`,
which the other benches on this pilot (bench/learning_curve_banking77.py) import, so they all
build the same workspace; bench/noise_recovery.py and bench/routing.py share `choose`,
`write_jsonl`, `reject_leakage` and `follow_run`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "datasets" / "banking77"
SYSTEM_PROMPT = ("You are a banking support assistant. Classify the customer's message into "
                 "one of the bank's intent labels. Answer with the intent label only.")
TARGET_MINUTES = 15.0
TARGET_POINTS = 40.0
ACTOR = "pilot"


def load_csv(name: str, data: Path = DATA) -> list[tuple[str, str]]:
    path = data / name
    if not path.is_file():
        sys.exit(f"this benchmark needs the Banking77 data set at {path} (train.csv and "
                 "test.csv, CSV text,category; see docs/benchmarks.md); it is not part of "
                 "Curate")
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def choose(seed: int, intents: int, per_intent: int, data: Path = DATA):
    """(intents, train rows, eval rows): a seeded choice of intents, `per_intent` training
    queries of each, and every test query of them."""
    train, test = load_csv("train.csv", data), load_csv("test.csv", data)
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, label in train:
        by_intent[label].append(text)
    rng = random.Random(seed)
    chosen = sorted(rng.sample(sorted(by_intent), intents))
    train_rows = [(text, label) for label in chosen
                  for text in rng.sample(by_intent[label], min(per_intent, len(by_intent[label])))]
    eval_rows = [(text, label) for text, label in test if label in chosen]
    return chosen, train_rows, eval_rows


def write_jsonl(path: Path, rows: list[tuple[str, str]], prefix: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for n, (text, label) in enumerate(rows, 1):
            f.write(json.dumps({"id": f"{prefix}-{n}", "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": text},
                {"role": "assistant", "content": label}], "label": label}) + "\n")


def parse_settings(pairs: list[str]) -> dict:
    from training.config import TrainConfig, default

    values = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        kind = type(default(name)) if name in TrainConfig.__dataclass_fields__ else str
        values[name] = kind(raw)
    return values


def add_pilot_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose the pilot's data, its workspace, its settings and the result
    file; shared by the benches built on the pilot."""
    parser.add_argument("--out", type=Path, help="workspace folder to create and keep "
                                                 "(default: a temporary folder, removed)")
    parser.add_argument("--data", type=Path, default=DATA,
                        help=f"folder with Banking77's train.csv and test.csv (default {DATA})")
    parser.add_argument("--seed", type=int, default=77, help="choice of intents and queries")
    parser.add_argument("--intents", type=int, default=10)
    parser.add_argument("--per-intent", type=int, default=50)
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="NAME=VALUE", help="change a TrainConfig setting (experiments)")
    parser.add_argument("--json", type=Path, help="also write the figures here")


def fresh_workspace(out: Path | None, prefix: str) -> Path:
    """`out` if it is new or empty, else a new temporary folder named with `prefix`."""
    if out:
        if out.exists() and any(out.iterdir()):
            sys.exit(f"{out} is not empty; the pilot needs a fresh workspace")
        out.mkdir(parents=True, exist_ok=True)
        return out
    return Path(tempfile.mkdtemp(prefix=prefix))


@dataclass(frozen=True)
class Pilot:
    """The pilot's data as imported: the intents, the rows and the rejected leaked eval
    examples (the store's leakage records)."""

    intents: list[str]
    train_rows: list[tuple[str, str]]
    eval_rows: list[tuple[str, str]]
    leaks: list[dict]
    leakage_seconds: float

    @property
    def eval_examples(self) -> int:
        """Eval examples left after the leaked ones are rejected."""
        return len(self.eval_rows) - len(self.leaks)


def reject_leakage(store, user) -> list[dict]:
    """Reject every eval example that duplicates a train example (`find_leakage`: exact, near
    and same-meaning duplicates) in the store, with the reason, so that the evaluation only
    counts queries the model has not seen; the leaks."""
    from curation.leakage import find_leakage

    leaks = find_leakage(store, user)
    for leak in leaks:
        example = store.get(leak["eval_id"])
        store.update(example.id, base_version=example.version, actor=user.name,
                     status="rejected", reason=f"leakage: {leak['method']} duplicate of "
                     f"train #{leak['train_id']} (similarity {leak['similarity']:.2f})")
    return leaks


def follow_run(run):
    """Wait for a launched run to end, printing its progress about once a minute; the run."""
    from training.launcher import wait

    last_shown = 0.0
    while True:
        run = wait(run.dir, timeout=30)
        if not run.active:
            return run
        if run.last and time.perf_counter() - last_shown > 60:
            last_shown = time.perf_counter()
            print(f"  step {run.last['step']}/{run.total_steps} loss {run.last['loss']:.3f}"
                  f" {run.last['tokens_per_second']:.0f} tok/s ETA "
                  f"{run.last['eta_seconds']:.0f} s", flush=True)


def build_pilot(store, workspace: Path, admin, args: argparse.Namespace) -> Pilot:
    """Steps 1 to 3: choose the data (`args` from `add_pilot_options`), write it as chat
    examples into `workspace`, import it into `store` and reject the leaked eval examples,
    printing what it does."""
    from curation import import_file

    intents, train_rows, eval_rows = choose(args.seed, args.intents, args.per_intent,
                                            args.data)
    print(f"intents (seed {args.seed}): {', '.join(intents)}")
    print(f"workspace {workspace}; model cache "
          f"{os.environ.get('CURATE_MODEL_CACHE') or workspace / 'models'}")
    write_jsonl(workspace / "banking77-train.jsonl", train_rows, "train")
    write_jsonl(workspace / "banking77-test.jsonl", eval_rows, "test")
    for name, split in (("banking77-train.jsonl", "train"), ("banking77-test.jsonl", "eval")):
        report = import_file(store, workspace / name, split=split, status="accepted",
                             user=admin)
        print(f"import {split}: {report.summary()}")

    began = time.perf_counter()
    leaks = reject_leakage(store, admin)
    seconds = time.perf_counter() - began
    by_method = defaultdict(int)
    for leak in leaks:
        by_method[leak["method"]] += 1
    print(f"leakage: {len(leaks)} eval examples duplicate train examples "
          f"({dict(by_method) or 'none'}); rejected them, so {len(eval_rows) - len(leaks)} "
          f"of {len(eval_rows)} eval examples remain ({seconds:.0f} s)")
    for leak in leaks[:5]:
        print(f"  eval {store.get(leak['eval_id']).messages[1]['content']!r} ~ train "
              f"{store.get(leak['train_id']).messages[1]['content']!r} ({leak['method']})")
    return Pilot(intents, train_rows, eval_rows, leaks, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pilot_options(parser)
    parser.add_argument("--shots", type=int, default=10, help="few-shot examples")
    parser.add_argument("--margin", type=float, default=5.0, help="deploy margin, points")
    args = parser.parse_args()

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch, as the CLI's eval
    from curation.auth import User
    from curation.store import Store
    from training.config import EvalConfig, TrainConfig
    from training.eval import eval_rows_from_store, evaluate, train_rows_from_run
    from training.launcher import launch

    config = TrainConfig(**parse_settings(args.settings))
    workspace = fresh_workspace(args.out, "pilot-banking77-")
    admin = User(ACTOR, "admin")
    times: dict[str, float] = {}
    store = Store(workspace / "curate.duckdb")
    try:
        pilot = build_pilot(store, workspace, admin, args)
        intents, train_rows, leaks = pilot.intents, pilot.train_rows, pilot.leaks
        times["leakage_check"] = pilot.leakage_seconds

        print(f"training: {config.to_dict()}")
        began = time.perf_counter()
        run = follow_run(launch(store, admin, config))
        times["training"] = time.perf_counter() - began
        if run.state != "completed":
            sys.exit(f"run {run.id} {run.state}: {run.status.reason}")
        data = run.status.data
        print(f"run {run.id} completed in {times['training']:.0f} s: {run.last['step']} steps, "
              f"final loss {run.last['loss']:.3f}, {data.get('tokens', 0):,} tokens per epoch, "
              f"{run.status.precision}")

        began = time.perf_counter()
        rows = eval_rows_from_store(store)
        result = evaluate(run.dir, rows, train_rows_from_run(run.dir),
                          EvalConfig(system_prompt=SYSTEM_PROMPT, shots=args.shots,
                                     margin_points=args.margin))
        times["evaluation"] = time.perf_counter() - began
    finally:
        store.close()

    by_system = result.wall_seconds_by_system
    times |= {f"eval_{k}": v for k, v in by_system.items()}
    times["total"] = times["leakage_check"] + times["training"] + times["evaluation"]
    systems, baseline = result.systems, result.baseline
    gain = (systems["fine_tuned"]["accuracy"] - baseline["accuracy"]) * 100
    print(f"\nevaluation on {len(rows)} eval examples ({args.shots} shots, "
          f"{result.settings['max_new_tokens_used']} new tokens at most):")
    for name in ("zero_shot", "few_shot", "fine_tuned"):
        m = systems[name]
        mark = "  (baseline)" if name == baseline["system"] else ""
        print(f"  {name:<11} accuracy {m['accuracy'] * 100:5.1f}  macro-F1 "
              f"{m['macro_f1'] * 100:5.1f}  {by_system.get(name, 0):5.0f} s{mark}")
    print(f"{result.verdict['decision'].upper()}: {result.verdict['reason']}")
    print("wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    minutes = (times["training"] + times["evaluation"]) / 60
    print(f"target time: training + evaluation {minutes:.1f} min (< {TARGET_MINUTES:g}: "
          f"{'met' if minutes < TARGET_MINUTES else 'NOT met'}); with the leakage check "
          f"{times['total'] / 60:.1f} min")
    print(f"target accuracy: fine-tuned {gain:+.1f} points over the baseline "
          f"(>= {TARGET_POINTS:g}: {'met' if gain >= TARGET_POINTS else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps({
            "intents": intents, "train_examples": len(train_rows),
            "eval_examples": len(rows), "leaked_eval_rejected": len(leaks),
            "config": config.to_dict(), "run_id": run.id,
            "accuracy": {k: systems[k]["accuracy"] for k in systems},
            "macro_f1": {k: systems[k]["macro_f1"] for k in systems},
            "baseline": baseline["system"], "verdict": result.verdict,
            "seconds": {k: round(v, 1) for k, v in times.items()}}, indent=2))
    if not args.out:
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    main()
