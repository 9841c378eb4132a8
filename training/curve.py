"""Learning curve: train on nested 25%, 50% and 100% subsets of one snapshot and say whether
more data is likely to help.

Design decisions:
- A curve is a folder, `runs/curve-<id>/curve.json` beside the run folders (`list_runs`
  skips it: it has no manifest.json). It names the one snapshot every point trains on, the
  fractions, the settings and seed, and per point the example ids, the run id, the run's
  state and its score; it is rewritten (atomically) after each step, so it is the record of
  progress and result alike.
- Subsets are nested and stratified by construction (`nested_subsets`, pure): each label's
  examples (unlabelled ones form a group of their own) are put in a fixed order seeded by
  the training seed and the label, and a fraction takes the first ceil(fraction x n) of each
  label (at least one), so a smaller subset is always the start of a larger one and each
  label keeps its share.
- Each point is an ordinary run (`training.launcher.launch` with `snapshot_id` and
  `keep_ids`): same settings and seed, its train file cut to the subset, its manifest
  recording `curve` (id and fraction). It is then evaluated by the ordinary evaluation
  process (`training.evaluate`, all three systems, since that is what evaluation is); the
  curve uses the fine-tuned model's primary metric, in points.
- The driver (`run_curve`) goes one point after another, waiting on the background trainer
  and evaluator, in the calling process: the CLI's (`curate curve`), or a thread of the app's
  server process (`start_curve`, the Training page's button), so closing the browser does not
  stop it, stopping the app or the terminal does. It is not a process of its own: curve.json
  keeps the driver's pid and a heartbeat (rewritten every few seconds); a `running` curve
  whose process is gone or whose heartbeat is older than STALE_SECONDS reads as
  `interrupted`. Cancel (Ctrl-C in the CLI, `cancel_curve` from the page) stops the run or
  evaluation in flight and marks the curve cancelled.
- The advice (`advice`, pure) reads the slope of the last doubling: the gain in points from
  the second-largest to the largest subset. At or above `THRESHOLD_POINTS` (2 points) more
  data of the same kind is likely to help; below it, cleaner data or a different approach is
  the lever.
"""

from __future__ import annotations

import math
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from curation.auth import User, require
from curation.errors import CurateError, CurveNotFound, EmptyTrainingSet, InvalidValue
from curation.store import Store
from training.config import EvalConfig, TrainConfig
from training.processes import process_alive
from training.run_folder import _Record, now_iso, read_eval, read_json, write_json

FRACTIONS = (0.25, 0.5, 1.0)
THRESHOLD_POINTS = 2.0  # gain of the last doubling (points) from which more data is advised
CURVE_FILE = "curve.json"
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 300.0  # a launch can take minutes (the leakage check, the trainer starting)
_STOPS: dict[str, threading.Event] = {}  # curve id -> its stop, for drivers in this process


def nested_subsets(rows: Iterable[tuple[int, str | None]], fractions: Sequence[float] = FRACTIONS,
                   seed: int = 0) -> dict[float, list[int]]:
    """For `(example id, label)` rows, the example ids of each fraction: per label a fixed
    order seeded by `seed` and the label, then the first ceil(fraction x n) (at least one) of
    each label. Nested and stratified by construction; ids sorted within each subset."""
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise InvalidValue(f"fractions must be in (0, 1], not {list(fractions)}")
    by_label: dict[str | None, list[int]] = {}
    for example_id, label in rows:
        by_label.setdefault(label, []).append(example_id)
    ordered = {}
    for label, ids in by_label.items():
        ids = sorted(ids)
        random.Random(f"{seed}/{label}").shuffle(ids)
        ordered[label] = ids
    return {f: sorted(i for ids in ordered.values()
                      for i in ids[:max(1, math.ceil(f * len(ids) - 1e-9))])
            for f in sorted(fractions)}


def advice(points: Sequence[dict[str, Any]], threshold: float = THRESHOLD_POINTS) -> str:
    """One sentence from the curve's points (`examples`, `score` in points or None): whether
    more data is likely to help, from the gain of the last doubling against `threshold`."""
    scored = sorted((p for p in points if p.get("score") is not None),
                    key=lambda p: p["examples"])
    if len(scored) < 2:
        return "Not enough evaluated points yet to read the curve: it needs at least two."
    before, last = scored[-2], scored[-1]
    gain = last["score"] - before["score"]
    step = (f"from {before['examples']} to {last['examples']} examples the score went from "
            f"{before['score']:.1f} to {last['score']:.1f} ({gain:+.1f} points)")
    if gain >= threshold:
        return (f"More data is likely to help: {step}, at or above the {threshold:g}-point "
                "threshold for the last doubling.")
    return (f"More data of the same kind is unlikely to help much: {step}, below the "
            f"{threshold:g}-point threshold for the last doubling, so cleaner data (the "
            "flagged labels and eval failures) or a different approach (base model, "
            "settings) is the lever.")


@dataclass(frozen=True)
class Curve(_Record):
    """curve.json: a learning curve's snapshot, settings, points and state."""

    id: str | None = None
    state: str | None = None  # running, completed, failed, cancelled
    snapshot_id: str | None = None
    snapshot_hash: str | None = None
    seed: int = 0
    fractions: list[float] = field(default_factory=list)
    threshold_points: float = THRESHOLD_POINTS
    config: dict[str, Any] = field(default_factory=dict)
    created_by: str | None = None
    created_at: str | None = None
    ended_at: str | None = None
    reason: str | None = None
    pid: int | None = None
    heartbeat: float | None = None  # time.time() of the driver's last sign of life
    # per fraction: fraction, examples, example_ids, run_id, state, metric, score (points)
    points: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def advice(self) -> str:
        return advice(self.points, self.threshold_points)

    def to_dict(self) -> dict[str, Any]:
        """What `curate curve --json` prints: the curve, its points (without the id lists)
        and the advice."""
        out = {k: v for k, v in self.to_json().items() if k != "points"}
        return {**out, "points": [{k: v for k, v in p.items() if k != "example_ids"}
                                  for p in self.points], "advice": self.advice}


def list_curves(runs_dir: str | os.PathLike) -> list[Curve]:
    """Every curve in `runs_dir`, newest first."""
    folder = Path(runs_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("curve-*") if (p / CURVE_FILE).is_file()]
    curves = []
    for path in sorted(found, key=lambda p: p.name, reverse=True):
        curve = Curve.from_json(read_json(path / CURVE_FILE))
        if curve.state == "running" and not _driver_alive(curve):
            curve = _replace(curve, curve.points, state="interrupted",
                             reason="its driver (`curate curve`) is no longer running")
        curves.append(curve)
    return curves


def _driver_alive(curve: Curve) -> bool:
    return bool(curve.pid) and process_alive(curve.pid, b"") and \
        time.time() - (curve.heartbeat or 0) < STALE_SECONDS


def read_curve(runs_dir: str | os.PathLike, curve_id: str | None = None) -> Curve:
    """The curve `curve_id`, or the newest; `CurveNotFound` when there is none."""
    curves = list_curves(runs_dir)
    for curve in curves:
        if curve_id is None or curve.id == curve_id:
            return curve
    raise CurveNotFound(f"no learning curve {curve_id!r} in {runs_dir}" if curve_id else
                        "no learning curve yet: `curate curve` trains one")


def run_curve(store: Store, user: User, config: TrainConfig, *,
              runs_dir: str | os.PathLike, where=None, allow_leakage: bool = False,
              eval_config: EvalConfig = EvalConfig(),
              fractions: Sequence[float] = FRACTIONS,
              on_run: Callable[[Curve, dict[str, Any]], None] | None = None,
              on_event: Callable[[str], None] | None = None,
              stop: threading.Event | None = None,
              on_start: Callable[[Curve], None] | None = None) -> Curve:
    """Train and evaluate one run per fraction on nested subsets of one snapshot, in this
    process, recording each step in curve.json; the finished curve. `on_run(curve, point)` is
    called once each run has started (to follow it), `on_event(line)` for progress lines.
    Ctrl-C (KeyboardInterrupt), or setting `stop`, cancels the run or evaluation in flight
    and the curve; `on_start(curve)` is called once curve.json is written."""
    require(user, "train")
    _refuse_dpo(config)
    from training.evaluate import cancel_eval, read_eval_job, start_eval, wait_eval
    from training.launcher import DEFAULT_TRAIN_FILTER, cancel, launch, read_run, wait

    say = on_event or (lambda line: None)
    where = where or DEFAULT_TRAIN_FILTER
    runs_dir = Path(runs_dir).resolve()
    snapshot = store.snapshot(where, actor=user.name)
    rows = [(r["id"], r["label"]) for r in store.snapshot_rows(snapshot.id)]
    if not rows:
        raise EmptyTrainingSet(f"nothing to train on: snapshot {snapshot.id} has no examples; "
                               "accept some train examples first")
    subsets = nested_subsets(rows, fractions, config.seed)
    curve_id = f"curve-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    folder = runs_dir / curve_id
    folder.mkdir(mode=0o700, parents=True)
    curve = Curve(id=curve_id, state="running", snapshot_id=snapshot.id,
                  snapshot_hash=snapshot.content_hash, seed=config.seed,
                  fractions=sorted(subsets), config=config.to_dict(), created_by=user.name,
                  created_at=now_iso(), pid=os.getpid(), heartbeat=time.time(),
                  points=[{"fraction": f, "examples": len(ids), "example_ids": ids,
                           "run_id": None, "state": "waiting", "metric": None, "score": None}
                          for f, ids in subsets.items()])

    def save(record: Curve) -> None:
        write_json(folder / CURVE_FILE, {**record.to_json(), "heartbeat": time.time()})

    save(curve)
    stop = stop or threading.Event()
    _STOPS[curve_id] = stop
    if on_start:
        on_start(curve)
    say(f"curve {curve_id} on snapshot {snapshot.id}: "
        + ", ".join(f"{p['fraction']:.0%} = {p['examples']}" for p in curve.points)
        + " examples")
    points = [dict(p) for p in curve.points]
    current: dict[str, Any] = {}
    try:
        for point in points:
            run = launch(store, user, config, where=where, runs_dir=runs_dir,
                         allow_leakage=allow_leakage, snapshot_id=snapshot.id,
                         keep_ids=point["example_ids"],
                         extra={"curve": {"id": curve_id, "fraction": point["fraction"]}})
            current = {"run": run.dir}
            point.update(run_id=run.id, state="training")
            curve = _replace(curve, points)
            save(curve)
            say(f"{point['fraction']:.0%} ({point['examples']} examples): run {run.id}")
            if on_run:
                on_run(curve, point)
            run = _waiting(lambda d=run.dir: wait(d, timeout=HEARTBEAT_SECONDS),
                           lambda r: r.active, stop, folder)
            if run.state != "completed":
                point.update(state=run.state)
                raise _Stop(f"run {run.id} {run.state}: {run.status.reason or 'see its log'}")
            point.update(state="evaluating")
            save(_replace(curve, points))
            start_eval(store, user, run.dir, eval_config)
            current = {"eval": run.dir}
            job = _waiting(lambda d=run.dir: wait_eval(d, timeout=HEARTBEAT_SECONDS),
                           lambda j: j is not None and j.active, stop, folder)
            current = {}
            result = read_eval(run.dir)
            if job is None or job.state != "completed" or result is None:
                point.update(state="failed")
                reason = job.status.reason if job else None
                raise _Stop(f"evaluation of run {run.id} did not complete: "
                            f"{reason or 'see its eval.log'}")
            score = (result.systems.get("fine_tuned") or {}).get("primary")
            point.update(state="completed", metric=result.primary_metric,
                         score=None if score is None else round(score * 100, 1))
            curve = _replace(curve, points)
            save(curve)
            say(f"{point['fraction']:.0%} ({point['examples']} examples): "
                f"{point['metric']} {point['score']}")
        curve = _replace(curve, points, state="completed", ended_at=now_iso())
    except _Stop as failed:
        curve = _replace(curve, points, state="failed", ended_at=now_iso(), reason=str(failed))
    except CurateError as exc:  # a launch refused (leakage, an active run): recorded, raised
        curve = _replace(curve, points, state="failed", ended_at=now_iso(), reason=str(exc))
        raise
    except (KeyboardInterrupt, _Cancelled) as stopped:
        if "run" in current and read_run(current["run"]).active:
            cancel(user, current["run"])
        if "eval" in current and (job := read_eval_job(current["eval"])) and job.active:
            cancel_eval(user, current["eval"])
        for point in points:
            if point["state"] in ("training", "evaluating"):
                point["state"] = "cancelled"
        curve = _replace(curve, points, state="cancelled", ended_at=now_iso(),
                         reason="cancelled by request")
        if isinstance(stopped, KeyboardInterrupt):
            save(curve)
            raise
    finally:
        _STOPS.pop(curve_id, None)
        if curve.state == "running":  # an unexpected error: say so in the record
            curve = _replace(curve, points, state="failed", ended_at=now_iso(),
                             reason="the driver stopped with an error")
        save(curve)
    return curve


def _waiting(poll: Callable[[], Any], still: Callable[[Any], bool], stop: threading.Event,
             folder: Path) -> Any:
    """Call `poll` (which waits a few seconds) until `still` is false of what it returns,
    beating the heart of curve.json in between; `_Cancelled` once `stop` is set."""
    while True:
        value = poll()
        if stop.is_set():
            raise _Cancelled
        if not still(value):
            return value
        record = read_json(folder / CURVE_FILE)
        write_json(folder / CURVE_FILE, {**record, "heartbeat": time.time()})


def _refuse_dpo(config: TrainConfig) -> None:
    """A curve subsets a snapshot's conversations; a DPO run's pairs are not cut with them."""
    if config.method != "sft":
        raise InvalidValue("a learning curve trains SFT runs only; set the method to 'sft'")


def start_curve(store: Store, user: User, config: TrainConfig, *,
                runs_dir: str | os.PathLike, allow_leakage: bool = False,
                timeout: float = 600.0) -> Curve:
    """`run_curve` in a thread of this process (the app's server); returns once curve.json
    is written. A refusal before that (no examples) is raised here; one after it (leakage,
    an active run) is recorded in curve.json as the curve's failure."""
    require(user, "train")
    _refuse_dpo(config)
    started, failure = threading.Event(), []
    holder: list[Curve] = []

    def go() -> None:
        try:
            run_curve(store, user, config, runs_dir=runs_dir, allow_leakage=allow_leakage,
                      on_start=lambda c: (holder.append(c), started.set()))
        except Exception as exc:  # noqa: BLE001  reported to the caller or kept in curve.json
            failure.append(exc)
        finally:
            started.set()

    threading.Thread(target=go, name="curate-curve", daemon=True).start()
    started.wait(timeout)
    if not holder:
        raise failure[0] if failure else InvalidValue("the learning curve did not start")
    return holder[0]


def cancel_curve(user: User, runs_dir: str | os.PathLike, curve_id: str) -> None:
    """Stop a curve driven by this process: its run or evaluation in flight is cancelled and
    the curve ends as cancelled."""
    require(user, "train")
    curve = read_curve(runs_dir, curve_id)
    if curve.state != "running":
        raise InvalidValue(f"learning curve {curve_id} is {curve.state}, not running")
    stop = _STOPS.get(curve_id)
    if stop is None:
        raise InvalidValue(f"learning curve {curve_id} is driven by another process (pid "
                           f"{curve.pid}); stop it there (Ctrl-C)")
    stop.set()


class _Cancelled(Exception):
    """The curve's stop was set."""


class _Stop(Exception):
    """A point failed: the curve ends as failed with this reason."""


def _replace(curve: Curve, points: list[dict[str, Any]], **changes: Any) -> Curve:
    return Curve.from_json({**curve.to_json(), "points": [dict(p) for p in points], **changes})


__all__ = [
    "CURVE_FILE",
    "FRACTIONS",
    "THRESHOLD_POINTS",
    "Curve",
    "advice",
    "cancel_curve",
    "list_curves",
    "nested_subsets",
    "read_curve",
    "run_curve",
    "start_curve",
]
