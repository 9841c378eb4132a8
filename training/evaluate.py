"""Evaluation jobs: `training.eval.evaluate` in a background process, as training runs are.

`start_eval(store, user, run_dir, ...)` writes what the evaluation needs into the run folder
and starts `python -m training.evaluate RUN_DIR`; `read_eval_job`, `wait_eval` and
`cancel_eval` follow and stop it; the result lands in RUN_DIR/eval.json, where
`training.run_folder.read_eval` finds it.

Design decisions:
- A process of its own, started like the trainer (`training.processes.spawn`: its own session and
  process group, by absolute path, in the run folder), so an evaluation goes on when the page
  that started it is left, the browser closed, the server or the CLI stopped; cancelling
  signals the whole group.
- The evaluator never opens the store (as the trainer does not): the launcher writes the eval
  examples and the settings into `eval_request.json`, the train examples for the shots are the
  run's own `train.jsonl`. The evaluator reports in `eval_status.json` (written atomically):
  state queued/running/completed/failed/cancelled, phase (loading, zero_shot, few_shot,
  fine_tuned), answers done/total, an ETA (a linear estimate from the answers so far), the
  reason of a failure, and on completion the verdict. Its output goes to `eval.log`. The
  app and the CLI copy the result into the store afterwards (`training.launcher.record_runs`).
  The settings are an `EvalConfig`, written as the request's `settings`.
- One evaluation at a time per workspace (`EvaluationAlreadyActive`): two would share the
  CPU and each take twice as long. The check and the start hold the runs folder's launch
  lock. Training runs are not counted: they are one at a time on their own.
- Liveness as for runs: an evaluation is active while its state is queued/running and its
  process is alive (a zombie or a reused pid counts as dead). A queued/running state whose
  process is gone (SIGKILL, power loss) reads as `interrupted`; it can be started again.
- For a DPO run the request also carries the eval split's preference pairs, and the
  evaluator adds their pairwise accuracy (`training.preference_eval`: base, SFT start,
  tuned) to eval.json as `preference`, after the usual three systems.
- A rerun keeps the earlier eval.json until the new one is written, so a failed or
  cancelled rerun loses nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.auth import User, require
from curation.errors import CurateError, EvaluationAlreadyActive, EvaluationNotActive, InvalidValue
from curation.store import Store
from training.config import EvalConfig
from training.eval import eval_rows_from_store
from training.launcher import launch_lock, list_runs, read_run
from training.processes import (EXIT_CANCELLED, Cancelled, process_alive, raise_on_sigterm,
                                spawn, stop_job)
from training.run_folder import (EVAL_LOG, EVAL_PID, EVAL_REQUEST, EVAL_STATUS, SYSTEMS,
                                 EvalResult, EvalStatus, now_iso, read_json, update_json,
                                 write_json)

EVAL_ACTIVE_STATES = ("queued", "running")
QUEUED_GRACE_SECONDS = 30.0  # a queued evaluation without a pid yet: the launcher is starting it


@dataclass(frozen=True)
class EvalJob:
    """What a run folder says now about its latest evaluation."""

    run_id: str
    dir: Path
    state: str
    active: bool
    pid: int | None
    status: EvalStatus

    @property
    def done(self) -> int:
        return self.status.done

    @property
    def total(self) -> int:
        return self.status.total

    @property
    def phase(self) -> str | None:
        return self.status.phase

    @property
    def eta_seconds(self) -> float | None:
        return self.status.eta_seconds if self.active else None

    def summary(self) -> str:
        """One line: run, state, phase, answers, ETA; the reason of a failure."""
        parts = [f"evaluation of run {self.run_id}", self.state]
        if self.active and self.phase:
            parts.append(f"({self.phase})")
        parts.append(f"{self.done}/{self.total} answers")
        if self.eta_seconds is not None:
            parts.append(f"ETA ~{round(self.eta_seconds)} s")
        if self.status.reason and self.state != "completed":
            parts.append(f"- {self.status.reason}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "dir": str(self.dir), "state": self.state,
                "active": self.active, "pid": self.pid, "phase": self.phase,
                "done": self.done, "total": self.total, "eta_seconds": self.eta_seconds,
                **{k: getattr(self.status, k) for k in ("examples", "requested_by",
                                                        "requested_at", "started_at",
                                                        "ended_at", "reason")},
                "settings": self.status.settings or None, "verdict": self.status.verdict}


# --- the launcher's side --------------------------------------------------------------------

def start_eval(store: Store, user: User, run_dir: str | os.PathLike,
               config: EvalConfig = EvalConfig(), *, limit: int | None = None) -> EvalJob:
    """Start evaluating a completed run on the eval split as it is now (its first `limit`
    examples, or all): refused with `EvaluationAlreadyActive` while another evaluation of the
    workspace runs, and with `InvalidValue` when there is nothing to evaluate."""
    require(user, "train")
    from training.models import model_cache

    run_dir = Path(run_dir).resolve()
    run = read_run(run_dir)
    if run.state != "completed" or not (run.adapter_dir / "adapter_config.json").is_file():
        raise InvalidValue(f"run {run.id} is {run.state}: only a completed run (with its "
                           "adapter) can be evaluated")
    if limit is not None and limit < 1:
        raise InvalidValue(f"the example limit must be at least 1, not {limit}")
    rows = eval_rows_from_store(store)[:limit]
    if not rows:
        raise InvalidValue("no eval examples to evaluate on: put some examples in the eval "
                           "split (not rejected)")
    pairs = []
    if (run.manifest.config or {}).get("method") == "dpo":  # and its held-out pairs
        from dataclasses import asdict

        from training.dpo import eval_pairs

        pairs = [asdict(p) for p in eval_pairs(store, user)]
    settings = config.to_dict()
    runs_dir = run_dir.parent
    with launch_lock(runs_dir):
        active = active_eval(runs_dir)
        if active:
            raise EvaluationAlreadyActive(
                f"{active.summary()} (pid {active.pid}); one evaluation at a time per "
                f"workspace: wait for it or stop it with `curate eval {active.run_id} "
                "--cancel`")
        requested = {"run_id": run.id, "requested_by": user.name, "requested_at": now_iso()}
        write_json(run_dir / EVAL_REQUEST, {**requested, "settings": settings, "rows": rows,
                                            **({"pairs": pairs} if pairs else {})})
        (run_dir / EVAL_PID).unlink(missing_ok=True)
        write_json(run_dir / EVAL_STATUS, {
            **requested, "state": "queued", "pid": None, "phase": "loading", "done": 0,
            "total": len(rows) * len(SYSTEMS), "examples": len(rows), "settings": settings,
            "eta_seconds": None, "started_at": None, "ended_at": None, "reason": None})
        proc = spawn("training.evaluate", run_dir, EVAL_LOG,
                     {"CURATE_MODEL_CACHE": str(Path(model_cache(store)).resolve())})
        write_json(run_dir / EVAL_PID, {"pid": proc.pid, "started_at": now_iso()})
    return read_eval_job(run_dir)


def read_eval_job(run_dir: str | os.PathLike) -> EvalJob | None:
    """The run's latest evaluation now, or None when none was ever started in the
    background."""
    run_dir = Path(run_dir)
    raw = read_json(run_dir / EVAL_STATUS)
    if not raw:
        return None
    status = EvalStatus.from_json(raw)
    pid = status.pid or read_json(run_dir / EVAL_PID).get("pid")
    state = status.state or "queued"
    alive = bool(pid) and process_alive(int(pid), b"training.evaluate")
    if state in EVAL_ACTIVE_STATES and not alive:
        # the launcher is between writing the status and the pid file; else it died silently
        state = "queued" if state == "queued" and not pid and _fresh(run_dir) else \
            "interrupted"
    active = state in EVAL_ACTIVE_STATES and (alive or state == "queued")
    return EvalJob(status.run_id or run_dir.name, run_dir, state, active,
                   int(pid) if pid else None, status)


def active_eval(runs_dir: str | os.PathLike) -> EvalJob | None:
    """The evaluation running in the workspace whose runs folder is `runs_dir`, if any."""
    for run in list_runs(runs_dir):
        job = read_eval_job(run.dir)
        if job and job.active:
            return job
    return None


def cancel_eval(user: User, run_dir: str | os.PathLike, *, timeout: float = 30.0) -> EvalJob:
    """Stop the run's evaluation: SIGTERM to its process group, SIGKILL after `timeout`
    seconds; its status ends as cancelled, no process of the group is left, and an earlier
    eval.json stays."""
    require(user, "train")
    run_dir = Path(run_dir)
    job = read_eval_job(run_dir)
    if job is None or not job.active:
        raise EvaluationNotActive(f"run {run_dir.name} has no evaluation running"
                                  + (f" (the last one {job.state})" if job else ""))
    stop_job(lambda: read_eval_job(run_dir), lambda job: job.state == "queued", timeout)
    if EvalStatus.read(run_dir / EVAL_STATUS).state != "cancelled":
        _update(run_dir, state="cancelled", ended_at=now_iso(), eta_seconds=None,
                reason="cancelled by request")
    return read_eval_job(run_dir)


def wait_eval(run_dir: str | os.PathLike, *, timeout: float | None = None,
              poll: float = 0.5) -> EvalJob | None:
    """Block until the run's evaluation is no longer active (or `timeout` seconds pass)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = read_eval_job(run_dir)
        if job is None or not job.active or (deadline and time.monotonic() > deadline):
            return job
        time.sleep(poll)


def _update(run_dir: Path, **changes: Any) -> dict[str, Any]:
    return update_json(run_dir / EVAL_STATUS, **changes)


def _fresh(run_dir: Path) -> bool:
    try:
        age = time.time() - (run_dir / EVAL_STATUS).stat().st_mtime
    except OSError:
        return False
    return age < QUEUED_GRACE_SECONDS


# --- the evaluator process ------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """`python -m training.evaluate RUN_DIR`: evaluate as eval_request.json says. Exit 0 when
    completed, 1 on a failure (reason in eval_status.json, traceback in eval.log), 143 when
    cancelled (SIGTERM)."""
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training.evaluate RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0]).resolve()
    request = read_json(run_dir / EVAL_REQUEST)
    if not request.get("rows"):
        print(f"{run_dir} has no evaluation request ({EVAL_REQUEST})", file=sys.stderr)
        return 2
    _update(run_dir, state="running", pid=os.getpid(), started_at=now_iso(), phase="loading",
            reason=None)
    print(f"{now_iso()} evaluator started, pid {os.getpid()}", flush=True)
    try:
        result = _evaluate(run_dir, request)
    except Cancelled:
        print(f"{now_iso()} cancelled (SIGTERM)", flush=True)
        _update(run_dir, state="cancelled", ended_at=now_iso(), eta_seconds=None,
                reason="cancelled by request")
        return EXIT_CANCELLED
    except BaseException as exc:  # every failure must end in a status
        import traceback

        traceback.print_exc()
        text = (str(exc).strip().splitlines() or [""])[0][:300]
        reason = text if isinstance(exc, CurateError) else \
            f"{type(exc).__name__}: {text} (traceback in {EVAL_LOG})"
        _update(run_dir, state="failed", ended_at=now_iso(), eta_seconds=None, reason=reason)
        return 1
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # written: too late to cancel
    _update(run_dir, state="completed", ended_at=now_iso(), eta_seconds=0,
            verdict=result.verdict, wall_seconds=result.wall_seconds)
    print(f"{now_iso()} completed: {result.verdict['decision']}", flush=True)
    return 0


def _evaluate(run_dir: Path, request: dict[str, Any]) -> EvalResult:
    from training.eval import evaluate, train_rows_from_run

    config = EvalConfig.from_dict(request.get("settings") or {})
    began: list[float] = []

    def progress(system: str, done: int, total: int) -> None:
        if not began:
            began.append(time.monotonic())  # the model is loaded: answering starts
        elapsed = time.monotonic() - began[0]
        eta = elapsed / done * (total - done) if done else None
        _update(run_dir, phase=system, done=done, total=total,
                eta_seconds=None if eta is None else round(eta, 1))

    result = evaluate(run_dir, request["rows"], train_rows_from_run(run_dir), config,
                      progress=progress)
    if not request.get("pairs"):
        return result
    # a DPO run: pairwise preference accuracy on the held-out pairs, next to the metrics
    import dataclasses

    from training.dpo import read_pair
    from training.preference_eval import evaluate_preferences
    from training.run_folder import EVAL_FILE

    began.clear()
    preference = evaluate_preferences(run_dir, [read_pair(p) for p in request["pairs"]],
                                      batch_size=config.batch_size, progress=progress)
    result = dataclasses.replace(result, preference=preference)
    write_json(run_dir / EVAL_FILE, result.to_json())
    return result


__all__ = ["EvalJob", "active_eval", "cancel_eval", "read_eval_job", "start_eval",
           "wait_eval"]

if __name__ == "__main__":
    sys.exit(main())
