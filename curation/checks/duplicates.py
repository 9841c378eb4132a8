"""Exact, near (lexical) and semantic duplicates, as groups with a suggested keeper; leakage.

Design decisions:
- Exact: equal after normalisation (Unicode NFKC, case folded, punctuation dropped, spaces
  collapsed), over the whole conversation or the prompt (user turns) only.
- Near: MinHash LSH (datasketch) over character shingles proposes candidate pairs at a low
  Jaccard threshold; each candidate is then verified by normalised edit similarity
  (rapidfuzz). MinHash alone misses many single-typo copies of short texts, while edit
  similarity over all pairs is quadratic; the two together find them at LSH speed.
- Semantic: exact cosine top-k with batched matrix products in torch (bf16 where the CPU has
  fast bf16), no approximate index.
- Pairs become groups by union-find. The suggested keeper is the accepted one over pending,
  the edited one over the original, then the most complete (longest), then the oldest.
- Pairs an SME marked "not duplicates" are passed in as `ignore_pairs` and never joined.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from curation.checks._contract import CheckResult, ExampleTable, Finding, Progress, register

Scope = Literal["conversation", "prompt"]
_STATUS_RANK = {"accepted": 0, "pending": 1, "needs_work": 2, "rejected": 3}
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, case folded, punctuation and symbols removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return _SPACES.sub(" ", text).strip()


def _texts(table: ExampleTable, scope: Scope) -> list[str]:
    pick = table.prompt if scope == "prompt" else table.text
    return [pick(i) for i in range(len(table))]


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _keeper(table: ExampleTable, members: list[int]) -> int:
    return min(members, key=lambda i: (_STATUS_RANK.get(table.statuses[i], 9),
                                       -(table.versions[i] > 1), -len(table.text(i)),
                                       table.ids[i]))


def group_findings(table: ExampleTable, pairs: dict[tuple[int, int], float], kind: str,
                   ignore_pairs: set[tuple[int, int]] = frozenset()) -> list[Finding]:
    """Findings for every example, issues for members of a duplicate group (row indexes in)."""
    uf = _UnionFind(len(table))
    for (a, b) in pairs:
        if (table.ids[a], table.ids[b]) not in ignore_pairs:
            uf.union(a, b)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(table)):
        groups[uf.find(i)].append(i)
    best: dict[int, float] = defaultdict(float)
    for (a, b), sim in pairs.items():
        if uf.find(a) == uf.find(b):
            best[a], best[b] = max(best[a], sim), max(best[b], sim)
    findings = []
    for members in groups.values():
        if len(members) == 1:
            i = members[0]
            findings.append(Finding(table.ids[i], 1.0, False, f"no {kind} duplicate"))
            continue
        keep = _keeper(table, members)
        ids = sorted(table.ids[m] for m in members)
        for i in members:
            others = ", ".join(f"#{x}" for x in ids if x != table.ids[i])
            if i == keep:
                reason = f"suggested keeper of {len(ids)} {kind} duplicates (with {others})"
            else:
                reason = f"{kind} duplicate of #{table.ids[keep]}"
                if len(ids) > 2:
                    reason += f" (group of {len(ids)}: {', '.join(f'#{x}' for x in ids)})"
            similarity = round(best[i], 4)
            findings.append(Finding(table.ids[i], round(1.0 - similarity, 4), True, reason,
                                    {"group": ids, "keeper": table.ids[keep],
                                     "similarity": similarity, "split": table.splits[i]}))
    return findings


# --- exact ---------------------------------------------------------------------------------

def exact_pairs(table: ExampleTable, scope: Scope = "conversation") -> dict[tuple[int, int], float]:
    """Pairs (row a, row b), a < b, of examples equal after normalisation; similarity 1."""
    by_text: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(_texts(table, scope)):
        by_text[normalize(text)].append(i)
    return {(rows[0], other): 1.0 for rows in by_text.values() if len(rows) > 1
            for other in rows[1:]}


# --- near ----------------------------------------------------------------------------------

def near_pairs(table: ExampleTable, scope: Scope = "prompt", *, threshold: float = 0.9,
               shingle: int = 3, lsh_threshold: float = 0.5, num_perm: int = 128,
               progress: Progress | None = None) -> dict[tuple[int, int], float]:
    """Pairs whose normalised edit similarity is at least `threshold`, not exact duplicates."""
    from datasketch import MinHash, MinHashLSH
    from rapidfuzz.distance import Indel

    texts = [normalize(t) for t in _texts(table, scope)]
    lsh = MinHashLSH(threshold=lsh_threshold, num_perm=num_perm)
    hashes = []
    for i, text in enumerate(texts):
        grams = {text[j:j + shingle].encode() for j in range(max(1, len(text) - shingle + 1))}
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch(list(grams))
        hashes.append(m)
        lsh.insert(i, m)
        if progress and i % 2000 == 0:
            progress(0.5 * i / max(1, len(texts)), f"hashed {i:,} of {len(texts):,}")
    pairs: dict[tuple[int, int], float] = {}
    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            if j <= i or texts[i] == texts[j]:
                continue
            similarity = Indel.normalized_similarity(texts[i], texts[j])
            if similarity >= threshold:
                pairs[(i, j)] = similarity
        if progress and i % 2000 == 0:
            progress(0.5 + 0.5 * i / max(1, len(texts)), f"compared {i:,} of {len(texts):,}")
    return pairs


# --- semantic ------------------------------------------------------------------------------

def semantic_pairs(vectors: np.ndarray, *, threshold: float = 0.95, top_k: int = 10,
                   block: int = 4096, progress: Progress | None = None
                   ) -> dict[tuple[int, int], float]:
    """Pairs with cosine similarity >= threshold among each row's exact top-k neighbours."""
    import torch

    from curation.embeddings import cpu_has_fast_bf16

    n = len(vectors)
    if n < 2:
        return {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = (torch.float16 if device == "cuda"
             else torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    matrix = torch.from_numpy(np.ascontiguousarray(vectors)).to(device=device, dtype=dtype)
    k = min(top_k + 1, n)
    pairs: dict[tuple[int, int], float] = {}
    with torch.inference_mode():
        for start in range(0, n, block):
            sims = matrix[start:start + block] @ matrix.T
            rows = torch.arange(sims.shape[0], device=device)
            sims[rows, rows + start] = -1.0  # not itself
            values, indexes = torch.topk(sims.float(), k - 1, dim=1)
            for r, (vals, idxs) in enumerate(zip(values.tolist(), indexes.tolist())):
                a = start + r
                for v, b in zip(vals, idxs):
                    if v < threshold:
                        break
                    key = (a, b) if a < b else (b, a)
                    pairs[key] = max(pairs.get(key, 0.0), min(1.0, v))
            if progress:
                done = min(n, start + block)
                progress(done / n, f"compared {done:,} of {n:,} embeddings")
    return pairs


# --- the checks ----------------------------------------------------------------------------

@dataclass
class DuplicateCheck:
    """One duplicate method as a registered check."""

    name: str
    title: str
    description: str
    method: Literal["exact", "near", "semantic"]
    options: dict = field(default_factory=dict)

    def pairs(self, table: ExampleTable, progress: Progress | None = None
              ) -> dict[tuple[int, int], float]:
        if self.method == "exact":
            return exact_pairs(table, self.options.get("scope", "conversation"))
        if self.method == "near":
            return near_pairs(table, progress=progress, **self.options)
        if table.embed is None:
            return {}
        return semantic_pairs(table.embed(), progress=progress, **self.options)

    def run(self, table: ExampleTable, progress: Progress | None = None,
            ignore_pairs: set[tuple[int, int]] = frozenset()) -> CheckResult:
        findings = group_findings(table, self.pairs(table, progress), self.method,
                                  ignore_pairs)
        issues = [f for f in findings if f.is_issue]
        groups = {tuple(f.details["group"]) for f in issues}
        return CheckResult(self.name, findings,
                           {"examples": len(table), "groups": len(groups),
                            "in_groups": len(issues),
                            "removable": len(issues) - len(groups)})


EXACT = register(DuplicateCheck(
    "exact_duplicates", "Exact duplicates",
    "Examples whose whole conversation is the same once case, spaces, punctuation and "
    "Unicode variants are ignored. Keep one of each group; the others only add weight to "
    "the same example.", "exact"))
EXACT_PROMPT = register(DuplicateCheck(
    "exact_prompt_duplicates", "Same prompt",
    "Examples whose user turns are the same once case, spaces and punctuation are ignored, "
    "even if the answers differ. Check that the answers agree, or keep the best one.",
    "exact", {"scope": "prompt"}))
NEAR = register(DuplicateCheck(
    "near_duplicates", "Near duplicates",
    "Prompts that differ only by a typo or a word or two (edit similarity of 90% or more). "
    "Usually copies; keep one unless the small difference matters.", "near"))
SEMANTIC = register(DuplicateCheck(
    "semantic_duplicates", "Same meaning",
    "Prompts worded differently that mean the same (embedding cosine similarity of 0.95 or "
    "more). Many of them make the model over-learn one case.", "semantic"))


@dataclass
class LeakageCheck:
    """Eval examples duplicated in train: they make evaluation look better than it is."""

    name: str = "leakage"
    title: str = "Train/eval leakage"
    description: str = ("Eval examples that are exact, near or same-meaning duplicates of a "
                        "train example. The model will have seen them in training, so the "
                        "evaluation overstates it; remove them from eval or from train.")

    def run(self, table: ExampleTable, progress: Progress | None = None,
            ignore_pairs: set[tuple[int, int]] = frozenset()) -> CheckResult:
        leaks: dict[int, tuple[int, str, float]] = {}
        for check in (EXACT, NEAR, SEMANTIC):
            for (a, b), sim in check.pairs(table, progress).items():
                if (table.ids[a], table.ids[b]) in ignore_pairs:
                    continue
                for ev, tr in ((a, b), (b, a)):
                    if table.splits[ev] == "eval" and table.splits[tr] == "train":
                        if ev not in leaks or leaks[ev][2] < sim:
                            leaks[ev] = (tr, check.method, sim)
        findings = []
        for i in range(len(table)):
            if i in leaks:
                tr, method, sim = leaks[i]
                findings.append(Finding(table.ids[i], round(1 - sim, 4), True,
                                        f"eval example is a {method} duplicate of train "
                                        f"#{table.ids[tr]}",
                                        {"group": sorted([table.ids[i], table.ids[tr]]),
                                         "train_id": table.ids[tr], "method": method,
                                         "similarity": round(sim, 4)}))
            elif table.splits[i] == "eval":
                findings.append(Finding(table.ids[i], 1.0, False, "not seen in train"))
        return CheckResult(self.name, findings, {"eval_examples": sum(
            s == "eval" for s in table.splits), "leaked": len(leaks)})


LEAKAGE = register(LeakageCheck())
