"""Pairwise preference accuracy: how often a model prefers the chosen answer of a held-out pair.

For each eval-split preference pair, a model "prefers" the chosen answer when it assigns it a
higher log-likelihood than the rejected one, given the prompt. The share of pairs where it
does is the model's pairwise accuracy; comparing the tuned model's with the base model's (and
with the SFT run's a DPO run started from) is the win rate DPO is after, judged by the
held-out pairs rather than by a judge model.

Design decisions:
- The log-likelihood of an answer is the SUM of its tokens' log-probabilities (the
  assistant turns after the prompt, end-of-turn token included), not the mean: the sum is
  the sequence's probability, the quantity DPO's implicit reward is built on
  (`training.dpo`), and tokens both answers share at the same place cancel out of the
  comparison instead of diluting it. A mean would favour the longer answer whenever the
  extra tokens are easy ones. The margin `sum(chosen) - sum(rejected)` is kept per pair.
- Strictly higher counts as preferring: a tie (equal sums) counts as not preferring, so a
  model that cannot tell the answers apart scores 0 on those pairs, never a free half.
- The same encoding as training (`training.dpo.encode_pairs`, with the run's
  `max_seq_length`): pairs skipped there (a side cut to nothing, or both sides equal after
  the cut) are skipped here too and counted.
- The systems are the base model, the SFT run's model when a DPO run started from one (its
  adapter merged), and the run's tuned model (its adapter on top). One model is loaded and
  changed in place, so the memory is that of one model.
- Computed in the run's precision (bf16 autocast where it trained so), like training: the
  reference and the tuned model are scored the same way, so the comparison is fair; a pair
  whose margin is within bf16 rounding can flip either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from curation.errors import InvalidValue
from curation.preference import PreferencePair

METRIC = "pairwise_accuracy"
AGGREGATE = "sum"

Progress = Callable[[str, int, int], None]


def pairwise_accuracy(margins: Sequence[float]) -> float | None:
    """The share of margins (chosen minus rejected log-likelihood) strictly above 0."""
    return sum(1 for m in margins if m > 0) / len(margins) if margins else None


def pair_margins(model, tokenizer, pairs, *, batch_size: int = 8, bf16: bool = False,
                 device: str = "cpu", on_batch: Callable[[int], None] | None = None
                 ) -> list[float]:
    """`sum log p(chosen) - sum log p(rejected)` under `model` for each `EncodedPair`."""
    import torch

    from training.dpo import pair_batch, pair_logps

    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    margins: list[float] = [0.0] * len(pairs)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)
    model.eval()
    with torch.no_grad(), autocast:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = pair_batch(model, [pairs[i] for i in chunk], tokenizer.pad_token_id,
                               device)
            logps = pair_logps(model, batch).tolist()
            n = len(chunk)
            for k, i in enumerate(chunk):
                margins[i] = logps[k] - logps[n + k]
            if on_batch:
                on_batch(n)
    return margins


def evaluate_preferences(run_dir: str | os.PathLike, pairs: Sequence[PreferencePair], *,
                         batch_size: int = 8, device: str | None = None,
                         progress: Progress | None = None) -> dict[str, Any]:
    """Pairwise accuracy of the base model, the SFT run's model (when the run started from
    one) and the run's tuned model on `pairs` (the eval split's); a JSON-ready dict."""
    import torch
    from peft import PeftModel

    from training.config import TrainConfig
    from training.dpo import encode_pairs
    from training.models import load_model
    from training.run_folder import ADAPTER, MANIFEST, RunManifest
    from training.trainer import _eager_attention, use_bf16

    run_dir = Path(run_dir).resolve()
    manifest = RunManifest.read(run_dir / MANIFEST)
    config = TrainConfig.from_dict(manifest.config)
    if not (run_dir / ADAPTER / "adapter_config.json").is_file():
        raise InvalidValue(f"run {manifest.run_id or run_dir.name} has no adapter yet")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = use_bf16(config.precision, device)
    cache = Path(os.environ.get("CURATE_MODEL_CACHE") or manifest.model_cache or
                 run_dir.parent.parent / "models")
    model, tokenizer = load_model(manifest.base_model, cache, device=device)
    if bf16:
        model.to(torch.bfloat16)
    if device == "cpu":
        _eager_attention(model)
    encoded, report = encode_pairs(tokenizer, list(pairs), config.max_seq_length)
    if not encoded:
        raise InvalidValue(f"no eval preference pair to score ({report})")
    sft_adapter = (manifest.extra or {}).get("sft_adapter")
    systems = ["base", *(["sft"] if sft_adapter else []), "tuned"]
    total, done = len(encoded) * len(systems), 0
    margins: dict[str, list[float]] = {}
    for system in systems:
        def tick(n: int, system=system) -> None:
            nonlocal done
            done += n
            if progress:
                progress(f"preference_{system}", done, total)

        tick(0)
        if system == "sft":
            model = PeftModel.from_pretrained(model, sft_adapter).merge_and_unload()
        elif system == "tuned":
            model = PeftModel.from_pretrained(model, str(run_dir / ADAPTER))
        margins[system] = pair_margins(model, tokenizer, encoded, batch_size=batch_size,
                                       bf16=bf16, device=device, on_batch=tick)
    return preference_result(margins, [p.example_id for p in encoded], report)


def preference_result(margins: dict[str, list[float]], ids: Sequence[int],
                      report: dict[str, Any]) -> dict[str, Any]:
    """The `preference` object of eval.json from per-system margins."""
    reference = "sft" if "sft" in margins else "base"
    scores = {s: {"accuracy": pairwise_accuracy(m),
                  "mean_margin": round(sum(m) / len(m), 4) if m else None}
              for s, m in margins.items()}
    gain = scores["tuned"]["accuracy"] - scores[reference]["accuracy"]
    return {"metric": METRIC, "aggregate": AGGREGATE, "pairs": len(ids),
            "skipped": report.get("skipped", 0), "systems": scores, "reference": reference,
            "gain_points": round(100 * gain, 1),
            "examples": [{"id": i, **{s: round(m[k], 4) for s, m in margins.items()}}
                         for k, i in enumerate(ids)]}


__all__ = ["AGGREGATE", "METRIC", "evaluate_preferences", "pair_margins", "pairwise_accuracy",
           "preference_result"]
