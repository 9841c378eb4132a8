"""Curation checks: run them over the store, keep their findings, remember SME decisions.

`REGISTRY` lists every check (duplicates, leakage, label issues, outliers...). `run_check`
loads the examples, runs the check, and stores its findings with the example version each
was computed on. When nothing the check reads has changed since its last run (same
fingerprint), the stored findings are returned without recomputing; embeddings are cached per
text, so even a changed store embeds only new prompts.

SME decisions on findings ("not duplicates", "label is right") live in `finding_decisions`
and are applied on every run, so a dismissed finding does not come back.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import orjson

from curation.auth import User, require
from curation.checks import duplicates as _duplicates  # noqa: F401  (registers the checks)
from curation.checks import coverage as _coverage  # noqa: F401
from curation.checks import noise as _noise  # noqa: F401
from curation.checks import special_tokens as _special_tokens  # noqa: F401
from curation.checks._contract import (REGISTRY, Check, CheckResult, ExampleTable, Finding,
                                       Progress, get_check, register)
from curation.errors import InvalidValue
from curation.query import ExampleFilter
from curation.store import QueueSource, Store, utcnow

__all__ = ["REGISTRY", "Check", "CheckResult", "ExampleTable", "Finding", "get_check", "register",
           "load_table", "run_check", "stored_findings", "dismiss", "dismissed_pairs",
           "keep_one", "DISMISSALS"]

DISMISSALS = {"not_duplicates": "not duplicates", "label_ok": "label is right",
              "fine": "not a problem"}


def load_table(store: Store, where: ExampleFilter = ExampleFilter(), *,
               progress: Progress | None = None) -> ExampleTable:
    """The examples a check reads (not deleted, not rejected by default), with lazy embeddings."""
    rows = store.check_input(where)
    table = ExampleTable(ids=[r[0] for r in rows], versions=[r[1] for r in rows],
                         messages=[orjson.loads(r[2]) for r in rows],
                         labels=[r[3] for r in rows], splits=[r[4] for r in rows],
                         statuses=[r[5] for r in rows], content_hashes=[r[6] for r in rows],
                         settings=store.settings())
    cache: dict[str, Any] = {}

    def embed(kind: str = "prompt"):
        """Normalised embeddings of every example's prompt (or response), cached."""
        if kind not in cache:
            from curation.embeddings import embed_texts

            pick = table.prompt if kind == "prompt" else table.response
            texts = [pick(i) for i in range(len(table))]
            cache[kind] = embed_texts(store, texts, store.setting("embedding_model"),
                                      progress=progress)
        return cache[kind]

    table.embed = embed
    return table


def _fingerprint(check_name: str, table: ExampleTable, store: Store) -> str:
    digest = hashlib.sha256(check_name.encode())
    for row in zip(table.ids, table.content_hashes, table.labels, table.splits, table.statuses):
        digest.update(orjson.dumps(row))
    digest.update(orjson.dumps(sorted(dismissed_pairs(store))))
    digest.update(orjson.dumps(sorted(dismissed_examples(store, check_name))))
    digest.update(orjson.dumps(table.settings, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


def run_check(store: Store, name: str, *, user: User, where: ExampleFilter = ExampleFilter(),
              progress: Progress | None = None, force: bool = False) -> CheckResult:
    """Run a registered check (or reuse its stored result when its input is unchanged).
    A check that reads answers (`answered_only`) never sees an example that needs one."""
    require(user, "check")
    check = get_check(name)
    if getattr(check, "answered_only", False):
        where = replace(where, needs_answer=False)
    table = load_table(store, where, progress=progress)
    fingerprint = _fingerprint(name, table, store)
    last = store.check_run(name)
    if last and last["fingerprint"] == fingerprint and not force:
        if progress:
            progress(1.0, "nothing changed since the last run: stored findings reused")
        return CheckResult(name, stored_findings(store, name, issues_only=False),
                           last["summary"])
    result = check.run(table, progress=progress, ignore_pairs=dismissed_pairs(store))
    result = _apply_dismissals(result, dismissed_examples(store, name))
    store.save_check_run(name, result.findings, dict(zip(table.ids, table.versions)),
                         fingerprint=fingerprint, summary=result.summary, run_by=user.name,
                         run_at=utcnow())
    return result


def stored_findings(store: Store, name: str, *, issues_only: bool = True) -> list[Finding]:
    """The findings of a check's last run, worst first."""
    return [Finding(*row) for row in store.findings(name, issues_only=issues_only)]


def last_run(store: Store, name: str) -> dict[str, Any] | None:
    run = store.check_run(name)
    return None if run is None else {k: run[k] for k in ("summary", "run_by", "run_at")}


def dismiss(store: Store, user: User, name: str, example_ids: list[int], decision: str) -> None:
    """Remember an SME's verdict on a finding (for a group: every pair in it)."""
    require(user, "decide")
    if decision not in DISMISSALS:
        raise InvalidValue(f"decision {decision!r} is not one of {', '.join(DISMISSALS)}")
    get_check(name)
    ids = sorted(set(example_ids))
    subjects = ([f"{a}-{b}" for i, a in enumerate(ids) for b in ids[i + 1:]]
                if decision == "not_duplicates" else [str(i) for i in ids])
    now = utcnow()
    store.add_finding_decisions(name, subjects, decision, user.name, now)


def dismissed_pairs(store: Store) -> set[tuple[int, int]]:
    """Example-id pairs (a < b) an SME marked 'not duplicates', under whichever check: the
    verdict holds for every duplicate check, since a pair that is not a duplicate is not one
    by any method."""
    rows = store.finding_decisions("not_duplicates")
    return {tuple(int(x) for x in s.split("-")) for s, _, _ in rows}


def dismissed_examples(store: Store, name: str) -> dict[int, str]:
    """Example ids an SME cleared for this check ('label is right', 'not a problem'), with
    who cleared them."""
    rows = store.finding_decisions(check=name, exclude="not_duplicates")
    return {int(subject): f"{DISMISSALS[decision]} (said {who})"
            for subject, decision, who in rows}


def _apply_dismissals(result: CheckResult, cleared: dict[int, str]) -> CheckResult:
    """Findings on cleared examples are kept but no longer issues, with the SME's verdict."""
    if not cleared:
        return result
    findings = [Finding(f.example_id, f.score, False, cleared[f.example_id], f.details)
                if f.is_issue and f.example_id in cleared else f for f in result.findings]
    summary = {**result.summary, "cleared_by_reviewers": sum(
        f.is_issue and f.example_id in cleared for f in result.findings)}
    if "issues" in summary:
        summary["issues"] = sum(f.is_issue for f in findings)
    return CheckResult(result.check, findings, summary)


def keep_one(store: Store, user: User, group: list[int], keeper: int) -> list[int]:
    """Reject every member of a duplicate group but `keeper`, with reason 'duplicate of #id'."""
    from curation.review import decide

    if keeper not in group:
        raise InvalidValue(f"#{keeper} is not in the group {group}")
    rejected = []
    for example_id in group:
        if example_id == keeper:
            continue
        current = store.get(example_id)
        if current.status != "rejected":
            decide(store, user, example_id, "reject", base_version=current.version,
                   reason=f"duplicate of #{keeper}")
            rejected.append(example_id)
    return rejected


def _register_queues() -> None:
    """Review queues over the stored findings, worst first, with the finding as the reason."""
    from curation.queues import Queue, findings_queue, register as register_queue

    register_queue(findings_queue(
        "flagged", "Flagged as noisy",
        "Examples the checks flagged as likely mislabeled, outlying or with an answer that "
        "does not fit, most severe first. The reason is shown beside each.",
        ("label_issues", "outliers", "answer_mismatch"),
        "`curate noise`, or Run on the Quality page"))
    register_queue(Queue(
        "label_quality", "Labels to double-check",
        "Every example the Likely mislabeled check scored, lowest label quality first: the "
        "flagged ones, then those just below the flag line, where the mislabels the check "
        "missed sit. Keep going while you still find wrong labels. An example leaves the "
        "queue once it is edited or its finding dismissed.",
        QueueSource("findings", ("label_issues",), scored=True, undecided=True,
                    unchanged=True),
        ("label_issues",), "`curate noise`, or Run on the Quality page"))
    register_queue(findings_queue(
        "duplicates", "Duplicates",
        "Examples in a duplicate group that are not its suggested keeper (of a train/eval "
        "pair, the eval copy).",
        ("exact_duplicates", "near_duplicates", "semantic_duplicates", "leakage"),
        "`curate dedupe`, or Run on the Quality page",
        skip_reason="suggested keeper"))
    register_queue(findings_queue(
        "coverage", "Thin labels",
        "Examples of labels below their coverage target: check them first, they weigh most.",
        ("coverage",),
        "`curate coverage`, or save the targets (or Update the queue) on the Coverage page"))


_register_queues()
