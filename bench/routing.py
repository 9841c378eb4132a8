"""Acceptance run on real data: the Banking77 pilot model pre-labels unlabelled queries and
routes them by confidence.

    .venv/bin/python bench/routing.py [--out DIR] [--seed 77] [--unlabelled 1000] \
        [--json RESULT.json]

What it does, through the `Workspace` facade (the calls `curate` and the app make):
1. Builds the pilot workspace of bench/pilot_banking77.py with `--intents` (13) seeded
   intents (the pilot's 10 have only 683 train queries left outside the training sample,
   13 have 1,033), 50 training queries of each (`choose`) as accepted train examples, every official test query
   of them as accepted eval examples, and each eval example that duplicates a training query
   (`ws.leakage()`: exact, near and same-meaning duplicates) rejected with the reason.
   Trains the default pilot run (`ws.launch(TrainConfig())`) and evaluates it as `curate eval`
   does (`ws.start_evaluation`, the pilot's system prompt and 10 shots, then
   `ws.record_runs()`).
2. Takes `--unlabelled` (1,000) further train.csv queries of the same intents that are not in
   the training sample (a seeded sample when more are left, else all that are left: the script
   says how many) and imports them as prompts without an answer (system prompt and query, no
   assistant turn, no label: `ws.import_file(..., unanswered=True)`), so they are pending
   train examples that need an answer. Their true intents stay in this script, keyed by the
   records' external ids.
3. `ws.predict(run)` pre-labels the pending examples (progress printed), `ws.calibration(run)`
   checks the confidence on the eval split, `ws.route(run, seed=...)` routes them by the
   default thresholds 0.9 and 0.7.
4. Reports the share auto-accepted, sent to Model suggestions and left to people; the
   accuracy of the auto-accepted band against the true intents, with the labels read back
   from the store (and checked to be accepted by `model:<run>`), and of the middle and low
   bands' suggestions; the QA sample size; the eval split's expected calibration error and
   auto band accuracy; the wall times. For context, the auto band's share and accuracy at
   other high thresholds, from the same confidences (arithmetic with
   `curation.suggestions.calibration`, nothing is run again), on the routed queries and on
   the eval split. Last, the targets: auto band accuracy at least 97% at a share of at least
   50%.

`--per-intent`, `--unlabelled`, `--eval-limit` and `--set epochs=1` make a smoke run; the
acceptance figures are for the defaults. The data set is not part of Curate (`--data`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pilot_banking77 as pilot  # noqa: E402  (bench/ is not a package)

TARGET_ACCURACY = 0.97
TARGET_SHARE = 0.50
OTHER_THRESHOLDS = (0.8, 0.9, 0.95, 0.99)
ACTOR = "routing-bench"


def unlabelled_rows(intents: list[str], train_rows: list[tuple[str, str]], n: int,
                    seed: int, data: Path) -> tuple[list[tuple[str, str]], int]:
    """(rows, left): up to `n` train.csv queries of the intents that are not in the training
    sample (nor the same text as one), a seeded sample when more are left; `left` is how many
    there were to choose from."""
    taken = {text for text, _ in train_rows}
    chosen = set(intents)
    seen: set[str] = set()
    rest = []
    for text, label in pilot.load_csv("train.csv", data):
        if label in chosen and text not in taken and text not in seen:
            seen.add(text)
            rest.append((text, label))
    rows = rest if n >= len(rest) else random.Random(f"unlabelled:{seed}").sample(rest, n)
    return rows, len(rest)


def write_prompts(path: Path, rows: list[tuple[str, str]]) -> dict[str, str]:
    """Write the queries as prompts without an answer (system prompt, user turn, no label);
    the true intent of each external id."""
    truth = {}
    with open(path, "w", encoding="utf-8") as f:
        for n, (text, label) in enumerate(rows, 1):
            key = f"unlabelled-{n}"
            truth[key] = label
            f.write(json.dumps({"id": key, "messages": [
                {"role": "system", "content": pilot.SYSTEM_PROMPT},
                {"role": "user", "content": text}]}) + "\n")
    return truth


def follow_evaluation(ws, run_id: str):
    """Wait for the run's evaluation process to end, printing its progress now and then."""
    shown = 0.0
    while True:
        job = ws.evaluation_job(run_id)
        if job is None or not job.active:
            return job
        if time.perf_counter() - shown > 30:
            shown = time.perf_counter()
            print(f"  evaluating {job.done}/{job.total} answers ({job.phase or 'loading'})",
                  flush=True)
        time.sleep(1)


def progress_printer(what: str):
    """A progress(done, total) callback that prints every tenth."""
    last = [-1]

    def show(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth > last[0]:
            last[0] = tenth
            print(f"  {what} {done}/{total}", flush=True)
    return show


def accuracy(pairs: list[bool]) -> float | None:
    return sum(pairs) / len(pairs) if pairs else None


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def sweep(confidences: list[float], correct: list[bool]) -> list[dict]:
    """The auto band (confidence >= t) at each of OTHER_THRESHOLDS: share and accuracy."""
    from curation.suggestions import calibration

    rows = []
    for t in OTHER_THRESHOLDS:
        high = calibration(confidences, correct, high=t, low=min(t, 0.7))["bands"]["high"]
        rows.append({"threshold": t, "examples": high["examples"], "share": high["share"],
                     "accuracy": high["accuracy"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="workspace folder to create and keep "
                                                 "(default: a temporary folder, removed)")
    parser.add_argument("--data", type=Path, default=pilot.DATA,
                        help=f"Banking77's train.csv and test.csv (default {pilot.DATA})")
    parser.add_argument("--seed", type=int, default=77,
                        help="choice of intents and queries, and the QA sample's seed")
    parser.add_argument("--intents", type=int, default=13,
                        help="how many intents (13: the fewest with 1,000 queries left over)")
    parser.add_argument("--per-intent", type=int, default=50)
    parser.add_argument("--unlabelled", type=int, default=1000,
                        help="further train queries to pre-label (all that are left if fewer)")
    parser.add_argument("--shots", type=int, default=10, help="few-shot examples (evaluation)")
    parser.add_argument("--eval-limit", type=int, default=None,
                        help="evaluate on the first N eval examples only (smoke runs)")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="NAME=VALUE", help="change a TrainConfig setting (smoke runs)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    intents, train_rows, eval_rows = pilot.choose(args.seed, args.intents, args.per_intent,
                                                  args.data)
    extra, left = unlabelled_rows(intents, train_rows, args.unlabelled, args.seed,
                                  args.data)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch, as the CLI's eval
    from curate import Workspace
    from curation.auth import User
    from curation.routing import model_actor
    from curation.suggestions import calibration as calibration_of
    from training.config import EvalConfig, TrainConfig
    from training.run_folder import read_calibration

    config = TrainConfig(**pilot.parse_settings(args.settings))
    folder = pilot.fresh_workspace(args.out, "routing-banking77-")
    print(f"intents (seed {args.seed}): {', '.join(intents)}")
    print(f"workspace {folder}; model cache "
          f"{os.environ.get('CURATE_MODEL_CACHE') or folder / 'models'}")
    pilot.write_jsonl(folder / "banking77-train.jsonl", train_rows, "train")
    pilot.write_jsonl(folder / "banking77-test.jsonl", eval_rows, "test")
    truth = write_prompts(folder / "banking77-unlabelled.jsonl", extra)
    times: dict[str, float] = {}
    ws = Workspace.open(folder / "curate.duckdb", User(ACTOR, "admin"))
    try:
        # 1. the pilot workspace, its run and its evaluation
        for name, split in (("banking77-train.jsonl", "train"), ("banking77-test.jsonl", "eval")):
            report, _ = ws.import_file(folder / name, split=split, status="accepted")
            print(f"import {split}: {report.summary()}")
        began = time.perf_counter()
        leaks = ws.leakage()
        for leak in leaks:
            example = ws.store.get(leak["eval_id"])
            ws.decide(example.id, "reject", base_version=example.version,
                      reason=f"leakage: {leak['method']} duplicate of train "
                             f"#{leak['train_id']} (similarity {leak['similarity']:.2f})")
        times["leakage_check"] = time.perf_counter() - began
        print(f"leakage: rejected {len(leaks)} eval examples that duplicate train examples "
              f"({dict(Counter(leak['method'] for leak in leaks)) or 'none'}), "
              f"{len(eval_rows) - len(leaks)} of {len(eval_rows)} remain")

        print(f"training: {config.to_dict()}")
        began = time.perf_counter()
        run = pilot.follow_run(ws.launch(config))
        times["training"] = time.perf_counter() - began
        if run.state != "completed":
            sys.exit(f"run {run.id} {run.state}: {run.status.reason}")
        print(f"run {run.id} completed in {times['training']:.0f} s")

        began = time.perf_counter()
        job = ws.start_evaluation(run.id, EvalConfig(system_prompt=pilot.SYSTEM_PROMPT,
                                                     shots=args.shots), limit=args.eval_limit)
        print(f"evaluating on {job.status.examples} eval examples")
        job = follow_evaluation(ws, run.id)
        times["evaluation"] = time.perf_counter() - began
        if job is None or job.state != "completed":
            sys.exit(f"evaluation of run {run.id} did not complete: "
                     f"{job and (job.status.reason or job.state)}")
        ws.record_runs()
        result = ws.evaluation(run.id)
        fine_tuned = result.systems["fine_tuned"]
        print(f"evaluated in {times['evaluation']:.0f} s: fine-tuned accuracy "
              f"{pct(fine_tuned['accuracy'])}, baseline {result.baseline['system']} "
              f"{pct(result.baseline['accuracy'])}, {result.verdict['decision']}")

        # 2. the unlabelled queries, as prompts without an answer
        report, _ = ws.import_file(folder / "banking77-unlabelled.jsonl", split="train",
                                   status="pending", unanswered=True)
        print(f"import unlabelled: {report.summary()} ({left} queries of these intents were "
              f"left outside the training sample; asked for {args.unlabelled})")
        if report.needs_answer != len(extra):
            sys.exit(f"expected {len(extra)} prompts that need an answer, the import stored "
                     f"{report.needs_answer}")

        # 3. pre-label, check calibration, route
        began = time.perf_counter()
        predicted = ws.predict(run.id, status=("pending",),
                               progress=progress_printer("pre-labelling"))
        times["pre_labelling"] = time.perf_counter() - began
        print(f"pre-labelled {len(predicted.suggestions)} in {times['pre_labelling']:.0f} s "
              f"({predicted.method}): {predicted.bands}")
        began = time.perf_counter()
        figures = ws.calibration(run.id)
        times["calibration"] = time.perf_counter() - began
        began = time.perf_counter()
        routing = ws.route(run.id, seed=args.seed)
        times["routing"] = time.perf_counter() - began
        status = ws.routing_status()

        # 4. the bands against the true intents
        key_of = {e.id: e.external_id for e in ws.store.find()}
        auto = []
        for example_id in routing.auto_accepted:
            example = ws.store.get(example_id)
            if example.status != "accepted" or example.updated_by != model_actor(run.id):
                sys.exit(f"auto-accepted #{example_id} reads back as {example.status} by "
                         f"{example.updated_by}")
            if example.messages[-1] != {"role": "assistant", "content": example.label}:
                sys.exit(f"auto-accepted #{example_id}: answer and label differ")
            auto.append(example.label == truth[key_of[example_id]])
        bands = {"auto_accepted": auto}
        for name, ids in (("review", routing.suggested + routing.disagreed),
                          ("left", routing.left)):
            bands[name] = [ws.suggestion(i).answer == truth[key_of[i]] for i in ids]
        routed_conf = [s.confidence for s in predicted.suggestions]
        routed_ok = [s.answer == truth[key_of[s.example_id]] for s in predicted.suggestions]
        calibrated = read_calibration(run.dir, result.created_at)
        contexts = {"routed": sweep(routed_conf, routed_ok),
                    "eval": sweep(calibrated["confidences"], calibrated["correct"])}
        routed_ece = calibration_of(routed_conf, routed_ok)["ece"]
    finally:
        ws.close()

    n = routing.routed
    shares = routing.shares()
    eval_high = figures["bands"]["high"]
    print(f"\nrouted {n} pre-labelled queries (thresholds {routing.thresholds[0]:g} and "
          f"{routing.thresholds[1]:g}):")
    for name, title in (("auto_accepted", "auto-accepted"), ("review", "Model suggestions"),
                        ("left", "left to people")):
        print(f"  {title:<18} {len(bands[name]):>5} ({pct(shares[name])}), accuracy against "
              f"the true intents {pct(accuracy(bands[name]))}")
    print(f"  QA sample: {len(routing.qa_sample)} of the auto-accepted (seed {routing.seed}, "
          f"share {routing.qa_share:g}); disagreed with a stored answer: "
          f"{len(routing.disagreed)}")
    print(f"  all suggestions: accuracy {pct(accuracy(routed_ok))}, expected calibration "
          f"error {routed_ece:.3f}")
    print(f"eval split ({figures['examples']} examples, {figures['method']}): expected "
          f"calibration error {figures['ece']:.3f}; auto band {eval_high['examples']} "
          f"({pct(eval_high['share'])}) at accuracy {pct(eval_high['accuracy'])}")
    for name, rows in contexts.items():
        print(f"auto band at other thresholds ({name}): " + "; ".join(
            f">= {r['threshold']:g}: {pct(r['share'])} at {pct(r['accuracy'])}" for r in rows))
    print("wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    auto_acc, auto_share = accuracy(auto), shares["auto_accepted"] or 0.0
    met_acc = auto_acc is not None and auto_acc >= TARGET_ACCURACY
    print(f"target: auto band accuracy {pct(auto_acc)} (>= {TARGET_ACCURACY:.0%}: "
          f"{'met' if met_acc else 'NOT met'}) at a share of {pct(auto_share)} "
          f"(>= {TARGET_SHARE:.0%}: {'met' if auto_share >= TARGET_SHARE else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps({
            "intents": intents, "train_examples": len(train_rows),
            "eval_examples": figures["examples"], "leaked_eval_rejected": len(leaks),
            "unlabelled": {"asked": args.unlabelled, "available": left, "imported": len(extra),
                           "by_intent": dict(Counter(label for _, label in extra))},
            "config": config.to_dict(), "run_id": run.id,
            "evaluation": {k: result.systems[k]["accuracy"] for k in result.systems},
            "verdict": result.verdict["decision"], "method": predicted.method,
            "thresholds": {"high": routing.thresholds[0], "low": routing.thresholds[1]},
            "bands": {k: {"examples": len(v), "share": shares[k], "accuracy": accuracy(v)}
                      for k, v in bands.items()},
            "disagreed": len(routing.disagreed), "qa_sample": len(routing.qa_sample),
            "suggestions_accuracy": accuracy(routed_ok), "routed_ece": routed_ece,
            "eval_calibration": {"ece": figures["ece"], "bands": figures["bands"]},
            "routing_status": {k: status[k] for k in ("qa", "eval")},
            "other_thresholds": contexts,
            "targets": {"auto_accuracy": auto_acc, "auto_share": auto_share,
                        "met": met_acc and auto_share >= TARGET_SHARE},
            "seconds": {k: round(v, 1) for k, v in times.items()}}, indent=2))
    if not args.out:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
