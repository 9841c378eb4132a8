"""DPO step speed: a pair's shared prefix computed once (`pair_logps`) beside the two sides apart.

    OMP_NUM_THREADS=2 .venv/bin/python bench/dpo_step_speed.py [--batches 6] [--repeat 2]

What it does:
- Builds the GSM8K preference pairs of bench/dpo_gsm8k.py (same filter, seed and
  corruptions; its train pairs), encodes them with the packaged SmolLM2's chat template
  and plans length-bucketed batches of 8 pairs as a DPO run does (`plan_batches`).
- Wraps the model as training does (bf16 weights under bf16 autocast where the CPU has
  AVX-512-bf16, eager attention, a LoRA adapter r 16 on all linear layers, the adapter's B
  weights made non-zero so the tuned and the reference models differ) and times, for the
  same `--batches` batches, one DPO step's model work: the reference's forward pass
  (adapter off, no gradient) and the tuned model's forward and backward pass.
- **apart** (the baseline, as TRL and Curate's first version computed it): each pair is two
  rows, chosen and rejected, each with the whole prompt (`collate_pairs`,
  `sequence_logps`), 2 x 8 rows padded to the longest.
- **packed** (ours, `pair_logps`): one row per pair holding the shared prefix once, then
  the chosen rest, then the rejected rest, under a 4-D attention mask.
- The two alternate `--repeat` times after one untimed warm-up batch each; the best time of
  each is kept. Printed: seconds per step, the tokens each side runs through the model per
  step (padding included), and the ratio apart / packed (how many times faster ours is).

The data set is not part of Curate; without ../shared/datasets/gsm8k the script stops with
a message saying where it expects it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6, help="batches of 8 pairs timed")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--train", type=int, default=480, help="pairs to draw batches from")
    args = parser.parse_args()

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from peft import LoraConfig, get_peft_model

    from dpo_gsm8k import DATA, build_pairs
    from training.config import TrainConfig
    from training.data import plan_batches
    from training.dpo import collate_pairs, encode_pairs, pack_pairs, pair_batch, \
        pair_logps, sequence_logps
    from training.models import load_model
    from training.trainer import _eager_attention, cpu_threads, use_bf16

    if not DATA.is_file():
        raise SystemExit(f"GSM8K not found at {DATA} (../shared/datasets/gsm8k beside the "
                         "checkout)")
    torch.set_num_threads(cpu_threads())
    cache = Path(os.environ.get("CURATE_MODEL_CACHE") or Path.home() / ".cache" / "curate")
    model, tokenizer = load_model(None, cache)
    bf16 = use_bf16("auto", "cpu")
    if bf16:
        model.to(torch.bfloat16)
    _eager_attention(model)
    config = TrainConfig()
    model = get_peft_model(model, LoraConfig(r=config.r, lora_alpha=config.alpha,
                                             target_modules=config.target_modules_list(),
                                             task_type="CAUSAL_LM"))
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.01)
    pairs, _ = build_pairs(args.train, 0, 380, 0)
    encoded, _ = encode_pairs(tokenizer, pairs, 192)
    batches = plan_batches([p.length for p in encoded], 8, 0, 0)[:args.batches + 1]
    pad = tokenizer.pad_token_id
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def logps(side: str, chunk):
        if side == "apart":
            return sequence_logps(model, collate_pairs(chunk, pad))
        return pair_logps(model, pair_batch(model, chunk, pad, "cpu"))

    def tokens(side: str, chunk) -> int:
        if side == "apart":
            return collate_pairs(chunk, pad)["input_ids"].numel()
        return pack_pairs(chunk, pad)["input_ids"].numel()

    def run(side: str) -> float:
        started = None
        for k, batch in enumerate(batches):
            if k == 1:  # the first batch warms up
                started = time.perf_counter()
            chunk = [encoded[i] for i in batch]
            with autocast:
                with torch.no_grad(), model.disable_adapter():
                    logps(side, chunk)
                logps(side, chunk).sum().backward()
            model.zero_grad(set_to_none=True)
        return (time.perf_counter() - started) / (len(batches) - 1)

    best = {"apart": float("inf"), "packed": float("inf")}
    for _ in range(args.repeat):
        for side in best:
            best[side] = min(best[side], run(side))
    for side, seconds in best.items():
        mean_tokens = sum(tokens(side, [encoded[i] for i in b]) for b in batches[1:]) / \
            (len(batches) - 1)
        print(f"{side:7s} {seconds:6.2f} s per step ({mean_tokens:.0f} tokens through the "
              f"model per pass, {'bf16' if bf16 else 'fp32'}, {torch.get_num_threads()} "
              "threads)")
    print(f"ratio apart / packed: {best['apart'] / best['packed']:.2f}x faster")


if __name__ == "__main__":
    main()
