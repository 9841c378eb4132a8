"""Quality benchmark on real data: do the checks find problems planted in Banking77?

    .venv/bin/python bench/quality_banking77.py [--seed 77] [--keep DIR] [--show 10]

What it does:
- Reads ../shared/datasets/banking77/train.csv (10,003 real online-banking queries, 77
  intents; CSV `text,category`) and plants known problems with a fixed seed (`plant`):
  * 200 exact duplicates: a copy of 200 distinct source queries that differs only by case,
    inner whitespace and/or punctuation (at least one of them; never only outer spaces,
    which the importer already treats as the same conversation), same intent;
  * 200 near duplicates: a copy of 200 other source queries with exactly one edit, a third
    each: a typo (one letter substituted, inserted, deleted, or two neighbours transposed),
    two neighbouring words swapped, or one word dropped (queries of 4+ words), same intent;
  * label flips: 5 % of the final data set's labels (520 of 10,403), chosen among original
    queries that are not duplicate sources, each moved to a uniformly drawn other intent
    (the answer, which is the intent name, moves with it).
  Rows are shuffled and written as JSONL (`id`, user = query, assistant = intent, `label`),
  imported with `curation.import_file` into a fresh store in a temporary folder, and the
  checks run with `curation.checks.run_check`.
- Scores each check, mapping findings back to the planted rows by external id. For the
  duplicate checks every pair inside a reported group counts as a reported pair:
  * exact (`exact_duplicates`, whole conversation; `exact_prompt_duplicates`, prompt only):
    a reported pair is right when both prompts are equal under this script's own
    canonical form (lower case, non-alphanumerics to spaces, spaces collapsed; for the
    conversation scope the answers too). Recall is over the 200 planted pairs.
  * near (`near_duplicates`): Banking77 is full of natural near duplicates (templated
    queries), so a reported pair is right when it was planted, or is genuinely near by a
    criterion independent of the check's own thresholds: rapidfuzz `fuzz.ratio` of the two
    lower-cased, punctuation-stripped prompts >= 80, or MiniLM cosine >= 0.95. Recall is over
    the 200 planted pairs (the pair lies in one reported group).
  * semantic (`semantic_duplicates`, for information): same precision rule, recall over
    the planted near pairs and over the planted exact pairs.
  * label issues (`label_issues`): precision and recall of the flagged examples against the
    flipped ones (strict: a natural Banking77 mislabel that is flagged counts as wrong).
- Prints a table, each check's time and the load average, and the verdict against the
  targets: exact P = R = 1.0; near R >= 0.9 with P >= 0.9; label issues P >= 0.7, R >= 0.75.

The planting is importable (`plant`, `canonical`, `write_jsonl`) so that the other Banking77
benchmarks (`semantic_dupes.py`, `label_issues_time.py`) use the same data.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "datasets" / "banking77"
SEED = 77
N_EXACT = 200
N_NEAR = 200
FLIP_SHARE = 0.05
NEAR_KINDS = ("typo", "swap", "drop")
TARGETS = {"exact": (1.0, 1.0), "near": (0.9, 0.9), "label": (0.7, 0.75)}  # (precision, recall)
EDIT_CRITERION = 80.0  # rapidfuzz fuzz.ratio, 0-100
COSINE_CRITERION = 0.95

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_WORD = re.compile(r"[A-Za-z]+")


def canonical(text: str) -> str:
    """This benchmark's own exact-duplicate key: lower case, non-alphanumerics -> one space."""
    return _NON_ALNUM.sub(" ", text.lower()).strip()


def load_csv(name: str = "train.csv") -> list[tuple[str, str]]:
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


# --- planting --------------------------------------------------------------------------------

@dataclass
class Row:
    id: str
    text: str
    label: str        # the label written to the store (flipped for flipped rows)
    true_label: str
    kind: str = "original"   # original | exact_copy | near_copy
    source: str | None = None
    edit: str | None = None


@dataclass
class Planted:
    rows: list[Row]
    exact_pairs: set[tuple[str, str]] = field(default_factory=set)
    near_pairs: dict[tuple[str, str], str] = field(default_factory=dict)  # pair -> edit kind
    flipped: set[str] = field(default_factory=set)

    @property
    def by_id(self) -> dict[str, Row]:
        return {r.id: r for r in self.rows}


def _exact_variant(rng: random.Random, text: str) -> str:
    """The same query up to case, inner whitespace and punctuation (never only outer spaces)."""
    for _ in range(100):
        out = text
        kinds = rng.sample(["case", "space", "punct"], rng.randint(1, 3))
        if "case" in kinds:
            out = rng.choice([str.lower, str.upper, str.title, str.swapcase,
                              lambda s: s[:1].swapcase() + s[1:]])(out)
        if "space" in kinds:
            words = out.split(" ")
            if len(words) > 1:
                j = rng.randrange(1, len(words))
                words[j - 1] += rng.choice(["  ", " \t", "   "])[:-1]
                out = " ".join(words)
            out = rng.choice(["", " ", "  "]) + out + rng.choice(["", " ", "\t"])
        if "punct" in kinds:
            stripped = out.rstrip()
            if stripped and stripped[-1] in "?.!":
                out = stripped[:-1] + rng.choice(["", "??", "!", "?!", " ?", "..."])
            else:
                out = stripped + rng.choice(["?", "!", ".", " ?", "!!"])
            words = out.split(" ")
            if len(words) > 2 and rng.random() < 0.5:
                j = rng.randrange(0, len(words) - 1)
                if words[j] and words[j][-1].isalnum():
                    words[j] += ","
                out = " ".join(words)
        if canonical(out) == canonical(text) and out.strip() != text.strip():
            return out
    raise RuntimeError(f"no exact variant of {text!r}")


def _typo(rng: random.Random, word: str) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = rng.randrange(len(word))
    op = rng.choice(["sub", "ins", "del", "swap"])
    if op == "sub":
        return word[:i] + rng.choice(letters.replace(word[i].lower(), "")) + word[i + 1:]
    if op == "ins":
        return word[:i] + rng.choice(letters) + word[i:]
    if op == "del":
        return word[:i] + word[i + 1:]
    i = min(i, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def _near_variant(rng: random.Random, text: str, kind: str) -> str | None:
    """One edit of `text`: a typo in one word, two neighbouring words swapped, a word dropped."""
    tokens = text.split(" ")
    words = [j for j, t in enumerate(tokens) if _WORD.fullmatch(t.strip(",.?!")) ]
    if kind == "typo":
        long_words = [j for j in words if len(tokens[j].strip(",.?!")) >= 3]
        if not long_words:
            return None
        j = rng.choice(long_words)
        core = tokens[j].strip(",.?!")
        tokens[j] = tokens[j].replace(core, _typo(rng, core), 1)
    elif kind == "swap":
        pairs = [j for j in words if j + 1 in words
                 and tokens[j].strip(",.?!").lower() != tokens[j + 1].strip(",.?!").lower()]
        if not pairs:
            return None
        j = rng.choice(pairs)
        a, b = tokens[j], tokens[j + 1]
        # keep trailing punctuation where it was ("card, please" -> "please card,"? no: keep it)
        tail = b[len(b.rstrip(",.?!")):]
        tokens[j], tokens[j + 1] = b.rstrip(",.?!"), a + tail
    else:  # drop
        if len(words) < 4:
            return None
        j = rng.choice(words)
        tail = tokens[j][len(tokens[j].rstrip(",.?!")):]
        del tokens[j]
        if tail and j > 0:
            tokens[j - 1] += tail
    out = " ".join(tokens)
    return out if canonical(out) != canonical(text) else None


def plant(seed: int = SEED, base: list[tuple[str, str]] | None = None,
          id_prefix: str = "b77") -> Planted:
    """Banking77 train with planted exact and near duplicates and flipped labels, shuffled."""
    rng = random.Random(seed)
    base = load_csv() if base is None else base
    rows = [Row(f"{id_prefix}-{i:05d}", text, label, label) for i, (text, label) in
            enumerate(base)]
    canon_count = Counter(canonical(r.text) for r in rows)
    # sources: queries without a natural duplicate, so each planted pair stands alone
    candidates = [r for r in rows if canon_count[canonical(r.text)] == 1]
    rng.shuffle(candidates)
    exact_sources, near_sources = candidates[:N_EXACT], []
    taken = {canonical(r.text) for r in rows}
    pool = iter(candidates[N_EXACT:])
    copies: list[Row] = []
    for n, src in enumerate(exact_sources):
        variant = _exact_variant(rng, src.text)
        copies.append(Row(f"{id_prefix}-x{n:03d}", variant, src.label, src.label, "exact_copy",
                          src.id, "exact"))
    planted = Planted(rows=[])
    for n in range(N_NEAR):
        kind = NEAR_KINDS[n % len(NEAR_KINDS)]
        while True:
            src = next(pool)
            variant = _near_variant(rng, src.text, kind)
            if variant is not None and canonical(variant) not in taken:
                break
        taken.add(canonical(variant))
        near_sources.append(src)
        copies.append(Row(f"{id_prefix}-n{n:03d}", variant, src.label, src.label, "near_copy",
                          src.id, kind))
    sources = {r.id for r in exact_sources + near_sources}
    total = len(rows) + len(copies)
    labels = sorted({label for _, label in base})
    flippable = [r for r in rows if r.id not in sources]
    for r in rng.sample(flippable, round(FLIP_SHARE * total)):
        r.label = rng.choice([label for label in labels if label != r.true_label])
        planted.flipped.add(r.id)
    all_rows = rows + copies
    rng.shuffle(all_rows)
    planted.rows = all_rows
    for c in copies:
        pair = tuple(sorted((c.source, c.id)))
        if c.kind == "exact_copy":
            planted.exact_pairs.add(pair)
        else:
            planted.near_pairs[pair] = c.edit
    return planted


def write_jsonl(planted: Planted, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in planted.rows:
            f.write(json.dumps({"id": r.id, "label": r.label, "messages": [
                {"role": "user", "content": r.text},
                {"role": "assistant", "content": r.label}]}, ensure_ascii=False) + "\n")


def load_store(planted: Planted, folder: Path):
    """A fresh store in `folder` with the planted rows imported; (store, import report)."""
    from curation import Store, User, import_file

    path = folder / "banking77_planted.jsonl"
    write_jsonl(planted, path)
    store = Store(folder / "curate.duckdb")
    report = import_file(store, path, user=User("bench", "admin"))
    return store, report


# --- scoring ---------------------------------------------------------------------------------

def group_pairs(findings, ext: dict[int, str]) -> set[tuple[str, str]]:
    """Every pair of external ids inside each reported duplicate group."""
    pairs = set()
    for group in {tuple(f.details["group"]) for f in findings if f.is_issue}:
        pairs.update(tuple(sorted((ext[a], ext[b]))) for a, b in combinations(group, 2))
    return pairs


def pr(right: int, reported: int, found: int, planted: int) -> tuple[float, float]:
    return (right / reported if reported else 1.0), (found / planted if planted else 1.0)


def load() -> tuple[float, float, float]:
    return tuple(round(x, 2) for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--keep", type=Path, help="keep the store in this folder")
    parser.add_argument("--show", type=int, default=8, help="examples of misses to print")
    args = parser.parse_args()

    from rapidfuzz import fuzz, utils

    from curation import User
    from curation.checks import load_table, run_check

    planted = plant(args.seed)
    by_id = planted.by_id
    print(f"planted: {len(planted.rows):,} rows; {len(planted.exact_pairs)} exact and "
          f"{len(planted.near_pairs)} near duplicate pairs "
          f"({dict(Counter(planted.near_pairs.values()))}); {len(planted.flipped)} labels "
          f"flipped ({len(planted.flipped) / len(planted.rows):.1%})")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-b77-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        store, report = load_store(planted, folder)
        print(f"import: {report.summary()}")
        ext = {e_id: x for e_id, x in store.cursor().execute(
            "SELECT id, external_id FROM examples").fetchall()}
        times, results = {}, {}
        for name in ("exact_duplicates", "exact_prompt_duplicates", "near_duplicates",
                     "semantic_duplicates", "label_issues"):
            before = load()
            t0 = time.perf_counter()
            results[name] = run_check(store, name, user=User("bench", "admin"), force=True)
            times[name] = (time.perf_counter() - t0, before, load())
            print(f"  ran {name}: {times[name][0]:.1f} s (load before {before[0]}, "
                  f"after {times[name][2][0]})", flush=True)

        # independent closeness: fuzz.ratio on processed text, MiniLM cosine from the cache
        table = load_table(store)
        vectors = table.embed()
        row_of = {ext[i]: r for r, i in enumerate(table.ids)}

        def closeness(a: str, b: str) -> tuple[float, float]:
            ratio = fuzz.ratio(by_id[a].text, by_id[b].text, processor=utils.default_process)
            cosine = float(vectors[row_of[a]] @ vectors[row_of[b]])
            return ratio, cosine

        def near_enough(pair) -> bool:
            ratio, cosine = closeness(*pair)
            return ratio >= EDIT_CRITERION or cosine >= COSINE_CRITERION

        def exact_equal(pair, scope) -> bool:
            a, b = by_id[pair[0]], by_id[pair[1]]
            same = canonical(a.text) == canonical(b.text)
            return same and (scope == "prompt" or canonical(a.label) == canonical(b.label))

        lines = []
        for name, scope in (("exact_duplicates", "conversation"),
                            ("exact_prompt_duplicates", "prompt")):
            reported = group_pairs(results[name].findings, ext)
            right = sum(exact_equal(p, scope) for p in reported)
            found = len(reported & planted.exact_pairs)
            p, r = pr(right, len(reported), found, len(planted.exact_pairs))
            natural = len(reported - planted.exact_pairs)
            lines.append((name, len(reported), right, found, len(planted.exact_pairs), p, r,
                          f"{natural} natural exact pairs among them"))
        exact_p, exact_r = lines[0][5], lines[0][6]

        near_reported = group_pairs(results["near_duplicates"].findings, ext)
        planted_any = set(planted.near_pairs) | planted.exact_pairs
        wrong = [p for p in near_reported if p not in planted_any and not near_enough(p)]
        near_found = near_reported & set(planted.near_pairs)
        near_p, near_r = pr(len(near_reported) - len(wrong), len(near_reported), len(near_found),
                            len(planted.near_pairs))
        by_kind = Counter(planted.near_pairs[p] for p in near_found)
        kinds = Counter(planted.near_pairs.values())
        sizes = Counter(len(f.details["group"]) for f in results["near_duplicates"].issues)
        lines.append(("near_duplicates", len(near_reported), len(near_reported) - len(wrong),
                      len(near_found), len(planted.near_pairs), near_p, near_r,
                      "recall by edit: " + ", ".join(f"{k} {by_kind[k]}/{kinds[k]}"
                                                     for k in NEAR_KINDS)))

        sem_reported = group_pairs(results["semantic_duplicates"].findings, ext)
        sem_wrong = [p for p in sem_reported if p not in planted_any and not near_enough(p)]
        sem_near = sem_reported & set(planted.near_pairs)
        sem_exact = sem_reported & planted.exact_pairs
        sem_p, sem_r = pr(len(sem_reported) - len(sem_wrong), len(sem_reported), len(sem_near),
                          len(planted.near_pairs))
        lines.append(("semantic_duplicates", len(sem_reported),
                      len(sem_reported) - len(sem_wrong), len(sem_near),
                      len(planted.near_pairs), sem_p, sem_r,
                      f"(info) exact pairs found {len(sem_exact)}/{len(planted.exact_pairs)}"))

        flagged = {ext[f.example_id] for f in results["label_issues"].issues}
        hit = flagged & planted.flipped
        label_p, label_r = pr(len(hit), len(flagged), len(hit), len(planted.flipped))
        lines.append(("label_issues", len(flagged), len(hit), len(hit), len(planted.flipped),
                      label_p, label_r, "strict: only flipped labels count as right"))

        print()
        print(f"{'check':<24}{'reported':>9}{'right':>7}{'found':>7}{'planted':>8}"
              f"{'precision':>10}{'recall':>8}  note")
        for name, rep, right, found, plan, p, r, note in lines:
            print(f"{name:<24}{rep:>9}{right:>7}{found:>7}{plan:>8}{p:>10.3f}{r:>8.3f}  {note}")
        print(f"near duplicate group sizes: {dict(sorted(sizes.items()))}")
        print()
        for name, (seconds, before, after) in times.items():
            print(f"time {name:<24}{seconds:7.1f} s   load average before {before}, after "
                  f"{after}")

        if args.show:
            missed = sorted(set(planted.near_pairs) - near_found)
            print(f"\nmissed near pairs ({len(missed)}):")
            for a, b in missed[:args.show]:
                ratio, cosine = closeness(a, b)
                print(f"  [{planted.near_pairs[(a, b)]}] ratio {ratio:.1f} cos {cosine:.3f}: "
                      f"{by_id[a].text!r} ~ {by_id[b].text!r}")
            print(f"near pairs judged wrong ({len(wrong)}):")
            for a, b in sorted(wrong)[:args.show]:
                ratio, cosine = closeness(a, b)
                print(f"  ratio {ratio:.1f} cos {cosine:.3f}: {by_id[a].text!r} ~ "
                      f"{by_id[b].text!r}")
            print(f"semantic pairs judged wrong ({len(sem_wrong)}):")
            for a, b in sorted(sem_wrong)[:args.show]:
                ratio, cosine = closeness(a, b)
                print(f"  ratio {ratio:.1f} cos {cosine:.3f}: {by_id[a].text!r} ~ "
                      f"{by_id[b].text!r}")

        def verdict(name, p, r, key):
            tp, tr = TARGETS[key]
            ok = p >= tp and r >= tr
            return (f"{name}: precision {p:.3f} (target >= {tp}), recall {r:.3f} (target >= "
                    f"{tr}): {'MET' if ok else 'MISSED'}")

        print()
        print(verdict("exact duplicates", exact_p, exact_r, "exact"))
        print(verdict("near duplicates", near_p, near_r, "near"))
        print(verdict("label issues", label_p, label_r, "label"))
        store.close()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
