"""Examples and figures as text, written one way for the checks, the CLI and the pages.

The checks compare prompts as the user turns joined by one newline (what the embeddings,
MinHash and the exact-duplicate hash see); pages show the same turns a blank line apart.
Durations read as people say them ("4 min 05 s", "1 h 02 min"), the same in every place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from curation.messages import message_text


def turns_text(messages: Sequence[dict], role: str = "user", sep: str = "\n") -> str:
    """The texts of every turn of `role`, in order, joined by `sep` (text parts joined by a
    newline; an assistant turn that only calls tools adds "")."""
    return sep.join(message_text(m) for m in messages if m["role"] == role)


def first_turn(messages: Sequence[dict], role: str) -> str:
    """The content of the first turn of `role` ("" if there is none)."""
    return next((message_text(m) for m in messages if m["role"] == role), "")


def duration(seconds: float | None) -> str:
    """`seconds` as "42 s", "4 min 05 s" or "1 h 02 min"; "—" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"
