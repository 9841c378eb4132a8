"""Semantic duplicates on 100,000 pre-computed embeddings: our exact top-k against semhash.

    .venv/bin/python bench/semantic_dupes.py [--rows 100000] [--cache FILE.npy]
                                             [--replica-cosine 0.8] [--seed 77]

What it does:
- Real vectors: the Banking77 train set with the planted problems of
  `quality_banking77.plant` (10,403 prompts, 200 of them a one-edit near copy of another)
  plus the 3,080 Banking77 test prompts, embedded once with `curation.embeddings.encode`
  (packaged all-MiniLM-L6-v2, normalised; `--cache` keeps them in a .npy between runs).
- Synthetic vectors up to `--rows`: each a replica of a random real vector, turned away from
  it to cosine `--replica-cosine` (0.8 by default: a paraphrase-like neighbour, not a
  duplicate; two replicas of one source are at about 0.64). So the 100,000 vectors keep
  Banking77's clustered shape without adding duplicate pairs at 0.95; the script counts the
  pairs at >= 0.95 that involve a synthetic vector to show it.
- Same vectors, same run, same threshold (cosine 0.95), alternating which goes first:
  * ours: `curation.checks.duplicates.semantic_pairs(vectors)` (exact top-10 neighbours by
    blocked matrix products in torch) then `group_findings` into duplicate groups, as the
    `semantic_duplicates` check does;
  * semhash: `SemHash.from_embeddings(vectors, records, model=encoder)` (builds its default
    usearch HNSW index) then `self_deduplicate(threshold=0.95)`. Records are the row numbers
    (`{"id": "17"}`), so semhash's exact-text grouping merges nothing and both sides see the
    same 100,000 vectors; the encoder object only returns the pre-computed vectors (semhash
    does not call it for self-deduplication).
- Recall of each on the 200 planted near-duplicate pairs: the pair is found when both
  prompts end in one duplicate group (ours: a `group_findings` group; semhash: a kept record
  and the records filtered as its duplicates). The ceiling is the share of planted pairs
  whose true cosine is >= 0.95 (a typo can move a short prompt's MiniLM embedding far).
- Prints each side's time (best of `--repeat`), the load average, recall, and last the time
  ratio ours / semhash.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_banking77 import ROOT, load_csv, plant  # noqa: E402

sys.path.insert(0, str(ROOT))
THRESHOLD = 0.95


def load() -> float:
    return round(os.getloadavg()[0], 2)


def real_vectors(planted, test, cache: Path | None) -> np.ndarray:
    texts = [r.text for r in planted.rows] + [t for t, _ in test]
    if cache and cache.exists():
        vectors = np.load(cache)
        if len(vectors) == len(texts):
            print(f"real embeddings from {cache}")
            return vectors
    from curation.embeddings import encode

    t0 = time.perf_counter()
    vectors = encode(texts)
    print(f"embedded {len(texts):,} real prompts in {time.perf_counter() - t0:.0f} s "
          f"(load {load()})")
    if cache:
        np.save(cache, vectors)
    return vectors


def synthetic(real: np.ndarray, rows: int, cosine: float, seed: int) -> np.ndarray:
    """Replicas of random real vectors at cosine ~`cosine` from their source, normalised."""
    rng = np.random.default_rng(seed)
    n = rows - len(real)
    src = real[rng.integers(0, len(real), n)]
    noise = rng.standard_normal((n, real.shape[1])).astype(np.float32)
    noise -= (noise * src).sum(1, keepdims=True) * src  # orthogonal to the source
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    out = cosine * src + np.sqrt(1 - cosine ** 2) * noise
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


class Precomputed:
    """An encoder for semhash that returns the pre-computed vectors of row-number records."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors

    def encode(self, inputs, **kwargs) -> np.ndarray:
        return self.vectors[[int(i) for i in inputs]]


def run_ours(vectors: np.ndarray):
    from curation.checks._contract import ExampleTable
    from curation.checks.duplicates import group_findings, semantic_pairs

    n = len(vectors)
    t0 = time.perf_counter()
    pairs = semantic_pairs(vectors, threshold=THRESHOLD)
    t_pairs = time.perf_counter() - t0
    table = ExampleTable(ids=list(range(n)), versions=[1] * n,
                         messages=[[{"role": "user", "content": "x"}]] * n, labels=[None] * n,
                         splits=["train"] * n, statuses=["pending"] * n,
                         content_hashes=[""] * n)
    findings = group_findings(table, pairs, "semantic")
    seconds = time.perf_counter() - t0
    group_of = {f.example_id: tuple(f.details["group"]) for f in findings if f.is_issue}
    return seconds, t_pairs, pairs, group_of


def run_semhash(vectors: np.ndarray):
    from semhash import SemHash

    records = [{"id": str(i)} for i in range(len(vectors))]
    t0 = time.perf_counter()
    index = SemHash.from_embeddings(vectors, records, model=Precomputed(vectors),
                                    columns=["id"])
    t_index = time.perf_counter() - t0
    result = index.self_deduplicate(threshold=THRESHOLD)
    seconds = time.perf_counter() - t0
    group_of: dict[int, int] = {}
    for dup in result.filtered:
        group_of[int(dup.record["id"])] = int(dup.duplicate_of["id"])
    for rec in result.selected:
        group_of.setdefault(int(rec["id"]), int(rec["id"]))
    n_pairs = len(result.filtered)
    return seconds, t_index, group_of, n_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--cache", type=Path, help="load/save the real embeddings here (.npy)")
    parser.add_argument("--replica-cosine", type=float, default=0.8)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=77)
    args = parser.parse_args()

    import torch

    from curation.embeddings import cpu_has_fast_bf16

    planted = plant(args.seed)
    test = load_csv("test.csv")
    real = real_vectors(planted, test, args.cache)
    vectors = np.concatenate([real, synthetic(real, args.rows, args.replica_cosine,
                                              args.seed)])
    n_real = len(real)
    row = {r.id: i for i, r in enumerate(planted.rows)}
    near = [(row[a], row[b]) for a, b in planted.near_pairs]
    true_cos = np.array([float(vectors[a] @ vectors[b]) for a, b in near])
    ceiling = float((true_cos >= THRESHOLD).mean())
    print(f"{len(vectors):,} vectors ({n_real:,} real, {len(vectors) - n_real:,} synthetic at "
          f"cosine {args.replica_cosine} of a real one), dim {vectors.shape[1]}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, fast bf16: "
          f"{cpu_has_fast_bf16()} (fp32 matmuls)")
    print(f"planted near pairs: {len(near)}; with true cosine >= {THRESHOLD}: "
          f"{int((true_cos >= THRESHOLD).sum())} (ceiling recall {ceiling:.3f})")

    best = {}
    outputs = {}
    for rep in range(args.repeat):
        order = ("ours", "semhash") if rep % 2 == 0 else ("semhash", "ours")
        for side in order:
            gc.collect()
            before = load()
            c0 = time.process_time()
            out = run_ours(vectors) if side == "ours" else run_semhash(vectors)
            cpu = time.process_time() - c0
            seconds = out[0]
            print(f"  {side:8s} run {rep + 1}: {seconds:7.1f} s wall, {cpu:7.1f} s CPU "
                  f"(load before {before}, after {load()})", flush=True)
            if side not in best or seconds < best[side][0]:
                best[side] = (seconds, cpu, before, load())
            outputs[side] = out

    _, t_pairs, pairs, ours_group = outputs["ours"]
    _, t_index, sem_group, sem_pairs = outputs["semhash"]
    ours_direct = sum((min(a, b), max(a, b)) in pairs for a, b in near) / len(near)
    ours_found = sum(a in ours_group and ours_group.get(a) == ours_group.get(b)
                     for a, b in near) / len(near)
    sem_found = sum(sem_group[a] == sem_group[b] for a, b in near) / len(near)
    synthetic_pairs = sum(1 for a, b in pairs if a >= n_real or b >= n_real)
    print()
    print(f"ours:    {best['ours'][0]:.1f} s ({t_pairs:.1f} s of it semantic_pairs), "
          f"{len(pairs):,} pairs, {len(set(ours_group.values())):,} groups; recall on planted "
          f"near pairs {ours_found:.3f} in groups ({ours_direct:.3f} as direct pairs); pairs "
          f"involving a synthetic vector: {synthetic_pairs}")
    print(f"semhash: {best['semhash'][0]:.1f} s ({t_index:.1f} s of it building the index), "
          f"{sem_pairs:,} records filtered as duplicates; recall on planted near pairs "
          f"{sem_found:.3f}")
    print(f"ceiling (planted pairs at true cosine >= {THRESHOLD}): {ceiling:.3f}")
    print(f"load average: ours run {best['ours'][2]} -> {best['ours'][3]}, semhash run "
          f"{best['semhash'][2]} -> {best['semhash'][3]}; now {os.getloadavg()}")
    print(f"time ratio ours / semhash: {best['ours'][0] / best['semhash'][0]:.2f} "
          f"(CPU {best['ours'][1] / best['semhash'][1]:.2f}); recall ours {ours_found:.3f} vs "
          f"semhash {sem_found:.3f}")


if __name__ == "__main__":
    main()
