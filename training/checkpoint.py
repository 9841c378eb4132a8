"""The training state of a checkpoint, stored without pickle: safetensors plus JSON.

A checkpoint folder (`checkpoints/step-N/`, written by `training.trainer`) holds:
- `adapter_model.safetensors`, `adapter_config.json`: the LoRA adapter at step N (PEFT);
- `training_state.safetensors`: every tensor of the optimizer, scheduler and RNG states,
  named by its place in the state, e.g. `optimizer.state.0.exp_avg`, `rng.torch`;
- `training_state.json`: the rest of that state as JSON, each tensor replaced by
  `{"$tensor": name}`; a tuple is `{"$tuple": [...]}`, a dict with keys other than strings
  (the optimizer's per-parameter state) `{"$items": [[key, value], ...]}`, a float that JSON
  cannot hold `{"$float": "inf"}`;
- `position.json`: the step, the epoch and the next batch of that epoch.

Design decisions:
- Nothing in a run folder is unpickled. A pickle (`torch.load(weights_only=False)`) runs
  whatever code the file names, so a run folder someone else could write to would run code
  on resume. safetensors is a header of JSON and raw tensor bytes, JSON is data: loading
  either can fail, never execute. A `training_state.pt` (the pickle of Curate's first
  version, or one planted) is refused with `BadCheckpoint`, as is a missing or damaged file;
  the message names the folder and says how to go on (remove it: the trainer then resumes
  from the checkpoint before it, or from the start).
- `checkpoint_problem` reads only the folder's file names and JSON (no torch), so
  `training.launcher.resume` refuses a bad checkpoint before it starts a process. A state
  that reads but does not fit the run (JSON of the wrong shape) is refused as `BadCheckpoint`
  too when the trainer restores it (`unfit_state`), never shown as a Python error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from curation.errors import BadCheckpoint

STATE_TENSORS, STATE_JSON, POSITION = ("training_state.safetensors", "training_state.json",
                                       "position.json")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLED_STATE = "training_state.pt"
REQUIRED = (ADAPTER_WEIGHTS, STATE_TENSORS, STATE_JSON, POSITION)


def _refusal(folder: Path, what: str) -> BadCheckpoint:
    return BadCheckpoint(f"checkpoint {folder} {what}; remove that folder to resume from the "
                         "checkpoint before it (or from the start)")


def checkpoint_problem(folder: Path) -> str | None:
    """Why the checkpoint in `folder` cannot be loaded (a sentence), or None when its files
    are all there and its JSON parses. Reads no tensors."""
    folder = Path(folder)
    if (folder / PICKLED_STATE).exists():
        return (f"holds {PICKLED_STATE}, a pickle, which Curate does not load (it could run "
                "code)")
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        return f"is missing {', '.join(missing)}"
    for name in (STATE_JSON, POSITION):
        try:
            value = orjson.loads((folder / name).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            return f"has an unreadable {name} ({exc})"
        if not isinstance(value, dict):
            return f"has a {name} that is not a JSON object"
    position = orjson.loads((folder / POSITION).read_bytes())
    if not all(isinstance(position.get(k), int) for k in ("step", "epoch", "next_batch")):
        return f"has a {POSITION} without whole numbers step, epoch and next_batch"
    return None


def unfit_state(folder: Path, exc: Exception) -> BadCheckpoint:
    """The refusal of a checkpoint whose files read but whose state does not fit the run
    (a training_state.json edited by hand or by someone else: wrong keys, types or shapes)."""
    return _refusal(Path(folder), f"has a training state that does not fit this run "
                                  f"({type(exc).__name__}: {exc})")


def check_checkpoint(folder: Path) -> None:
    """Raise `BadCheckpoint` when `checkpoint_problem` finds one."""
    problem = checkpoint_problem(folder)
    if problem:
        raise _refusal(Path(folder), problem)


def save_training_state(folder: Path, state: dict[str, Any]) -> None:
    """Write `state` (tensors, dicts, lists, tuples, strings, numbers, None) as
    STATE_TENSORS and STATE_JSON in `folder`."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    skeleton = _encode(state, "", tensors)
    save_file(tensors, str(Path(folder) / STATE_TENSORS))
    (Path(folder) / STATE_JSON).write_bytes(orjson.dumps(skeleton))


def load_training_state(folder: Path) -> dict[str, Any]:
    """The state `save_training_state` wrote in `folder` (tensors on the CPU);
    `BadCheckpoint` when the folder is incomplete, damaged or holds a pickle."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    check_checkpoint(folder)
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _refusal(folder, f"has a damaged {STATE_TENSORS} ({exc})") from None
    try:
        return _decode(orjson.loads((folder / STATE_JSON).read_bytes()), tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise _refusal(folder, f"has a {STATE_JSON} that does not match its tensors "
                               f"({type(exc).__name__}: {exc})") from None


def load_adapter_weights(folder: Path) -> dict[str, Any]:
    """The adapter's tensors of the checkpoint in `folder`; `BadCheckpoint` when damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(Path(folder) / ADAPTER_WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _refusal(Path(folder), f"has a damaged {ADAPTER_WEIGHTS} ({exc})") from None


def _encode(value: Any, path: str, tensors: dict[str, Any]) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous().clone()
        return {"$tensor": path}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v, f"{path}.{k}".lstrip("."), tensors) for k, v in value.items()}
        return {"$items": [[_encode(k, "", {}), _encode(v, f"{path}.{k}".lstrip("."), tensors)]
                           for k, v in value.items()]}
    raise TypeError(f"cannot store {type(value).__name__} at {path or 'the top'} of a "
                    "checkpoint")


def _decode(value: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if value.keys() == {"$tensor"}:
        return tensors[value["$tensor"]]
    if value.keys() == {"$float"}:
        return float(value["$float"])
    if value.keys() == {"$tuple"}:
        return tuple(_decode(v, tensors) for v in value["$tuple"])
    if value.keys() == {"$items"}:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["$items"]}
    return {k: _decode(v, tensors) for k, v in value.items()}
