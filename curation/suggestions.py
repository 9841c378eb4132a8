"""Model suggestions (pre-labels), their confidence bands and calibration.

A run's model answers examples (`training.predict`); each answer is stored here as a
suggestion for that example version with its confidence, beside the example and never in it.
The confidence falls in a band by the workspace's two thresholds (default 0.9 and 0.7, the
seeds' production rule: above the high one straight through, between them a person reviews,
below it the full human workflow). This module records and describes; `curation.routing` acts on
the bands.

Design decisions:
- Thresholds are workspace settings (`predict_thresholds`, "high,low"), set by a reviewer
  (`set_targets`, like the coverage targets), checked to be 0 < low <= high <= 1.
- Calibration is a pure function of (confidence, correct) pairs: expected calibration error
  over ten equal-width bins (the sum over bins of the bin's share times |accuracy - mean
  confidence|), the accuracy reached in each band, and the bins themselves for a reliability
  diagram. The caller pairs the eval split's confidences with the fine-tuned model's
  correctness there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from curation.auth import User, require
from curation.errors import InvalidValue
from curation.store import Store

THRESHOLDS_KEY = "predict_thresholds"
DEFAULT_THRESHOLDS = (0.9, 0.7)
LABEL_METHOD = "label probability"  # closed set: the answer's share over the known labels
TEXT_METHOD = "mean token probability"  # free text
BINS = 10
BANDS = ("high", "middle", "low")


@dataclass(frozen=True)
class Suggestion:
    """A run's answer to one example version, with its confidence and how it was measured."""

    example_id: int
    version: int
    run_id: str
    answer: str
    confidence: float
    method: str  # LABEL_METHOD (closed set) or TEXT_METHOD (free text)


def thresholds(store: Store) -> tuple[float, float]:
    """The workspace's (high, low) confidence thresholds."""
    raw = store.setting(THRESHOLDS_KEY)
    if not raw:
        return DEFAULT_THRESHOLDS
    high, low = (float(x) for x in raw.split(","))
    return high, low


def set_thresholds(store: Store, user: User, high: float, low: float) -> tuple[float, float]:
    """Store the workspace's thresholds; InvalidValue unless 0 < low <= high <= 1."""
    require(user, "set_targets")
    if not 0 < low <= high <= 1:
        raise InvalidValue(f"confidence thresholds must satisfy 0 < low <= high <= 1; got "
                           f"high {high}, low {low}")
    store.set_setting(THRESHOLDS_KEY, f"{high},{low}")
    return high, low


def band(confidence: float, high: float, low: float) -> str:
    """'high' (>= high), 'middle' (>= low) or 'low'."""
    return "high" if confidence >= high else "middle" if confidence >= low else "low"


def band_name(name: str, high: float, low: float) -> str:
    """The band as people read it, with its bounds."""
    return {"high": f">= {high:g}", "middle": f"{low:g} to {high:g}",
            "low": f"< {low:g}"}[name]


def record_suggestions(store: Store, user: User, suggestions: Sequence[Suggestion]) -> int:
    """Store suggestions (replacing any of the same run for the same example version)."""
    require(user, "check")
    return store.save_suggestions(
        [(s.example_id, s.version, s.run_id, s.answer, float(s.confidence), s.method)
         for s in suggestions], actor=user.name)


def current(store: Store, example_id: int) -> Suggestion | None:
    """The suggestion for the example's current version (None: none, or the example was
    changed since)."""
    row = store.current_suggestion(example_id)
    if row is None:
        return None
    return Suggestion(row["example_id"], row["version"], row["run_id"], row["answer"],
                      row["confidence"], row["method"])


def calibration(confidences: Sequence[float], correct: Sequence[bool], *,
                high: float = DEFAULT_THRESHOLDS[0], low: float = DEFAULT_THRESHOLDS[1],
                bins: int = BINS) -> dict[str, Any]:
    """How well confidence predicts correctness: {"examples", "accuracy", "ece", "bands":
    {band: {"range", "examples", "share", "accuracy"}}, "bins": [{"lower", "upper",
    "examples", "confidence", "accuracy"}]}; accuracies of empty bands are None."""
    if len(confidences) != len(correct):
        raise InvalidValue(f"{len(confidences)} confidences but {len(correct)} outcomes")
    n = len(confidences)
    pairs = list(zip((float(c) for c in confidences), (bool(k) for k in correct)))

    def accuracy(items):
        return sum(k for _, k in items) / len(items) if items else None

    table = []
    ece = 0.0
    for b in range(bins):
        lower, upper = b / bins, (b + 1) / bins
        inside = [(c, k) for c, k in pairs
                  if lower <= c < upper or (b == bins - 1 and c == upper)]
        mean_conf = sum(c for c, _ in inside) / len(inside) if inside else None
        acc = accuracy(inside)
        if inside:
            ece += len(inside) / n * abs(acc - mean_conf)
        table.append({"lower": lower, "upper": upper, "examples": len(inside),
                      "confidence": mean_conf, "accuracy": acc})
    bands = {}
    for name in BANDS:
        inside = [(c, k) for c, k in pairs if band(c, high, low) == name]
        bands[name] = {"range": band_name(name, high, low), "examples": len(inside),
                       "share": len(inside) / n if n else None, "accuracy": accuracy(inside)}
    return {"examples": n, "accuracy": accuracy(pairs), "ece": ece if n else None,
            "thresholds": {"high": high, "low": low}, "bands": bands, "bins": table}


__all__ = ["BANDS", "DEFAULT_THRESHOLDS", "LABEL_METHOD", "TEXT_METHOD", "Suggestion", "band",
           "band_name", "calibration", "current", "record_suggestions", "set_thresholds",
           "thresholds"]
