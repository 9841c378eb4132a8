"""A run folder's files: their names, atomic JSON, and typed records of what they say.

A run is a folder, `runs/<run id>/`: the launcher writes `manifest.json` and `train.jsonl`
(and, for a DPO run, `pairs.jsonl`: the snapshot's preference pairs),
the trainer `status.json`, `metrics.jsonl`, `trainer.log`, `checkpoints/` and `adapter/`,
an evaluation `eval_request.json`, `eval_status.json`, `eval.log` and `eval.json`, and a
calibration check `calibration.json`. Those
files are the interface between the processes; this module is the one place that names them
and says what is in them.

Design decisions:
- Every JSON file is written to a temporary name in the same folder and renamed, so a reader
  never sees half of one; a missing or unreadable file reads as {}.
- The typed records (`RunManifest`, `RunStatus`, `EvalStatus`, `EvalResult`) are read-side
  views: frozen dataclasses with `from_json`/`to_json`. A key missing from an older folder
  reads as None (or empty); a key this version does not know is kept in `extra`, so nothing
  is lost and a newer folder still reads. `to_json` writes the keys in the order the files
  have always had, so what is written is byte-compatible with earlier versions.
- Nested objects (a run's training settings, metrics per system, the verdict) stay plain
  dicts: they belong to `TrainConfig` and `training.metrics`, which define them.
- The status files are updated key by key (`update_status`): the trainer and the launcher
  add what they know when they know it, and the file keeps exactly the keys written.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import orjson

MANIFEST, TRAIN_FILE, STATUS, METRICS, LOG = ("manifest.json", "train.jsonl", "status.json",
                                              "metrics.jsonl", "trainer.log")
CHECKPOINTS, ADAPTER, PID_FILE = "checkpoints", "adapter", "trainer.pid"
PAIRS_FILE = "pairs.jsonl"  # a DPO run's preference pairs (`training.dpo`)
RUN_FILES = (MANIFEST, TRAIN_FILE, STATUS, METRICS, LOG, CHECKPOINTS, ADAPTER)
EVAL_FILE = "eval.json"
CALIBRATION_FILE = "calibration.json"  # the eval answers' confidences, per evaluation
EVAL_REQUEST, EVAL_STATUS, EVAL_PID, EVAL_LOG = ("eval_request.json", "eval_status.json",
                                                 "eval.pid", "eval.log")
SYSTEMS = ("zero_shot", "few_shot", "fine_tuned")


# --- atomic JSON ----------------------------------------------------------------------------

def now_iso() -> str:
    """The time now, as the run files write it (UTC, microseconds, "Z")."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when it is missing or unreadable."""
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def update_json(path: Path, **changes: Any) -> dict[str, Any]:
    """Set `changes` in the JSON object in `path` (atomically); the object written."""
    value = {**read_json(path), **changes}
    write_json(path, value)
    return value


def update_status(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Set `changes` in the run's status.json."""
    return update_json(Path(run_dir) / STATUS, **changes)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The metrics lines written so far; a partial or broken line is skipped."""
    try:
        raw = (Path(run_dir) / METRICS).read_bytes()
    except OSError:
        return []
    rows = []
    for line in raw.splitlines():
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (`step-N.partial` folders are ignored)."""
    folder = Path(run_dir) / CHECKPOINTS
    found = [p for p in folder.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


# --- typed records --------------------------------------------------------------------------

class _Record:
    """`from_json`/`to_json` for a frozen dataclass whose fields are a JSON object's keys, in
    file order; unknown keys go to (and come back from) `extra`."""

    extra: dict[str, Any]

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Self:
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]  # type: ignore
        known = {k: v for k, v in value.items() if k in names}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            # an older file without the key, or null where a container belongs
            if f.name in known and known[f.name] is None and \
                    f.default_factory is not dataclasses.MISSING:
                del known[f.name]
        return cls(**known, extra={k: v for k, v in value.items() if k not in names})

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore
               if f.name != "extra"}
        return {**out, **self.extra}

    @classmethod
    def read(cls, path: Path) -> Self:
        """The record in the JSON file `path` (all defaults when it is missing)."""
        return cls.from_json(read_json(Path(path)))


@dataclass(frozen=True)
class RunManifest(_Record):
    """manifest.json: what a run trains on and with which settings, written at launch."""

    run_id: str | None = None
    snapshot_id: str | None = None
    snapshot_hash: str | None = None
    snapshot_name: str | None = None
    filters: dict[str, Any] | None = None
    examples: int | None = None
    train_file_sha256: str | None = None
    base_model: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.to_dict()
    model_cache: str | None = None
    created_by: str | None = None
    created_at: str | None = None
    # {"pairs", "overridden_by", "paraphrases" (same-meaning matches, not refused; if any)}
    leakage: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def leaked_pairs(self) -> list[dict[str, Any]]:
        """The eval/train pairs that leaked when the run was launched with the override."""
        return self.leakage.get("pairs") or []

    @property
    def paraphrase_pairs(self) -> list[dict[str, Any]]:
        """Eval/train pairs that mean the same but are no copy: trained over with a warning."""
        return self.leakage.get("paraphrases") or []

    @property
    def leakage_overridden_by(self) -> str | None:
        return self.leakage.get("overridden_by")


@dataclass(frozen=True)
class RunStatus(_Record):
    """status.json: the run's state as its launcher and trainer last wrote it."""

    state: str | None = None
    pid: int | None = None
    started_at: str | None = None
    ended_at: str | None = None
    reason: str | None = None
    final: dict[str, Any] = field(default_factory=dict)  # final metrics, when completed
    total_steps: int | None = None
    resumed_from_step: int | None = None
    data: dict[str, Any] = field(default_factory=dict)  # the training data's report
    trainable_parameters: int | None = None
    device: str | None = None
    precision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_loss(self) -> float | None:
        return self.final.get("loss")


@dataclass(frozen=True)
class EvalStatus(_Record):
    """eval_status.json: a background evaluation's progress as its launcher and evaluator
    last wrote it."""

    run_id: str | None = None
    requested_by: str | None = None
    requested_at: str | None = None
    state: str | None = None
    pid: int | None = None
    phase: str | None = None
    done: int = 0
    total: int = 0
    examples: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    eta_seconds: float | None = None
    started_at: str | None = None
    ended_at: str | None = None
    reason: str | None = None
    verdict: dict[str, Any] | None = None
    wall_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Self:
        # null counts as none done yet
        return super().from_json({**value, **{k: int(value.get(k) or 0)
                                             for k in ("done", "total") if k in value}})


@dataclass(frozen=True)
class EvalResult(_Record):
    """eval.json: a run's evaluation against the prompt-only baseline (`training.eval`)."""

    run_id: str | None = None
    created_at: str | None = None
    primary_metric: str | None = None
    systems: dict[str, Any] = field(default_factory=dict)  # metrics per system
    baseline: dict[str, Any] = field(default_factory=dict)  # {"system", metrics...}
    comparison: dict[str, Any] = field(default_factory=dict)  # paired bootstrap
    verdict: dict[str, Any] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)  # win/loss/tie counts
    settings: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float | None = None
    wall_seconds_by_system: dict[str, float] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    # the primary metric on the whole split and without train copies (`training.eval.
    # clean_subset`); {} in an eval.json written before it was measured
    contamination: dict[str, Any] = field(default_factory=dict)
    # pairwise preference accuracy on the eval split's preference pairs, per system
    # (`training.preference_eval`); {} for a run not trained on pairs
    preference: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        for optional in ("contamination", "preference"):
            if not getattr(self, optional):  # an older result is written back as it was read
                del out[optional]
        return out

    def summary(self) -> dict[str, Any]:
        """The metrics of each system (zero_shot, few_shot, baseline, fine_tuned) and the
        verdict: what `curate eval --json` prints and the store records."""
        return {"run_id": self.run_id, "primary_metric": self.primary_metric,
                **{s: self.systems[s] for s in SYSTEMS}, "baseline": self.baseline,
                "comparison": self.comparison or None, "outcomes": self.outcomes or None,
                "verdict": self.verdict, "settings": self.settings or None,
                "contamination": self.contamination or None,
                **({"preference": _without_examples(self.preference)} if self.preference
                   else {}),
                "created_at": self.created_at}


def _without_examples(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != "examples"}


def read_eval(run_dir: str | os.PathLike) -> EvalResult | None:
    """The stored evaluation of a run, or None when it has not been evaluated."""
    value = read_json(Path(run_dir) / EVAL_FILE)
    return EvalResult.from_json(value) if value else None


def write_calibration(run_dir: str | os.PathLike, scored: dict[str, Any]) -> None:
    """Keep the eval answers' confidences ({"evaluated_at", "method", "ids", "confidences",
    "correct"}) of the evaluation made at `evaluated_at`."""
    write_json(Path(run_dir) / CALIBRATION_FILE, scored)


def read_calibration(run_dir: str | os.PathLike, evaluated_at: str | None
                     ) -> dict[str, Any] | None:
    """The kept confidences, if they belong to the evaluation made at `evaluated_at` (an
    evaluation made since makes them stale: None)."""
    value = read_json(Path(run_dir) / CALIBRATION_FILE)
    return value if value and value.get("evaluated_at") == evaluated_at else None


__all__ = ["ADAPTER", "CALIBRATION_FILE", "CHECKPOINTS", "EVAL_FILE", "EVAL_LOG", "EVAL_PID",
           "EVAL_REQUEST", "EVAL_STATUS", "EvalResult", "EvalStatus", "LOG", "MANIFEST",
           "METRICS", "PAIRS_FILE", "PID_FILE", "RUN_FILES", "RunManifest", "RunStatus", "STATUS",
           "SYSTEMS",
           "TRAIN_FILE", "checkpoint_dirs", "now_iso", "read_calibration", "read_eval",
           "read_json", "read_metrics", "update_json", "update_status", "write_calibration",
           "write_json"]
