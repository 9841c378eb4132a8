"""`TrainConfig` and `EvalConfig`: every setting of a LoRA fine-tune and of its evaluation,
explained, typed and validated.

Design decisions:
- One dataclass serves the library, the CLI (`curate train --help`, `curate eval --help` show
  each field's help text) and the app (the same text as widget tooltips).
  `help_text(name)`/`default(name)` read them back (`config=EvalConfig` for evaluation's).
- Defaults are chosen for LoRA on a small instruct model, not copied from the libraries; where
  they differ from PEFT/transformers the help text says so and why.
- `__post_init__` rejects a bad value with `InvalidValue` naming the field, so a typo in the
  CLI or a form never reaches the trainer process.
- `to_dict`/`from_dict` are the run manifest's `config` object (for `EvalConfig`: the
  `settings` of an evaluation request); `from_dict` refuses unknown keys (a manifest from a
  newer Curate says so instead of being half-read).
- `target_modules` is PEFT's: a list of module names or "all-linear" (PEFT also takes a
  single string as a regular expression; we do not, so a name is never half-matched). Older
  manifests wrote names comma-separated in one string; that still reads, as a list.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from curation.errors import InvalidValue

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
Method = Literal["sft", "dpo"]
METHODS: tuple[str, ...] = get_args(Method)
ALL_LINEAR = "all-linear"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    """The settings of one LoRA fine-tune of a chat model on a snapshot's train examples
    (SFT) or on its preference pairs (DPO)."""

    base_model: str = field(default="SmolLM2-135M-Instruct", metadata=_help(
        "Model to fine-tune: SmolLM2-135M-Instruct (packaged, offline), a local Hugging Face "
        "folder, or a hub id where you are online. It must have a chat template."))
    method: Method = field(default="sft", metadata=_help(
        "'sft': supervised fine-tuning on the accepted train conversations (loss on the "
        "assistant's turns). 'dpo': Direct Preference Optimization on the snapshot's "
        "preference pairs (chosen over rejected), against the frozen starting model as "
        "reference."))
    beta: float = field(default=0.1, metadata=_help(
        "DPO only: how far the tuned model may move from the reference; the loss is "
        "-log sigmoid(beta * margin of log-probability ratios). 0.1 is TRL's and the DPO "
        "paper's default; higher keeps the model closer to the reference."))
    sft_weight: float = field(default=0.0, metadata=_help(
        "DPO only: weight of an SFT term added to the DPO loss: the mean negative "
        "log-likelihood of the chosen answers' tokens (TRL's loss_type ['sigmoid', 'sft'] "
        "with this loss weight; RPO, Pang et al. 2024). It keeps the chosen answers likely "
        "while DPO widens the gap to the rejected ones. 0 (default): plain DPO."))
    sft_run: str | None = field(default=None, metadata=_help(
        "DPO only: a completed SFT run (its id) to start from: its LoRA adapter is merged "
        "into the base model, which is then both the starting point and the reference. "
        "Default: start from the base model."))
    r: int = field(default=16, metadata=_help(
        "LoRA rank: size of the low-rank update per adapted matrix. Higher learns more but "
        "trains slower; 8-32 suits most tasks (PEFT's default is 8)."))
    alpha: int = field(default=32, metadata=_help(
        "LoRA alpha: the update is scaled by alpha/r. Twice the rank is the usual choice "
        "(PEFT's default is 8)."))
    dropout: float = field(default=0.0, metadata=_help(
        "Dropout on the LoRA input, in [0, 1). Off by default, as in PEFT: on a CPU drawing "
        "the dropout masks took about a quarter of each training step, and the Banking77 "
        "pilot (bench/pilot_banking77.py) needed none. 0.05-0.1 can help a small set that "
        "is memorised."))
    target_modules: list[str] | Literal["all-linear"] = field(default=ALL_LINEAR, metadata=_help(
        "Which layers get adapters: 'all-linear' (every linear layer except the output head; "
        "better quality than PEFT's attention-only default) or a list of module names such "
        "as ['q_proj', 'v_proj'] (comma-separated in one string is read as that list)."))
    learning_rate: float = field(default=4e-4, metadata=_help(
        "Peak learning rate (AdamW, linear decay after a short warm-up). LoRA adapters train "
        "well around 1e-4..5e-4; 4e-4 suits the default batch of 16 (on the Banking77 pilot, "
        "2e-4 reached 78% accuracy in the same 3 epochs, 4e-4 94%). The transformers default "
        "5e-5 is meant for full fine-tuning and is too low here."))
    epochs: int = field(default=3, metadata=_help(
        "Passes over the train examples. 2-3 for a few hundred examples; more risks "
        "memorising them."))
    max_seq_length: int = field(default=512, metadata=_help(
        "Longest conversation in tokens; longer ones are cut at the end (the report counts "
        "them). Memory and time grow with it."))
    batch_size: int = field(default=16, metadata=_help(
        "Conversations per optimizer step. 16 trained 26% more tokens per second than 8 on a "
        "2-core CPU (transformers' default is 8); lower it if training runs out of memory."))
    warmup_ratio: float = field(default=0.05, metadata=_help(
        "Fraction of the steps over which the learning rate ramps up from near 0, in [0, 0.5]."))
    seed: int = field(default=0, metadata=_help(
        "Seed for adapter initialisation, dropout and the order of batches."))
    precision: Precision = field(default="auto", metadata=_help(
        "'auto': bf16 autocast on a CUDA GPU or a CPU with AMX/AVX-512-bf16, else fp32; "
        "'fp32' always; 'bf16' always (slow on CPUs without bf16 instructions)."))
    checkpoint_every_steps: int = field(default=20, metadata=_help(
        "Save a resumable checkpoint (adapter, optimizer, scheduler, RNG, data position) "
        "every N steps; 0 saves none."))
    keep_checkpoints: int = field(default=2, metadata=_help(
        "How many of the latest checkpoints to keep on disk (at least 1)."))

    def __post_init__(self) -> None:
        _positive_int(self, "r", "epochs", "max_seq_length", "batch_size", "keep_checkpoints")
        _non_negative_int(self, "checkpoint_every_steps", "seed")
        if not isinstance(self.alpha, int) or isinstance(self.alpha, bool) or self.alpha < 1:
            raise InvalidValue(f"alpha must be a positive whole number, not {self.alpha!r}")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise InvalidValue(f"dropout must be in [0, 1), not {self.dropout!r}")
        if not _is_number(self.learning_rate) or not 0 < self.learning_rate <= 1:
            raise InvalidValue(f"learning_rate must be in (0, 1], not {self.learning_rate!r}")
        if not _is_number(self.warmup_ratio) or not 0 <= self.warmup_ratio <= 0.5:
            raise InvalidValue(f"warmup_ratio must be in [0, 0.5], not {self.warmup_ratio!r}")
        if self.precision not in PRECISIONS:
            raise InvalidValue(f"precision must be one of {', '.join(PRECISIONS)}, not "
                               f"{self.precision!r}")
        if not isinstance(self.base_model, str) or not self.base_model.strip():
            raise InvalidValue("base_model must name a model")
        object.__setattr__(self, "target_modules", _target_modules(self.target_modules))
        if self.method not in METHODS:
            raise InvalidValue(f"method must be one of {', '.join(METHODS)}, not "
                               f"{self.method!r}")
        if not _is_number(self.beta) or not 0 < self.beta <= 10:
            raise InvalidValue(f"beta must be in (0, 10], not {self.beta!r}")
        if not _is_number(self.sft_weight) or not 0 <= self.sft_weight <= 10:
            raise InvalidValue(f"sft_weight must be in [0, 10], not {self.sft_weight!r}")
        if self.sft_weight and self.method != "dpo":
            raise InvalidValue("sft_weight (an SFT term in the DPO loss) applies to method "
                               "'dpo' only")
        if self.sft_run is not None:
            if not isinstance(self.sft_run, str) or not self.sft_run.strip():
                raise InvalidValue(f"sft_run must name a run, not {self.sft_run!r}")
            if self.method != "dpo":
                raise InvalidValue("sft_run (a run to start from) applies to method 'dpo' only")
        if self.max_seq_length < 16:
            raise InvalidValue(f"max_seq_length must be at least 16, not {self.max_seq_length}")

    def target_modules_list(self) -> str | list[str]:
        """What PEFT's `LoraConfig(target_modules=...)` takes (a copy)."""
        tm = self.target_modules
        return tm if isinstance(tm, str) else list(tm)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidValue(f"unknown training setting {unknown[0]!r}; known: "
                               f"{', '.join(sorted(known))}")
        return cls(**values)


@dataclass(frozen=True)
class EvalConfig:
    """The settings of one evaluation of a run against the prompt-only baseline
    (`training.eval`); `to_dict` is the `settings` object of its request and result."""

    system_prompt: str | None = field(default=None, metadata=_help(
        "System prompt for all three systems. Default: each example's own (what the "
        "fine-tuned model was trained with); an empty one sends none."))
    shots: int = field(default=3, metadata=_help(
        "Accepted train examples shown to the few-shot baseline, picked round-robin over "
        "labels; 0 makes it a second zero-shot system."))
    max_new_tokens: int = field(default=32, metadata=_help(
        "Longest answer generated per example. For label-like answers the longest label "
        "plus a few tokens is used when that is shorter."))
    margin_points: float = field(default=5.0, metadata=_help(
        "Points (of 100) by which the fine-tuned model must beat the baseline."))
    batch_size: int = field(default=32, metadata=_help(
        "Prompts answered together. 32 was 1.8x faster than 8 on a 2-core CPU; lower it if "
        "evaluation runs out of memory."))
    seed: int = field(default=0, metadata=_help(
        "Seed for picking the shots and for the bootstrap comparison."))

    def __post_init__(self) -> None:
        _non_negative_int(self, "shots", "seed")
        _positive_int(self, "max_new_tokens", "batch_size")
        if not _is_number(self.margin_points) or not math.isfinite(self.margin_points):
            raise InvalidValue(f"margin_points must be a number of points, not "
                               f"{self.margin_points!r}")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise InvalidValue(f"system_prompt must be text or None, not {self.system_prompt!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvalConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidValue(f"unknown evaluation setting {unknown[0]!r}; known: "
                               f"{', '.join(sorted(known))}")
        return cls(**values)


def help_text(name: str, config: type = TrainConfig) -> str:
    """The help text of a TrainConfig (or `config`) field (CLI option help, widget tooltip)."""
    for f in dataclasses.fields(config):
        if f.name == name:
            return f.metadata["help"]
    raise KeyError(name)


def default(name: str, config: type = TrainConfig) -> Any:
    """The default value of a TrainConfig (or `config`) field."""
    return next(f.default for f in dataclasses.fields(config) if f.name == name)


def _target_modules(value: Any) -> str | list[str]:
    """'all-linear' or a list of module names; an older manifest's comma-separated string
    is read as that list."""
    given = value
    if isinstance(value, str):
        if value.strip() == ALL_LINEAR:
            return ALL_LINEAR
        value = value.split(",")
    names = [m.strip() for m in value if isinstance(m, str)] \
        if isinstance(value, (list, tuple)) else []
    if not names or not all(names) or len(names) != len(value):
        raise InvalidValue(f"target_modules must be '{ALL_LINEAR}' or a list of module "
                           f"names, not {given!r}")
    return names


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            label = "r (the LoRA rank)" if name == "r" else name
            raise InvalidValue(f"{label} must be a positive whole number, not {value!r}")


def _non_negative_int(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidValue(f"{name} must be a whole number >= 0, not {value!r}")
