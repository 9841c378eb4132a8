"""Ingest benchmark: our validated import against DuckDB's own read_json, same run, same file.

    .venv/bin/python bench/ingest.py [--rows 100000 | --size-mb 1000] [--out DIR] [--repeat 3]
                                     [--profile]

What it does:
- Writes N distinct chat examples (OpenAI chat format, fixed seed) as one JSONL file.
- Times, alternating, `--repeat` times each (at least 2), and keeps the best time of each:
    ours:   Store(fresh.duckdb) + curation.import_file(store, file, user=admin) + close
    duckdb: connect(fresh.duckdb) + CREATE TABLE t AS SELECT * FROM read_json(file,
            format='newline_delimited') + close
  i.e. open -> committed -> closed, for both. The baseline is the floor for getting those bytes
  into DuckDB; ours also validates every record, hashes it, checks duplicates and writes the
  examples (each one's first version) and one audit event each.
- Every run is a fresh child process (this script with --child), so the timings do not share
  caches or allocator state and the child's peak RSS (ru_maxrss, KiB on Linux) is its own.
  Our import forks parse workers, so the memory figure is the larger of that and the peak of
  the whole process tree's summed RSS, sampled every 10 ms from /proc (a sum of RSS counts
  pages the workers share with their parent twice: it overstates, never understates).
  `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` is the maximum over *all* children waited for
  so far, which would mix ours with the baseline; `os.wait4` returns the same rusage field for
  one child, so that is what is read. The child's CPU time (user + system) is read the same
  way, and /proc/stat gives how busy the rest of the machine was meanwhile: other load
  inflates wall times, and the script warns when there was some.
- Checks that our store ends with N examples and that no line was rejected.
- Prints the figures, and last the ratio (ours / duckdb rate, target >= 0.30) and our peak
  memory (target < 1024 MB).

`--profile` also runs our import once under cProfile and prints the top 25 functions by
cumulative and by own time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261123
RATIO_TARGET = 0.30
MEMORY_TARGET_MB = 1024

# --- data ------------------------------------------------------------------------------------

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
high low medium urgent normal first second third last next previous new old same different
can could should would will may might must need want like know think see check verify confirm
send receive open close start stop change set get make take give find keep try use work run
is are was were be been being have has had do does did not no yes also only just very really
more most less least many much few some any every each all both either neither other another
about above after again against before below between during into through under over until
with without within across along around behind beyond near toward upon via per than as at by
for from in of on to up down out off here there where why how what which who whom whose
quickly slowly carefully clearly simply usually often sometimes never always already still
step instructions guide manual section chapter example sample template format option choice
café naïve résumé Zürich São Paulo München façade coöperate jalapeño crème brûlée
""".split()  # noqa: SIM905 (a word list reads better as text)
_SYSTEM = [
    "You are a helpful customer support assistant. Answer briefly and accurately.",
    "You are a support agent for an online store. Be polite and concrete.",
    "You are an assistant for a software company. Give step-by-step answers.",
    "You answer billing questions. If unsure, say so and offer to escalate.",
    "You are a technical writer. Explain clearly and keep answers short.",
]
_LABELS = ["billing", "shipping", "account", "technical", "returns", "other"]
_TAGS = ["v1", "v2", "gold", "synthetic", "reviewed", "long", "short", "escalated", "de", "fr"]


def _sentence_text(rng: random.Random, n_words: int) -> str:
    """`n_words` words in sentences of 5-16 words, capitalised and punctuated."""
    words = rng.choices(_WORDS, k=n_words)
    out, left = [], 0
    for i, w in enumerate(words):
        if left == 0:
            w, left = w[:1].upper() + w[1:], rng.randint(5, 16)
        left -= 1
        if left == 0 or i == n_words - 1:
            w, left = w + rng.choice(".....?!"), 0
        elif rng.random() < 0.06:
            w += ","
        out.append(w)
    return " ".join(out)


def generate(path: Path, rows: int, seed: int = SEED, max_bytes: int | None = None) -> int:
    """Write `rows` distinct OpenAI-format chat examples as JSONL (or fewer, stopping once the
    file holds `max_bytes`); return the file's size."""
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        n = 0
        while n < rows and (max_bytes is None or f.tell() < max_bytes):
            user = _sentence_text(rng, rng.randint(10, 80))
            assistant = _sentence_text(rng, rng.randint(20, 120))
            if (user, assistant) in seen:  # all conversations distinct
                continue
            seen.add((user, assistant))
            n += 1
            record = {
                "id": f"bench-{n:07d}",
                "messages": [{"role": "system", "content": rng.choice(_SYSTEM)},
                             {"role": "user", "content": user},
                             {"role": "assistant", "content": assistant}],
                "label": rng.choice(_LABELS),
                "tags": rng.sample(_TAGS, rng.randint(0, 3)),
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path.stat().st_size


# --- the measured work, each in its own child process ----------------------------------------

def child_ours(file: str, db: str, profile: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    from curation import Store, User, import_file

    def work() -> tuple[dict, float, float]:
        t0 = time.perf_counter()
        store = Store(db)
        report = import_file(store, file, user=User("bench", "admin"))
        t_commit = time.perf_counter() - t0
        store.close()
        return ({"lines": report.lines, "imported": report.imported,
                 "rejected": len(report.rejected),
                 "rejected_first": [str(e) for e in report.rejected[:3]],
                 "already_in_store": len(report.already_in_store),
                 "duplicates_in_file": len(report.duplicates_in_file)},
                t_commit, time.perf_counter() - t0)

    if profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        result, t_commit, seconds = prof.runcall(work)
        stats = pstats.Stats(prof, stream=sys.stderr)
        for key in ("cumulative", "tottime"):
            print(f"\n=== our import under cProfile, top 25 by {key} ===", file=sys.stderr)
            stats.sort_stats(key).print_stats(25)
    else:
        result, t_commit, seconds = work()
    return {**result, "seconds_to_commit": t_commit, "seconds": seconds}


def child_duckdb(file: str, db: str) -> dict:
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect(db)
    con.execute("CREATE TABLE t AS SELECT * FROM read_json(?, format='newline_delimited')",
                [file])
    t_commit = time.perf_counter() - t0  # autocommit: the CREATE TABLE AS is committed here
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    t_count = time.perf_counter() - t0 - t_commit
    con.close()
    return {"rows": rows, "seconds_to_commit": t_commit,
            "seconds": time.perf_counter() - t0 - t_count}


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _tree_rss_kb(pid: int) -> int:
    """Resident memory (KiB) of a process and all its descendants, summed (Linux /proc).

    A sum of RSS counts pages shared between parent and forked workers once per process, so it
    overstates the memory really used: a conservative figure."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f
                               if line.startswith("VmRSS:")), 0)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def _sample_tree(pid: int, peak: list[int], stop: threading.Event) -> None:
    while not stop.wait(0.01):
        peak[0] = max(peak[0], _tree_rss_kb(pid))


def run_child(kind: str, file: Path, db: Path, profile: bool = False) -> dict:
    """Run one measurement in a fresh process; add its peak RSS (MB) and CPU time from its own
    rusage, and the CPU time the rest of the machine used meanwhile (other load skews timings)."""
    for p in (db, Path(f"{db}.wal")):
        p.unlink(missing_ok=True)
    busy0, wall0 = _busy_cpu_seconds(), time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
           "--file", str(file), "--db", str(db)] + (["--profile"] if profile else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    tree_peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=_sample_tree, args=(proc.pid, tree_peak, stop))
    sampler.start()
    out = proc.stdout.read()
    stop.set()
    sampler.join()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    wall, busy = time.perf_counter() - wall0, _busy_cpu_seconds() - busy0
    # ru_maxrss (KiB on Linux) is the largest RSS of the child or of any one of its waited-for
    # children, not their sum; the sampled sum over the process tree (parse workers included)
    # is the figure held to the target, whichever is larger
    result["process_peak_rss_mb"] = usage.ru_maxrss / 1024
    result["peak_rss_mb"] = max(usage.ru_maxrss, tree_peak[0]) / 1024
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    result["other_load"] = max(0.0, busy - result["cpu_s"]) / wall  # other busy CPUs, average
    return result


# --- the benchmark ---------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--size-mb", type=int, default=None,
                    help="write a file of this many MB instead of --rows rows (e.g. 1000 for "
                         "the 1 GB memory promise); put --out on a disk with room for it")
    ap.add_argument("--out", type=Path, help="folder for the data and stores (kept); "
                                             "default: a temporary folder, removed at the end")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, alternating (>= 2)")
    ap.add_argument("--profile", action="store_true",
                    help="also profile our import once (cProfile, top 25)")
    ap.add_argument("--child", choices=("ours", "duckdb"), help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        result = (child_ours(args.file, args.db, args.profile) if args.child == "ours"
                  else child_duckdb(args.file, args.db))
        print(json.dumps(result))
        return

    repeat = max(2, args.repeat)
    workdir = args.out or Path(tempfile.mkdtemp(prefix="curate-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        _bench(workdir, args.rows, repeat, args.profile, args.size_mb)
    finally:
        if args.out is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _bench(workdir: Path, rows: int, repeat: int, profile: bool,
           size_mb: int | None = None) -> None:
    import duckdb

    data = workdir / (f"chat-{size_mb}MB.jsonl" if size_mb else f"chat-{rows}.jsonl")
    t0 = time.perf_counter()
    if size_mb:
        size = generate(data, 10**9, max_bytes=size_mb * 10**6)
        with open(data, "rb") as f:
            rows = sum(1 for _ in f)
    else:
        size = generate(data, rows)
    mb = size / 1e6
    print(f"generated {rows:,} examples, {mb:.1f} MB in {time.perf_counter() - t0:.1f} s: {data}")
    print(f"python {sys.version.split()[0]}, duckdb {duckdb.__version__}, "
          f"{os.cpu_count()} CPUs; {repeat} runs each, alternating, best time kept")

    runs: dict[str, list[dict]] = {"ours": [], "duckdb": []}
    for i in range(repeat):
        for kind in (("ours", "duckdb") if i % 2 == 0 else ("duckdb", "ours")):
            r = run_child(kind, data, workdir / f"{kind}.duckdb")
            runs[kind].append(r)
            print(f"  run {i + 1} {kind:<6}  {r['seconds']:7.2f} s  "
                  f"(committed after {r['seconds_to_commit']:.2f} s)  "
                  f"process CPU {r['cpu_s']:6.2f} s  peak RSS {r['peak_rss_mb']:7.1f} MB "
                  f"(largest process {r['process_peak_rss_mb']:.0f})  "
                  f"other load {r['other_load']:.1f} CPUs")
            if kind == "ours":
                assert r["lines"] == rows, r
                assert r["rejected"] == 0, f"{r['rejected']} lines rejected: {r['rejected_first']}"
                assert r["imported"] == rows, r
            else:
                assert r["rows"] == rows, r

    with duckdb.connect(str(workdir / "ours.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM examples").fetchone()[0]
        earlier = con.execute("SELECT count(*) FROM example_versions").fetchone()[0]
        events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    # each example's first (current) version is stored once, in `examples`; example_versions
    # holds only superseded versions, so it is empty after an import
    assert stored == events == rows and earlier == 0, (stored, events, earlier)
    print(f"verified: our store holds {stored:,} examples ({events:,} events, "
          f"{earlier:,} superseded versions), 0 lines rejected")

    fastest = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    best = {k: r["seconds"] for k, r in fastest.items()}
    cpu = {k: r["cpu_s"] for k, r in fastest.items()}
    other = max(r["other_load"] for r in fastest.values())
    peak = {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()}
    print()
    print(f"rows: {rows:,}   file: {mb:.1f} MB")
    print(f"{'':<28}{'best s':>9}{'rows/s':>12}{'MB/s':>9}{'peak RSS MB':>13}"
          f"{'CPU s':>8}")  # CPU s: of the best run; peak RSS: the highest of all runs
    names = {"ours": "ours (import_file)", "duckdb": "duckdb read_json (CTAS)"}
    for k in ("ours", "duckdb"):
        print(f"{names[k]:<28}{best[k]:>9.2f}{rows / best[k]:>12,.0f}{mb / best[k]:>9.1f}"
              f"{peak[k]:>13.1f}{cpu[k]:>8.2f}")
    if other > 0.25:
        print(f"WARNING: other processes kept {other:.1f} of {os.cpu_count()} CPUs busy during "
              "a best run; its wall time is inflated, run again on a quiet machine")
    else:
        print(f"best runs were not disturbed (other load <= {other:.1f} CPUs)")

    if profile:
        print("\nprofiling our import once (cProfile; output on stderr) ...", flush=True)
        r = run_child("ours", data, workdir / "ours-profiled.duckdb", profile=True)
        print(f"profiled run: {r['seconds']:.2f} s (with profiler overhead)")

    ratio = best["duckdb"] / best["ours"]
    print()
    print(f"ratio (ours / duckdb read_json rate): {ratio:.2f}  (target >= {RATIO_TARGET:.2f})")
    print(f"peak memory ours: {peak['ours']:.0f} MB (target < {MEMORY_TARGET_MB} MB)")


if __name__ == "__main__":
    main()
