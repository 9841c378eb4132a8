"""Exact, near (lexical) and semantic duplicates, as groups with a suggested keeper; leakage.

Design decisions:
- Exact: equal after normalisation (Unicode NFKC, case folded, punctuation dropped, spaces
  collapsed), over the whole conversation or the prompt (user turns) only.
- Near: MinHash LSH (datasketch) over character shingles proposes candidate pairs at a low
  Jaccard threshold; each candidate is then verified by normalised edit similarity
  (rapidfuzz). MinHash alone misses many single-typo copies of short texts, while edit
  similarity over all pairs is quadratic; the two together find them at LSH speed.
  Character edit similarity punishes a moved word hard (two neighbouring words swapped in a
  45-character prompt score about 0.85; on Banking77 it missed a quarter of such copies), so
  a candidate below the threshold is also a near duplicate when, word for word, it differs
  by exactly one word dropped, added, or swapped with its neighbour (prompts of 4+ words).
- Semantic: exact cosine top-k with batched matrix products in torch (bf16 where the CPU has
  fast bf16), no approximate index. The similarity matrix is symmetric, so each block of rows
  is multiplied only with itself and the later rows, and only rows with a similarity over
  the threshold are ranked: on 100,000 MiniLM vectors (bench/semantic_dupes.py) this took
  61-68 s instead of 102 s for the full matrix on 2 cores, with the same pairs.
- Groups. Exact duplicates are an equivalence, so their pairs become groups by union-find.
  Near and same-meaning pairs are not transitive (a~b and b~c does not make a~c), and
  union-find chained templated prompts into groups whose members had little in common (on
  Banking77, groups of 15 near and of dozens same-meaning duplicates, half of whose pairs
  were not close at all), so those groups are built around a keeper instead: examples are
  taken in keeper order, and each one not yet grouped takes every ungrouped example it is a
  direct duplicate of. Every member of such a group is therefore a duplicate of the keeper
  itself, which is what "keep one" acts on.
- One keeper rule for every duplicate check, the leakage check and the Quality page's keep
  actions (`keeper_key`, `suggest_keeper`; stated to people as `KEEPER_RULE`): of a train and
  an eval copy, the train copy is kept and the eval copy goes, so the checks never disagree
  on a pair and removing a duplicate never leaves the model trained on an eval example.
  Within one split: the accepted one over pending, the edited one over the original, then
  the most complete (longest), then the oldest.
- Pairs an SME marked "not duplicates" are passed in as `ignore_pairs` and never joined (and
  never put in one keeper group).
- Leakage names each eval example's strongest match (exact, then near, then same-meaning; the
  closest train example by that method) and the strongest method per train example
  (`train_methods`): exact and near copies stop a launch, same-meaning ones only warn
  (`curation.leakage`), so a paraphrase must not hide a copy.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from curation.checks._contract import (CheckResult, ExampleTable, Finding, PairSet, Progress,
                                       register)
from curation.messages import search_text

if TYPE_CHECKING:
    from curation.store import Example

Scope = Literal["conversation", "prompt"]
KEEPER_RULE = ("Suggested keeper: of a train copy and an eval copy, the train copy is kept and "
               "the eval copy is the one that goes; within one split, the accepted one, then "
               "the edited one, then the most complete, then the oldest.")
_SPLIT_RANK = {"train": 0, "eval": 1}
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


def keeper_key(split: str, status: str, version: int, length: int, example_id: int) -> tuple:
    """The keeper rule (`KEEPER_RULE`) as a sort key: the smallest key is kept."""
    return (_SPLIT_RANK.get(split, 2), _STATUS_RANK.get(status, 9), -(version > 1), -length,
            example_id)


def suggest_keeper(examples: Iterable[Example]) -> int:
    """The id of the example to keep among duplicates, by the one keeper rule."""
    return min(examples, key=lambda e: keeper_key(
        e.split, e.status, e.version, len(search_text(e.messages)),
        e.id)).id


def _keeper_order(table: ExampleTable, i: int) -> tuple:
    return keeper_key(table.splits[i], table.statuses[i], table.versions[i],
                      len(table.text(i)), table.ids[i])


def _keeper(table: ExampleTable, members: list[int]) -> int:
    return min(members, key=lambda i: _keeper_order(table, i))


def _transitive_groups(n: int, pairs, dismissed) -> list[list[int]]:
    uf = _UnionFind(n)
    for (a, b) in pairs:
        if not dismissed(a, b):
            uf.union(a, b)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[uf.find(i)].append(i)
    return list(groups.values())


def _keeper_groups(table: ExampleTable, pairs, dismissed) -> list[list[int]]:
    """Groups in which every member is a direct duplicate of the first (the keeper)."""
    neighbours: dict[int, set[int]] = defaultdict(set)
    for (a, b) in pairs:
        if not dismissed(a, b):
            neighbours[a].add(b)
            neighbours[b].add(a)
    grouped: set[int] = set()
    groups = []
    for i in sorted(neighbours, key=lambda r: _keeper_order(table, r)):
        if i in grouped:
            continue
        members = [i]
        for j in sorted(neighbours[i] - grouped, key=lambda r: _keeper_order(table, r)):
            if not any(dismissed(j, m) for m in members):
                members.append(j)
        if len(members) > 1:  # always, unless every neighbour left was dismissed with one
            grouped.update(members)
            groups.append(members)
    return groups + [[i] for i in range(len(table)) if i not in grouped]


def group_findings(table: ExampleTable, pairs: dict[tuple[int, int], float], kind: str,
                   ignore_pairs: set[tuple[int, int]] = frozenset(), *,
                   transitive: bool = False) -> list[Finding]:
    """Findings for every example, issues for members of a duplicate group (row indexes in).

    `transitive` (exact duplicates): groups are the connected pairs (union-find); otherwise
    each group is a keeper and the examples that are direct duplicates of it.
    """
    ids = table.ids

    def dismissed(a: int, b: int) -> bool:
        return bool(ignore_pairs) and ((ids[a], ids[b]) in ignore_pairs
                                       or (ids[b], ids[a]) in ignore_pairs)

    groups = (_transitive_groups(len(table), pairs, dismissed) if transitive
              else _keeper_groups(table, pairs, dismissed))
    where = {i: g for g, members in enumerate(groups) for i in members}
    best: dict[int, float] = defaultdict(float)
    for (a, b), sim in pairs.items():
        if where[a] == where[b] and not dismissed(a, b):
            best[a], best[b] = max(best[a], sim), max(best[b], sim)
    findings = []
    for members in groups:
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

def exact_groups(table: ExampleTable, scope: Scope = "conversation") -> list[list[int]]:
    """Rows equal after normalisation, in groups of two or more (row order)."""
    by_text: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(_texts(table, scope)):
        by_text[normalize(text)].append(i)
    return [rows for rows in by_text.values() if len(rows) > 1]


def exact_pairs(table: ExampleTable, scope: Scope = "conversation") -> dict[tuple[int, int], float]:
    """Pairs (row a, row b), a < b, of examples equal after normalisation; similarity 1: each
    group's first row with each of the others (the groups are `exact_groups`)."""
    return {(rows[0], other): 1.0 for rows in exact_groups(table, scope) for other in rows[1:]}


def _eval_train_pairs(table: ExampleTable, groups: list[list[int]]
                      ) -> dict[tuple[int, int], float]:
    """Every (eval, train) pair within each group, as (smaller row, larger row): exact
    duplicates are an equivalence, so each eval copy is a copy of each train one."""
    pairs = {}
    for rows in groups:
        evals = [r for r in rows if table.splits[r] == "eval"]
        trains = [r for r in rows if table.splits[r] == "train"]
        pairs.update({(min(e, t), max(e, t)): 1.0 for e in evals for t in trains})
    return pairs


# --- near ----------------------------------------------------------------------------------

def one_word_apart(a: list[str], b: list[str]) -> bool:
    """True when two word lists differ by one word dropped (or added), or by two neighbouring
    words swapped."""
    if len(a) < len(b):
        a, b = b, a
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), len(b))
    if len(a) == len(b) + 1:
        return a[i + 1:] == b[i:]
    return (len(a) == len(b) and i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i]
            and a[i + 2:] == b[i + 2:])


def near_pairs(table: ExampleTable, scope: Scope = "prompt", *, threshold: float = 0.9,
               shingle: int = 3, lsh_threshold: float = 0.5, num_perm: int = 128,
               word_edit_min_words: int | None = 4,
               progress: Progress | None = None) -> dict[tuple[int, int], float]:
    """Pairs whose normalised edit similarity is at least `threshold`, or (prompts of at least
    `word_edit_min_words` words; None: off) that differ by one word dropped, added or swapped
    with its neighbour; not exact duplicates. The value is the edit similarity."""
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
            elif word_edit_min_words is not None:
                a, b = texts[i].split(" "), texts[j].split(" ")
                if max(len(a), len(b)) >= word_edit_min_words and one_word_apart(a, b):
                    pairs[(i, j)] = similarity
        if progress and i % 2000 == 0:
            progress(0.5 + 0.5 * i / max(1, len(texts)), f"compared {i:,} of {len(texts):,}")
    return pairs


# --- semantic ------------------------------------------------------------------------------

def semantic_pairs(vectors: np.ndarray, *, threshold: float = 0.95, top_k: int = 10,
                   block: int = 4096, progress: Progress | None = None
                   ) -> dict[tuple[int, int], float]:
    """Pairs with cosine similarity >= threshold among each row's exact top-k neighbours.

    Each block of rows is multiplied only with itself and the rows after it; the products
    with earlier rows were computed (transposed) by earlier blocks and were folded into each
    row's running top-k then. Only rows and columns with a similarity >= threshold are
    ranked, since nothing below it can become a pair. Half the multiplications of the full
    matrix, same pairs.
    """
    import torch

    from curation.embeddings import cpu_has_fast_bf16

    n = len(vectors)
    if n < 2:
        return {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = (torch.float16 if device == "cuda"
             else torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    matrix = torch.from_numpy(np.ascontiguousarray(vectors)).to(device=device, dtype=dtype)
    k = min(top_k, n - 1)
    best_values = torch.full((n, k), -2.0, device=device)
    best_indexes = torch.zeros((n, k), dtype=torch.long, device=device)

    def merge(rows, values, indexes) -> None:
        """Fold candidate neighbours into the running top-k of `rows` (a tensor of rows)."""
        v = torch.cat([best_values[rows], values], dim=1)
        i = torch.cat([best_indexes[rows], indexes], dim=1)
        top, where = torch.topk(v, k, dim=1)
        best_values[rows], best_indexes[rows] = top, torch.gather(i, 1, where)

    work = sum(n - start for start in range(0, n, block))
    done = 0
    with torch.inference_mode():
        for start in range(0, n, block):
            end = min(n, start + block)
            sims = (matrix[start:end] @ matrix[start:].T).float()  # block x rows start..n
            diagonal = torch.arange(end - start, device=device)
            sims[diagonal, diagonal] = -2.0  # not itself
            close = sims >= threshold
            rows = torch.nonzero(close.any(dim=1)).flatten()  # this block's rows with a hit
            cols = torch.nonzero(close[:, end - start:].any(dim=0)).flatten()  # later rows
            del close
            if len(rows):
                values, indexes = torch.topk(sims[rows], min(k, n - start), dim=1)
                merge(rows + start, values, indexes + start)
            if len(cols):
                values, indexes = torch.topk(sims[:, end - start + cols].T,
                                             min(k, end - start), dim=1)
                merge(cols + end, values, indexes + start)
            done += n - start
            if progress:
                progress(done / work, f"compared {end:,} of {n:,} embeddings")
        hits = torch.nonzero(best_values[:, 0] >= threshold).flatten().tolist()
        values, indexes = best_values[hits].tolist(), best_indexes[hits].tolist()
    pairs: dict[tuple[int, int], float] = {}
    for a, vals, idxs in zip(hits, values, indexes):
        for v, b in zip(vals, idxs):
            if v < threshold:
                break
            key = (a, b) if a < b else (b, a)
            pairs[key] = max(pairs.get(key, 0.0), min(1.0, v))
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
            ignore_pairs: PairSet = frozenset()) -> CheckResult:
        findings = group_findings(table, self.pairs(table, progress), self.method,
                                  ignore_pairs, transitive=self.method == "exact")
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
    "Prompts that differ only by a typo or a word or two (edit similarity of 90% or more, or "
    "one word dropped, added or swapped with its neighbour). Usually copies; keep one unless "
    "the small difference matters.", "near"))
SEMANTIC = register(DuplicateCheck(
    "semantic_duplicates", "Same meaning",
    "Prompts worded differently that mean the same (embedding cosine similarity of 0.95 or "
    "more). Many of them make the model over-learn one case.", "semantic"))


@dataclass
class LeakageCheck:
    """Eval examples duplicated in train: they make evaluation look better than it is."""

    name: str = "leakage"
    answered_only: bool = True  # a prompt that needs an answer is neither trained nor evaluated
    title: str = "Train/eval leakage"
    description: str = ("Eval examples that are exact, near or same-meaning duplicates of a "
                        "train example. The model will have seen them in training, so the "
                        "evaluation overstates it; keep the train copy and reject the eval "
                        "one. Exact and near copies stop a training launch; same-meaning "
                        "ones (paraphrases) only warn.")

    def run(self, table: ExampleTable, progress: Progress | None = None,
            ignore_pairs: PairSet = frozenset()) -> CheckResult:
        leaks: dict[int, tuple[int, str, float]] = {}  # eval row -> its closest train row
        leaked_to: dict[int, dict[int, str]] = {}  # eval row -> {train id: strongest method}
        for check in (EXACT, NEAR, SEMANTIC):  # strongest method first
            pairs = (_eval_train_pairs(table, exact_groups(table)) if check is EXACT
                     else check.pairs(table, progress))
            for (a, b), sim in pairs.items():
                if (table.ids[a], table.ids[b]) in ignore_pairs:
                    continue
                for ev, tr in ((a, b), (b, a)):
                    if table.splits[ev] == "eval" and table.splits[tr] == "train":
                        leaked_to.setdefault(ev, {}).setdefault(table.ids[tr], check.method)
                        if ev not in leaks or (leaks[ev][1] == check.method
                                               and leaks[ev][2] < sim):
                            leaks[ev] = (tr, check.method, sim)
        findings = []
        for i in range(len(table)):
            if i in leaks:
                tr, method, sim = leaks[i]
                article = "an" if method == "exact" else "a"
                findings.append(Finding(table.ids[i], round(1 - sim, 4), True,
                                        f"eval example is {article} {method} duplicate of "
                                        f"train #{table.ids[tr]}",
                                        {"group": sorted([table.ids[i], table.ids[tr]]),
                                         "keeper": table.ids[_keeper(table, [i, tr])],
                                         "train_id": table.ids[tr],
                                         "train_ids": sorted(leaked_to[i]),
                                         "train_methods": {str(t): m for t, m in
                                                           sorted(leaked_to[i].items())},
                                         "method": method, "similarity": round(sim, 4)}))
            elif table.splits[i] == "eval":
                findings.append(Finding(table.ids[i], 1.0, False, "not seen in train"))
        return CheckResult(self.name, findings, {"eval_examples": sum(
            s == "eval" for s in table.splits), "leaked": len(leaks)})


LEAKAGE = register(LeakageCheck())
