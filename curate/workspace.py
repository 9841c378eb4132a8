"""The workspace facade: every step a person takes, as one object the CLI and the pages call.

A `Workspace` is one workspace file (with the folders beside it: import reports, runs,
backups) as seen by one user. Each method is one step of the loop (import a file, run the
checks, export a snapshot, launch a run, evaluate it, see what needs attention) and returns
what the step produced; the CLI and the pages gather input, call it and render the result,
so no step is written twice. Roles are checked in the core, on the user given here.

Design decisions:
- The facade orchestrates `curation` (the data core) and `training`; it adds no rules of its
  own beyond the order of steps, so a library user can still call the core directly.
- It is made on an open `Store` (the app keeps one per server process) or on a path
  (`Workspace.open`, the CLI): then the DuckDB file is opened only by the first step that
  needs it, and closed with the workspace. Steps on run folders alone (list runs, cancel,
  follow an evaluation) never open it, so they work while another process holds the file.
- Training and evaluation modules are imported inside the methods that need them, so
  `import curate` stays light for the app's start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from curation import CurateError, ExampleFilter, Store, export_jsonl, import_file, queues, review
from curation.auth import User, add_user, set_role, users
from curation.checks import CheckResult, Progress, dismiss, keep_one, load_table, run_check
from curation import comments as _comments
from curation import agreement as _agreement
from curation import failures as _failures
from curation import progress as _progress
from curation import guidelines as _guidelines
from curation import leases as _leases
from curation import preference as _preference
from curation import routing as _routing
from curation import sessions as _sessions
from curation import suggestions as _suggestions
from curation import undo as _undo
from curation.checks.coverage import (RANK_RULE, RankedGap, Targets, get_targets, rank_gaps,
                                      set_targets, store_gaps, thin_labels)
from curation.embeddings import PACKAGED_MODEL
from curation.fill import add_example
from curation.snapshot_diff import SnapshotDiff, diff_snapshots
from curation.uploads import IMPORT_REPORTS_DIR

if TYPE_CHECKING:
    from curation import Example, ExportResult, ImportReport, Snapshot
    from curation.comments import Comment
    from curation.guidelines import DecidedUnder, Guidelines, LabelDescription
    from curation.failures import Evidence, Failure
    from curation.leases import Lease
    from curation.maintenance import BackupResult
    from curation.queues import QueueItem
    from curation.review import BulkResult
    from curation.routing import Routing
    from curation.sessions import SavedView
    from curation.suggestions import Suggestion
    from training.config import EvalConfig, TrainConfig
    from training.curve import Curve
    from training.evaluate import EvalJob
    from training.launcher import Run
    from training.run_folder import EvalResult


@dataclass(frozen=True)
class SnapshotRuns:
    """A snapshot with the training runs that used it."""

    snapshot: Snapshot
    run_ids: list[str]


@dataclass(frozen=True)
class RunComparison:
    """Two runs side by side: what changed in their training data (by label) beside how
    the fine-tuned model's score moved on each label of the eval split."""

    before: str  # run ids
    after: str
    data: SnapshotDiff
    metric: str | None  # the primary metric of the evaluations (None: one is not evaluated)
    per_label: list[dict]  # label, the data change, score before/after and the difference

    def to_dict(self) -> dict:
        return {"before": self.before, "after": self.after, "data": self.data.to_dict(),
                "metric": self.metric, "per_label": self.per_label}


@dataclass(frozen=True)
class RankedGaps:
    """The gap list ranked by what hurts, and the evaluation its error rates come from."""

    gaps: list[RankedGap]
    run_id: str | None  # the run whose evaluation gave the error rates (None: none yet)
    metric: str | None  # the primary metric the error rates are 1 minus
    evaluated_at: str | None
    rule: str = RANK_RULE


@dataclass(frozen=True)
class PredictResult:
    """What pre-labelling made: the run, how confidence was measured, the suggestions and how
    many fall in each band of the thresholds."""

    run_id: str
    method: str
    suggestions: list
    bands: dict[str, int]
    thresholds: tuple[float, float]

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"run_id": self.run_id, "method": self.method,
                "thresholds": {"high": self.thresholds[0], "low": self.thresholds[1]},
                "bands": self.bands, "suggestions": [asdict(s) for s in self.suggestions]}


@dataclass(frozen=True)
class Attention:
    """One thing that needs someone next: what, and on which page it is done."""

    message: str
    page: str  # the page's file name (`curate.ui.common.page_path(page)`)


class Workspace:
    """One workspace seen by one user: the steps of the curation loop."""

    def __init__(self, store: Store, user: User):
        self._store: Store | None = store
        self._path = Path(store.path)
        self.user = user
        self._owns_store = False

    @classmethod
    def open(cls, path: str | os.PathLike, user: User) -> Workspace:
        """The workspace whose database file is `path` (made on first use if missing); the
        file is opened when a step first needs it. Close it with `close()` or `with`."""
        workspace = cls.__new__(cls)
        workspace._store, workspace._path, workspace.user = None, Path(path), user
        workspace._owns_store = True
        return workspace

    @property
    def store(self) -> Store:
        """The workspace's store, opened now if this workspace owns it and it is not open."""
        if self._store is None:
            self._store = Store(self._path)
        return self._store

    def close(self) -> None:
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def reports_dir(self) -> Path:
        return self._path.parent / IMPORT_REPORTS_DIR

    @property
    def runs_dir(self) -> Path:
        """The training runs' folder: `runs/` beside the database (absolute)."""
        return self._path.resolve().parent / "runs"

    # --- data in and out ------------------------------------------------------------------

    def import_file(self, path: str | os.PathLike, **options) -> tuple[ImportReport, Path]:
        """Import a file (options as `curation.import_file`); the full report is saved in
        the workspace's import-reports folder. Returns the report and where it was saved."""
        report = import_file(self.store, path, user=self.user, **options)
        return report, report.save(self.reports_dir)

    def export(self, out: str | os.PathLike, *, fmt: str = "openai",
               where: ExampleFilter = ExampleFilter(status=("accepted",)),
               name: str | None = None, plain: bool = False) -> ExportResult:
        """Export a snapshot of the examples `where` selects to `out` (a new snapshot only
        when the content changed); `plain`: without Curate's fields."""
        return export_jsonl(self.store, out, fmt=fmt, where=where, user=self.user,
                            snapshot_name=name, plain=plain)

    def load_demo(self) -> ImportReport:
        """Load the demo support-ticket dataset."""
        from curation.demo import load_demo

        return load_demo(self.store, user=self.user)

    def backup(self, dest: str | os.PathLike | None = None) -> BackupResult:
        """Copy the workspace consistently into `dest` (default: backups/ beside it)."""
        from curation.maintenance import backup

        return backup(self.store, dest, user=self.user)

    def stats(self) -> dict:
        return self.store.stats()

    def snapshots(self) -> list[SnapshotRuns]:
        """The snapshots, newest first, each with the training runs that used it."""
        from training.launcher import record_runs

        items = self.store.snapshots()
        record_runs(self.store, self.runs_dir)
        return [SnapshotRuns(s, [r["id"] for r in self.store.recorded_runs(snapshot_id=s.id)])
                for s in items]

    # --- review ---------------------------------------------------------------------------

    def upcoming(self, queue: str, where: ExampleFilter = ExampleFilter(), *,
                 after: tuple[float, int] | None = None,
                 before: tuple[float, int] | None = None, limit: int = 2) -> list[QueueItem]:
        """The next examples of a review queue (after or before a position)."""
        return queues.upcoming(self.store, queue, where, after=after, before=before,
                               limit=limit)

    def decide(self, example_id: int, decision: str, *, base_version: int,
               reason: str | None = None, **changes) -> Example:
        """Accept, reject or send back an example (with any pending edits); on an example of
        the QA sample this also records whether the model's answer was right."""
        after = review.decide(self.store, self.user, example_id, decision,
                              base_version=base_version, reason=reason, **changes)
        _routing.note_review(self.store, self.user, example_id, decision, after)
        _leases.release(self.store, self.user, example_id)
        return after

    # --- overlap for agreement (curation.agreement) ---------------------------------------

    def overlap(self) -> int:
        """How many independent decisions each train example needs (default 1)."""
        return _agreement.overlap(self.store)

    def set_overlap(self, n: int) -> dict:
        """Set N (admins); open rounds that now have N decisions are settled or disputed."""
        return _agreement.set_overlap(self.store, self.user, n)

    def serving_filter(self, queue: str, where: ExampleFilter = ExampleFilter()
                       ) -> ExampleFilter:
        """The filter as this user reads the queue: with overlap, only the examples still
        open to their independent decision."""
        return _agreement.serving_filter(self.store, self.user, queue, where)

    def votes(self, example_id: int) -> list[_agreement.Vote]:
        """An example's unsettled independent decisions, side by side (adjudicators)."""
        return _agreement.votes(self.store, self.user, example_id)

    def vote_progress(self, example_id: int) -> _agreement.VoteProgress | None:
        """How many decisions an example's round has, without saying which."""
        return _agreement.progress(self.store, self.user, example_id)

    def agreement(self) -> _agreement.Agreement:
        """Cohen's kappa per reviewer pair, Fleiss' kappa overall and per label."""
        return _agreement.figures(self.store)

    # work distribution: leases on a queue's examples, submissions (curation.leases)

    def claim_next(self, queue: str, where: ExampleFilter = ExampleFilter(), *,
                   after: tuple[float, int] | None = None) -> QueueItem | None:
        """The next example of a queue nobody else holds, leased to this user (or None)."""
        return _leases.claim_next(self.store, self.user, queue, where, after=after)

    def hold(self, example_id: int, queue: str | None = None) -> Lease:
        """Lease (or renew) an example for this user if it is free; the live lease on it."""
        return _leases.hold(self.store, self.user, example_id, queue)

    def release(self, example_id: int | None = None) -> int:
        """Release this user's lease on an example (all of them if None): a skip."""
        return _leases.release(self.store, self.user, example_id)

    def leases(self) -> list[Lease]:
        """Who holds which example, until when (admins)."""
        return _leases.leases(self.store, self.user)

    def lease_minutes(self) -> float:
        """How long a lease lasts without renewal."""
        return _leases.lease_minutes(self.store)

    def set_lease_minutes(self, minutes: float) -> float:
        """How long a lease lasts without renewal (admins)."""
        return _leases.set_lease_minutes(self.store, self.user, minutes)

    def submit(self, example_id: int, *, base_version: int, reason: str | None = None,
               **changes) -> Example:
        """Submit an example for review with the pending edits (annotators): it moves to the
        Submitted queue, where a reviewer decides on it."""
        return _leases.submit(self.store, self.user, example_id, base_version=base_version,
                              reason=reason, **changes)

    def edit(self, example_id: int, *, base_version: int, reason: str | None = None,
             **changes) -> Example:
        """Save changes to an example's conversation, label, tags or split."""
        return review.edit(self.store, self.user, example_id, base_version=base_version,
                           reason=reason, **changes)

    def revert(self, example_id: int, to_version: int, *, base_version: int) -> Example:
        """Make an earlier version of an example current again."""
        return review.revert(self.store, self.user, example_id, to_version,
                             base_version=base_version)

    # --- preference pairs (`curation.preference`) --------------------------------------------

    def swap(self, example_id: int, *, base_version: int, **changes) -> Example:
        """Exchange a pair's chosen and rejected answer (with pending edits): one edit."""
        return _preference.swap(self.store, self.user, example_id, base_version=base_version,
                                **changes)

    def edit_pairs_enabled(self) -> bool:
        """Whether an SME's edit of a model's answer records a preference pair."""
        return _preference.edit_pairs_enabled(self.store)

    def set_edit_pairs(self, on: bool) -> bool:
        """Turn pairs from SME edits on or off (reviewers and admins)."""
        return _preference.set_edit_pairs(self.store, self.user, on)

    def edit_pairs_of(self, example_id: int) -> list[int]:
        """The preference pairs recorded from edits of one example."""
        return _preference.edit_pairs_of(self.store, example_id)

    def preference_pairs(self, snapshot_id: str) -> list[_preference.PreferencePair]:
        """The preference pairs of a snapshot, in snapshot order."""
        return _preference.preference_pairs(self.store, snapshot_id)

    def bulk(self, ids: list[int], action: str, value: str | None = None,
             reason: str | None = None) -> BulkResult:
        """One action on many examples, each on its current version."""
        return review.bulk(self.store, self.user, ids, action, value, reason)

    def bulk_matching(self, where: ExampleFilter, action: str, *, expected: int,
                      value: str | None = None, reason: str | None = None) -> BulkResult:
        """One action on every example the filter selects (the count the person confirmed
        must still hold), as one batch."""
        return review.bulk_matching(self.store, self.user, where, action, expected=expected,
                                    value=value, reason=reason)

    def undo(self, example_id: int, version: int) -> Example:
        """Take back the change that made `version` (the exact version before comes back); a
        QA verdict that this change recorded is taken back with it."""
        event = self.store.event_at(example_id, version)
        restored = _undo.undo_change(self.store, self.user, example_id, version)
        if event and event["action"] in ("accept", "reject", "needs_work"):
            _routing.forget_review(self.store, event["actor"], example_id)
        return restored

    def last_change(self) -> tuple[int, int, str] | None:
        """This person's latest decision or edit today that still stands (not a batch's)."""
        return _undo.last_change(self.store, self.user)

    def undo_batch(self, batch_id: str) -> _undo.UndoResult:
        """Take back a whole bulk batch, example by example."""
        return _undo.undo_batch(self.store, self.user, batch_id)

    def last_batch(self) -> dict | None:
        """This person's latest bulk batch, if not undone yet."""
        return _undo.last_batch(self.store, self.user)

    def queue_progress(self, queue: str, where: ExampleFilter = ExampleFilter()
                       ) -> _progress.QueueProgress:
        """This person's decisions today in a queue, of how many (`curation.progress`)."""
        return _progress.queue_progress(self.store, queue, self.user.name, where)

    def decisions_per_day(self, days: int = 14) -> list:
        """(UTC day, person, decisions) over the last `days` days, people only."""
        return _progress.decisions_per_day(self.store, days)

    def keep_one(self, group: list[int], keeper: int) -> list[int]:
        """Reject every member of a duplicate group but `keeper`; the rejected ids."""
        return keep_one(self.store, self.user, group, keeper)

    def dismiss(self, check: str, example_ids: list[int], decision: str) -> None:
        """Remember an SME's verdict on a finding ("not duplicates", "label is right")."""
        dismiss(self.store, self.user, check, example_ids, decision)

    def add_example(self, messages: list[dict[str, str]], **options) -> Example:
        """Save a new pending example (filling a gap) after the duplicate checks."""
        return add_example(self.store, self.user, messages, **options)

    def draft_examples(self, label: str, *, count: int = 3) -> list[list[dict[str, str]]]:
        """Conversations for `label` drafted by the base model from its examples, for an
        SME to edit before saving."""
        from training.drafts import draft_examples

        return draft_examples(self.store, label, count=count)

    # --- people ---------------------------------------------------------------------------

    def users(self) -> list[User]:
        return users(self.store)

    def add_user(self, name: str, role: str, *, password: str | None,
                 email: str | None = None) -> User:
        return add_user(self.store, self.user, name, role, password=password, email=email)

    def set_role(self, name: str, role: str) -> User:
        return set_role(self.store, self.user, name, role)

    # --- saved views (curation.sessions) ---------------------------------------------------

    def saved_views(self, page: str | None = None) -> list[SavedView]:
        """This user's own saved views (of one page, or all)."""
        return _sessions.saved_views(self.store, self.user, page)

    def save_view(self, page: str, name: str, params: dict) -> SavedView:
        """Save (or replace) this user's view `name` of `page`: its URL query parameters."""
        return _sessions.save_view(self.store, self.user, page, name, params)

    def delete_view(self, page: str, name: str) -> None:
        _sessions.delete_view(self.store, self.user, page, name)

    def open_sessions(self) -> list[dict]:
        """Who is signed in to the app now: user, started, expires (UTC), newest first
        (admins)."""
        return _sessions.open_sessions(self.store, self.user)

    def end_sessions(self, name: str) -> int:
        """Sign every app session of account `name` out (admins); how many were open."""
        return _sessions.end_user_sessions(self.store, self.user, name)

    # --- guidelines, label descriptions, comments -----------------------------------------

    def guidelines(self, version: int | None = None) -> Guidelines | None:
        """One version of the guidelines (default the current one; None: none yet)."""
        return _guidelines.get(self.store, version)

    def guidelines_history(self) -> list[Guidelines]:
        """Every version of the guidelines, newest first."""
        return _guidelines.history(self.store)

    def save_guidelines(self, text: str, *, note: str | None = None,
                        base_version: int | None = None) -> Guidelines:
        """Save the guidelines as a new version (admins)."""
        return _guidelines.save(self.store, self.user, text, note=note,
                                base_version=base_version)

    def guidelines_diff(self, old: int, new: int) -> list[str]:
        """What changed from guidelines version `old` to `new`, as unified diff lines."""
        return _guidelines.diff(self.store, old, new)

    def decided_under(self, example_id: int) -> DecidedUnder | None:
        """An example's latest decision and the guidelines version it was made under."""
        return _guidelines.decided_under(self.store, example_id)

    def label_descriptions(self) -> dict[str, LabelDescription]:
        return _guidelines.label_descriptions(self.store)

    def set_label_description(self, label: str, description: str,
                              example: str | None = None) -> LabelDescription | None:
        """Say what a label means, with one example (admins); empty removes it."""
        return _guidelines.set_label_description(self.store, self.user, label, description,
                                                 example)

    def comments(self, example_id: int) -> list[Comment]:
        """The comment thread of one example, oldest first."""
        return _comments.comments(self.store, example_id)

    def add_comment(self, example_id: int, text: str) -> Comment:
        """Add a comment to an example's thread (any role)."""
        return _comments.add_comment(self.store, self.user, example_id, text)

    # --- checks ---------------------------------------------------------------------------

    def run_checks(self, names: list[str], *, progress: Progress | None = None,
                   force: bool = False) -> list[CheckResult]:
        """Run the named checks in order (each reuses its stored result when its input is
        unchanged, unless `force`)."""
        return [run_check(self.store, name, user=self.user, progress=progress, force=force)
                for name in names]

    def embed(self, *, model: str | None = None,
              progress: Progress | None = None) -> dict:
        """Embed every prompt (only new or changed ones are computed), after saving `model`
        as the workspace's embedding model if given. Returns the count, dimension, model."""
        if model:
            self.store.set_setting("embedding_model", model)
        table = load_table(self.store, progress=progress)
        vectors = table.embed()
        return {"examples": len(table), "dimension": int(vectors.shape[1]) if len(table) else 0,
                "model": self.store.setting("embedding_model") or PACKAGED_MODEL}

    def coverage(self, *, min_per_label: int | None = None,
                 force: bool = False) -> tuple[CheckResult, RankedGaps]:
        """Optionally set the default target, run the coverage check (it fills the Thin
        labels queue) and return it with the gap list ranked by what hurts (`gaps`)."""
        if min_per_label is not None:
            set_targets(self.store, self.user,
                        replace(get_targets(self.store), default_min=min_per_label))
        result = run_check(self.store, "coverage", user=self.user, force=force)
        return result, self.gaps()

    def gaps(self) -> RankedGaps:
        """The gap list of the store now, ranked by shortfall x the fine-tuned model's error
        rate per label in the latest evaluation (`curation.checks.coverage.RANK_RULE`)."""
        evaluation = self.latest_evaluation()
        rates: dict[str, float] = {}
        scored: dict[str, int] = {}
        if evaluation is not None:
            metric = evaluation.primary_metric
            per_label = evaluation.systems.get("fine_tuned", {}).get("per_label") or {}
            for label, score in per_label.items():
                rates[label] = round(min(1.0, max(0.0, 1.0 - score[metric])), 4)
                scored[label] = score["n"]
        return RankedGaps(rank_gaps(store_gaps(self.store), rates, scored),
                          evaluation and evaluation.run_id,
                          evaluation and evaluation.primary_metric,
                          evaluation and evaluation.created_at)

    def set_coverage_targets(self, targets: Targets) -> CheckResult:
        """Save the per-label targets and re-run the coverage check against them (which
        refills the Thin labels queue)."""
        set_targets(self.store, self.user, targets)
        return run_check(self.store, "coverage", user=self.user)

    def needs_attention(self) -> list[Attention]:
        """What the team should do next, most pressing first (empty: nothing)."""
        stats = self.store.stats()
        by_status = stats["by_status"]
        counted = [  # (how many, what to say of them, the page where it is done)
            (self.store.count(ExampleFilter(needs_answer=True)),
             "{n:,} prompts need an answer; they are not exported or trained on until "
             "answered (Review page, queue 'Needs answer').", "review"),
            (by_status.get("pending", 0), "{n:,} examples wait for a first decision (Review "
             "page, queue 'Pending first').", "review"),
            (queues.queue_size(self.store, _routing.SUGGESTIONS),
             "{n:,} model suggestions wait for a person: one key (m) accepts each (Review "
             "page, queue 'Model suggestions').", "review"),
            (queues.queue_size(self.store, _routing.QA_SAMPLE),
             "{n:,} auto-accepted examples of the QA sample wait for a check: they measure "
             "the auto band's precision (Review page, queue 'QA sample').", "review"),
            (by_status.get("needs_work", 0), "{n:,} examples were sent back as needs work.",
             "review"),
            (self.store.count(ExampleFilter(older_guidelines=True)), "{n:,} examples were "
             "decided under older guidelines: re-check what the change affects (Guidelines "
             "page, Re-check them in Review).", "guidelines"),
            (self.store.disputed_count(), "{n:,} examples wait for an admin to settle their "
             "disagreeing decisions (Review page, queue 'Adjudication').", "review"),
            (stats["by_label"].get(None, 0), "{n:,} examples have no label.", "browse")]
        found = [Attention(text.format(n=n), page) for n, text, page in counted if n]
        if stats["total"] and "eval" not in stats["by_split"]:
            found.append(Attention("No example is in the eval split: hold some out to "
                                   "evaluate training.", "browse"))
        thin = thin_labels(self.store)
        if thin.gaps:
            named = ", ".join(f"{g.label} ({g.train + g.eval} of {g.want})"
                              for g in thin.gaps[:5])
            more = f" and {len(thin.gaps) - 5} more" if len(thin.gaps) > 5 else ""
            line = (f"{len(thin.gaps)} label(s) are under their coverage target: "
                    f"{named}{more} (Coverage page).")
            if thin.current:
                line += f" Their {thin.queued:,} examples are in the Review queue 'Thin labels'."
            else:
                line += (" The Review queue 'Thin labels' is out of date"
                         + ("" if thin.run_at else " (the coverage check never ran)")
                         + ": run `curate coverage`, or Update the queue on the Coverage page.")
            found.append(Attention(line, "coverage"))
        return found

    # --- training runs --------------------------------------------------------------------

    def model_cache(self) -> Path:
        """Where converted base models are kept for this workspace."""
        from training.models import model_cache

        return model_cache(self)

    def runs(self) -> list[Run]:
        """The runs, newest first, read from their folders (the store is not opened)."""
        from training.launcher import list_runs

        return list_runs(self.runs_dir)

    def record_runs(self) -> list[Run]:
        """The runs, newest first, each also recorded in the store (its state, loss and
        evaluation), so snapshots list the runs that used them; for a user who may run the
        checks, the latest evaluation's failures feed the Eval failures queue too."""
        from training.launcher import record_runs

        runs = record_runs(self.store, self.runs_dir)
        if self.user.can("check"):
            self.record_failures(runs)
        return runs

    # --- eval failures back to curation -----------------------------------------------------

    def latest_evaluation(self, runs: list[Run] | None = None) -> EvalResult | None:
        """The evaluation completed last, over all runs (None: no run was evaluated): what
        the Eval failures queue and the gap ranking are fed from."""
        from training.run_folder import read_eval

        results = [r for r in (read_eval(run.dir) for run in runs or self.runs())
                   if r and r.systems.get("fine_tuned")]
        return max(results, key=lambda r: r.created_at or "", default=None)

    def record_failures(self, runs: list[Run] | None = None) -> int | None:
        """Feed the Eval failures queue from the latest evaluated run and rank the pending
        examples by expected impact; the number of failures, or None when that evaluation
        was recorded already (or there is none). The facade bridges `training`, which holds
        the evaluation, and `curation`, which keeps the findings."""
        result = self.latest_evaluation(runs)
        if result is None:
            return None
        stored = _failures.record_failures(self.store, self.user, result.run_id,
                                           result.created_at or "", result.primary_metric,
                                           result.examples)
        if stored is not None:
            _failures.rank_by_impact(self.store, self.user)
        return stored

    def failures(self, run_id: str | None = None) -> list[Failure]:
        """The eval examples the fine-tuned model got wrong, worst first: of `run_id`'s
        evaluation (read from its folder), or those feeding the queue (recorded first, and the
        pending examples ranked again by expected impact)."""
        from curation.errors import InvalidValue

        if run_id is None:
            if self.record_failures() is None:  # new pending examples may have come in
                _failures.rank_by_impact(self.store, self.user)
            return _failures.failures(self.store)
        result = self.evaluation(run_id)
        if result is None:
            raise InvalidValue(f"run {run_id} has not been evaluated: run `curate eval "
                               f"{run_id}` first")
        return _failures.find_failures(result.run_id, result.primary_metric, result.examples)

    def failure_evidence(self, example_id: int | Failure, k: int = 3) -> Evidence | None:
        """Why an eval example failed: the model's answer, the reference and the `k`
        nearest training examples with their labels and open findings (None: not a failure
        of the recorded run). Pass a `Failure` for one of another run."""
        if isinstance(example_id, _failures.Failure):
            return _failures.evidence_for(self.store, example_id, k)
        return _failures.evidence(self.store, example_id, k)

    def rank_by_impact(self) -> int:
        """Rank the pending train examples again for the Expected impact queue."""
        return _failures.rank_by_impact(self.store, self.user)

    # --- the model helps curate: suggestions with confidence ---------------------------------

    def predict_run(self) -> str:
        """The run that pre-labels by default: the best evaluated run whose verdict is deploy
        (highest fine-tuned primary score, then newest), else the latest evaluated run."""
        from curation.errors import InvalidValue
        from training.run_folder import read_eval

        evaluated = [(run, r) for run in self.runs() if (r := read_eval(run.dir))
                     and r.systems.get("fine_tuned")]
        deploy = [(run, r) for run, r in evaluated if r.verdict.get("decision") == "deploy"]
        if deploy:
            return max(deploy, key=lambda p: (p[1].systems["fine_tuned"]["primary"],
                                              p[1].created_at or ""))[0].id
        if evaluated:
            return max(evaluated, key=lambda p: p[1].created_at or "")[0].id
        raise InvalidValue("no run has been evaluated yet: evaluate one (`curate eval RUN`) "
                           "or name the run to pre-label with")

    def predict(self, run_id: str | None = None, *, status: tuple[str, ...] = ("pending",),
                progress=None) -> PredictResult:
        """The run's model (default `predict_run()`) answers every train example of these
        statuses (not deleted), each answer stored with its confidence as a suggestion for
        that example version; the examples themselves are not changed."""
        from curation.auth import require
        from training.predict import predict

        require(self.user, "check")
        run = self.run(run_id or self.predict_run())
        examples = self.store.find(ExampleFilter(split=("train",), status=status))
        rows = [{"id": e.id, "version": e.version, "messages": e.messages} for e in examples
                if e.messages and any(m["role"] == "user" for m in e.messages)]
        method, answers = predict(run.dir, rows, progress=progress)
        made = [_suggestions.Suggestion(a["id"], a["version"], run.id, a["answer"],
                                        a["confidence"], method) for a in answers]
        _suggestions.record_suggestions(self.store, self.user, made)
        high, low = self.thresholds()
        counts = {b: sum(_suggestions.band(s.confidence, high, low) == b for s in made)
                  for b in _suggestions.BANDS}
        return PredictResult(run.id, method, made, counts, (high, low))

    def suggestion(self, example_id: int) -> Suggestion | None:
        """The model's suggestion for the example's current version, if any."""
        return _suggestions.current(self.store, example_id)

    def thresholds(self) -> tuple[float, float]:
        """The workspace's (high, low) confidence thresholds (default 0.9, 0.7)."""
        return _suggestions.thresholds(self.store)

    def set_thresholds(self, high: float, low: float) -> tuple[float, float]:
        return _suggestions.set_thresholds(self.store, self.user, high, low)

    def calibration(self, run_id: str | None = None, *, cached_only: bool = False
                    ) -> dict | None:
        """Confidence checked against the eval split: the run's model answers the eval examples as
        pre-labelling would (for free text: its stored eval answers, scored), against whether each
        answer is right; expected calibration error, the accuracy reached in each band (for the
        thresholds now), the reliability bins. The scores are kept in the run folder for its
        evaluation, so they are computed once; with `cached_only`, None when they have not been."""
        from curation.errors import InvalidValue
        from training.metrics import exact_match
        from training.predict import eval_confidences
        from training.run_folder import read_calibration, write_calibration

        run = self.run(run_id or self.predict_run())
        result = self.evaluation(run.id)
        if result is None:
            raise InvalidValue(f"run {run.id} has not been evaluated: run `curate eval "
                               f"{run.id}` first")
        scored = read_calibration(run.dir, result.created_at)
        if scored is None:
            if cached_only:
                return None
            known = {e.id: e for e in self.store.find(ExampleFilter(split=("eval",)))}
            items = [e for e in result.examples if e.get("id") in known]
            rows = [{"messages": known[e["id"]].messages} for e in items]
            method, answers, confidences = eval_confidences(
                run.dir, rows, [e["fine_tuned"] for e in items])
            if method == _suggestions.LABEL_METHOD:  # the predicted label against the reference
                correct = [exact_match(a, e["reference"]) == 1.0 for a, e in zip(answers, items)]
            else:  # the evaluation's own answer, as it was scored
                correct = [_failures.passed(float(e["scores"]["fine_tuned"]),
                                            result.primary_metric) for e in items]
            scored = {"evaluated_at": result.created_at, "method": method,
                      "ids": [e["id"] for e in items], "confidences": confidences,
                      "correct": correct}
            write_calibration(run.dir, scored)
        high, low = self.thresholds()
        figures = _suggestions.calibration(scored["confidences"], scored["correct"],
                                           high=high, low=low)
        return {"run_id": run.id, "metric": result.primary_metric, "method": scored["method"],
                **figures}

    # --- routing on confidence -------------------------------------------------------------

    def route(self, run_id: str | None = None, *, qa_share: float = _routing.DEFAULT_QA_SHARE,
              seed: int = 0, progress=None) -> Routing:
        """Route the pending train examples the run (default `predict_run()`) pre-labelled:
        auto-accept the high band as `model:<run>` (a seeded QA sample of it to the QA sample
        queue), the middle band to Model suggestions, the low band left to people."""
        run_id = run_id or self.predict_run()
        return _routing.route(self.store, self.user, run_id, qa_share=qa_share, seed=seed,
                              progress=progress)

    def accept_suggestion(self, example_id: int, *, base_version: int,
                          reason: str | None = None, **changes) -> Example:
        """Accept the example with the model's suggestion as its answer (one change)."""
        after = _routing.accept_suggestion(self.store, self.user, example_id,
                                           base_version=base_version, reason=reason, **changes)
        _routing.note_review(self.store, self.user, example_id, "accept", after)
        _leases.release(self.store, self.user, example_id)
        return after

    def revert_auto_accepts(self, run_id: str, ids: list[int] | None = None) -> list[int]:
        """Undo the run's auto-accepts nobody has changed since; the ids reverted."""
        return _routing.revert_auto_accepts(self.store, self.user, run_id, ids)

    def routing_status(self) -> dict | None:
        """The last routing (run, thresholds, counts and shares per band, who and when), the
        auto band's precision measured on the QA sample reviewed so far, and its accuracy on
        the eval split (from the run's calibration, None until it is checked); None before
        any routing."""
        last = _routing.last_routing(self.store)
        if last is None:
            return None
        try:
            figures = self.calibration(last["run_id"], cached_only=True)
        except CurateError:  # the run folder or its evaluation is gone
            figures = None
        high = figures and figures["bands"]["high"]
        return {**last, "qa": _routing.qa_precision(self.store),
                "eval": high and {"examples": high["examples"], "accuracy": high["accuracy"],
                                  "range": high["range"]}}

    def run(self, run_id: str) -> Run:
        """One run, by id (or the path of its folder); `RunNotFound` if there is none."""
        from training.launcher import find_run, read_run

        return read_run(find_run(self.runs_dir, run_id))

    def leakage(self, *, progress: Progress | None = None) -> list[dict]:
        """The eval examples that duplicate an accepted train example, each with its method:
        exact and near copies are what a launch refuses unless told to train over them,
        same-meaning ones (`curation.leakage.paraphrases`) only warn."""
        from curation.leakage import find_leakage

        return find_leakage(self.store, self.user, progress=progress)

    def launch(self, config: TrainConfig, *, allow_leakage: bool = False) -> Run:
        """Snapshot the accepted train examples and start a training run on them."""
        from training.launcher import launch

        return launch(self.store, self.user, config, allow_leakage=allow_leakage)

    def learning_curve(self, config: TrainConfig, *, allow_leakage: bool = False,
                       on_run=None, on_event=None) -> Curve:
        """Train and evaluate on nested 25%, 50% and 100% subsets of one snapshot of the
        accepted train examples, one run after another in this process (`training.curve`);
        the finished curve with its points and advice."""
        from training.curve import run_curve

        return run_curve(self.store, self.user, config, runs_dir=self.runs_dir,
                         allow_leakage=allow_leakage, on_run=on_run, on_event=on_event)

    def start_learning_curve(self, config: TrainConfig, *,
                             allow_leakage: bool = False) -> Curve:
        """The same as `learning_curve`, driven by a thread of this process (the app's
        server: closing the browser does not stop it); returns once it has begun."""
        from training.curve import start_curve

        return start_curve(self.store, self.user, config, runs_dir=self.runs_dir,
                           allow_leakage=allow_leakage)

    def cancel_curve(self, curve_id: str) -> None:
        """Stop a learning curve driven by this process, with its run or evaluation."""
        from training.curve import cancel_curve

        cancel_curve(self.user, self.runs_dir, curve_id)

    def curves(self) -> list[Curve]:
        """The learning curves, newest first, read from their folders."""
        from training.curve import list_curves

        return list_curves(self.runs_dir)

    def curve(self, curve_id: str | None = None) -> Curve:
        """One learning curve by id, or the newest; `CurveNotFound` if there is none."""
        from training.curve import read_curve

        return read_curve(self.runs_dir, curve_id)

    def resume(self, run_id: str) -> Run:
        """Continue an interrupted, failed or cancelled run from its last checkpoint."""
        from training.launcher import resume

        return resume(self.store, self.user, run_id)

    def cancel(self, run_id: str) -> Run:
        """Stop a run's whole process group; it can be resumed later."""
        from training.launcher import cancel, find_run

        return cancel(self.user, find_run(self.runs_dir, run_id))

    def compare_runs(self, before: str, after: str) -> RunComparison:
        """The data diff of the two runs' snapshots, per label, beside the per-label score
        of each run's fine-tuned model (points, on its own evaluation)."""
        first, second = self.run(before), self.run(after)
        data = diff_snapshots(self.store, first.manifest.snapshot_id, second.manifest.snapshot_id)
        results = [self.evaluation(first.id), self.evaluation(second.id)]
        metric = results[0].primary_metric if all(results) else None
        scores = [((r.systems.get("fine_tuned") or {}).get("per_label") or {}) if r else {}
                  for r in results]
        changes = {c.label: c for c in data.by_label}
        labels = sorted(set(changes) | set(scores[0]) | set(scores[1]),
                        key=lambda lab: (lab is None, str(lab)))
        rows = []
        for label in labels:
            change = changes.get(label)
            points = [round(s[label][metric] * 100, 1) if metric and label in s else None
                      for s in scores]
            rows.append({
                "label": label, "train_before": change.before if change else 0,
                "train_after": change.after if change else 0,
                "added": change.added if change else 0, "removed": change.removed if change else 0,
                "relabelled_in": change.relabelled_in if change else 0,
                "relabelled_out": change.relabelled_out if change else 0,
                "edited": change.edited if change else 0,
                "score_before": points[0], "score_after": points[1],
                "score_change": None if None in points else round(points[1] - points[0], 1)})
        return RunComparison(first.id, second.id, data, metric, rows)

    # --- evaluation -----------------------------------------------------------------------

    def start_evaluation(self, run_id: str, config: EvalConfig | None = None, *,
                         limit: int | None = None) -> EvalJob:
        """Start evaluating a completed run in a process of its own (one at a time per
        workspace) on the eval split as it is now (its first `limit` examples, or all)."""
        from training.config import EvalConfig
        from training.evaluate import start_eval
        from training.launcher import find_run

        return start_eval(self.store, self.user, find_run(self.runs_dir, run_id),
                          config or EvalConfig(), limit=limit)

    def cancel_evaluation(self, run_id: str) -> EvalJob:
        """Stop a run's evaluation; the last stored result stays."""
        from training.evaluate import cancel_eval
        from training.launcher import find_run

        return cancel_eval(self.user, find_run(self.runs_dir, run_id))

    def evaluation_job(self, run_id: str) -> EvalJob | None:
        """The run's latest evaluation process (running or ended), if it ever had one."""
        from training.evaluate import read_eval_job
        from training.launcher import find_run

        return read_eval_job(find_run(self.runs_dir, run_id))

    def evaluation(self, run_id: str, *, margin: float | None = None) -> EvalResult | None:
        """The run's stored evaluation (None: never completed), its verdict decided again
        for `margin` points when that differs from the margin it was computed with."""
        from training.eval import with_margin
        from training.launcher import find_run
        from training.run_folder import read_eval

        result = read_eval(find_run(self.runs_dir, run_id))
        if result is None or margin is None or margin == result.verdict.get("margin_points"):
            return result
        return with_margin(result, margin)
