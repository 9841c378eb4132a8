"""Acceptance run of issue 11: does curating only what Curate points at win back what label
noise cost?

    .venv/bin/python bench/noise_recovery.py [--budget 0.2] [--flip-share 0.1] [--json OUT]

The pilot's data (bench/pilot_banking77.py: `choose`, `write_jsonl`, `reject_leakage`,
`follow_run`): 10 Banking77 intents picked with the seed, 50 train queries of each, every
official test query of them as the eval split, and the eval queries that duplicate a train
query rejected. Everything else goes through the `curate.Workspace` facade, the calls the
CLI and the pages make:
1. Clean: a fresh workspace, `import_file`, `launch(TrainConfig())` (the defaults, or
   `--set NAME=VALUE`), `start_evaluation`, `evaluation`: the fine-tuned accuracy.
2. Noisy: `--flip-share` (10%) of the train queries, drawn with the seed, get another of
   the intents (drawn uniformly), as label and as assistant answer (the answer is the intent).
   Imported into a second fresh workspace, trained and evaluated the same way.
3. Oracle SME, in the noisy workspace, within a review budget of `--budget` (20%) of the
   train examples. It looks ONLY at what Curate shows, in this order, and every example it
   looks at counts against the budget whether or not it was wrong:
   a. the Labels to double-check queue after `run_checks(["label_issues"])`: every example
      the check scored, lowest label quality first (the flagged ones, then those below the
      flag line), as an SME works down it: until `--stop-after` (10) labels in a row were
      right;
   b. the Eval failures queue of the noisy run (`failures`, worst first, then id): for each
      failure the nearest training examples of its evidence (`failure_evidence`, 3, most
      similar first), those not looked at already;
   c. with budget left, back to the Labels to double-check queue where it stopped.
   The oracle knows the true labels: a flipped example gets its true label and answer back
   through `decide(..., "accept", label=..., messages=...)`, the Review page's step, so the
   fix is versioned and audited under the oracle's name; a flagged example whose label is
   right is dismissed as "label is right" (`dismiss`), as an SME would. Then the workspace
   trains and evaluates a third time.
4. Reports the three accuracies, the drop (clean - noisy), the share of it recovered
   ((fixed - noisy) / (clean - noisy)), the examples looked at and their share of train, how
   many of the flipped examples were found (by each source) beside how many a random sample
   of the same size holds on average (the baseline: reviewing without Curate), and the wall
   times. The drop and
   the recovery come with 95% paired-bootstrap intervals over the eval examples (the three
   evaluations score the same eval examples). Below `--min-drop` points (2) the recovered
   share is noise divided by noise and is reported as not meaningful.
Targets: at least 80% of the drop recovered, having looked at no more than 20% of train.

Each evaluation is the pilot's (`EvalConfig` with its system prompt and 10 shots): the
evaluation has no way to run the fine-tuned system alone, so the prompt-only baselines are
measured each time too (`--eval-limit N` evaluates the first N eval examples only, for a
smoke run). Workspaces live in a temporary folder, removed at the end, or in `--out`, kept.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pilot_banking77 import (ACTOR, DATA, SYSTEM_PROMPT, choose, follow_run,  # noqa: E402
                             parse_settings, reject_leakage, write_jsonl)

TARGET_RECOVERED = 0.80
TARGET_BUDGET = 0.20
ORACLE = "oracle"
EVIDENCE_K = 3
LABEL_QUEUE = "label_quality"  # Labels to double-check
BOOTSTRAP = 2000


def flip_labels(rows: list[tuple[str, str]], intents: list[str], share: float,
                seed: int) -> tuple[list[tuple[str, str]], set[int]]:
    """The rows with `round(share * len(rows))` of them, drawn with `seed`, moved to another
    intent drawn uniformly; the noisy rows and the indices flipped."""
    rng = random.Random(seed)
    flipped = set(rng.sample(range(len(rows)), round(share * len(rows))))
    noisy = [(text, rng.choice([i for i in intents if i != label]) if n in flipped else label)
             for n, (text, label) in enumerate(rows)]
    return noisy, flipped


def build(folder: Path, train_rows, eval_rows, user):
    """A fresh workspace in `folder` with the train rows and the eval rows imported as
    accepted examples and the leaked eval examples rejected; (workspace, leaks)."""
    from curate.workspace import Workspace

    folder.mkdir(parents=True)
    write_jsonl(folder / "banking77-train.jsonl", train_rows, "train")
    write_jsonl(folder / "banking77-test.jsonl", eval_rows, "test")
    ws = Workspace.open(folder / "curate.duckdb", user)
    for name, split in (("banking77-train.jsonl", "train"), ("banking77-test.jsonl", "eval")):
        report, _ = ws.import_file(folder / name, split=split, status="accepted")
        print(f"  import {split}: {report.summary()}")
    leaks = reject_leakage(ws.store, user)
    print(f"  leakage: rejected {len(leaks)} eval examples that duplicate a train query "
          f"({dict(Counter(leak['method'] for leak in leaks))})")
    return ws, leaks


def train_and_evaluate(ws, config, eval_config, limit, times: dict, name: str):
    """Launch a run on the accepted train examples, wait for it, evaluate it and wait; the
    run's id and its `EvalResult`. Adds the wall times to `times` under `name`."""
    from training.evaluate import wait_eval

    began = time.perf_counter()
    run = follow_run(ws.launch(config))
    times[f"{name}_training"] = time.perf_counter() - began
    if run.state != "completed":
        sys.exit(f"run {run.id} {run.state}: {run.status.reason}")
    print(f"  run {run.id}: {run.last['step']} steps, final loss {run.last['loss']:.3f}, "
          f"{times[f'{name}_training']:.0f} s")
    began = time.perf_counter()
    job = ws.start_evaluation(run.id, eval_config, limit=limit)
    job = wait_eval(job.dir)
    times[f"{name}_evaluation"] = time.perf_counter() - began
    if job is None or job.state != "completed":
        sys.exit(f"evaluation of run {run.id} {job and job.state}: "
                 f"{job and job.status.reason}")
    result = ws.evaluation(run.id)
    ws.record_runs()  # the store learns of the run; its failures feed the Eval failures queue
    print(f"  fine-tuned accuracy {result.systems['fine_tuned']['accuracy'] * 100:.1f} on "
          f"{len(result.examples)} eval examples ({times[f'{name}_evaluation']:.0f} s)")
    return run.id, result


@dataclass
class OracleReview:
    """What the oracle looked at (in order, with the source that showed it) and fixed."""

    budget: int
    looked: dict[int, str] = field(default_factory=dict)  # example id -> source
    fixed: dict[int, str] = field(default_factory=dict)  # example id -> source
    flagged: int = 0  # label-issue findings
    queue_first_pass: int = 0  # looked at in the queue before the eval failures
    failures: int = 0  # eval failures of the noisy run
    failures_opened: int = 0  # of them, whose evidence the oracle went through

    def by_source(self, which: dict[int, str]) -> dict[str, int]:
        return dict(Counter(which.values()))


def oracle_review(store, truth: dict[str, str], budget: int, stop_after: int) -> OracleReview:
    """Look at what Curate shows, in the order of the module docstring, until `budget`
    examples were looked at; give every wrong label its true one back. The oracle is a
    reviewer (an SME) of its own; `truth` maps an example's external id to its true label."""
    from curate.workspace import Workspace
    from curation.auth import User

    ws = Workspace(store, User(ORACLE, "reviewer"))
    review = OracleReview(budget)
    (check,) = ws.run_checks(["label_issues"])
    review.flagged = len(check.issues)
    print(f"  label_issues: {review.flagged} flagged ({check.summary})")

    def look(example_id: int, source: str) -> bool:
        """Whether the example's label was wrong (and is now fixed)."""
        review.looked[example_id] = source
        example = ws.store.get(example_id)
        right = truth[example.external_id]
        if example.label == right:
            if source == LABEL_QUEUE:
                ws.dismiss("label_issues", [example_id], "label_ok")
            return False
        messages = [dict(m, content=right) if m["role"] == "assistant" else m
                    for m in example.messages]
        ws.decide(example_id, "accept", base_version=example.version, label=right,
                  messages=messages, reason=f"oracle: the label was {example.label!r}, "
                  f"the true intent is {right!r} (found by {source})")
        review.fixed[example_id] = source
        return True

    def work_down_queue(stop_after: int | None) -> None:
        """Next in the queue until the budget is spent, the queue is, or `stop_after`
        right labels in a row. A fixed or dismissed example leaves the queue, so the head is
        the next one to look at, less those looked at from other sources."""
        right_in_a_row, after = 0, None
        while len(review.looked) < budget and (stop_after is None
                                               or right_in_a_row < stop_after):
            items = ws.upcoming(LABEL_QUEUE, after=after, limit=1)
            if not items:
                return
            after = items[0].position
            if items[0].example.id in review.looked:
                continue
            right_in_a_row = 0 if look(items[0].example.id, LABEL_QUEUE) else right_in_a_row + 1

    work_down_queue(stop_after)
    review.queue_first_pass = len(review.looked)
    failures = ws.failures()
    review.failures = len(failures)
    for failure in failures:
        if len(review.looked) >= budget:
            break
        review.failures_opened += 1
        for neighbour in ws.failure_evidence(failure, k=EVIDENCE_K).neighbours:
            if neighbour.example_id not in review.looked and len(review.looked) < budget:
                look(neighbour.example_id, "eval_failure_evidence")
    work_down_queue(None)
    return review


def paired_scores(results: dict, external: dict[str, dict[int, str]]) -> np.ndarray:
    """(3, n) fine-tuned scores of clean, noisy and fixed on the eval examples all three
    evaluated, matched by external id (the clean workspace's ids differ in nothing but
    the database they live in, yet are matched by name, not assumed)."""
    per = {}
    for name, result in results.items():
        ids = external["clean" if name == "clean" else "noisy"]
        per[name] = {ids[e["id"]]: float(e["scores"]["fine_tuned"]) for e in result.examples}
    common = sorted(set(per["clean"]) & set(per["noisy"]) & set(per["fixed"]))
    return np.array([[per[name][k] for k in common] for name in ("clean", "noisy", "fixed")])


def bootstrap(scores: np.ndarray, seed: int) -> dict[str, list[float]]:
    """95% paired-bootstrap intervals (resampling eval examples) of the drop and of the gain
    back, in points, and of the recovered share where every resampled drop is positive."""
    rng = np.random.default_rng(seed)
    n = scores.shape[1]
    picks = rng.integers(0, n, size=(BOOTSTRAP, n))
    means = scores[:, picks].mean(axis=2) * 100  # (3, BOOTSTRAP)
    drop, gain = means[0] - means[1], means[2] - means[1]
    out = {"drop_points": np.percentile(drop, [2.5, 97.5]).round(1).tolist(),
           "gain_points": np.percentile(gain, [2.5, 97.5]).round(1).tolist()}
    if (drop > 0).all():
        out["recovered_share"] = np.percentile(gain / drop, [2.5, 97.5]).round(3).tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder to create and keep the three "
                                                 "workspaces' two folders in (default: a "
                                                 "temporary folder, removed)")
    parser.add_argument("--data", type=Path, default=DATA, help="the Banking77 folder "
                                                                "(train.csv, test.csv)")
    parser.add_argument("--seed", type=int, default=77, help="choice of intents, queries and "
                                                             "flips")
    parser.add_argument("--intents", type=int, default=10)
    parser.add_argument("--per-intent", type=int, default=50)
    parser.add_argument("--flip-share", type=float, default=0.1,
                        help="share of the train labels flipped (default 0.1)")
    parser.add_argument("--budget", type=float, default=TARGET_BUDGET,
                        help="review budget, as a share of the train examples (default 0.2)")
    parser.add_argument("--stop-after", type=int, default=10,
                        help="right labels in a row after which the oracle leaves the Labels "
                             "to double-check queue for the eval failures (default 10)")
    parser.add_argument("--min-drop", type=float, default=2.0,
                        help="points of drop below which the recovered share is not "
                             "meaningful (default 2)")
    parser.add_argument("--shots", type=int, default=10, help="few-shot examples (baseline)")
    parser.add_argument("--eval-limit", type=int, help="evaluate only the first N eval "
                                                       "examples (smoke runs)")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="NAME=VALUE", help="change a TrainConfig setting (smoke runs, "
                                                   "experiments)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not 0 < args.flip_share < 1 or not 0 < args.budget <= 1:
        sys.exit("--flip-share must be in (0, 1) and --budget in (0, 1]")

    intents, train_rows, eval_rows = choose(args.seed, args.intents, args.per_intent,
                                            args.data)
    noisy_rows, flipped = flip_labels(train_rows, intents, args.flip_share, args.seed)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch, as the CLI's eval
    from curation.auth import User
    from training.config import EvalConfig, TrainConfig

    config = TrainConfig(**parse_settings(args.settings))
    eval_config = EvalConfig(system_prompt=SYSTEM_PROMPT, shots=args.shots)
    if args.out:
        if args.out.exists() and any(args.out.iterdir()):
            sys.exit(f"{args.out} is not empty; the benchmark needs fresh workspaces")
        folder = args.out
    else:
        folder = Path(tempfile.mkdtemp(prefix="noise-recovery-"))
    budget = int(args.budget * len(train_rows))
    admin = User(ACTOR, "admin")  # imports, trains and evaluates; the oracle only reviews
    truth = {f"train-{n}": label for n, (_, label) in enumerate(train_rows, 1)}
    truth |= {f"test-{n}": label for n, (_, label) in enumerate(eval_rows, 1)}
    print(f"intents (seed {args.seed}): {', '.join(intents)}")
    print(f"{len(train_rows)} train, {len(eval_rows)} eval queries; {len(flipped)} train "
          f"labels flipped ({args.flip_share:.0%}); review budget {budget} examples "
          f"({args.budget:.0%} of train); workspaces in {folder}; training {config.to_dict()}")

    times: dict[str, float] = {}
    results, run_ids, external = {}, {}, {}
    started = time.perf_counter()
    print("\n1. clean")
    ws, leaks_clean = build(folder / "clean", train_rows, eval_rows, admin)
    with ws:
        run_ids["clean"], results["clean"] = train_and_evaluate(
            ws, config, eval_config, args.eval_limit, times, "clean")
        external["clean"] = {e.id: e.external_id for e in ws.store.find()}
    print(f"\n2. noisy: {len(flipped)} labels flipped")
    ws, leaks_noisy = build(folder / "noisy", noisy_rows, eval_rows, admin)
    with ws:
        run_ids["noisy"], results["noisy"] = train_and_evaluate(
            ws, config, eval_config, args.eval_limit, times, "noisy")
        external["noisy"] = {e.id: e.external_id for e in ws.store.find()}
        print(f"\n3. oracle review of what Curate shows, up to {budget} examples")
        began = time.perf_counter()
        review = oracle_review(ws.store, truth, budget, args.stop_after)
        times["review"] = time.perf_counter() - began
        flipped_ids = {i for i, ext in external["noisy"].items()
                       if ext.startswith("train-") and int(ext[6:]) - 1 in flipped}
        found = {i: s for i, s in review.fixed.items() if i in flipped_ids}
        print(f"  looked at {len(review.looked)} ({review.by_source(review.looked)}; "
              f"{review.queue_first_pass} in the queue's first pass), fixed "
              f"{len(review.fixed)} ({review.by_source(review.fixed)}); evidence of "
              f"{review.failures_opened} of {review.failures} eval failures opened "
              f"({times['review']:.0f} s)")
        print("\n4. fixed: train again on the reviewed data")
        run_ids["fixed"], results["fixed"] = train_and_evaluate(
            ws, config, eval_config, args.eval_limit, times, "fixed")
    times["total"] = time.perf_counter() - started

    same_leaks = ({external["clean"][leak["eval_id"]] for leak in leaks_clean}
                  == {external["noisy"][leak["eval_id"]] for leak in leaks_noisy})
    scores = paired_scores(results, external)
    accuracy = {k: results[k].systems["fine_tuned"]["accuracy"] * 100 for k in results}
    drop = accuracy["clean"] - accuracy["noisy"]
    gain = accuracy["fixed"] - accuracy["noisy"]
    meaningful = drop >= args.min_drop
    recovered = gain / drop if meaningful else None
    intervals = bootstrap(scores, args.seed)
    reviewed_share = len(review.looked) / len(train_rows)

    print(f"\nresults on {scores.shape[1]} eval examples (same in all three: "
          f"{scores.shape[1] == len(results['clean'].examples)}; same leaked eval examples "
          f"rejected in both workspaces: {same_leaks}):")
    for name in ("clean", "noisy", "fixed"):
        r = results[name]
        print(f"  {name:<6} fine-tuned accuracy {accuracy[name]:5.1f}  macro-F1 "
              f"{r.systems['fine_tuned']['macro_f1'] * 100:5.1f}  (baseline "
              f"{r.baseline['system']} {r.baseline['accuracy'] * 100:.1f}; run {run_ids[name]})")
    print(f"  drop clean - noisy {drop:+.1f} points (95% CI {intervals['drop_points']}); "
          f"gain fixed - noisy {gain:+.1f} (95% CI {intervals['gain_points']})")
    if meaningful:
        print(f"  recovered share {recovered:.0%}"
              + (f" (95% CI {intervals['recovered_share']})"
                 if "recovered_share" in intervals else ""))
    else:
        print(f"  recovered share NOT MEANINGFUL: the drop ({drop:+.1f} points) is below "
              f"{args.min_drop:g} points: too small to divide by (noise over noise)")
    at_random = len(review.looked) * len(flipped) / len(train_rows)
    print(f"  looked at {len(review.looked)} examples = {reviewed_share:.1%} of train; found "
          f"{len(found)} of {len(flipped)} flipped ({review.by_source(found)}); "
          f"{len(review.fixed) - len(found)} other fixes; as many examples drawn at random "
          f"would hold {at_random:.1f} flipped on average")
    print("wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    budget_met = reviewed_share <= TARGET_BUDGET
    if meaningful:
        met = recovered >= TARGET_RECOVERED and budget_met
        print(f"target: >= {TARGET_RECOVERED:.0%} of the drop recovered ({recovered:.0%}) "
              f"reviewing <= {TARGET_BUDGET:.0%} of train ({reviewed_share:.1%}): "
              f"{'met' if met else 'NOT met'}")
    else:
        print("target: not measurable (no meaningful drop)")
    if args.json:
        args.json.write_text(json.dumps({
            "intents": intents, "train_examples": len(train_rows),
            "eval_examples": scores.shape[1], "leaked_eval_rejected": len(leaks_clean),
            "same_leaks_rejected": same_leaks, "flipped": len(flipped),
            "flip_share": args.flip_share, "budget_share": args.budget, "budget": budget,
            "config": config.to_dict(), "eval_settings": eval_config.to_dict(),
            "eval_limit": args.eval_limit, "run_ids": run_ids,
            "accuracy": {k: round(v, 2) for k, v in accuracy.items()},
            "macro_f1": {k: results[k].systems["fine_tuned"]["macro_f1"] for k in results},
            "drop_points": round(drop, 2), "gain_points": round(gain, 2),
            "recovered_share": recovered and round(recovered, 4),
            "meaningful_drop": meaningful, "intervals_95": intervals,
            "reviewed": len(review.looked), "reviewed_share": round(reviewed_share, 4),
            "reviewed_by_source": review.by_source(review.looked),
            "fixed": len(review.fixed), "flipped_found": len(found),
            "flipped_found_at_random_expected": round(at_random, 1),
            "flipped_found_by_source": review.by_source(found),
            "label_issues_flagged": review.flagged, "eval_failures_noisy": review.failures,
            "queue_first_pass": review.queue_first_pass, "stop_after": args.stop_after,
            "eval_failures_opened": review.failures_opened,
            "seconds": {k: round(v, 1) for k, v in times.items()}}, indent=2))
    if not args.out:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
