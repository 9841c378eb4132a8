"""Overlap for agreement: N independent decisions per example, adjudication, and kappa.

A workspace setting (`overlap`, default 1, set by an admin) says how many independent
decisions each train example needs. With N = 1 nothing here is used: a decision changes the
example at once, as it always did. With N > 1, `curation.review.decide` hands a reviewer's
decision on an undecided train example (pending or needs work) to `decide` here, which
records it as one *vote* (`review_votes`) and leaves the example unchanged, so the next
reviewer decides blind: the status, the label and the history show nothing of it.

- The example stays in the queues of reviewers who have not decided on it yet
  (`serving_filter`, which sets `ExampleFilter.open_to`: a condition of the queue's SQL, so
  any reader of a queue with that filter honours it) until it has N decisions.
- When the N-th decision comes and all N agree (same decision and same label), the example
  is decided as today: one change with that status and label, by the person whose decision
  completed the agreement, audited with the reason "N independent decisions agree (names)".
- When they disagree, the round is *disputed* and the example goes to the Adjudication queue.
  There, people with the adjudicator right (action `adjudicate`: the admin role) see every
  decision side by side (`votes`) and settle it with an ordinary decision (with edits, if they
  want): one audited change whose reason lists the decisions it settles; the round's rows
  record who settled it and when. A reviewer without the right cannot decide a disputed
  example.

Design decisions:
- A vote records a decision and a label only. Edits to the conversation, tags or split are
  refused with a vote ("save the edit first"): an edit is visible to the other reviewers and
  is an ordinary audited change, so it is kept apart from the blind decision. (So is Accept
  suggestion where the model's answer would change the conversation.)
- Only undecided train examples take votes. Changing an accepted or rejected example, eval
  examples, and bulk actions are direct decisions as before: they are corrections by people
  who see the result, not independent judgements.
- Votes come in rounds: a settled round (agreed or adjudicated) stays for the agreement
  figures; an example sent back as needs work by its round is undecided again and collects a
  new round.
- Changing N re-examines the open rounds: those that now have N decisions are settled (by the
  admin who changed N) or disputed, so no example is left with "enough" decisions and nowhere
  to go.
- The votes are readable through `votes` only by adjudicators; the page shows a reviewer
  only how many decisions are recorded, never which.

Agreement figures (`figures`) are computed on the *rated items*: the rounds with two or more
decisions. A decision's category is its verdict, decision and label together ("accept ·
billing"), the same rule that defines agreement:
- Cohen's kappa per reviewer pair, on the items both rated: (p_o - p_e) / (1 - p_e), p_o the
  share of those items they gave the same verdict, p_e = sum over verdicts of the product
  of the two reviewers' shares of that verdict. Checked against scikit-learn's
  `cohen_kappa_score` in the tests.
- Fleiss' kappa over all rated items and reviewers (Fleiss 1971, with the usual extension to
  a number of raters n_i that varies by item): P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)),
  p_j = (sum_i n_ij) / (sum_i n_i), kappa = (mean P_i - sum_j p_j^2) / (1 - sum_j p_j^2).
- Per label: the same Fleiss' kappa with the label one-vs-rest (each decision is "gave label
  L" or "did not", whatever the decision), over all rated items; and, on the items where at
  least one decision gave L, the share where every decision gave L.
A kappa is undefined (None) when chance agreement is 1 (everybody always gave one verdict).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations
from typing import Any

import numpy as np

from curation.auth import User, require
from curation.errors import InvalidValue, VersionConflict
from curation.query import ExampleFilter
from curation.store import Example, Store, utcnow
from curation.store._agreement import OVERLAP_KEY

ADJUDICATION = "adjudication"  # the queue (registered in curation.queues)
MAX_OVERLAP = 10
DECISION_STATUS = {"accept": "accepted", "reject": "rejected", "needs_work": "needs_work"}
UNDECIDED = ("pending", "needs_work")


# --- the setting -----------------------------------------------------------------------------

def overlap(store: Store) -> int:
    """How many independent decisions each train example needs (default 1)."""
    raw = store.setting(OVERLAP_KEY)
    return int(raw) if raw else 1


def set_overlap(store: Store, user: User, n: int) -> dict[str, Any]:
    """Store N (1 to MAX_OVERLAP), then settle or dispute the open rounds that now have N
    decisions; what happened to them: {"overlap", "agreed", "disputed"} (example ids)."""
    require(user, "set_overlap")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_OVERLAP:
        raise InvalidValue(f"overlap must be a whole number from 1 to {MAX_OVERLAP}; got {n!r}")
    store.set_setting(OVERLAP_KEY, str(n))
    outcome: dict[str, Any] = {"overlap": n, "agreed": [], "disputed": []}
    for example_id in store.examples_with_open_votes(n):
        votes = [v for v in store.unsettled_votes(example_id) if v["state"] == "open"]
        after = _settle(store, user, example_id, votes)
        outcome["agreed" if after is not None else "disputed"].append(example_id)
    return outcome


# --- serving and deciding ------------------------------------------------------------------

def serving_filter(store: Store, user: User, queue: str, where: ExampleFilter
                   ) -> ExampleFilter:
    """`where` as `user` reads `queue`: with overlap, only the examples still open to their
    independent decision; an adjudicator reads the Adjudication queue whole."""
    if queue == ADJUDICATION and user.can("adjudicate"):
        return where
    if overlap(store) == 1 and not store.has_unsettled_votes():
        return where  # N = 1 and nothing left over: exactly as without overlap
    return replace(where, open_to=user.name)


def applies(store: Store, example: Example) -> bool:
    """Whether a decision on this example is a vote or an adjudication (not a direct one)."""
    unsettled = store.unsettled_votes(example.id)
    if any(v["state"] == "disputed" for v in unsettled):
        return True
    undecided = example.split == "train" and example.status in UNDECIDED
    return undecided and (bool(unsettled) or overlap(store) > 1)


def decide(store: Store, user: User, current: Example, decision: str, *, base_version: int,
           reason: str | None, changes: dict[str, Any]) -> Example:
    """A reviewer's decision with overlap (`review.decide` has checked the role and the
    decision): an adjudication on a disputed example, else one vote; the example as it is
    after (unchanged until the round agrees)."""
    unsettled = store.unsettled_votes(current.id)
    if any(v["state"] == "disputed" for v in unsettled):
        return _adjudicate(store, user, current, decision, base_version=base_version,
                           reason=reason, changes=changes, votes=unsettled)
    edits = sorted(k for k, v in changes.items() if k != "label" and _changed(current, k, v))
    if edits:
        raise InvalidValue(f"example #{current.id} needs {overlap(store)} independent "
                           f"decisions: a decision records only the decision and the label. "
                           f"Save the edit to {', '.join(edits)} first, then decide")
    label = (changes["label"] or "").strip() or None if "label" in changes else current.label
    votes = store.record_vote(current.id, base_version=base_version, reviewer=user.name,
                              decision=decision, label=label, reason=reason, now=utcnow())
    if len(votes) >= overlap(store):
        _settle(store, user, current.id, votes)
    return store.get(current.id)


def _changed(current: Example, name: str, value: Any) -> bool:
    now = getattr(current, name, None)
    return (tuple(value) != now) if name == "tags" else value != now


def _verdict(vote: dict[str, Any]) -> str:
    return f"{vote['decision']} · {vote['label'] or '(no label)'}"


def _settle(store: Store, user: User, example_id: int, votes: list[dict[str, Any]]
            ) -> Example | None:
    """Decide the example when the round's votes agree (the change, by `user`); else mark
    the round disputed (None)."""
    round_ = votes[0]["round"]
    if len({(v["decision"], v["label"]) for v in votes}) == 1:
        decision, label = votes[0]["decision"], votes[0]["label"]
        reasons = "; ".join(f"{v['reviewer']}: {v['reason']}" for v in votes if v["reason"])
        text = (f"{len(votes)} independent decisions agree "
                f"({', '.join(v['reviewer'] for v in votes)})" + (f": {reasons}" if reasons
                                                                  else ""))
        current = store.get(example_id)
        try:
            after = store.update(example_id, base_version=current.version, actor=user.name,
                                 reason=text, action=decision,
                                 status=DECISION_STATUS[decision], label=label)
        except (VersionConflict, InvalidValue):  # changed meanwhile: a person settles it
            store.settle_votes(example_id, round_, "disputed")
            return None
        store.settle_votes(example_id, round_, "agreed", by=user.name, at=utcnow())
        return after
    store.settle_votes(example_id, round_, "disputed")
    return None


def _adjudicate(store: Store, user: User, current: Example, decision: str, *,
                base_version: int, reason: str | None, changes: dict[str, Any],
                votes: list[dict[str, Any]]) -> Example:
    require(user, "adjudicate")
    settled = "; ".join(f"{v['reviewer']}: {_verdict(v)}" for v in votes)
    text = f"adjudicated ({settled})" + (f": {reason}" if reason else "")
    after = store.update(current.id, base_version=base_version, actor=user.name, reason=text,
                         action=decision, status=DECISION_STATUS[decision], **changes)
    store.settle_votes(current.id, votes[0]["round"], "adjudicated", by=user.name,
                       at=utcnow())
    return after


# --- what people see -------------------------------------------------------------------------

@dataclass(frozen=True)
class Vote:
    """One independent decision, as an adjudicator sees it."""

    reviewer: str
    decision: str
    label: str | None
    reason: str | None
    version: int
    decided_at: Any
    state: str


@dataclass(frozen=True)
class VoteProgress:
    """How far an example is in its round, without saying what anyone decided."""

    needed: int
    recorded: int
    mine: bool  # the asking person has decided in this round
    disputed: bool


def votes(store: Store, user: User, example_id: int) -> list[Vote]:
    """The example's unsettled decisions, oldest first (adjudicators only: reviewers decide
    blind)."""
    require(user, "adjudicate")
    keep = ("reviewer", "decision", "label", "reason", "version", "decided_at", "state")
    return [Vote(**{k: v[k] for k in keep}) for v in store.unsettled_votes(example_id)]


def progress(store: Store, user: User, example_id: int) -> VoteProgress | None:
    """The example's round so far (None when it has no unsettled decision)."""
    unsettled = store.unsettled_votes(example_id)
    if not unsettled:
        return None
    return VoteProgress(overlap(store), len(unsettled),
                        any(v["reviewer"] == user.name for v in unsettled),
                        any(v["state"] == "disputed" for v in unsettled))


# --- kappa -------------------------------------------------------------------------------------

def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    """Cohen's kappa of two raters' categories on the same items (None when undefined)."""
    if len(a) != len(b):
        raise InvalidValue(f"two raters need the same items; got {len(a)} and {len(b)}")
    if not a:
        return None
    categories = {c: i for i, c in enumerate(sorted(set(a) | set(b), key=str))}
    matrix = np.zeros((len(categories), len(categories)))
    for x, y in zip(a, b):
        matrix[categories[x], categories[y]] += 1
    n = matrix.sum()
    observed = np.trace(matrix) / n
    chance = float(matrix.sum(axis=1) @ matrix.sum(axis=0)) / n ** 2
    if np.isclose(chance, 1.0):
        return None
    return float((observed - chance) / (1 - chance))


def fleiss_kappa(counts: Sequence[Sequence[float]] | np.ndarray) -> float | None:
    """Fleiss' kappa of an items x categories table of how many raters put each item in
    each category (items with fewer than two ratings are left out; None when undefined)."""
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2:
        raise InvalidValue("Fleiss' kappa needs an items x categories table")
    raters = table.sum(axis=1)
    table, raters = table[raters >= 2], raters[raters >= 2]
    if not len(table):
        return None
    per_item = ((table ** 2).sum(axis=1) - raters) / (raters * (raters - 1))
    shares = table.sum(axis=0) / raters.sum()
    chance = float((shares ** 2).sum())
    if np.isclose(chance, 1.0):
        return None
    return float((per_item.mean() - chance) / (1 - chance))


# --- agreement figures ---------------------------------------------------------------------

@dataclass(frozen=True)
class PairAgreement:
    a: str
    b: str
    items: int  # rated by both
    observed: float  # share of those with the same verdict
    kappa: float | None  # Cohen's


@dataclass(frozen=True)
class LabelAgreement:
    label: str | None
    items: int  # rated items where at least one decision gave the label
    all_agree: float  # share of those where every decision gave it
    kappa: float | None  # Fleiss', the label one-vs-rest, over all rated items


@dataclass(frozen=True)
class Agreement:
    """Agreement figures on the examples with overlap (rounds of two or more decisions)."""

    overlap: int
    items: int
    reviewers: list[str]
    observed: float | None  # share of items where every decision agrees
    fleiss: float | None
    in_adjudication: int
    pairs: list[PairAgreement] = field(default_factory=list)
    labels: list[LabelAgreement] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def figures(store: Store) -> Agreement:
    """Cohen's kappa per reviewer pair, Fleiss' kappa overall and per label (one-vs-rest),
    on every round with two or more decisions."""
    items: dict[tuple[int, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for vote in store.rated_rounds():
        items[(vote["example_id"], vote["round"])][vote["reviewer"]] = vote
    rounds = list(items.values())
    reviewers = sorted({name for r in rounds for name in r})
    verdicts = sorted({_verdict(v) for r in rounds for v in r.values()})
    table = [[sum(_verdict(v) == c for v in r.values()) for c in verdicts] for r in rounds]
    pairs = []
    for a, b in combinations(reviewers, 2):
        both = [r for r in rounds if a in r and b in r]
        if both:
            ya, yb = [_verdict(r[a]) for r in both], [_verdict(r[b]) for r in both]
            pairs.append(PairAgreement(a, b, len(both),
                                       sum(x == y for x, y in zip(ya, yb)) / len(both),
                                       cohen_kappa(ya, yb)))
    labels = []
    for label in sorted({v["label"] for r in rounds for v in r.values()},
                        key=lambda x: (x is None, x or "")):
        gave = [sum(v["label"] == label for v in r.values()) for r in rounds]
        touched = [(g, len(r)) for g, r in zip(gave, rounds) if g]
        labels.append(LabelAgreement(
            label, len(touched), sum(g == n for g, n in touched) / len(touched),
            fleiss_kappa([[len(r) - g, g] for g, r in zip(gave, rounds)])))
    return Agreement(overlap(store), len(rounds), reviewers,
                     (sum(len({_verdict(v) for v in r.values()}) == 1 for r in rounds)
                      / len(rounds)) if rounds else None,
                     fleiss_kappa(table) if rounds else None,
                     store.disputed_count(), pairs, labels)
