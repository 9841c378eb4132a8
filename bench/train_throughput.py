"""Training throughput: our trainer beside a plain `transformers.Trainer`, same data, same run.

    .venv/bin/python bench/train_throughput.py [--steps 20] [--warmup 3] [--repeat 2]

What it does:
- Takes (warmup + steps) x batch size Banking77 queries from
  ../shared/datasets/banking77/train.csv (fixed seed) and writes them as chat examples
  (system prompt, user = query, assistant = intent label) to a `train.jsonl`, as a snapshot
  export would. Both sides read such a file and encode it with `training.data.encode` (the
  base model's chat template, loss on the assistant's tokens only), so they see the same
  token ids and labels; each trains on every example of its file once (one epoch of
  warmup + steps batches). With different batch sizes the smaller file is the start of the
  larger.
- **ours**: `python -m training.trainer RUN_DIR` on a run folder with the default
  `TrainConfig` (LoRA r 16, alpha 32, no dropout, all linear layers, batch 16, precision
  auto: bf16 autocast on this CPU, length-bucketed batches), checkpoints off. Its
  per-step `metrics.jsonl` gives the end time and the real (non-padding) tokens of each step.
- **baseline**: a child process running `transformers.Trainer` on the same base model
  (fp32) with a PEFT LoRA of the same rank, alpha, dropout and targets as ours (our
  defaults, read from `TrainConfig`), and everything else at the library's defaults: fp32,
  batch 8 (`per_device_train_batch_size`), `DataCollatorForSeq2Seq` padding to the longest
  in each randomly drawn batch, AdamW at the default 5e-5, torch's default thread count and
  OpenMP wait policy; only `max_steps`, no saving, no reporting and no progress bar are set.
  A callback records when each step ends and the collator the real tokens of each batch.
  `--batch-size N` gives both sides batch N (the same-batch comparison).
- Both: the first `--warmup` steps are not timed; tokens per second = real tokens of the next
  `--steps` steps / the wall time from the end of the last warm-up step to the end of the last
  step. Each side runs in a child process of its own, so its peak RSS (`ru_maxrss` from
  `os.wait4`) is its own. The two alternate `--repeat` times; the best of each is kept. The
  script prints how many CPUs other processes kept busy during each run (from /proc/stat
  minus the child's own CPU time), since the machine is shared.
- `--sides baseline,baseline-passive,ours` adds the baseline with OMP_WAIT_POLICY=PASSIVE
  (idle OpenMP threads sleep, as in our trainer): on a shared CPU spinning threads slow the
  library default a lot, and this side tells that effect apart from the rest.
- The ratio (ours / baseline tokens per second) is printed last; the target is >= 2.

The data set is not part of Curate; without ../shared/datasets/banking77 the script stops
with a message saying where it expects it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "datasets" / "banking77"
SYSTEM_PROMPT = ("Classify the online-banking customer query into its intent. Reply with the "
                 "intent label only.")
TARGET_RATIO = 2.0
TRAINER_DEFAULT_BATCH = 8  # TrainingArguments.per_device_train_batch_size


def require_dataset(name: str = "train.csv") -> Path:
    path = DATA / name
    if not path.is_file():
        sys.exit(f"this benchmark needs the Banking77 data set at {path} (CSV text,category; "
                 "see docs/benchmarks.md); it is not part of Curate")
    return path


def write_examples(path: Path, n: int, seed: int) -> None:
    with open(require_dataset(), newline="", encoding="utf-8") as f:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(f)]
    random.Random(seed).shuffle(rows)
    with open(path, "w", encoding="utf-8") as f:
        for text, label in rows[:n]:
            f.write(json.dumps({"messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": text},
                {"role": "assistant", "content": label}], "label": label}) + "\n")


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine so far."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def run_child(command: list[str], env: dict[str, str]) -> dict:
    """Run a child process; its wall time, CPU time, peak RSS and the other CPUs' load."""
    hz = os.sysconf("SC_CLK_TCK")
    busy0, _ = _busy_jiffies()
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    busy1, _ = _busy_jiffies()
    cpu = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n{output[-3000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": usage.ru_maxrss / 1024,
            "other_cpus_busy": max(0.0, ((busy1 - busy0) / hz - cpu) / wall)}


def window(ends: list[float], tokens: list[int], warmup: int, steps: int) -> dict:
    """Tokens per second over steps warmup+1 .. warmup+steps, from per-step end times."""
    if len(ends) < warmup + steps:
        raise RuntimeError(f"only {len(ends)} steps recorded, {warmup + steps} needed")
    elapsed = ends[warmup + steps - 1] - ends[warmup - 1]
    counted = sum(tokens[warmup:warmup + steps])
    return {"tokens": counted, "seconds": elapsed, "tokens_per_second": counted / elapsed}


# --- ours -----------------------------------------------------------------------------------

def run_ours(work: Path, args, cache: Path) -> dict:
    from training.config import TrainConfig, default
    from training.run_folder import MANIFEST, read_metrics, write_json

    run_dir = work / f"ours-{time.monotonic_ns()}"
    run_dir.mkdir()
    shutil.copy(work / f"train-{args.batch_size or default('batch_size')}.jsonl",
                run_dir / "train.jsonl")
    config = TrainConfig(epochs=1, batch_size=args.batch_size or default("batch_size"),
                         checkpoint_every_steps=0, seed=args.seed)
    write_json(run_dir / MANIFEST, {"run_id": run_dir.name, "config": config.to_dict(),
                                    "base_model": config.base_model, "model_cache": str(cache)})
    env = {**os.environ, "CURATE_MODEL_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"}
    stats = run_child([sys.executable, "-m", "training.trainer", str(run_dir)], env)
    metrics = read_metrics(run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    stats |= window([m["time"] for m in metrics], [m["tokens"] for m in metrics],
                    args.warmup, args.steps)
    stats["precision"] = status.get("precision")
    stats["threads"] = _threads_from_log(run_dir / "trainer.log")
    return stats


def _threads_from_log(path: Path) -> str:
    for line in path.read_text().splitlines():
        if "threads)" in line:
            return line.split("(")[-1].split(" threads)")[0]
    return "?"


# --- baseline -------------------------------------------------------------------------------

def run_baseline(work: Path, args, cache: Path, passive: bool = False) -> dict:
    out = work / f"baseline-{time.monotonic_ns()}.json"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    env |= {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    stats = run_child([sys.executable, __file__, "--child-baseline", str(work), "--out",
                       str(out), "--cache", str(cache),
                       "--batch-size", str(args.batch_size or TRAINER_DEFAULT_BATCH),
                       "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--seed", str(args.seed)], env)
    recorded = json.loads(out.read_text())
    stats |= window(recorded["ends"], recorded["tokens"], args.warmup, args.steps)
    stats["precision"], stats["threads"] = "fp32", str(recorded["threads"])
    return stats


def baseline_child(args) -> None:
    """The plain transformers.Trainer run (in its own process)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq,
                              Trainer, TrainerCallback, TrainingArguments)

    from training.config import TrainConfig
    from training.data import load_train_data
    from training.models import cached_default_model

    path = cached_default_model(Path(args.cache))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    data = load_train_data(Path(args.child_baseline) / f"train-{args.batch_size}.jsonl",
                           tokenizer, 512)
    dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in data.examples]
    ours = TrainConfig()  # the same adapter as ours: rank, alpha, dropout, target modules
    model = get_peft_model(model, LoraConfig(r=ours.r, lora_alpha=ours.alpha,
                                             lora_dropout=ours.dropout,
                                             target_modules=ours.target_modules_list(),
                                             task_type="CAUSAL_LM"))
    tokens: list[int] = []
    ends: list[float] = []
    pad = DataCollatorForSeq2Seq(tokenizer, padding="longest")

    def collate(features):
        batch = pad(features)
        tokens.append(int(batch["attention_mask"].sum()))
        return batch

    class StepTimes(TrainerCallback):
        def on_step_end(self, *_, **__):
            ends.append(time.time())

    training_args = TrainingArguments(
        output_dir=str(Path(args.child_baseline) / "hf-trainer"),
        per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=args.seed)
    Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=collate,
            callbacks=[StepTimes()]).train()
    Path(args.out).write_text(json.dumps({"ends": ends, "tokens": tokens,
                                          "threads": torch.get_num_threads()}))


# --- main -----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, help="batch size of both sides (default: "
                        "each side's own default, 16 ours and 8 transformers.Trainer's)")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs of each side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--sides", default="baseline,ours",
                        help="comma-separated sides to run, in this order each round: "
                             "baseline, ours, and baseline-passive (the baseline with "
                             "OMP_WAIT_POLICY=PASSIVE, as ours, to tell that effect apart)")
    parser.add_argument("--child-baseline", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_baseline:
        baseline_child(args)
        return
    if args.warmup < 1 or args.steps < 1:
        sys.exit("--warmup and --steps must be at least 1")
    require_dataset()
    from training.models import cached_default_model

    work = args.keep or Path(tempfile.mkdtemp(prefix="train-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("CURATE_MODEL_CACHE") or work / "models").resolve()
    cached_default_model(cache)
    from training.config import default

    batches = {"ours": args.batch_size or default("batch_size"),
               "baseline": args.batch_size or TRAINER_DEFAULT_BATCH}
    for size in set(batches.values()):
        # the first (warmup + steps) x size queries of one seeded order: the smaller set is
        # the start of the larger
        write_examples(work / f"train-{size}.jsonl", (args.warmup + args.steps) * size,
                       args.seed)
    print(f"Banking77 examples, batch {batches['ours']} ours and {batches['baseline']} "
          f"baseline: {args.warmup} warm-up + {args.steps} timed steps per run (one epoch of "
          f"warm-up + steps batches); {os.cpu_count()} CPUs; work folder {work}")
    sides = [x.strip() for x in args.sides.split(",") if x.strip()]
    runners = {"ours": run_ours, "baseline": run_baseline,
               "baseline-passive": lambda *a: run_baseline(*a, passive=True)}
    if not sides or set(sides) - set(runners):
        sys.exit(f"--sides takes {', '.join(runners)}")
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for round_ in range(args.repeat):
        for side in sides:
            r = runners[side](work, args, cache)
            results[side].append(r)
            print(f"run {round_ + 1} {side:<16} {r['tokens_per_second']:7.1f} tok/s "
                  f"({r['tokens']:,} tokens in {r['seconds']:.1f} s; {r['precision']}, "
                  f"{r['threads']} threads)  peak RSS {r['peak_rss_mb']:,.0f} MB  process "
                  f"{r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU  other CPUs busy "
                  f"{r['other_cpus_busy']:.1f}", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    best = {s: max(rs, key=lambda r: r["tokens_per_second"]) for s, rs in results.items() if rs}
    for side, r in best.items():
        peak = max(x["peak_rss_mb"] for x in results[side])
        print(f"{side:<16} best {r['tokens_per_second']:7.1f} tok/s; peak RSS {peak:,.0f} MB "
              "(highest of its runs)")
    if "ours" in best and "baseline-passive" in best:
        ratio = best["ours"]["tokens_per_second"] / best["baseline-passive"]["tokens_per_second"]
        print(f"ratio (ours / transformers.Trainer with OMP_WAIT_POLICY=PASSIVE): {ratio:.2f}")
    if "ours" in best and "baseline" in best:
        ratio = best["ours"]["tokens_per_second"] / best["baseline"]["tokens_per_second"]
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(f"ratio (ours / transformers.Trainer at its defaults, tokens per second): "
              f"{ratio:.2f} (target >= {TARGET_RATIO:g}: {verdict})")


if __name__ == "__main__":
    main()
