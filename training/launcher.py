"""Training runs: launch a LoRA fine-tune on a snapshot, watch, list, cancel and resume it.

Design decisions:
- A run is a folder, `runs/<run id>/` beside the workspace database (`training.run_folder`
  names its files and reads them): the launcher writes `manifest.json` (run id, snapshot id
  and hash, base model, every setting, who and when) and `train.jsonl` (the snapshot, via
  `write_snapshot`), then starts `python -m training.trainer RUN_DIR` in a process group of
  its own (`training.processes.spawn`), so cancelling signals the whole group. The trainer
  never opens the store; everything after the launch is read from the folder.
- Paths are made absolute once, here at the boundary: the runs folder (a relative `--db`,
  or the default `./workspace/...`, means relative to the launcher's working directory), the
  run folder handed to the trainer, the model cache and a base model named by a local
  folder.
- A launch returns once the trainer has taken the run over (written `running` in
  `status.json`). A trainer that exits before that (a broken environment, an import error)
  makes the launch fail with `TrainerNotStarted`, the run marked failed with the end of its
  log, so neither the app nor `curate train --detach` reports a run that is not there.
- One active run per workspace. A run is active while its state is starting/running and its
  process is alive; liveness is checked in /proc (a zombie counts as dead, and the command
  line must be our trainer's, so a reused pid does not keep a dead run "active"). The check
  and the start happen under a file lock on the runs folder, so two launchers cannot both
  pass it.
- Leakage guard: before snapshotting, `launch` asks the core (`curation.leakage`) for eval
  examples that duplicate the set to be trained on, and refuses with `LeakageUnresolved`
  while an eval example is an exact or near (lexical) copy of a train example of the
  snapshot, since the evaluation would then overstate the model. SMEs resolve it on the
  Quality page (reject or move one side, or mark "not duplicates"); `allow_leakage=True` is
  the conscious override, and the manifest records the leaked pairs and who overrode.
  Same-meaning matches alone (paraphrases) do not refuse: the manifest lists them under
  `leakage.paraphrases`, and every evaluation reports its metric without the eval examples
  that have a train copy beside the whole split (`training.eval`).
- A run whose process died without writing an ending (SIGKILL, power loss) reads as
  `interrupted`; `resume` starts the trainer again on the same folder and it continues from
  the last checkpoint.
- The store records every run (`training_runs`, one row per run: snapshot, base model,
  settings, state, final loss, leakage override, evaluation summary) so a snapshot can be
  traced to the models trained on it. The run folder stays the source of truth: the app and
  the CLI copy what it says into the store (`record_runs`) when they launch, list or
  evaluate runs; the trainer itself never opens the store.
- Model loading lives in `training.models` (`load_run_model`), evaluation in `training.eval`
  and `training.evaluate`; this module imports neither, so the layers stay one-way.
- A DPO run (`TrainConfig.method == "dpo"`) also gets `pairs.jsonl`: the snapshot's
  preference pairs (`training.dpo.snapshot_pairs`, the one place training asks the store for
  them); a run it starts from (`sft_run`) must be a completed SFT run on the same base model,
  and the manifest's `extra` names its adapter (`sft_adapter`).
- `import training.launcher` stays light (no torch): the app lists runs without paying for
  it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from curation._files import private_dir
from curation.auth import User, require
from curation.errors import (EmptyTrainingSet, InvalidValue, LeakageUnresolved, RunAlreadyActive,
                             RunNotActive, RunNotFound, TrainerNotStarted)
from curation.exporter import write_snapshot
from curation.leakage import DEFAULT_TRAIN_FILTER, blocking, find_leakage, paraphrases
from curation.query import ExampleFilter
from curation.store import RUN_COLUMNS, Store
from training.checkpoint import check_checkpoint
from training.config import TrainConfig
from training.processes import exited, process_alive, spawn, stop_job
from training.run_folder import (LOG, MANIFEST, PID_FILE, STATUS, TRAIN_FILE, RunManifest,
                                 RunStatus, checkpoint_dirs, now_iso, read_eval, read_json,
                                 read_metrics, update_status, write_json)

ACTIVE_STATES = ("starting", "running")
ENDED_STATES = ("completed", "failed", "cancelled", "interrupted")
START_TIMEOUT = 120.0  # seconds a launch waits for the trainer to take the run over

if TYPE_CHECKING:
    from curation.checks import Progress


@dataclass(frozen=True)
class Run:
    """What a run folder says now: its manifest, status, metrics and whether it is active."""

    id: str
    dir: Path
    state: str
    active: bool
    pid: int | None
    manifest: RunManifest
    status: RunStatus
    metrics: list[dict[str, Any]]

    @property
    def last(self) -> dict[str, Any]:
        """The latest metrics line ({} before the first step)."""
        return self.metrics[-1] if self.metrics else {}

    @property
    def total_steps(self) -> int | None:
        return self.status.total_steps or self.last.get("total_steps")

    @property
    def adapter_dir(self) -> Path:
        return self.dir / "adapter"

    def summary(self) -> str:
        """One line: id, state, progress, loss; the reason for a failure."""
        parts = [self.id, self.state]
        if self.last:
            parts.append(f"step {self.last['step']}/{self.total_steps or '?'}")
        if isinstance(self.last.get("loss"), (int, float)):
            parts.append(f"loss {self.last['loss']:.4f}")
        if self.state == "failed" and self.status.reason:
            parts.append(f"({self.status.reason})")
        return "  ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "dir": str(self.dir), "state": self.state, "active": self.active,
                "pid": self.pid, "snapshot_id": self.manifest.snapshot_id,
                "snapshot_hash": self.manifest.snapshot_hash,
                "base_model": self.manifest.base_model,
                "created_by": self.manifest.created_by,
                "created_at": self.manifest.created_at,
                "config": self.manifest.config or None, "step": self.last.get("step"),
                "total_steps": self.total_steps, "loss": self.last.get("loss"),
                "reason": self.status.reason, "final": self.status.final or None,
                "adapter": str(self.adapter_dir) if self.adapter_dir.is_dir() else None}


def default_runs_dir(db_path: str | os.PathLike) -> Path:
    """The runs folder of the workspace whose database is `db_path` (absolute: a relative
    `db_path` is taken from the current working directory)."""
    return Path(db_path).resolve().parent / "runs"


def launch(store: Store, user: User, config: TrainConfig, *,
           where: ExampleFilter = DEFAULT_TRAIN_FILTER,
           runs_dir: str | os.PathLike | None = None, allow_leakage: bool = False,
           progress: Progress | None = None, snapshot_id: str | None = None,
           keep_ids: Collection[int] | None = None,
           extra: dict[str, Any] | None = None) -> Run:
    """Snapshot what `where` selects (accepted train examples), write it into a new run
    folder and start the trainer process on it. Refused with `LeakageUnresolved` while eval
    examples are exact or near copies of examples of that set, unless `allow_leakage`;
    same-meaning matches only are recorded in the manifest, not refused. A learning curve
    (`training.curve`) passes `snapshot_id` (train on that existing snapshot), `keep_ids`
    (only those of its examples) and `extra` (kept in the manifest, e.g. `curve`)."""
    require(user, "train")
    from training.models import DEFAULT_BASE_MODEL, model_cache

    runs_dir = Path(runs_dir).resolve() if runs_dir is not None else \
        default_runs_dir(store.path)
    private_dir(runs_dir)
    if config.base_model != DEFAULT_BASE_MODEL and Path(config.base_model).is_dir():
        # a local folder, named relative to here: the trainer starts elsewhere
        config = dataclasses.replace(config, base_model=str(Path(config.base_model).resolve()))
    elif config.base_model.startswith(("/", "./", "../", "~", ".\\", "..\\")):
        # a folder by its form, not a hub id: a missing one failed in the trainer, later
        raise InvalidValue(f"base_model: the folder {config.base_model} does not exist (a "
                           "local model is a Hugging Face folder with config.json; a hub id "
                           "is written namespace/name)")
    with launch_lock(runs_dir):
        _refuse_if_active(runs_dir)
        found = find_leakage(store, user, where=where, progress=progress)
        leaks, similar = blocking(found), paraphrases(found)
        if leaks and not allow_leakage:
            shown = ", ".join(f"eval #{x['eval_id']} ~ train #{x['train_id']} ({x['method']})"
                              for x in leaks[:3])
            more = f" and {len(leaks) - 3} more" if len(leaks) > 3 else ""
            raise LeakageUnresolved(
                f"{len(leaks)} eval example{'s' if len(leaks) != 1 else ''} duplicate train "
                f"examples exactly or nearly ({shown}{more}), so the evaluation would "
                "overstate the model; "
                "resolve them on the Quality page (reject or move one side, or mark them not "
                "duplicates), or train anyway with the override (`--allow-leakage`, or the "
                "checkbox on the Training page)", leaks)
        snapshot = store.get_snapshot(snapshot_id) if snapshot_id else \
            store.snapshot(where, actor=user.name)
        if snapshot.count == 0:
            raise EmptyTrainingSet(f"nothing to train on: snapshot {snapshot.id} has no "
                                   f"examples ({_describe(where)}); accept some train "
                                   "examples first")
        pairs = None
        if config.method == "dpo":  # preference pairs of the snapshot (`training.dpo`)
            from training.dpo import snapshot_pairs, start_from_sft

            extra = {**(extra or {}), **start_from_sft(runs_dir, config)}
            pairs = snapshot_pairs(store, snapshot.id)
            if not any(p.split == "train" for p in pairs):
                raise EmptyTrainingSet(f"nothing to train DPO on: snapshot {snapshot.id} "
                                       "has no train preference pairs (examples with a chosen "
                                       "and a rejected answer)")
        run_id = f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        run_dir = runs_dir / run_id
        run_dir.mkdir(mode=0o700)
        export = write_snapshot(store, snapshot.id, run_dir / TRAIN_FILE, user=user)
        count, sha = export.count, export.file_sha256
        if keep_ids is not None:
            count, sha = _keep_only(run_dir / TRAIN_FILE, set(keep_ids))
            extra = {**(extra or {}), "subset_ids": sorted(keep_ids)}
        if pairs is not None:
            from training.dpo import PAIRS_FILE, write_pairs

            write_pairs(run_dir / PAIRS_FILE, pairs)
            extra = {**extra, "pairs": sum(p.split == "train" for p in pairs)}
        cache = model_cache(store)
        write_json(run_dir / MANIFEST, RunManifest(
            run_id=run_id, snapshot_id=snapshot.id, snapshot_hash=snapshot.content_hash,
            snapshot_name=snapshot.name, filters=snapshot.filters,
            examples=count, train_file_sha256=sha,
            base_model=config.base_model, config=config.to_dict(),
            model_cache=str(Path(cache).resolve()), created_by=user.name,
            created_at=now_iso(),
            leakage={"pairs": leaks, "overridden_by": user.name if leaks else None,
                     **({"paraphrases": similar} if similar else {})},
            extra=extra or {}).to_json())
        _start(run_dir, cache)
    record_runs(store, runs_dir)
    return read_run(run_dir)


def _keep_only(train_file: Path, keep: set[int]) -> tuple[int, str]:
    """Cut a run's train file to the examples in `keep` (by their `curate_id`); the lines
    left and the file's new sha256."""
    import hashlib

    lines = [line for line in train_file.read_bytes().splitlines(keepends=True)
             if orjson.loads(line)["curate"]["curate_id"] in keep]
    if not lines:
        raise EmptyTrainingSet(f"none of the {len(keep)} chosen examples is in the snapshot")
    data = b"".join(lines)
    tmp = train_file.with_name(train_file.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(train_file)
    return len(lines), hashlib.sha256(data).hexdigest()


def resume(store: Store, user: User, run_id: str, *,
           runs_dir: str | os.PathLike | None = None) -> Run:
    """Start the trainer again on an interrupted, failed or cancelled run; it continues from
    the run's last checkpoint (`BadCheckpoint` when that one is damaged or holds a pickle)."""
    require(user, "train")
    from training.models import model_cache

    runs_dir = Path(runs_dir).resolve() if runs_dir is not None else \
        default_runs_dir(store.path)
    run_dir = find_run(runs_dir, run_id)
    with launch_lock(runs_dir):
        _refuse_if_active(runs_dir)
        run = read_run(run_dir)
        if run.state == "completed":
            raise InvalidValue(f"run {run.id} has completed; there is nothing to resume")
        saved = checkpoint_dirs(run_dir)
        if saved:
            check_checkpoint(saved[-1])  # refused here, before a process starts
        _start(run_dir, model_cache(store))
    record_runs(store, runs_dir)
    return read_run(run_dir)


def _start(run_dir: Path, cache: str | os.PathLike) -> subprocess.Popen:
    """Start the trainer on `run_dir` and return once it has taken the run over (or has been
    running for START_TIMEOUT seconds, slow but alive); `TrainerNotStarted` if it exits
    first."""
    run_dir = run_dir.resolve()
    update_status(run_dir, state="starting", pid=None, reason=None, ended_at=None)
    (run_dir / PID_FILE).unlink(missing_ok=True)
    proc = spawn("training.trainer", run_dir, LOG,
                 {"CURATE_MODEL_CACHE": str(Path(cache).resolve())})
    write_json(run_dir / PID_FILE, {"pid": proc.pid, "started_at": now_iso()})
    deadline = time.monotonic() + START_TIMEOUT
    while RunStatus.read(run_dir / STATUS).state == "starting":
        if exited(proc):
            tail = _log_tail(run_dir / LOG)
            reason = f"the trainer exited (status {proc.returncode}) before it started" + \
                (f": {tail}" if tail else "")
            update_status(run_dir, state="failed", ended_at=now_iso(), reason=reason)
            raise TrainerNotStarted(f"run {run_dir.name} did not start: {reason} (log: "
                                    f"{run_dir / LOG})")
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return proc


def _log_tail(path: Path) -> str:
    """The last non-blank line of a log (at most 300 characters), or ''."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return last[-300:]


def list_runs(runs_dir: str | os.PathLike) -> list[Run]:
    """Every run in `runs_dir`, newest first."""
    folder = Path(runs_dir)
    if not folder.is_dir():
        return []
    dirs = [p for p in folder.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
    return [read_run(p) for p in sorted(dirs, key=lambda p: p.name, reverse=True)]


def find_run(runs_dir: str | os.PathLike, run_id: str) -> Path:
    """The folder of run `run_id` (a run id, or a path to a run folder)."""
    for candidate in (Path(runs_dir) / run_id, Path(run_id)):
        if (candidate / MANIFEST).is_file():
            return candidate.resolve()
    raise RunNotFound(f"no run {run_id!r} in {runs_dir}; `curate runs` lists them")


def read_run(run_dir: str | os.PathLike) -> Run:
    """The run's state now; robust to files being written while it reads."""
    run_dir = Path(run_dir).resolve()
    manifest = RunManifest.read(run_dir / MANIFEST)
    status = RunStatus.read(run_dir / STATUS)
    pid = status.pid or read_json(run_dir / PID_FILE).get("pid")
    state = status.state or "starting"
    alive = bool(pid) and process_alive(int(pid))
    if state in ACTIVE_STATES and not alive:
        # the launcher is between writing the status and the pid file; else it died silently
        state = "starting" if state == "starting" and not pid and _fresh(run_dir) else \
            "interrupted"
    active = state in ACTIVE_STATES and (alive or state == "starting")
    return Run(manifest.run_id or run_dir.name, run_dir, state, active,
               int(pid) if pid else None, manifest, status, read_metrics(run_dir))


def is_active(run_dir: str | os.PathLike) -> bool:
    """Whether the run's trainer is starting or running."""
    return read_run(run_dir).active


def cancel(user: User, run_dir: str | os.PathLike, *, timeout: float = 30.0) -> Run:
    """Stop the run: SIGTERM to its process group, SIGKILL after `timeout` seconds; the status
    ends as cancelled and no process of the group is left."""
    require(user, "train")
    run = read_run(run_dir)
    if run.state in ENDED_STATES and run.state != "interrupted":
        raise RunNotActive(f"run {run.id} has already ended ({run.state})")
    stop_job(lambda: read_run(run_dir), lambda run: run.state == "starting", timeout)
    if RunStatus.read(Path(run_dir) / STATUS).state != "cancelled":
        update_status(Path(run_dir), state="cancelled", ended_at=now_iso(),
                      reason="cancelled by request")
    return read_run(run_dir)


def wait(run_dir: str | os.PathLike, *, timeout: float | None = None,
         poll: float = 0.5) -> Run:
    """Block until the run is no longer active (or `timeout` seconds pass); its final state."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = read_run(run_dir)
        if not run.active or (deadline is not None and time.monotonic() > deadline):
            return run
        time.sleep(poll)


def record_runs(store: Store, runs_dir: str | os.PathLike | None = None) -> list[Run]:
    """Copy what every run folder says now into the store's `training_runs` table
    (`Store.record_runs`: only new or changed runs are rewritten); the runs, newest first."""
    runs = list_runs(runs_dir if runs_dir is not None else default_runs_dir(store.path))
    rows = []
    for run in runs:
        evaluation = read_eval(run.dir)
        m = run.manifest
        row = {"id": run.id, "snapshot_id": m.snapshot_id, "snapshot_hash": m.snapshot_hash,
               "base_model": m.base_model, "config": _json(m.config or None),
               "state": run.state, "created_by": m.created_by,
               "created_at": _timestamp(m.created_at),
               "ended_at": _timestamp(run.status.ended_at), "steps": run.last.get("step"),
               "final_loss": run.last.get("loss"),
               "leakage_overridden_by": m.leakage_overridden_by,
               "evaluation": _json(evaluation.summary()) if evaluation else None}
        rows.append([row[column] for column in RUN_COLUMNS])
    store.record_runs(rows)
    return runs


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _timestamp(value: str | None) -> datetime | None:
    """A run file's ISO time ("...Z") as the store's naive UTC timestamp."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


@contextlib.contextmanager
def launch_lock(runs_dir: Path):
    """An exclusive lock on the runs folder while checking for an active run (or evaluation)
    and starting one."""
    import fcntl

    with open(runs_dir / ".launch.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _refuse_if_active(runs_dir: Path) -> None:
    for run in list_runs(runs_dir):
        if run.active:
            step = f", step {run.last['step']}/{run.total_steps}" if run.last else ""
            raise RunAlreadyActive(f"run {run.id} is still {run.state} (pid {run.pid}{step}); "
                                   f"wait for it or stop it with `curate cancel {run.id}`")


def _fresh(run_dir: Path, seconds: float = 30.0) -> bool:
    try:
        return time.time() - (run_dir / STATUS).stat().st_mtime < seconds
    except OSError:
        return False


def _describe(where: ExampleFilter) -> str:
    parts = [f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}"
             for k, v in where.describe().items()]
    return "; ".join(parts) or "all examples"


__all__ = ["ACTIVE_STATES", "DEFAULT_TRAIN_FILTER", "ENDED_STATES", "Run", "cancel",
           "default_runs_dir", "find_run", "is_active", "launch", "launch_lock",
           "list_runs", "read_run", "record_runs", "resume", "wait"]
