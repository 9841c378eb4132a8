"""Label-issue pass time on the 10,000 Banking77 examples, beside a textbook cleanlab pass.

    .venv/bin/python bench/label_issues_time.py [--repeat 2] [--seed 77]

What it does:
- Builds the planted Banking77 store of `quality_banking77.plant` (10,403 prompts, 520 labels
  flipped, 77 intents) in a temporary folder and embeds every prompt once
  (`curation.embeddings.embed_texts`, timed and reported separately: the embeddings are
  cached in the store and shared by every check, so they are not part of the pass).
- Times, alternating which goes first, `--repeat` times each, keeping the best:
  * ours, end to end: `run_check(store, "label_issues", force=True)`: read the examples and
    their cached embeddings, 5-fold stratified cross-validated logistic regression
    (`out_of_fold_probabilities`), cleanlab `find_label_issues` and quality scores, evidence
    (nearest examples) for every flagged example, and storing the 10,399 findings. The
    check's own computation (`LabelIssueCheck.run` on the loaded table) and the
    cross-validation alone are timed inside the same run.
  * baseline: the textbook pass on the same embeddings: scikit-learn
    `cross_val_predict(LogisticRegression(C=10, max_iter=300), X, y, cv=StratifiedKFold(5,
    shuffle=True, random_state=0), method="predict_proba")` and cleanlab
    `find_label_issues(labels, pred_probs)` with its defaults, library thread settings as
    they come.
- Prints wall and process CPU time of each, the load average around each, the precision and
  recall of both against the flipped labels, the verdict against the target (ours end to end
  < 60 s) and last the ratio ours / baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_banking77 import load_store, plant  # noqa: E402

TARGET_S = 60.0


def load() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=77)
    args = parser.parse_args()

    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from curation import User
    from curation.checks import load_table, run_check
    from curation.checks.noise import LABEL_ISSUES, out_of_fold_probabilities

    planted = plant(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="bench-labels-"))
    try:
        store, report = load_store(planted, folder)
        ext = dict(store.cursor().execute("SELECT id, external_id FROM examples").fetchall())
        table = load_table(store)
        t0 = time.perf_counter()
        vectors = table.embed()
        print(f"{len(table):,} examples, {len(set(table.labels))} labels, "
              f"{len(planted.flipped)} flipped; embedding them once (not part of the pass): "
              f"{time.perf_counter() - t0:.0f} s (load {load()})", flush=True)
        labels = table.labels
        classes = sorted(set(labels))
        y = np.array([classes.index(label) for label in labels])
        truth = np.array([ext[i] in planted.flipped for i in table.ids])

        def pr(flagged: np.ndarray) -> str:
            hit = int((flagged & truth).sum())
            return (f"{int(flagged.sum())} flagged, precision {hit / max(1, flagged.sum()):.3f}, "
                    f"recall {hit / truth.sum():.3f}")

        def ours():
            t0, c0 = time.perf_counter(), time.process_time()
            result = run_check(store, "label_issues", user=User("bench", "admin"), force=True)
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
            t1 = time.perf_counter()
            LABEL_ISSUES.run(load_table(store))
            compute = time.perf_counter() - t1
            t2 = time.perf_counter()
            out_of_fold_probabilities(vectors, labels)
            cv = time.perf_counter() - t2
            flagged = np.array([f.is_issue for f in sorted(result.findings,
                                                           key=lambda f: f.example_id)])
            return total, cpu, (f"check alone {compute:.1f} s, cross-validation alone "
                                f"{cv:.1f} s; {pr(flagged)}")

        def baseline():
            t0, c0 = time.perf_counter(), time.process_time()
            probs = cross_val_predict(
                LogisticRegression(C=10.0, max_iter=300), vectors, y,
                cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
            mask = find_label_issues(y, probs)
            return time.perf_counter() - t0, time.process_time() - c0, pr(mask)

        best = {}
        for rep in range(args.repeat):
            order = (("ours", ours), ("baseline", baseline))
            if rep % 2:
                order = order[::-1]
            for name, fn in order:
                before = load()
                seconds, cpu, note = fn()
                after = load()
                print(f"  {name:8s} run {rep + 1}: {seconds:6.1f} s wall, {cpu:6.1f} s CPU "
                      f"(this process; cleanlab's worker processes not counted); load {before}"
                      f" -> {after}; {note}", flush=True)
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, before, after)
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    o, b = best["ours"], best["baseline"]
    print()
    print(f"ours end to end (best of {args.repeat}): {o[0]:.1f} s, load {o[1]} -> {o[2]}; "
          f"target < {TARGET_S:.0f} s: {'MET' if o[0] < TARGET_S else 'MISSED'}")
    print(f"baseline (best of {args.repeat}): {b[0]:.1f} s, load {b[1]} -> {b[2]}")
    print(f"ratio ours / baseline: {o[0] / b[0]:.2f}")


if __name__ == "__main__":
    main()
