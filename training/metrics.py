"""Scoring a model's answers against the references: pure functions, no torch.

Design decisions:
- Answers are compared after `normalise`: surrounding whitespace stripped, case folded, inner
  whitespace collapsed and trailing punctuation dropped, so "Billing." matches "billing".
- Two kinds of task, told apart from the references alone (`is_label_like`): short answers
  from a closed set (a classifier in chat form) are scored by exact-match accuracy, with
  macro-F1 over the labels beside it; anything else (free text) by SQuAD-style token F1,
  with ROUGE-L (longest-common-subsequence F1) beside it. The primary metric decides.
- Metrics are fractions in [0, 1]; a "point" is one hundredth (the deploy margin is in
  points, as people state it).
- `paired_bootstrap` resamples examples (the same indices for both systems), so the
  interval reflects how much the difference depends on which examples were drawn. It uses
  `random.Random(seed)`: deterministic, no numpy needed.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

_TRAILING_PUNCT = string.punctuation + "。、！？…“”’"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
MAX_LABEL_WORDS = 4


def normalise(text: str | None) -> str:
    """Compare form of an answer: stripped, case-folded, whitespace collapsed, trailing
    punctuation removed."""
    text = " ".join((text or "").split()).casefold()
    return text.rstrip(_TRAILING_PUNCT + " ").strip()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are equal, else 0.0."""
    return float(normalise(prediction) == normalise(reference))


def accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of exact matches (after `normalise`); 0.0 for no examples."""
    _same_length(predictions, references)
    if not references:
        return 0.0
    return sum(exact_match(p, r) for p, r in zip(predictions, references)) / len(references)


def per_label_f1(predictions: Sequence[str], references: Sequence[str]) -> dict[str, dict]:
    """{label: {precision, recall, f1, support}} for every label among the references.

    A label never predicted has precision 0 (not undefined) and so F1 0; predictions outside
    the reference labels count only as false negatives of the true label."""
    _same_length(predictions, references)
    preds = [normalise(p) for p in predictions]
    refs = [normalise(r) for r in references]
    out = {}
    for label in sorted(set(refs)):
        tp = sum(1 for p, r in zip(preds, refs) if p == label and r == label)
        fp = sum(1 for p, r in zip(preds, refs) if p == label and r != label)
        fn = sum(1 for p, r in zip(preds, refs) if p != label and r == label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    return out


def macro_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Unweighted mean of the per-label F1 over the reference labels."""
    labels = per_label_f1(predictions, references)
    return sum(v["f1"] for v in labels.values()) / len(labels) if labels else 0.0


def _tokens(text: str) -> list[str]:
    """SQuAD normalisation: lower case, no punctuation, no articles, split on whitespace."""
    text = _PUNCT.sub(" ", (text or "").lower())
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style F1 of the bag of tokens; two empty answers score 1, one empty 0."""
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: from the longest common subsequence of tokens (same tokens as token_f1)."""
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    previous = [0] * (len(ref) + 1)
    for p in pred:
        current = [0]
        for j, r in enumerate(ref, 1):
            current.append(previous[j - 1] + 1 if p == r else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def is_label_like(references: Sequence[str], *, max_words: int = MAX_LABEL_WORDS) -> bool:
    """Whether the references look like labels: every one at most `max_words` words, and at
    most max(20, 30% of them) distinct values."""
    refs = [normalise(r) for r in references]
    if not refs or any(not r or len(r.split()) > max_words for r in refs):
        return False
    return len(set(refs)) <= max(20, int(0.3 * len(refs)))


def primary_metric(references: Sequence[str]) -> str:
    """'accuracy' for label-like references, else 'token_f1'."""
    return "accuracy" if is_label_like(references) else "token_f1"


def example_scores(predictions: Sequence[str], references: Sequence[str],
                   metric: str) -> list[float]:
    """Per-example score under the primary metric (exact match or token F1)."""
    _same_length(predictions, references)
    score = exact_match if metric == "accuracy" else token_f1
    return [score(p, r) for p, r in zip(predictions, references)]


def score_system(predictions: Sequence[str], references: Sequence[str], *,
                 metric: str, labels: Sequence[str | None] | None = None) -> dict[str, Any]:
    """Every metric of one system: accuracy, token F1, ROUGE-L, macro-F1 and per-label scores
    when the task is label-like, the primary metric's value, and (where examples carry
    labels) the primary metric per label."""
    _same_length(predictions, references)
    n = len(references)
    mean = (lambda xs: sum(xs) / n) if n else (lambda xs: 0.0)
    out: dict[str, Any] = {
        "n": n, "primary_metric": metric,
        "accuracy": accuracy(predictions, references),
        "token_f1": mean([token_f1(p, r) for p, r in zip(predictions, references)]),
        "rouge_l": mean([rouge_l(p, r) for p, r in zip(predictions, references)]),
    }
    if metric == "accuracy":
        out["macro_f1"] = macro_f1(predictions, references)
        out["per_answer"] = per_label_f1(predictions, references)
    out["primary"] = out[metric]
    if labels is not None and any(label is not None for label in labels):
        scores = example_scores(predictions, references, metric)
        groups: dict[str, list[float]] = {}
        for label, s in zip(labels, scores):
            groups.setdefault(label if label is not None else "(none)", []).append(s)
        out["per_label"] = {k: {"n": len(v), metric: sum(v) / len(v)}
                            for k, v in sorted(groups.items())}
    return out


def paired_bootstrap(scores_a: Sequence[float], scores_b: Sequence[float], n: int = 2000,
                     seed: int = 0) -> dict[str, Any]:
    """Mean of a - b over examples, its 95% bootstrap interval, and `p_value`: the share of
    resamples whose mean difference is <= 0 (small when a is reliably better).

    `significant` is True when the interval excludes 0."""
    _same_length(scores_a, scores_b)
    m = len(scores_a)
    if m == 0:
        return {"mean_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0,
                "n_resamples": 0, "n_examples": 0, "significant": False}
    diffs = [a - b for a, b in zip(scores_a, scores_b)]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=m)) / m for _ in range(n))
    low, high = means[int(0.025 * (n - 1))], means[round(0.975 * (n - 1))]
    p = sum(1 for x in means if x <= 0) / n
    return {"mean_diff": sum(diffs) / m, "ci_low": low, "ci_high": high, "p_value": p,
            "n_resamples": n, "n_examples": m, "significant": low > 0 or high < 0}


def verdict(baseline: float, finetuned: float, margin_points: float = 5.0,
            ci: dict[str, Any] | tuple[float, float] | None = None, *,
            metric: str = "accuracy") -> dict[str, Any]:
    """Deploy only if the fine-tuned model beats the baseline by at least `margin_points`
    points (hundredths) on the primary metric. `ci` is the bootstrap interval of
    fine-tuned minus baseline (a paired_bootstrap dict or (low, high)); when it includes 0
    the reason says the difference is not significant on this sample size."""
    diff = (finetuned - baseline) * 100
    if isinstance(ci, dict):
        ci = (ci["ci_low"], ci["ci_high"])
    significant = ci is not None and (ci[0] > 0 or ci[1] < 0)
    deploy = diff >= margin_points - 1e-9
    head = (f"fine-tuned {metric} {finetuned * 100:.1f} vs baseline {baseline * 100:.1f}: "
            f"{diff:+.1f} points")
    if deploy:
        reason = f"{head}, at least the {margin_points:g}-point margin"
    else:
        reason = f"{head}, short of the {margin_points:g}-point margin"
    if ci is None:
        reason += "; no confidence interval given"
    elif significant:
        reason += (f"; the 95% interval [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}] excludes 0, "
                   "so the difference is significant")
    else:
        reason += (f"; the 95% interval [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}] includes 0, "
                   "so the difference is not significant on this sample size")
    return {"decision": "deploy" if deploy else "don't deploy", "reason": reason,
            "significant": significant, "difference_points": diff,
            "margin_points": margin_points}


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions but {len(b)} references")
