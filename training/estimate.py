"""What a run will cost before it starts: tokens per conversation and the time per epoch.

Design decisions:
- Tokens are counted as the trainer counts them: each conversation rendered with the base
  model's own chat template, tokenized without added special tokens, before any cut (the
  same ids as `training.data.encode`). Only the tokenizer is loaded, never the weights: the
  cached copy of the default model, its packaged GGUF file before the first conversion, or
  the name as given (a local folder, or a hub id where the user is online).
- The time per epoch is a measurement where one exists: the median tokens per second of the
  latest earlier run of the same base model (its metrics.jsonl, the first step left out as
  warm-up when there are others), applied to the tokens at hand. The settings of that run
  that change the speed and differ from the new ones are named, so the figure reads as a
  guide.
- Without such a run, a lower bound from FLOPs: 4 x parameters per trained token (forward 2,
  backward through the activations 2; LoRA computes no gradient for the frozen weights) at
  the best matrix-multiply rate this machine shows. A lower bound must never exceed the
  truth, so the rate is measured as the trainer will compute: with torch, on its device
  (CUDA where there is one), in its precision (bf16 where `TrainConfig.precision` and the
  hardware give bf16 autocast) and with its CPU threads; and it is the best of
  MATMUL_SAMPLES timings, since one sample taken while other work holds the CPU is too slow
  (one such sample once said "at least 1 h 11 min" for an epoch that took 2.6 min).
  `MatmulRate` keeps that rate and measures again when it is older than RATE_MAX_AGE
  seconds, keeping the best seen (the machine has shown it can go that fast). Real training
  is slower; the result says which kind of figure it is.
- Parameters are counted from the model files' headers (safetensors, or GGUF), never by
  loading the weights: a tied embedding is stored once, so the count equals the loaded
  model's `sum(p.numel() for p in model.parameters())`.
- The app caches token and parameter counts itself; `epoch_time` takes the parameter count
  and the matrix-multiply rate as functions, called only when no run measured the speed
  (the rate by default from one `MatmulRate` per process). `import training.estimate`
  stays light: transformers, gguf and torch are imported by the functions that use them.
"""

from __future__ import annotations

import math
import statistics
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from training.config import TrainConfig
from curation.errors import ModelUnavailable
from training.models import DEFAULT_BASE_MODEL, packaged_gguf
from training.launcher import Run

FLOPS_PER_PARAMETER_TOKEN = 4
MATMUL_SAMPLES = 5
RATE_MAX_AGE = 300.0  # seconds before the matrix-multiply rate is measured again
SPEED_SETTINGS = ("batch_size", "max_seq_length", "r", "precision")


@dataclass(frozen=True)
class MeasuredSpeed:
    """The training speed an earlier run measured: its median tokens per second over `steps`
    steps."""

    tokens_per_second: float
    steps: int
    run: Run


@dataclass(frozen=True)
class EpochTime:
    """Seconds for one epoch over `tokens`: measured (`speed` says from which run, `differ`
    which of its SPEED_SETTINGS differ from the new ones), or else a FLOPs lower bound
    (`parameters` at `flops_per_second`)."""

    seconds: float
    tokens: int
    speed: MeasuredSpeed | None = None
    differ: tuple[str, ...] = ()
    parameters: int | None = None
    flops_per_second: float | None = None

    @property
    def measured(self) -> bool:
        return self.speed is not None


# --- tokens ---------------------------------------------------------------------------------

def tokenizer_source(base_model: str, cache_dir: Path) -> tuple[str, dict[str, Any]]:
    """(path or name, keyword arguments) to load the base model's tokenizer from without its
    weights: the cached copy of the default model, its GGUF file before the first conversion,
    or the name."""
    if base_model == DEFAULT_BASE_MODEL:
        cached = Path(cache_dir) / DEFAULT_BASE_MODEL
        if (cached / "tokenizer_config.json").is_file():
            return str(cached), {}
        gguf = packaged_gguf()
        return str(gguf.parent), {"gguf_file": gguf.name}
    return base_model, {"local_files_only": Path(base_model).is_dir()}


def token_lengths(base_model: str, conversations: Sequence[list[dict[str, str]]],
                  cache_dir: Path) -> list[int]:
    """Tokens per conversation, rendered with the base model's chat template as the trainer
    renders it, before any cut."""
    from transformers import AutoTokenizer

    source, kwargs = tokenizer_source(base_model, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    from training.data import render_chat

    texts = [render_chat(tokenizer, messages, generation_prompt=False)
             for messages in conversations]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


# --- speed ----------------------------------------------------------------------------------

def measured_speed(runs: Sequence[Run], base_model: str) -> MeasuredSpeed | None:
    """The speed of the first of `runs` (newest first, as `list_runs` gives them) of
    `base_model` with measured steps; its first step (warm-up) is left out when there are
    others."""
    for run in runs:
        if run.manifest.base_model != base_model or not run.metrics:
            continue
        rows = run.metrics[1:] or run.metrics
        rates = [m["tokens_per_second"] for m in rows if m.get("tokens_per_second")]
        if rates:
            return MeasuredSpeed(statistics.median(rates), len(rates), run)
    return None


def model_weights(base_model: str, cache_dir: Path) -> Path | None:
    """The base model's weights on this machine (a folder, or the packaged GGUF file of the
    default model before its first conversion), or None when they are not local."""
    path = Path(base_model)
    if base_model == DEFAULT_BASE_MODEL:
        path = Path(cache_dir) / DEFAULT_BASE_MODEL
        if not (path / "model.safetensors").is_file():
            try:
                path = packaged_gguf()
            except ModelUnavailable:
                return None
    return path if path.exists() else None


def count_parameters(path: Path) -> int | None:
    """Parameters of a local model from its files' headers (no weights read): a folder of
    safetensors files, or a GGUF file; None when there are none."""
    path = Path(path)
    if path.suffix == ".gguf":
        from gguf import GGUFReader

        return sum(math.prod(int(x) for x in t.shape) for t in GGUFReader(path).tensors)
    total = 0
    for file in sorted(path.glob("*.safetensors")) if path.is_dir() else []:
        with open(file, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = orjson.loads(f.read(size))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total or None


def parameter_count(base_model: str, cache_dir: Path) -> int | None:
    """Parameters of the base model where its weights are on this machine, else None."""
    weights = model_weights(base_model, cache_dir)
    return count_parameters(weights) if weights else None


def matmul_rates(precision: str = "auto", samples: int = MATMUL_SAMPLES) -> list[float]:
    """`samples` timings of one square matrix product (FLOP/s each) as the trainer would
    compute it: on its device, in its precision, with its CPU threads."""
    import torch

    from training.trainer import cpu_threads, use_bf16

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if use_bf16(precision, device) else torch.float32
    size, repeats = (4096, 10) if device == "cuda" else (1024, 1)
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(cpu_threads())
    try:
        a = torch.randn(size, size, device=device).to(dtype)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        a @ a  # warm-up
        sync()
        rates = []
        for _ in range(samples):
            started = time.perf_counter()
            for _ in range(repeats):
                a @ a
            sync()
            rates.append(repeats * 2 * size ** 3 / (time.perf_counter() - started))
        return rates
    finally:
        torch.set_num_threads(threads)


def matmul_flops(precision: str = "auto") -> float:
    """This machine's matrix-multiply rate (FLOP/s) for training at `precision`: the best of
    MATMUL_SAMPLES timings, measured now (a fraction of a second)."""
    return max(matmul_rates(precision))


class MatmulRate:
    """The best matrix-multiply rate this machine has shown, per precision; measured again
    (best of `samples`) when the last measurement is older than `max_age` seconds.
    Thread-safe: app sessions share one."""

    def __init__(self, *, max_age: float = RATE_MAX_AGE, samples: int = MATMUL_SAMPLES,
                 measure: Callable[[str, int], list[float]] = matmul_rates,
                 clock: Callable[[], float] = time.monotonic):
        self.max_age, self.samples, self._measure, self._clock = max_age, samples, measure, \
            clock
        self._best: dict[str, tuple[float, float]] = {}  # precision -> (rate, measured at)
        self._lock = threading.Lock()

    def __call__(self, precision: str = "auto") -> float:
        with self._lock:
            rate, at = self._best.get(precision, (0.0, -math.inf))
            if self._clock() - at > self.max_age:
                rate = max(rate, *self._measure(precision, self.samples))
                self._best[precision] = (rate, self._clock())
            return rate


MACHINE_RATE = MatmulRate()


def epoch_time(config: TrainConfig, tokens: int, runs: Sequence[Run], cache_dir: Path, *,
               parameters: Callable[[str, Path], int | None] = parameter_count,
               flops_per_second: Callable[[str], float] = MACHINE_RATE) -> EpochTime | None:
    """The time one epoch over `tokens` takes at `config`: measured by the latest earlier run
    of its base model, else a FLOPs lower bound, else None (no run, and the weights are not
    local to size the model). `parameters` and `flops_per_second` (given the precision) are
    called only for the lower bound; the app passes a cached parameter count."""
    speed = measured_speed(runs, config.base_model)
    if speed:
        used = speed.run.manifest.config
        differ = tuple(k for k in SPEED_SETTINGS
                       if used.get(k) is not None and used.get(k) != getattr(config, k))
        return EpochTime(tokens / speed.tokens_per_second, tokens, speed=speed, differ=differ)
    params = parameters(config.base_model, cache_dir)
    if not params:
        return None
    rate = flops_per_second(config.precision)
    return EpochTime(FLOPS_PER_PARAMETER_TOKEN * params * tokens / rate, tokens,
                     parameters=params, flops_per_second=rate)
