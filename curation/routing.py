"""Confidence routing: a run's suggestions decide who looks at each pending example.

After pre-labelling (`curation.suggestions`), `route` sends each pending train example with a
suggestion of the run for its current version to one of three places, by the workspace's
thresholds (the seeds' production rule):
- at or above the high threshold, the **auto-accept band**: the example is accepted with the
  model's answer, by the actor `model:<run id>`, as an ordinary audited change, reversible
  (`revert_auto_accepts`, or any person's later decision); a seeded random share of it (5% by
  default) goes to the **QA sample** queue, where people measure its precision;
- between the thresholds, the **Model suggestions** queue, most confident first, where
  accepting the suggestion is one key (`accept_suggestion`);
- below the low threshold, nowhere new: the normal pending queue, and Review shows no
  suggestion for it.

Design decisions:
- The model never overwrites a person's text: a confident answer that differs from the
  answer the example already has is not auto-accepted but sent to Model suggestions, where a
  person chooses ("the model disagrees with the stored answer"). An example that needs an
  answer, or whose answer the model confirms, is auto-accepted.
- For closed-set answers (`LABEL_METHOD`) the answer is the label: accepting it sets both the
  assistant's answer and the label. For free text only the answer is set.
- The two queues are stored as findings of two check-like sources, `model_suggestions` and
  `qa_sample`, through the same tables the checks use, so the queues are plain findings
  queues and the page says when routing last ran. Routing replaces `model_suggestions`; the
  QA sample accumulates over routings (each routing samples its own auto-accepted examples).
- The QA sample is reproducible: the same auto-accepted ids and seed give the same sample
  (`qa_sample`: `random.Random("qa:<seed>")` over the sorted ids, ceil(share x n) of them).
- A QA verdict is recorded when a person decides on a sampled example (`note_review`, which
  the facade calls after every decision): accepting it with the model's answer unchanged is
  "correct"; editing the answer or label before accepting, rejecting or sending it back is
  "wrong". The verdicts are finding decisions, so a reviewed example leaves the queue and the
  measured precision (`qa_precision`) is correct / reviewed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from curation.auth import User, require
from curation.checks._contract import Finding
from curation.errors import InvalidValue
from curation.messages import message_text
from curation.query import ExampleFilter
from curation.store import Example, Store, utcnow
from curation.suggestions import LABEL_METHOD, band, band_name, current, thresholds

SUGGESTIONS = "model_suggestions"  # the Model suggestions queue's findings source
QA_SAMPLE = "qa_sample"  # the QA sample queue's findings source
QUEUES = (SUGGESTIONS, QA_SAMPLE)  # the review queues a routing feeds
DEFAULT_QA_SHARE = 0.05
MODEL_ACTOR = "model:"  # + run id: who auto-accepted


def model_actor(run_id: str) -> str:
    return f"{MODEL_ACTOR}{run_id}"


@dataclass(frozen=True)
class Routing:
    """Where one routing sent the examples: ids per destination, and the settings used."""

    run_id: str
    thresholds: tuple[float, float]
    seed: int
    qa_share: float
    auto_accepted: list[int] = field(default_factory=list)
    suggested: list[int] = field(default_factory=list)  # middle band
    disagreed: list[int] = field(default_factory=list)  # confident, but not the stored answer
    left: list[int] = field(default_factory=list)  # low band
    qa_sample: list[int] = field(default_factory=list)

    @property
    def routed(self) -> int:
        return (len(self.auto_accepted) + len(self.suggested) + len(self.disagreed)
                + len(self.left))

    def shares(self) -> dict[str, float | None]:
        """The share of the routed examples auto-accepted, sent for review, left to people."""
        n = self.routed
        counts = {"auto_accepted": len(self.auto_accepted),
                  "review": len(self.suggested) + len(self.disagreed), "left": len(self.left)}
        return {k: (v / n if n else None) for k, v in counts.items()}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "thresholds": {"high": self.thresholds[0],
                                               "low": self.thresholds[1]},
                "routed": self.routed, "shares": self.shares()}


def answer_of(messages: Sequence[dict[str, str]]) -> str | None:
    """The last assistant turn's text, or None when the conversation ends with a prompt."""
    return message_text(messages[-1]) if messages and messages[-1]["role"] == "assistant" \
        else None


def with_answer(messages: Sequence[dict[str, str]], answer: str) -> list[dict[str, str]]:
    """The conversation with `answer` as its last assistant turn (replacing one, or added
    after a final user turn)."""
    out = [dict(m) for m in messages]
    if out and out[-1]["role"] == "assistant":
        out[-1]["content"] = answer
    else:
        out.append({"role": "assistant", "content": answer})
    return out


def agrees(example: Example, answer: str, method: str) -> bool:
    """Whether the example has no answer to overwrite, or already says `answer` (and, for a
    label answer, has that label or none)."""
    stored = answer_of(example.messages)
    if stored is not None and stored.strip() != answer.strip():
        return False
    return method != LABEL_METHOD or example.label in (None, answer)


def qa_sample(ids: Sequence[int], share: float, seed: int) -> list[int]:
    """A reproducible random ceil(share x n) of the ids (none for share 0), sorted."""
    if not 0 <= share <= 1:
        raise InvalidValue(f"the QA sample share must be between 0 and 1; got {share}")
    ordered = sorted(ids)
    k = math.ceil(share * len(ordered)) if share > 0 else 0
    return sorted(random.Random(f"qa:{seed}").sample(ordered, k))


def route(store: Store, user: User, run_id: str, *, qa_share: float = DEFAULT_QA_SHARE,
          seed: int = 0, progress: Callable[[int, int], None] | None = None) -> Routing:
    """Route every pending train example that has this run's suggestion for its current
    version (see the module docstring); returns where each one went."""
    require(user, "decide")
    if not 0 <= qa_share <= 1:
        raise InvalidValue(f"the QA sample share must be between 0 and 1; got {qa_share}")
    high, low = thresholds(store)
    rows = store.routable_suggestions(run_id)
    examples = {e.id: e for e in store.find(ExampleFilter(ids=tuple(r[0] for r in rows)))}
    places: dict[str, list[int]] = {"auto": [], "middle": [], "disagreed": [], "low": []}
    findings, versions, accepted = [], {}, {}
    for example_id, version, answer, confidence, method in rows:
        example = examples[example_id]
        name = band(confidence, high, low)
        if name == "high" and agrees(example, answer, method):
            places["auto"].append(example_id)
            accepted[example_id] = (example, answer, confidence, method)
        elif name == "low":
            places["low"].append(example_id)
        else:
            where = "middle" if name == "middle" else "disagreed"
            places[where].append(example_id)
            why = (f"the model suggests {answer!r} with confidence {confidence:.2f} "
                   f"({band_name(name, high, low)})" if where == "middle" else
                   f"the model is confident ({confidence:.2f}) in {answer!r}, which differs "
                   "from the stored answer")
            findings.append(Finding(example_id, round(1.0 - confidence, 6), True, why,
                                    {"run_id": run_id, "answer": answer,
                                     "confidence": confidence, "band": name}))
            versions[example_id] = version
    actor = model_actor(run_id)
    done: dict[int, int] = {}
    for k, (example_id, (example, answer, confidence, method)) in enumerate(accepted.items()):
        changes: dict[str, Any] = {"messages": with_answer(example.messages, answer)}
        if method == LABEL_METHOD:
            changes["label"] = answer
        after = store.update(example_id, base_version=example.version, actor=actor,
                             action="accept", status="accepted",
                             reason=f"auto-accepted: confidence {confidence:.3f} >= {high:g} "
                                    f"(routing started by {user.name})", **changes)
        done[example_id] = after.version
        if progress:
            progress(k + 1, len(accepted))
    sample = qa_sample(list(done), qa_share, seed)
    _add_to_qa_sample(store, user, run_id, {i: (done[i], *accepted[i][1:]) for i in sample})
    result = Routing(run_id, (high, low), seed, qa_share, places["auto"], places["middle"],
                     places["disagreed"], places["low"], sample)
    summary = {k: v for k, v in result.to_dict().items() if not isinstance(v, list)}
    store.save_check_run(SUGGESTIONS, findings, versions, fingerprint=run_id,
                         summary={**summary, **{k: len(v) for k, v in places.items()},
                                  "qa_sampled": len(sample)},
                         run_by=user.name, run_at=utcnow())
    return result


def _add_to_qa_sample(store: Store, user: User, run_id: str,
                      sampled: dict[int, tuple[int, str, float, str]]) -> None:
    """Add examples (id -> auto-accepted version, answer, confidence, method) to the QA
    sample, keeping the earlier routings' sample."""
    kept = [Finding(i, s, True, r, d) for i, s, _, r, d in store.findings(QA_SAMPLE)
            if i not in sampled]
    versions = {f.example_id: f.details["version"] for f in kept}
    for example_id, (version, answer, confidence, method) in sampled.items():
        kept.append(Finding(example_id, round(1.0 - confidence, 6), True,
                            f"QA sample of run {run_id}'s auto-accepted band (confidence "
                            f"{confidence:.2f}): Accept if {answer!r} is right, correct or "
                            "reject it if not",
                            {"run_id": run_id, "answer": answer, "confidence": confidence,
                             "method": method, "version": version}))
        versions[example_id] = version
    store.save_check_run(QA_SAMPLE, kept, versions, fingerprint="",
                         summary={"sampled": len(kept)}, run_by=user.name, run_at=utcnow())


def accept_suggestion(store: Store, user: User, example_id: int, *, base_version: int,
                      reason: str | None = None, **changes: Any) -> Example:
    """Accept the example with its current suggestion as the answer (and, for a label
    answer, as the label), together with any other pending `changes`: one change by `user`."""
    from curation.review import decide

    suggestion = current(store, example_id)
    if suggestion is None:
        raise InvalidValue(f"example #{example_id} has no model suggestion for its current "
                           "version")
    base = changes.pop("messages", None) or store.get(example_id).messages
    changes["messages"] = with_answer(base, suggestion.answer)
    if suggestion.method == LABEL_METHOD:
        changes["label"] = suggestion.answer
    note = (f"accepted the suggestion of run {suggestion.run_id} (confidence "
            f"{suggestion.confidence:.2f})")
    return decide(store, user, example_id, "accept", base_version=base_version,
                  reason=f"{reason.strip()}; {note}" if (reason or "").strip() else note,
                  **changes)


def revert_auto_accepts(store: Store, user: User, run_id: str,
                        ids: Sequence[int] | None = None) -> list[int]:
    """Undo the run's auto-accepts that nobody has changed since (all, or those in `ids`):
    each example goes back to the version before, pending, audited as a revert by `user`.
    Returns the ids reverted; they leave the QA sample."""
    require(user, "revert")
    wanted = None if ids is None else set(ids)
    reverted = []
    for example_id, version in store.last_changed_by(model_actor(run_id)):
        if wanted is not None and example_id not in wanted:
            continue
        before = store.version(example_id, version - 1)
        store.update(example_id, base_version=version, actor=user.name, action="revert",
                     reason=f"undo the auto-accept of run {run_id}", status="pending",
                     messages=before["messages"], label=before["label"])
        reverted.append(example_id)
    if reverted:
        gone = set(reverted)
        kept = [Finding(i, s, True, r, d) for i, s, _, r, d in store.findings(QA_SAMPLE)
                if i not in gone]
        store.save_check_run(QA_SAMPLE, kept, {f.example_id: f.details["version"] for f in kept},
                             fingerprint="", summary={"sampled": len(kept)},
                             run_by=user.name, run_at=utcnow())
    return reverted


def note_review(store: Store, user: User, example_id: int, decision: str,
                after: Example) -> str | None:
    """Record the QA verdict when `example_id` is an unreviewed QA sample example that
    `user` just decided on (leaving it as `after`): "correct" or "wrong"; None otherwise."""
    open_ = {i: d for i, _, _, _, d in store.findings(QA_SAMPLE)}
    if example_id not in open_ or str(example_id) in {
            s for s, _, _ in store.finding_decisions(check=QA_SAMPLE)}:
        return None
    sampled = open_[example_id]
    answer = sampled["answer"]
    kept = (decision == "accept" and (answer_of(after.messages) or "").strip() == answer.strip()
            and (sampled["method"] != LABEL_METHOD or after.label == answer))
    verdict = "correct" if kept else "wrong"
    store.add_finding_decisions(QA_SAMPLE, [str(example_id)], verdict, user.name, utcnow())
    return verdict


def forget_review(store: Store, reviewer: str, example_id: int) -> bool:
    """Take back the QA verdict `reviewer` recorded on `example_id` (their decision on it was
    undone), so the example is back in the QA sample queue; whether there was one."""
    return store.remove_finding_decisions(QA_SAMPLE, [str(example_id)], decided_by=reviewer) > 0


def qa_precision(store: Store) -> dict[str, Any]:
    """{"sampled", "reviewed", "correct", "precision"} of the QA sample (precision None
    until one is reviewed)."""
    sampled = {i for i, *_ in store.findings(QA_SAMPLE)}
    verdicts = {s: d for s, d, _ in store.finding_decisions(check=QA_SAMPLE)
                if s.isdigit() and int(s) in sampled}
    correct = sum(d == "correct" for d in verdicts.values())
    return {"sampled": len(sampled), "reviewed": len(verdicts), "correct": correct,
            "precision": correct / len(verdicts) if verdicts else None}


def last_routing(store: Store) -> dict[str, Any] | None:
    """The summary of the last routing (run, thresholds, counts, shares), with who ran it
    and when, or None."""
    run = store.check_run(SUGGESTIONS)
    return run and {**run["summary"], "run_by": run["run_by"], "run_at": run["run_at"]}


def _register_queues() -> None:
    from curation.queues import register_stored

    how = "`curate route`, or Route on the Evaluation page after pre-labelling"
    register_stored(SUGGESTIONS, "Model suggestions",
                    "Pending examples whose model suggestion falls between the thresholds "
                    "(or is confident but differs from the stored answer), most confident "
                    "first: press m to accept the suggestion.",
                    feed_title="Routing of the model's suggestions", how_to_run=how,
                    statuses=("pending",))
    register_stored(QA_SAMPLE, "QA sample",
                    "A seeded random sample of the examples the model auto-accepted: Accept "
                    "if the answer is right, correct or reject it if not; the share right is "
                    "the measured precision of the auto-accept band.",
                    feed_title="QA sample of the auto-accepted band", how_to_run=how,
                    statuses=("accepted",), undecided=True)


_register_queues()

__all__ = ["DEFAULT_QA_SHARE", "QA_SAMPLE", "QUEUES", "Routing", "SUGGESTIONS",
           "accept_suggestion", "agrees", "answer_of", "forget_review", "last_routing",
           "model_actor", "note_review", "qa_precision", "qa_sample", "revert_auto_accepts",
           "route", "with_answer"]
