"""Eval failures flow back to curation: a queue of them, the evidence for each, and a review
queue ordered by expected impact.

The fine-tuned model's per-example answers come from a run's evaluation (`training`); the
facade (`curate.workspace`) hands them over as plain dicts, since `curation` never imports
`training`. What is kept of them is stored as findings of two check-like sources that are
not checks (nothing to run over the examples alone): `eval_failures` and `review_impact`,
through the same `findings` / `check_runs` tables the checks use, so the review queues read
them with the same SQL and the page says when they were last computed.

Design decisions:
- A failure is an eval example whose fine-tuned score is below a pass mark: 1 for accuracy
  (any wrong answer), `FREE_TEXT_PASS` for token F1 (free text: the answers that share less
  than half their words with the reference). Its finding's score is that fine-tuned score,
  so the queue is worst first; ties go by id.
- Only the latest evaluated run feeds the queue (the fingerprint is its run id and the time of
  its evaluation): recording it again is a no-op, another run replaces it.
- Evidence is computed when asked for (`evidence`), not stored: the nearest training
  examples change as people edit, and the embeddings are cached per text anyway.
- Impact (one sentence, shown on the Review page): a pending train example's impact is the
  mean of its prompt's highest cosine similarity to an eval failure's prompt and the
  fine-tuned error rate on its label in that evaluation; highest first. Both terms are in
  [0, 1], so neither swamps the other, and the rule needs no tuning.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curation.auth import User, require
from curation.checks._contract import Finding
from curation.errors import InvalidValue
from curation.query import ExampleFilter
from curation.store import Store, utcnow

FAILURES = "eval_failures"
IMPACT = "review_impact"
QUEUES = (FAILURES, IMPACT)  # the review queues an evaluation feeds
FREE_TEXT_PASS = 0.5
IMPACT_RULE = ("Pending train examples ranked by the mean of two numbers in [0, 1]: how close "
               "the prompt is to an eval failure's prompt (highest cosine similarity) and the "
               "fine-tuned model's error rate on the example's label; highest first.")
FLAG_NAMES = {"label_issues": "likely mislabelled", "outliers": "an outlier",
              "answer_mismatch": "an answer that does not fit",
              "exact_duplicates": "a duplicate", "near_duplicates": "a duplicate",
              "semantic_duplicates": "a duplicate", "leakage": "leaking into eval"}


@dataclass(frozen=True)
class Failure:
    """One eval example the fine-tuned model got wrong (score below the pass mark)."""

    example_id: int
    score: float
    reason: str
    details: dict[str, Any]  # run_id, answer, reference, label, metric, score
    is_issue: bool = True


@dataclass(frozen=True)
class Neighbour:
    """A training example near a failure, with the open findings on it."""

    example_id: int
    label: str | None
    similarity: float
    prompt: str
    flags: list[str] = field(default_factory=list)  # "likely mislabelled: <reason>"


@dataclass(frozen=True)
class Evidence:
    """Why an eval example may have failed: the answers and the nearest training examples."""

    example_id: int
    run_id: str
    answer: str
    reference: str
    score: float
    neighbours: list[Neighbour]
    summary: str


def passed(score: float, metric: str) -> bool:
    """Whether an eval answer's score counts as right: exact for labels, else at least
    FREE_TEXT_PASS."""
    return score >= (1.0 if metric == "accuracy" else FREE_TEXT_PASS)


def find_failures(run_id: str, metric: str,
                  examples: list[dict[str, Any]]) -> list[Failure]:
    """The failures among a run's evaluated examples (`EvalResult.examples`: id, label,
    reference, fine_tuned, scores), worst first (lowest fine-tuned score, then id)."""
    found = []
    for e in examples:
        score = float(e["scores"]["fine_tuned"])
        if e.get("id") is None or passed(score, metric):
            continue
        found.append(Failure(
            e["id"], min(max(score, 0.0), 1.0),
            f"fine-tuned answered {e['fine_tuned']!r}, reference {e['reference']!r} "
            f"(run {run_id})",
            {"run_id": run_id, "answer": e["fine_tuned"], "reference": e["reference"],
             "label": e.get("label"), "metric": metric, "score": score}))
    return sorted(found, key=lambda f: (f.score, f.example_id))


def record_failures(store: Store, user: User, run_id: str, created_at: str, metric: str,
                    examples: list[dict[str, Any]]) -> int | None:
    """Store the failures of a run's evaluation as the `eval_failures` findings, replacing
    those of any earlier run, with the fine-tuned error rate per label in the summary; the
    number stored, or None when this evaluation was already recorded. Eval examples deleted
    since are left out."""
    require(user, "check")
    fingerprint = f"{run_id}@{created_at}"
    last = store.check_run(FAILURES)
    if last and last["fingerprint"] == fingerprint:
        return None
    ids = tuple(e["id"] for e in examples if e.get("id") is not None)
    versions = {ex.id: ex.version for ex in store.find(ExampleFilter(ids=ids))}
    kept = [e for e in examples if e.get("id") in versions]
    found = find_failures(run_id, metric, kept)
    totals = Counter(e.get("label") for e in kept)
    wrong = Counter(f.details["label"] for f in found)
    rates = {label: wrong[label] / n for label, n in totals.items() if label is not None}
    summary = {"run_id": run_id, "evaluated_at": created_at, "metric": metric,
               "evaluated": len(kept), "failures": len(found), "error_rate_by_label": rates}
    store.save_check_run(FAILURES, found, versions, fingerprint=fingerprint,
                         summary=summary, run_by=user.name, run_at=utcnow())
    return len(found)


def failures(store: Store) -> list[Failure]:
    """The stored failures of the latest evaluated run, worst first."""
    return [Failure(i, s, r, d) for i, s, _, r, d in store.findings(FAILURES)]


def failure_run(store: Store) -> dict[str, Any] | None:
    """The summary of the recorded evaluation (run_id, metric, counts, error rate by label)."""
    run = store.check_run(FAILURES)
    return run and run["summary"]


def _prompts(store: Store, where: ExampleFilter):
    from curation.checks import load_table

    table = load_table(store, where)
    return table, [table.prompt(i) for i in range(len(table))]


def _vectors(store: Store, texts: list[str]) -> np.ndarray:
    from curation.embeddings import embed_texts

    return np.asarray(embed_texts(store, texts, store.setting("embedding_model")))


def _flags(store: Store, example_ids: list[int]) -> dict[int, list[str]]:
    """Open findings (issues of the checks' last runs) on these examples, as text; the
    suggested keeper of a duplicate group is the copy to keep, not a problem."""
    out: dict[int, list[str]] = {}
    for check, example_id, reason in store.issues_on(example_ids):
        if check in FLAG_NAMES and not reason.startswith("suggested keeper"):
            out.setdefault(example_id, []).append(f"{FLAG_NAMES[check]}: {reason}")
    return out


def _summary(neighbours: list[Neighbour]) -> str:
    if not neighbours:
        return "there are no training examples to compare with"
    counts = Counter(n.label or "(no label)" for n in neighbours)
    if len(counts) == 1:
        says = f"say {next(iter(counts))}"
    else:
        says = "say " + ", ".join(f"{label} ({k})" for label, k in counts.most_common())
    n = len(neighbours)
    text = (f"the {n} closest training examples {says}" if n > 1
            else f"the closest training example says {neighbours[0].label or '(no label)'}")
    kinds = Counter(kind for nb in neighbours
                    for kind in dict.fromkeys(f.split(":")[0] for f in nb.flags))
    if kinds:
        text += "; " + ", ".join(f"{k} of them {'is' if k == 1 else 'are'} flagged as {kind}"
                                 for kind, k in kinds.most_common())
    return text


def evidence(store: Store, example_id: int, k: int = 3) -> Evidence | None:
    """The evidence for one stored failure (None if the example is not one)."""
    found = [f for f in failures(store) if f.example_id == example_id]
    return evidence_for(store, found[0], k) if found else None


def evidence_for(store: Store, failure: Failure, k: int = 3) -> Evidence:
    """The model's answer and the reference, the `k` nearest train examples (not rejected,
    not deleted) by prompt embedding with their labels, similarity and open findings, and
    one sentence summing them up."""
    if k < 1:
        raise InvalidValue(f"k must be at least 1, not {k}")
    example_id = failure.example_id
    target = store.get(example_id)
    table, prompts = _prompts(store, ExampleFilter(split=("train",)))
    keep = [i for i, eid in enumerate(table.ids) if eid != example_id]
    neighbours: list[Neighbour] = []
    if keep:
        from curation.text import turns_text

        vectors = _vectors(store, [turns_text(target.messages)] + [prompts[i] for i in keep])
        sims = vectors[1:] @ vectors[0]
        order = sorted(range(len(keep)), key=lambda j: (-float(sims[j]), table.ids[keep[j]]))
        top = order[:k]
        flags = _flags(store, [table.ids[keep[j]] for j in top])
        neighbours = [Neighbour(table.ids[keep[j]], table.labels[keep[j]],
                                round(float(sims[j]), 4), prompts[keep[j]],
                                flags.get(table.ids[keep[j]], [])) for j in top]
    d = failure.details
    return Evidence(example_id, d["run_id"], d["answer"], d["reference"], failure.score,
                    neighbours, _summary(neighbours))


def impact_scores(candidates: np.ndarray, labels: list[str | None], failed: np.ndarray,
                  error_rate: dict[str, float]) -> np.ndarray:
    """Impact of each candidate in [0, 1]: (highest cosine similarity of its normalised
    vector to a failure's, clipped to [0, 1], + its label's error rate (0 if unknown)) / 2."""
    if len(candidates) == 0:
        return np.zeros(0)
    near = (np.clip((candidates @ failed.T).max(axis=1), 0.0, 1.0) if len(failed)
            else np.zeros(len(candidates)))
    rates = np.array([error_rate.get(label, 0.0) if label is not None else 0.0
                      for label in labels])
    return (near + rates) / 2


def rank_by_impact(store: Store, user: User) -> int:
    """Score every pending train example by `IMPACT_RULE` and store the ranking as the
    `review_impact` findings (score = 1 - impact, so the queue's worst first is highest
    impact first); the number ranked. Without recorded failures nothing is ranked."""
    require(user, "check")
    run = failure_run(store)
    failed = failures(store)
    table, prompts = _prompts(store, ExampleFilter(split=("train",), status=("pending",)))
    if run is None or not failed or not len(table):
        store.save_check_run(IMPACT, [], {}, fingerprint="", summary={"ranked": 0},
                             run_by=user.name, run_at=utcnow())
        return 0
    from curation.text import turns_text

    failed_prompts = [turns_text(e.messages)
                      for e in store.find(ExampleFilter(ids=tuple(f.example_id for f in failed)))]
    vectors = _vectors(store, failed_prompts + prompts)
    impact = impact_scores(vectors[len(failed_prompts):], table.labels,
                           vectors[:len(failed_prompts)], run["error_rate_by_label"])
    rates = run["error_rate_by_label"]
    rows = []
    for eid, label, value in zip(table.ids, table.labels, impact.tolist()):
        rate = rates.get(label, 0.0) if label is not None else 0.0
        near = 2 * value - rate
        rows.append(Finding(eid, round(1.0 - value, 6), True,
                            f"impact {value:.2f}: similarity {near:.2f} to the closest eval "
                            f"failure, fine-tuned error rate {rate:.0%} on its label",
                            {"impact": value, "similarity": near, "error_rate": rate}))
    store.save_check_run(IMPACT, rows, dict(zip(table.ids, table.versions)),
                         fingerprint=run["run_id"], summary={"ranked": len(rows),
                                                             "run_id": run["run_id"]},
                         run_by=user.name, run_at=utcnow())
    return len(rows)


def _register_queues() -> None:
    from curation.queues import register_stored

    how = "`curate failures`, or open the Evaluation page after an evaluation"
    register_stored(FAILURES, "Eval failures",
                    "Eval examples the fine-tuned model of the latest evaluated run got wrong "
                    "(for free text: shared less than half the reference's words), worst "
                    "first, with the model's answer, the reference and the nearest training "
                    "examples as evidence.",
                    feed_title="Eval failures of the latest evaluated run", how_to_run=how)
    register_stored(IMPACT, "Expected impact", IMPACT_RULE,
                    feed_title="Ranking by expected impact", how_to_run=how,
                    statuses=("pending",))


_register_queues()
