"""Likely mislabeled, outlying and mismatched examples, from embeddings and cleanlab.

Design decisions:
- Label issues: out-of-fold predicted probabilities from a logistic regression on the prompt
  embeddings (stratified k-fold, so no example is scored by a model that saw it), then
  cleanlab's `find_label_issues` and `get_label_quality_scores` for the [0, 1] score. Labels
  with fewer examples than folds cannot be cross-validated and are reported as such rather
  than guessed at.
- Which examples are flagged: cleanlab estimates how many labels are wrong (its confident
  joint) and we flag that many with the lowest self-confidence (`filter_by=
  "low_self_confidence"`; cleanlab's default is "prune_by_noise_rate"). On Banking77 with 5%
  of labels flipped (bench/quality_banking77.py) the default flagged 574 examples at
  precision 0.68 / recall 0.75; self-confidence flags 470 at 0.97 / 0.87, from the same
  probabilities.
- The classifier's BLAS runs on one thread. Its matrix products are small (prompts x 384 x
  labels) and a multithreaded OpenBLAS spends more time synchronising than computing. On the
  2-core, shared benchmark machine the 5 folds took 139 s with 2 threads and 15 s with 1 at
  load average 5.7. At load 2 (bench/label_issues_time.py) the textbook pass, scikit-learn's
  `cross_val_predict` with its default threads then cleanlab, took 30 s (60 s of CPU); our
  cross-validation alone 12-13 s.
- Evidence for the SME: the suggested label with its probability, and the nearest examples
  carrying the given label and the suggested one.
- Outliers: cleanlab's `OutOfDistribution` score on the embeddings; flagged when the mean
  distance to the nearest neighbours is a far-out value (beyond Q3 + 3 IQR), so a clean
  dataset gets no flags instead of a fixed share.
- Without labels: answer–question mismatch. Each answer's embedding is compared with its own
  question and with every other question; an answer that matches many other questions better
  than its own is flagged. It needs no label and no generation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from curation.checks._contract import (CheckResult, ExampleTable, Finding, PairSet, Progress,
                                       register)

FOLDS = 5
NEIGHBOURS = 3


def out_of_fold_probabilities(vectors: np.ndarray, labels: list[str], *, folds: int = FOLDS,
                              seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(n, classes) out-of-fold probabilities of a logistic regression, and the class names."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    classes = sorted(set(labels))
    index = {label: k for k, label in enumerate(classes)}
    y = np.array([index[label] for label in labels])
    probs = np.zeros((len(labels), len(classes)), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(limits=1, user_api="blas"):
        for train, test in splitter.split(vectors, y):
            model = LogisticRegression(C=10.0, max_iter=300)
            model.fit(vectors[train], y[train])
            probs[np.ix_(test, model.classes_)] = model.predict_proba(vectors[test])
    return probs, classes


@dataclass
class LabelIssueCheck:
    name: str = "label_issues"
    answered_only: bool = True  # about what is trained on: a prompt waiting for its answer
    # (and for its label to be reviewed with it) is neither evidence nor a finding
    title: str = "Likely mislabeled"
    description: str = ("Examples whose label disagrees with what similar examples are "
                        "labelled. A classifier trained on the other examples (never on this "
                        "one) predicts the label; cleanlab flags the confident disagreements. "
                        "Check the suggested label against the nearest examples shown.")

    def run(self, table: ExampleTable, progress: Progress | None = None,
            ignore_pairs: PairSet = frozenset()) -> CheckResult:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        counts = Counter(label for label in table.labels if label is not None)
        usable = [i for i, label in enumerate(table.labels)
                  if label is not None and counts[label] >= FOLDS]
        too_few = sorted(label for label, n in counts.items() if n < FOLDS)
        findings = [Finding(table.ids[i], 1.0, False,
                            f"label has fewer than {FOLDS} examples; cannot be cross-checked")
                    for i, label in enumerate(table.labels) if label in too_few]
        summary = {"labelled": sum(counts.values()), "checked": len(usable),
                   "labels_too_small": too_few, "issues": 0}
        if len({table.labels[i] for i in usable}) < 2:
            return CheckResult(self.name, findings, summary)
        vectors = table.embed()
        if progress:
            progress(0.6, "cross-validating a classifier on the embeddings")
        x = vectors[usable]
        usable_ids = [table.ids[i] for i in usable]
        labels = [table.labels[i] for i in usable]
        probs, classes = out_of_fold_probabilities(x, labels)
        index = {label: k for k, label in enumerate(classes)}
        y = np.array([index[label] for label in labels])
        issues = set(find_label_issues(y, probs, filter_by="low_self_confidence",
                                       return_indices_ranked_by="self_confidence"))
        quality = get_label_quality_scores(y, probs)
        for row, i in enumerate(usable):
            suggested = int(np.argmax(probs[row]))
            given = table.labels[i]
            if row in issues:
                details = {"given": given, "suggested": classes[suggested],
                           "probability": round(float(probs[row, suggested]), 3),
                           "given_probability": round(float(probs[row, y[row]]), 3),
                           "nearest_given": _nearest(x, row, y, y[row], usable_ids),
                           "nearest_suggested": _nearest(x, row, y, suggested, usable_ids)}
                reason = (f"labelled {given!r}, but similar examples say {classes[suggested]!r} "
                          f"({probs[row, suggested]:.0%} vs {probs[row, y[row]]:.0%})")
                findings.append(Finding(table.ids[i], round(float(quality[row]), 4), True,
                                        reason, details))
            else:
                findings.append(Finding(table.ids[i], round(float(quality[row]), 4), False,
                                        "label agrees with similar examples"))
        summary["issues"] = len(issues)
        return CheckResult(self.name, findings, summary)


def _nearest(x: np.ndarray, row: int, y: np.ndarray, cls: int, ids: list[int]) -> list[int]:
    """Ids of the examples of class `cls` nearest to row (itself excluded)."""
    candidates = np.flatnonzero(y == cls)
    candidates = candidates[candidates != row]
    sims = x[candidates] @ x[row]
    return [int(ids[candidates[j]]) for j in np.argsort(-sims)[:NEIGHBOURS]]


@dataclass
class OutlierCheck:
    name: str = "outliers"
    title: str = "Outliers"
    description: str = ("Examples far from every other example in meaning: off-topic, in "
                        "another language, or garbled. Keep them only if the model must "
                        "handle such inputs.")
    neighbours: int = 10

    def run(self, table: ExampleTable, progress: Progress | None = None,
            ignore_pairs: PairSet = frozenset()) -> CheckResult:
        from cleanlab.outlier import OutOfDistribution

        n = len(table)
        if n <= self.neighbours + 1:
            return CheckResult(self.name, [], {"examples": n, "issues": 0,
                                               "note": "too few examples"})
        vectors = table.embed()
        ood = OutOfDistribution(params={"k": self.neighbours})
        scores = ood.fit_score(features=vectors)
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -np.inf)
        top = np.sort(sims, axis=1)[:, -self.neighbours:]
        distance = 1.0 - top.mean(axis=1)
        q1, q3 = np.percentile(distance, [25, 75])
        limit = q3 + 3 * (q3 - q1)
        findings = []
        for i in range(n):
            far = bool(distance[i] > limit)
            reason = (f"far from all other examples (mean distance {distance[i]:.2f} to its "
                      f"{self.neighbours} nearest; most are under {q3:.2f})" if far
                      else "close to other examples")
            findings.append(Finding(table.ids[i], round(float(scores[i]), 4), far, reason,
                                    {"distance": round(float(distance[i]), 4)}))
        return CheckResult(self.name, findings, {"examples": n,
                                                 "issues": sum(f.is_issue for f in findings),
                                                 "distance_limit": round(float(limit), 4)})


@dataclass
class MismatchCheck:
    name: str = "answer_mismatch"
    answered_only: bool = True  # compares each answer with the questions
    title: str = "Answer does not fit the question"
    description: str = ("Answers that match many other questions in the dataset better than "
                        "their own: pasted into the wrong example, truncated, or generic. "
                        "Works without labels.")
    flag_rank: float = 0.2

    def run(self, table: ExampleTable, progress: Progress | None = None,
            ignore_pairs: PairSet = frozenset()) -> CheckResult:
        n = len(table)
        if n < 10:
            return CheckResult(self.name, [], {"examples": n, "issues": 0,
                                               "note": "too few examples"})
        questions = table.embed()
        answers = table.embed("response")
        sims = answers @ questions.T  # answer i against every question j
        own = np.diag(sims)
        better = (sims > own[:, None]).sum(axis=1)  # questions matching better than its own
        share = better / (n - 1)
        findings = []
        for i in range(n):
            flagged = bool(share[i] >= self.flag_rank)
            reason = (f"the answer fits {better[i]} other questions better than its own "
                      f"({share[i]:.0%} of the dataset)" if flagged
                      else "the answer fits its question")
            findings.append(Finding(table.ids[i], round(float(1 - share[i]), 4), flagged,
                                    reason, {"better_matches": int(better[i])}))
        return CheckResult(self.name, findings, {"examples": n,
                                                 "issues": sum(f.is_issue for f in findings)})


LABEL_ISSUES = register(LabelIssueCheck())
OUTLIERS = register(OutlierCheck())
MISMATCH = register(MismatchCheck())
