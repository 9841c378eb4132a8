"""Coverage: topic clusters of the prompts, a 2-D map, targets per label, and the gap list.

Design decisions:
- Clusters: KMeans on the normalised prompt embeddings; k is the user's, or chosen
  automatically as the best silhouette over a small range around sqrt(n / 2).
- Names: class-based TF-IDF (c-TF-IDF, as in BERTopic): each cluster's prompts are one
  document; a term scores high when it is frequent in that cluster and rare in the others.
  The top three terms name the cluster.
- Map: PCA to two dimensions: deterministic, fast, and faithful enough to show clumps and holes.
- Targets: a minimum count per label (a default for every label, overrides per label) kept in
  the workspace settings. The gap list ranks labels by shortfall and shows the train and eval
  counts, because a label missing from eval cannot be evaluated and one missing from train
  cannot be learned.
- Ranked by what hurts (`rank_gaps`, stated to people as `RANK_RULE`): the gap list ranks by
  shortfall x error rate, the error rate being the fine-tuned model's (1 - its primary metric)
  on the label's eval examples, so "few examples and the model fails there" comes first. A
  label no evaluation scored counts as an error rate of 1 (nothing shows the model handles
  it), so with no evaluation at all the order is the plain shortfall order. The error rates
  are passed in: the core does not read runs (`curate.Workspace.gaps` joins them).
- One definition of "thin": `gap_list` (over a check's table) and `store_gaps` (counts in
  the store, cheap enough for every Overview load) share `_gaps`, the same examples (not deleted,
  not rejected) and the workspace's targets, so Overview, the Coverage page and the check
  that feeds the Review page's Thin labels queue agree. `thin_labels` also says whether the
  stored findings (the queue) still match the store, so a stale queue is named as such.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
import orjson

from curation.auth import User, require
from curation.checks._contract import (CheckResult, ExampleTable, Finding, PairSet, Progress,
                                       register)
from curation.errors import InvalidValue
from curation.store import Store

TARGETS_KEY = "coverage_targets"
DEFAULT_MIN_PER_LABEL = 20
_WORD = re.compile(r"[a-zA-Z][a-zA-Z'-]{2,}")
_STOP = frozenset("""a about above after again against all also am an and any are as at be
because been before being below between both but by can could did do does doing down during
each few for from further had has have having he her here hers him his how i if in into is it
its just me more most my no nor not now of off on once only or other our out over own same she
should so some such than that the their them then there these they this those through to too
under until up very was we were what when where which while who why will with would you your
yours hi hello thanks thank please i'm i've can't don't it's we're you're get got need want
there's let us""".split())


@dataclass(frozen=True)
class Targets:
    """Minimum examples wanted per label: a default and per-label overrides."""

    default_min: int = DEFAULT_MIN_PER_LABEL
    per_label: dict[str, int] | None = None

    def want(self, label: str) -> int:
        return (self.per_label or {}).get(label, self.default_min)


def get_targets(store: Store) -> Targets:
    return _parse_targets(store.setting(TARGETS_KEY))


def _parse_targets(raw: str | None) -> Targets:
    return Targets(**orjson.loads(raw)) if raw else Targets()


def set_targets(store: Store, user: User, targets: Targets) -> None:
    """Save the workspace's coverage targets."""
    require(user, "set_targets")
    if targets.default_min < 0 or any(v < 0 for v in (targets.per_label or {}).values()):
        raise InvalidValue("coverage targets must be zero or more examples")
    store.set_setting(TARGETS_KEY, orjson.dumps(asdict(targets)).decode())


@dataclass(frozen=True)
class Gap:
    """One label's coverage: have (train, eval), want, shortfall and shares."""

    label: str
    train: int
    eval: int
    want: int
    shortfall: int
    train_share: float
    eval_share: float


def gap_list(table: ExampleTable, targets: Targets) -> list[Gap]:
    """Every label with its counts and shortfall against the target, worst first."""
    train = Counter(label for label, split in zip(table.labels, table.splits)
                    if label is not None and split == "train")
    evals = Counter(label for label, split in zip(table.labels, table.splits)
                    if label is not None and split == "eval")
    return _gaps(train, evals, targets)


def store_gaps(store: Store) -> list[Gap]:
    """The gap list of the store as it is now, against the workspace's targets."""
    rows = store.label_split_counts()
    train = Counter({label: n for label, split, n in rows if split == "train"})
    evals = Counter({label: n for label, split, n in rows if split == "eval"})
    return _gaps(train, evals, get_targets(store))


def _gaps(train: Counter, evals: Counter, targets: Targets) -> list[Gap]:
    labels = sorted(set(train) | set(evals) | set(targets.per_label or {}))
    n_train, n_eval = max(1, sum(train.values())), max(1, sum(evals.values()))
    gaps = [Gap(label, train[label], evals[label], targets.want(label),
                max(0, targets.want(label) - train[label] - evals[label]),
                round(train[label] / n_train, 4), round(evals[label] / n_eval, 4))
            for label in labels]
    return sorted(gaps, key=lambda g: (-g.shortfall, g.train + g.eval, g.label))


RANK_RULE = ("Ranked by shortfall × error rate, highest first: the error rate is the "
             "fine-tuned model's (1 − its score) on the label's eval examples in the latest "
             "evaluation, and a label it did not score counts as 1; ties go to the higher "
             "error rate, then to the larger shortfall.")


@dataclass(frozen=True)
class RankedGap(Gap):
    """A label's gap with the model's error rate there and the key it is ranked by."""

    error_rate: float | None  # None: no evaluation scored this label
    scored: int  # eval examples the error rate is measured on
    rank_key: float  # shortfall x error rate (1 when not scored)


def rank_gaps(gaps: Iterable[Gap], error_rates: Mapping[str, float],
              scored: Mapping[str, int] | None = None) -> list[RankedGap]:
    """The gaps ranked by `RANK_RULE`: shortfall x error rate, highest first; a label missing
    from `error_rates` counts as an error rate of 1. Ties: the higher error rate, then the
    gap list's own order (larger shortfall, fewer examples, name). `scored` gives the eval
    examples each rate is measured on."""
    for label, rate in error_rates.items():
        if not 0.0 <= rate <= 1.0:
            raise InvalidValue(f"error rate {rate} of label {label!r} is not in [0, 1]")
    ranked = [RankedGap(**asdict(g), error_rate=error_rates.get(g.label),
                        scored=(scored or {}).get(g.label, 0) if g.label in error_rates else 0,
                        rank_key=round(g.shortfall * error_rates.get(g.label, 1.0), 4))
              for g in gaps]
    return sorted(ranked, key=lambda g: (
        -g.rank_key, -(1.0 if g.error_rate is None else g.error_rate), -g.shortfall,
        g.train + g.eval, g.label))


@dataclass(frozen=True)
class ThinLabels:
    """Labels under their target now, and whether the Thin labels queue is up to date."""

    gaps: list[Gap]  # the thin labels' gaps, worst first
    examples: int  # examples of thin labels now
    queued: int  # examples in the Thin labels queue (the last coverage run's issues)
    current: bool  # the queue holds exactly the examples of the labels thin now
    run_at: datetime | None  # the last coverage run (None: never)


def thin_labels(store: Store) -> ThinLabels:
    """The thin labels of the store now, against the queue the coverage check last stored."""
    gaps = [g for g in store_gaps(store) if g.shortfall]
    labels = [g.label for g in gaps]
    queued, missing, extra = store.queue_against_labels("coverage", labels)
    run = store.check_run("coverage")
    return ThinLabels(gaps, sum(g.train + g.eval for g in gaps), queued,
                      run is not None and missing == extra == 0, run and run["run_at"])


@dataclass
class Clusters:
    """KMeans clusters of the prompts: assignment per example, names, and 2-D coordinates."""

    assignment: list[int]
    names: list[str]
    coords: np.ndarray
    k: int


def cluster_prompts(table: ExampleTable, k: int | None = None, *, seed: int = 0) -> Clusters:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    vectors = table.embed()
    n = len(vectors)
    if n < 3:
        raise InvalidValue("clustering needs at least 3 examples")
    if k is None:
        centre = max(2, round(math.sqrt(n / 2)))
        candidates = sorted({max(2, min(n - 1, c)) for c in
                             (centre // 2, centre * 3 // 4, centre, centre * 5 // 4)})
        sample = np.random.default_rng(seed).choice(n, size=min(n, 3000), replace=False)
        scored = []
        for c in candidates:
            labels = KMeans(c, n_init=3, random_state=seed).fit_predict(vectors)
            scored.append((silhouette_score(vectors[sample], labels[sample]), c))
        k = max(scored)[1]
    if not 2 <= k < n:
        raise InvalidValue(f"the number of clusters must be between 2 and {n - 1}")
    assignment = KMeans(k, n_init=5, random_state=seed).fit_predict(vectors)
    names = name_clusters([table.prompt(i) for i in range(n)], assignment, k)
    coords = PCA(2, random_state=seed).fit_transform(vectors)
    return Clusters([int(a) for a in assignment], names, coords, k)


def name_clusters(texts: list[str], assignment, k: int, terms: int = 3) -> list[str]:
    """Each cluster's top c-TF-IDF terms, joined: its most distinctive words."""
    per_cluster = [Counter() for _ in range(k)]
    for text, c in zip(texts, assignment):
        per_cluster[c].update(w for w in _WORD.findall(text.lower()) if w not in _STOP)
    total = Counter()
    for counts in per_cluster:
        total.update(counts)
    average_words = sum(total.values()) / k
    names = []
    for counts in per_cluster:
        size = max(1, sum(counts.values()))
        scored = {w: (n / size) * math.log(1 + average_words / total[w])
                  for w, n in counts.items()}
        best = sorted(scored, key=lambda w: (-scored[w], w))[:terms]
        names.append(" · ".join(best) or "(empty)")
    return names


@dataclass
class CoverageCheck:
    name: str = "coverage"
    title: str = "Thin labels"
    description: str = ("Examples of labels with fewer examples than the target "
                        "(default 20 each). The model learns little from a thin label: "
                        "fill the gap before training.")
    def run(self, table: ExampleTable, progress: Progress | None = None,
            ignore_pairs: PairSet = frozenset()) -> CheckResult:
        targets = _parse_targets(table.settings.get(TARGETS_KEY))
        gaps = {g.label: g for g in gap_list(table, targets)}
        findings = []
        for i, label in enumerate(table.labels):
            if label is None:
                continue
            gap = gaps[label]
            have = gap.train + gap.eval
            short = gap.shortfall > 0
            reason = (f"label {label!r} has {have} examples; the target is {gap.want}"
                      if short else f"label {label!r} meets its target")
            findings.append(Finding(table.ids[i], round(min(1.0, have / max(1, gap.want)), 4),
                                    short, reason, {"label": label, "shortfall": gap.shortfall}))
        return CheckResult(self.name, findings,
                           {"labels": len(gaps),
                            "thin_labels": [g.label for g in gaps.values() if g.shortfall]})


COVERAGE = register(CoverageCheck())
