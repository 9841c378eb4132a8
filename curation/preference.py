"""Preference data: examples with two answers to one prompt, for DPO-style training.

A preference pair is a prompt (the turns up to the answer), the chosen answer and the
rejected one. Training (`training/dpo.py`) reads pairs through this type only, so the way the
store keeps them can change without touching the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a chosen and a rejected continuation (each a list of assistant turns)."""

    example_id: int
    prompt: tuple[Message, ...]
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]
    split: str = "train"
