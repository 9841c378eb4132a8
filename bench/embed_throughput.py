"""Embedding throughput: our pipeline beside a bare SentenceTransformer.encode, same texts.

    .venv/bin/python bench/embed_throughput.py [--rows 10000] [--repeat 2]
                                               [--batch-sizes 16,32,64,128,256]

What it does:
- Texts: the first `--rows` (10,000) Banking77 training queries
  (../shared/datasets/banking77/train.csv), in file order.
- Model: the packaged all-MiniLM-L6-v2 (`curation.embeddings.packaged_model_path()`), on the
  CPU; both sides use torch's default thread count. This CPU has no AMX or AVX-512 bf16, so
  our path's bf16 autocast is off (`cpu_has_fast_bf16()` is printed) and both run fp32.
- Baseline, in its best configuration: `SentenceTransformer(path).encode(texts,
  batch_size=B, normalize_embeddings=True)`, all texts in one call (so it sorts all of them
  by length once). B is picked first: each of `--batch-sizes` encodes the same 1,000-text
  sample twice (alternating), and the batch size with the best time is kept.
- Ours: `curation.embeddings.embed_texts(store, texts)` into a fresh, empty store (hashing
  every text, looking the hashes up, `encode` in chunks of 1,024 with progress, and
  inserting the 10,000 vectors), the store created before the clock starts.
- Both models are loaded and warmed up (one batch) before timing. The two are timed
  alternately, `--repeat` times each, and the best time of each is kept (the machine is
  shared; the process CPU time and the load average are printed beside every run). The two
  outputs are compared (largest cosine distance between the vectors of the same text).
- Prints texts per second of each and last the ratio ours / baseline (target >= 0.9).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_banking77 import load_csv  # noqa: E402

TARGET = 0.9


def load() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch-sizes", default="16,32,64,128,256")
    parser.add_argument("--sample", type=int, default=1000)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from curation import Store
    from curation.embeddings import (cpu_has_fast_bf16, embed_texts, load_model,
                                     packaged_model_path)

    texts = [t for t, _ in load_csv()][:args.rows]
    path = str(packaged_model_path())
    print(f"{len(texts):,} texts (mean {np.mean([len(t) for t in texts]):.0f} chars); model "
          f"{path}; torch {torch.__version__}, {torch.get_num_threads()} threads; fast bf16 "
          f"(AMX / AVX-512 bf16): {cpu_has_fast_bf16()} -> our bf16 autocast is "
          f"{'on' if cpu_has_fast_bf16() else 'off'}; load {os.getloadavg()}")

    bare = SentenceTransformer(path, device="cpu", local_files_only=True)
    ours_model = load_model(None)
    bare.encode(texts[:64], batch_size=64)
    ours_model.encode(texts[:64], batch_size=64)

    # 1. the baseline's best batch size, on a sample
    sample = random.Random(0).sample(texts, min(args.sample, len(texts)))
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    timings: dict[int, float] = {}
    for rep in range(2):
        for bs in (sizes if rep == 0 else sizes[::-1]):
            t0 = time.perf_counter()
            bare.encode(sample, batch_size=bs, normalize_embeddings=True)
            seconds = time.perf_counter() - t0
            timings[bs] = min(timings.get(bs, seconds), seconds)
            print(f"  batch size {bs:4d}: {len(sample) / seconds:7.1f} texts/s (load {load()})",
                  flush=True)
    best_bs = min(timings, key=timings.get)
    print(f"baseline batch size: {best_bs}")

    # 2. the full texts, alternating
    folder = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    best: dict[str, tuple] = {}
    outputs = {}
    try:
        for rep in range(args.repeat):
            order = ("ours", "baseline") if rep % 2 == 0 else ("baseline", "ours")
            for side in order:
                if side == "ours":
                    store = Store(folder / f"fresh-{rep}.duckdb")
                before, c0, t0 = load(), time.process_time(), time.perf_counter()
                if side == "ours":
                    out = embed_texts(store, texts)
                else:
                    out = bare.encode(texts, batch_size=best_bs, normalize_embeddings=True)
                seconds = time.perf_counter() - t0
                cpu = time.process_time() - c0
                if side == "ours":
                    stored = store.cursor().execute(
                        "SELECT count(*) FROM embeddings").fetchone()[0]
                    store.close()
                    assert stored == len(set(texts)), stored
                outputs[side] = out
                rate = len(texts) / seconds
                print(f"  {side:8s} run {rep + 1}: {seconds:6.1f} s, {rate:6.1f} texts/s, "
                      f"{cpu:6.1f} s CPU; load {before} -> {load()}", flush=True)
                if side not in best or rate > best[side][0]:
                    best[side] = (rate, seconds, cpu, before, load())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    worst = float(1 - (outputs["ours"] * outputs["baseline"]).sum(axis=1).min())
    o, b = best["ours"], best["baseline"]
    print()
    print(f"largest cosine distance between our and the bare vectors of a text: {worst:.2e}")
    print(f"ours (embed_texts into a fresh store): {o[0]:.1f} texts/s ({o[1]:.1f} s, CPU "
          f"{o[2]:.1f} s, load {o[3]} -> {o[4]})")
    print(f"bare encode, batch size {best_bs}: {b[0]:.1f} texts/s ({b[1]:.1f} s, CPU "
          f"{b[2]:.1f} s, load {b[3]} -> {b[4]})")
    ratio = o[0] / b[0]
    print(f"throughput ratio ours / bare: {ratio:.2f} (target >= {TARGET}: "
          f"{'MET' if ratio >= TARGET else 'MISSED'}); CPU-time ratio bare / ours: "
          f"{b[2] / o[2]:.2f}")


if __name__ == "__main__":
    main()
