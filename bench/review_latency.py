"""Review latency benchmark: next example of a filtered queue and saving a decision, against
plain DuckDB statements on the same table, in the same run.

    .venv/bin/python bench/review_latency.py [--rows 100000] [--iterations 300] [--warmup 20]
                                             [--label shipping] [--profile] [--keep DIR]
                                             [--reviewers 8] [--steps 40] [--rounds 2]
                                             [--only-concurrent]

What it does:
- Setup (timed separately, not part of the benchmark): writes N distinct chat examples
  (OpenAI chat format, fixed seed; 1-3 user/assistant exchanges, 10-150 words a user turn and
  20-300 an assistant turn; 10 labels with uneven shares; 0-3 tags) as JSONL files, one per
  (status, split) bucket, and imports them with `curation.import_file` into a fresh store in a
  temporary folder: about 60 % pending/train, 8 % pending/eval, 24 % accepted/train,
  3 % accepted/eval, 3 % rejected/train, 2 % needs_work/train. The store is then closed and
  opened again, as the app would open an existing workspace.
- Reads, alternating (a) and (c) in every iteration (and which goes first), after a warm-up:
    (a) next example: `queues.upcoming(store, "pending", ExampleFilter(label=(L,)),
        after=position, limit=2)`, walking forward from the previous current example, as the
        Review page does (current example + the prefetched next one);
    (c) baseline: `SELECT * FROM examples WHERE status = 'pending' AND label = ? LIMIT 1`
        through the same cursor (`store.cursor()`), fetched.
- Writes, alternating (b) and (d) likewise:
    (b) save a decision: `review.decide(store, User("bench", "reviewer"), ex.id, "accept",
        base_version=ex.version)` on successive examples of that filtered queue (a real
        transaction: the row update, a version row and an audit event);
    (d) baseline: `UPDATE examples SET status = 'accepted' WHERE id = ?` (autocommit) on
        successive pending examples of another label, i.e. rows that (a) and (b) never touch.
- Prints p50/p95/mean/max wall time (ms) of each and its mean CPU time (the process's, DuckDB's
  threads included: on a shared machine the wall time moves with the other processes' load, the
  CPU time hardly does; the load average is printed too), and last the ratios and the verdict
  line: next-example p95 and save p95 against the 100 ms target, and the next/baseline p50
  ratio.

Concurrent reviewers (after the above; `--only-concurrent` runs only this part): `--reviewers`
threads (8), each a reviewer with its own cursor, work the same filtered queue at once, each
taking `--steps` examples (40) per phase and deciding each one (`Workspace.decide`, accept,
not timed; a `VersionConflict` is counted), walking forward from the head of the queue:
    (e) leased next example: `leases.claim_next(store, reviewer, "pending", where,
        after=position)`: the next example nobody else holds, leased to the reviewer;
    (f) baseline: the unleased next example, `queues.upcoming(..., after=position, limit=2)`
        as before leases, where every reviewer is served the head of the queue.
Phases alternate (e f f e ... for `--rounds` 2); the first 2 steps of each reviewer in a phase
are warm-up. Prints p50/p95 wall ms of each, the version conflicts and the examples served to
two reviewers at once in each phase, the p95 ratio and the verdict against 100 ms.

`--profile` also prints, afterwards: EXPLAIN ANALYZE of the exact query `upcoming()` runs and of
the row read `decide()` runs (captured from the cursor), the time of each statement of a save
(median of 50 saves), the WAL bytes a save writes and what one CHECKPOINT costs, and a cProfile
of 30 next-example steps and 50 saves.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation import ExampleFilter, Store, import_file  # noqa: E402
from curation.auth import User  # noqa: E402
from curation.leases import claim_next  # noqa: E402
from curation.queues import upcoming  # noqa: E402
from curation.review import decide  # noqa: E402

SEED = 20261123
TARGET_MS = 100.0

# (status, split, share of the rows)
BUCKETS = [("pending", "train", 0.60), ("pending", "eval", 0.08),
           ("accepted", "train", 0.24), ("accepted", "eval", 0.03),
           ("rejected", "train", 0.03), ("needs_work", "train", 0.02)]
# ~10 labels with uneven shares (percent)
LABELS = {"billing": 16, "shipping": 13, "account": 12, "technical": 11, "returns": 10,
          "refunds": 9, "privacy": 8, "onboarding": 8, "feedback": 7, "other": 6}
TAGS = ["v1", "v2", "gold", "synthetic", "reviewed", "long", "short", "escalated", "de", "fr"]

_WORDS = """
the a an and or but if then when while because so that this these those it its we you they
our your their customer order invoice refund shipping delivery account password login email
address payment card bank transfer subscription plan upgrade downgrade cancel renew trial
price discount coupon code warranty return exchange replacement product item package box
tracking number carrier courier week day month hour minute today tomorrow yesterday morning
evening please thanks sorry help issue problem error message screen button page app website
mobile desktop browser update version install restart settings profile notification privacy
security data export import file report chart table column row filter search result query
database server network connection timeout latency request response status code header token
key secret permission role admin user team project workspace document folder share link copy
paste delete restore archive backup schedule meeting calendar reminder task deadline priority
can could should would will may might must need want like know think see check verify confirm
send receive open close start stop change set get make take give find keep try use work run
is are was were be been being have has had do does did not no yes also only just very really
about above after again against before below between during into through under over until
with without within across along around behind beyond near toward upon via per than as at by
quickly slowly carefully clearly simply usually often sometimes never always already still
step instructions guide manual section chapter example sample template format option choice
café naïve résumé Zürich São Paulo München façade jalapeño crème brûlée
""".split()
_SYSTEM = [
    "You are a helpful customer support assistant. Answer briefly and accurately.",
    "You are a support agent for an online store. Be polite and concrete.",
    "You are an assistant for a software company. Give step-by-step answers.",
    "You answer billing questions. If unsure, say so and offer to escalate.",
]


# --- data ------------------------------------------------------------------------------------

def _text(rng: random.Random, n_words: int) -> str:
    words = rng.choices(_WORDS, k=n_words)
    out, left = [], 0
    for i, w in enumerate(words):
        if left == 0:
            w, left = w[:1].upper() + w[1:], rng.randint(5, 16)
        left -= 1
        if left == 0 or i == n_words - 1:
            w, left = w + rng.choice("....?!"), 0
        out.append(w)
    return " ".join(out)


def generate(folder: Path, rows: int, seed: int = SEED) -> list[tuple[Path, str, str, int]]:
    """Write `rows` distinct chat examples into one JSONL file per (status, split) bucket."""
    rng = random.Random(seed)
    files = {(s, sp): folder / f"{s}-{sp}.jsonl" for s, sp, _ in BUCKETS}
    handles = {k: open(p, "w", encoding="utf-8", newline="\n") for k, p in files.items()}
    counts = dict.fromkeys(files, 0)
    bucket_keys = [(s, sp) for s, sp, _ in BUCKETS]
    bucket_weights = [w for _, _, w in BUCKETS]
    labels, label_weights = list(LABELS), list(LABELS.values())
    try:
        for n in range(1, rows + 1):
            messages = [{"role": "system", "content": rng.choice(_SYSTEM)}]
            for turn in range(rng.choices((1, 2, 3), (70, 22, 8))[0]):
                messages.append({"role": "user", "content": _text(rng, rng.randint(10, 150))})
                messages.append({"role": "assistant",
                                 "content": _text(rng, rng.randint(20, 300))})
            messages[1]["content"] = f"[{n}] " + messages[1]["content"]  # all distinct
            record = {"id": f"rl-{n:07d}", "messages": messages,
                      "label": rng.choices(labels, label_weights)[0],
                      "tags": rng.sample(TAGS, rng.randint(0, 3))}
            key = rng.choices(bucket_keys, bucket_weights)[0]
            handles[key].write(json.dumps(record, ensure_ascii=False) + "\n")
            counts[key] += 1
    finally:
        for h in handles.values():
            h.close()
    return [(files[k], k[0], k[1], counts[k]) for k in bucket_keys]


def build_store(folder: Path, rows: int) -> Path:
    db = folder / "review-bench.duckdb"
    t0 = time.perf_counter()
    parts = generate(folder, rows)
    size = sum(p.stat().st_size for p, *_ in parts) / 1e6
    t1 = time.perf_counter()
    print(f"setup: generated {rows:,} examples ({size:.1f} MB JSONL) in {t1 - t0:.1f} s")
    with Store(db) as store:
        for path, status, split, count in parts:
            report = import_file(store, path, status=status, split=split,
                                 user=User("bench", "admin"))
            assert report.imported == count and not report.rejected, report.summary()
    t2 = time.perf_counter()
    print(f"setup: imported them with curation.import_file in {t2 - t1:.1f} s "
          f"({', '.join(f'{c:,} {s}/{sp}' for _, s, sp, c in parts)})")
    for p, *_ in parts:
        p.unlink()
    return db


# --- measuring -------------------------------------------------------------------------------

def ms(seconds: float) -> float:
    return seconds * 1000.0


def timed(fn) -> tuple[float, float]:
    """(wall ms, CPU ms) of one call. CPU is the whole process's, DuckDB's threads included:
    unlike wall time it hardly moves when other processes compete for the CPUs."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    t1, c1 = time.perf_counter(), time.process_time()
    return ms(t1 - t0), ms(c1 - c0)


def pct(values: list[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class Walk:
    """The Review page's walk through one filtered queue: current example + prefetched next."""

    def __init__(self, store: Store, where: ExampleFilter):
        self.store, self.where, self.position = store, where, None
        self.current = None

    def step(self) -> None:
        items = upcoming(self.store, "pending", self.where, after=self.position, limit=2)
        assert len(items) == 2, "the filtered queue ran out: use a larger --rows"
        self.current = items[0]
        self.position = items[0].position


Timings = dict[str, list[float]]


def bench_reads(store: Store, label: str, iterations: int,
                warmup: int) -> tuple[Timings, Timings]:
    """(a) and (c), alternating: wall and CPU ms of each timed iteration."""
    walk = Walk(store, ExampleFilter(label=(label,)))
    cur = store.cursor()
    baseline_sql = "SELECT * FROM examples WHERE status = 'pending' AND label = ? LIMIT 1"

    def next_example() -> None:
        walk.step()

    def baseline() -> None:
        rows = cur.execute(baseline_sql, [label]).fetchall()
        assert len(rows) == 1

    times: dict[str, list[float]] = {"next": [], "next_baseline": []}
    cpu_times: dict[str, list[float]] = {"next": [], "next_baseline": []}
    seen = []
    for i in range(warmup + iterations):
        order = (("next", next_example), ("next_baseline", baseline))
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            wall, cpu = timed(fn)
            if i >= warmup:
                times[name].append(wall)
                cpu_times[name].append(cpu)
        seen.append(walk.current.example.id)
    assert len(set(seen)) == len(seen), "the walk did not move forward"
    assert all(a < b for a, b in zip(seen, seen[1:]))
    return times, cpu_times


def bench_writes(store: Store, user: User, label: str, other_label: str, iterations: int,
                 warmup: int) -> tuple[Timings, Timings]:
    """(b) and (d), alternating: wall and CPU ms of each timed iteration."""
    n = warmup + iterations
    # successive examples of the filtered queue (what the Review page would show, in order)
    queue = upcoming(store, "pending", ExampleFilter(label=(label,)), limit=n)
    assert len(queue) == n, "the filtered queue is too short: use a larger --rows"
    # rows that neither (a) nor (b) touch: pending examples of another label
    cur = store.cursor()
    others = [r[0] for r in cur.execute(
        "SELECT id FROM examples WHERE status = 'pending' AND label = ? ORDER BY id LIMIT ?",
        [other_label, n]).fetchall()]
    assert len(others) == n

    times: dict[str, list[float]] = {"save": [], "save_baseline": []}
    cpu_times: dict[str, list[float]] = {"save": [], "save_baseline": []}
    for i in range(n):
        ex = queue[i].example

        def save() -> None:
            after = decide(store, user, ex.id, "accept", base_version=ex.version)
            assert after.version == ex.version + 1 and after.status == "accepted"

        def baseline() -> None:
            cur.execute("UPDATE examples SET status = 'accepted' WHERE id = ?", [others[i]])

        order = (("save", save), ("save_baseline", baseline))
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            wall, cpu = timed(fn)
            if i >= warmup:
                times[name].append(wall)
                cpu_times[name].append(cpu)
    return times, cpu_times


# --- concurrent reviewers: leased next example against the unleased one ------------------

CONCURRENT_WARMUP = 2  # steps of each reviewer in each phase that are not recorded


def concurrent_phase(store: Store, where: ExampleFilter, people: list[User], steps: int,
                     leased: bool) -> tuple[list[float], int, int]:
    """All `people` work the filtered pending queue at once, `steps` examples each: time the
    next-example call of each step (leased or not), decide each example. Returns (wall ms of
    the recorded steps, version conflicts, examples served to two people at once)."""
    from curate.workspace import Workspace
    from curation import VersionConflict

    times: list[float] = []
    conflicts = 0
    holding: dict[int, str] = {}  # example id -> who has it on screen now
    doubled: set[int] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(people))

    def work(person: User) -> None:
        nonlocal conflicts
        ws = Workspace(store, person)
        position = None
        try:
            barrier.wait()
            for step in range(steps):
                t0 = time.perf_counter()
                if leased:
                    item = claim_next(store, person, "pending", where, after=position)
                else:
                    items = upcoming(store, "pending", where, after=position, limit=2)
                    item = items[0] if items else None
                wall = ms(time.perf_counter() - t0)
                if item is None:
                    raise RuntimeError("the filtered queue ran out: use a larger --rows")
                with lock:
                    if step >= CONCURRENT_WARMUP:
                        times.append(wall)
                    if holding.get(item.example.id, person.name) != person.name:
                        doubled.add(item.example.id)
                    holding[item.example.id] = person.name
                position = item.position
                try:
                    ws.decide(item.example.id, "accept", base_version=item.example.version)
                except VersionConflict:
                    with lock:
                        conflicts += 1
                with lock:
                    if holding.get(item.example.id) == person.name:
                        del holding[item.example.id]
        except BaseException as exc:  # noqa: BLE001  (re-raised below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return times, conflicts, len(doubled)


def bench_concurrent(store: Store, label: str, reviewers: int, steps: int,
                     rounds: int) -> dict[str, dict]:
    """(e) leased and (f) unleased next example under `reviewers` concurrent reviewers, in
    alternating phases: {"leased"/"unleased": {"times", "conflicts", "doubled"}}."""
    where = ExampleFilter(label=(label,))
    people = [User(f"reviewer{i + 1}", "reviewer") for i in range(reviewers)]
    out = {k: {"times": [], "conflicts": 0, "doubled": 0} for k in ("leased", "unleased")}
    for r in range(rounds):
        order = ("leased", "unleased") if r % 2 == 0 else ("unleased", "leased")
        for kind in order:
            times, conflicts, doubled = concurrent_phase(store, where, people, steps,
                                                         kind == "leased")
            out[kind]["times"] += times
            out[kind]["conflicts"] += conflicts
            out[kind]["doubled"] += doubled
            print(f"  round {r + 1}, {kind:>8}: p50 {pct(times, 50):7.1f} ms, p95 "
                  f"{pct(times, 95):7.1f} ms, {conflicts} version conflicts, {doubled} "
                  f"examples served to two reviewers at once")
    return out


def print_concurrent(result: dict[str, dict], reviewers: int) -> tuple[float, float]:
    """The table of (e) and (f); returns (leased p95, p95 ratio leased / unleased)."""
    names = {"leased": f"(e) leased next: leases.claim_next, {reviewers} reviewers",
             "unleased": f"(f) baseline: queues.upcoming, {reviewers} reviewers"}
    print()
    print(f"{'measurement (wall ms)':<56}{'n':>5}{'p50':>9}{'p95':>9}{'mean':>9}{'max':>9}"
          f"{'conflicts':>11}{'doubled':>9}")
    for key in ("leased", "unleased"):
        v = result[key]["times"]
        print(f"{names[key]:<56}{len(v):>5}{pct(v, 50):>9.2f}{pct(v, 95):>9.2f}"
              f"{statistics.fmean(v):>9.2f}{max(v):>9.2f}{result[key]['conflicts']:>11}"
              f"{result[key]['doubled']:>9}")
    leased_p95 = pct(result["leased"]["times"], 95)
    return leased_p95, leased_p95 / pct(result["unleased"]["times"], 95)


# --- profiling -------------------------------------------------------------------------------

class _TimingCursor:
    """Wraps a DuckDB cursor: records every statement executed through it, with its time."""

    def __init__(self, cur):
        self._cur, self.log = cur, []

    def execute(self, sql, params=None):
        t0 = time.perf_counter()
        self._cur.execute(sql, params) if params is not None else self._cur.execute(sql)
        self.log.append((sql, params, ms(time.perf_counter() - t0)))
        return self

    def __getattr__(self, name):
        return getattr(self._cur, name)


def _explain(cur, sql: str, params) -> str:
    plan = cur.execute("EXPLAIN ANALYZE " + sql, params).fetchall()[0][-1]
    return "\n".join(line[:150].rstrip() for line in plan.splitlines())


def _statement_name(sql: str) -> str:
    words = sql.split()
    return " ".join(words[:3] if words[0] in ("UPDATE", "INSERT") else words[:1])


def profile(store: Store, db: Path, user: User, label: str) -> None:
    """EXPLAIN ANALYZE of the SQL upcoming() runs; per-statement times of decide(); cProfile."""
    real = store.cursor()
    where = ExampleFilter(label=(label,))
    timing = _TimingCursor(real)
    ahead = upcoming(store, "pending", where, limit=400)  # the next 400 of the queue
    position = ahead[199].position

    store._local.cursor = timing
    try:
        upcoming(store, "pending", where, after=position, limit=2)
        next_sql, next_params, _ = timing.log[-1]
        timing.log.clear()
        wal = Path(f"{db}.wal")
        wal_before = wal.stat().st_size if wal.exists() else 0
        for item in ahead[200:250]:
            decide(store, user, item.example.id, "accept", base_version=item.example.version)
        wal_after = wal.stat().st_size if wal.exists() else 0
        save_log = list(timing.log)
    finally:
        store._local.cursor = real

    print("\n=== profile: the query upcoming() runs, under EXPLAIN ANALYZE ===")
    print(next_sql)
    print("params:", next_params)
    print(_explain(real, next_sql, next_params))

    print("=== profile: the statements of one decide(), median of 50 decisions ===")
    by_name: dict[str, list[float]] = {}
    for sql, _, t in save_log:
        by_name.setdefault(_statement_name(sql), []).append(t)
    for name, values in by_name.items():
        print(f"  {name:<32} x{len(values) / 50:.0f} per save   "
              f"median {statistics.median(values):6.2f} ms  p95 {pct(values, 95):6.2f} ms")
    print(f"  sum of the medians (x count): "
          f"{sum(statistics.median(v) * len(v) / 50 for v in by_name.values()):.2f} ms")
    select = next(s for s in save_log if s[0].lstrip().startswith("SELECT"))
    print("\n=== profile: the row read (Store._get, twice per save), under EXPLAIN ANALYZE ===")
    print(_explain(real, select[0], select[1]))
    threshold = real.execute("SELECT current_setting('checkpoint_threshold')").fetchone()[0]
    per_save = (wal_after - wal_before) / 50
    print(f"\nWAL written per save: {per_save / 1024:.1f} KiB; checkpoint_threshold {threshold}: "
          f"an automatic checkpoint inside some save's COMMIT every ~"
          f"{_size_bytes(threshold) / max(per_save, 1):,.0f} saves")
    t0 = time.perf_counter()
    real.execute("CHECKPOINT")
    print(f"one CHECKPOINT now takes {ms(time.perf_counter() - t0):.0f} ms")

    for what, fn in (
            ("next example (30 x upcoming, walking)",
             lambda: _walk(store, where, ahead[260].position, 30)),
            ("save (50 x decide)",
             lambda: [decide(store, user, i.example.id, "accept", base_version=i.example.version)
                      for i in ahead[300:350]])):
        prof = cProfile.Profile()
        prof.runcall(fn)
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(10)
        print(f"\n=== cProfile: {what}, top 10 by own time ===")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


def _walk(store: Store, where: ExampleFilter, position, n: int) -> None:
    for _ in range(n):
        position = upcoming(store, "pending", where, after=position, limit=2)[0].position


def _size_bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"bytes": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3,
                            "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


# --- the benchmark ---------------------------------------------------------------------------

def print_table(times: dict[str, list[float]],
                cpu: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    """Print p50/p95/mean/max wall time and mean CPU time of each measurement;
    return {key: (p50, p95)} of the wall times."""
    names = {
        "next": "(a) next example: queues.upcoming, filtered, limit=2",
        "save": "(b) save decision: review.decide(accept)",
        "next_baseline": "(c) baseline read: SELECT * ... LIMIT 1",
        "save_baseline": "(d) baseline write: single-row UPDATE",
    }
    print()
    print(f"{'measurement (wall ms; cpu = mean process CPU ms)':<56}{'n':>5}{'p50':>9}{'p95':>9}"
          f"{'mean':>9}{'max':>9}{'cpu':>9}")
    stats = {}
    for key in ("next", "save", "next_baseline", "save_baseline"):
        v = times[key]
        stats[key] = (pct(v, 50), pct(v, 95))
        print(f"{names[key]:<56}{len(v):>5}{stats[key][0]:>9.2f}{stats[key][1]:>9.2f}"
              f"{statistics.fmean(v):>9.2f}{max(v):>9.2f}{statistics.fmean(cpu[key]):>9.2f}")
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--label", default="shipping", choices=list(LABELS),
                    help="the label the review queue is filtered on")
    ap.add_argument("--profile", action="store_true",
                    help="also print EXPLAIN ANALYZE of the SQL and a cProfile of each")
    ap.add_argument("--keep", type=Path, help="build the store in this folder and keep it")
    ap.add_argument("--reviewers", type=int, default=8,
                    help="concurrent reviewers (threads) for the leased next-example path")
    ap.add_argument("--steps", type=int, default=40,
                    help="examples each concurrent reviewer takes per phase")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of the two concurrent phases (leased, unleased), alternating")
    ap.add_argument("--only-concurrent", action="store_true",
                    help="measure only the concurrent reviewers (e) and (f)")
    args = ap.parse_args()

    import duckdb

    folder = args.keep or Path(tempfile.mkdtemp(prefix="curate-review-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    other_label = "other" if args.label != "other" else "billing"
    try:
        print(f"python {platform.python_version()}, duckdb {duckdb.__version__}, "
              f"{os.cpu_count()} CPUs; {args.rows:,} rows, {args.iterations} iterations after "
              f"{args.warmup} warm-up, queue 'pending' filtered on label={args.label!r}")
        db = build_store(folder, args.rows)
        load_before = os.getloadavg()
        user = User("bench", "reviewer")
        with Store(db) as store:
            size = store.cursor().execute(
                "SELECT count(*) FROM examples WHERE status IN ('pending', 'needs_work') "
                "AND label = ?", [args.label]).fetchone()[0]
            needed = (0 if args.only_concurrent else
                      args.warmup + args.iterations + 2 + (400 if args.profile else 0))
            needed += 2 * args.rounds * args.reviewers * args.steps  # each decides its own
            print(f"setup: the filtered queue holds {size:,} examples (needs >= {needed:,})")
            if size < needed:
                raise SystemExit("the filtered queue is too short: use a larger --rows")

            stats = None
            if not args.only_concurrent:
                times, cpu = bench_reads(store, args.label, args.iterations, args.warmup)
                write_times, write_cpu = bench_writes(store, user, args.label, other_label,
                                                      args.iterations, args.warmup)
                times |= write_times
                cpu |= write_cpu
            print(f"\nconcurrent: {args.reviewers} reviewers, {args.steps} examples each per "
                  f"phase, {args.rounds} rounds")
            concurrent = bench_concurrent(store, args.label, args.reviewers, args.steps,
                                          args.rounds)
            load_after = os.getloadavg()
            print(f"\nload average (1/5/15 min) before the measurements: "
                  f"{' '.join(f'{x:.2f}' for x in load_before)}; after: "
                  f"{' '.join(f'{x:.2f}' for x in load_after)} ({os.cpu_count()} CPUs)")
            if not args.only_concurrent:
                stats = print_table(times, cpu)
            leased_p95, leased_ratio = print_concurrent(concurrent, args.reviewers)
            if args.profile and not args.only_concurrent:
                profile(store, db, user, args.label)

        print()
        print(f"ratio (p95): leased next example / unleased next example, {args.reviewers} "
              f"reviewers: {leased_ratio:.2f}")
        print(f"leased next-example p95 under {args.reviewers} concurrent reviewers: "
              f"{leased_p95:.1f} ms ({'meets' if leased_p95 < TARGET_MS else 'MISSES'} the "
              f"target < {TARGET_MS:.0f} ms)")
        if stats is None:
            return

        next_p95, save_p95 = stats["next"][1], stats["save"][1]
        ratio = stats["next"][0] / stats["next_baseline"][0]
        save_ratio = stats["save"][0] / stats["save_baseline"][0]
        print(f"ratios (p50): next example / baseline read {ratio:.1f}; "
              f"save / baseline write {save_ratio:.1f}")
        print(f"next-example {'meets' if next_p95 < TARGET_MS else 'MISSES'} the target; "
              f"save {'meets' if save_p95 < TARGET_MS else 'MISSES'} the target")
        print(f"next-example p95: {next_p95:.1f} ms (target < {TARGET_MS:.0f} ms); "
              f"save p95: {save_p95:.1f} ms (target < {TARGET_MS:.0f} ms); "
              f"next/baseline p50 ratio: {ratio:.1f}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
