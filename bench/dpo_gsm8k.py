"""Acceptance bench of DPO: GSM8K preference pairs, SmolLM2, CPU, pairwise accuracy vs base.

Builds preference pairs from GSM8K's worked solutions (`../shared/datasets/gsm8k/`, Alpaca
JSON): the prompt is the problem, chosen is the reference solution, rejected the same
solution with one number corrupted:
- `final`: the final answer (the solution's last number) changed: off by a few units, one
  digit changed, or ten times too large or small;
- `step`: the result of an earlier step (a number right after "=") changed the same way,
  the later steps left as they were (so the solution contradicts itself);
- `skip`: one step (a line other than the last) left out, the rest unchanged.
The kinds take turns, a third each.
Problems are shuffled with a fixed seed; the shortest solutions are kept (the sequence cap is
short, for CPU speed) and split into held-out eval pairs (the first `--eval`, so the held-out
set does not change with the number of train pairs) and train pairs of other problems.
A DPO run (`training.dpo`, through the trainer's own entry point in a run folder, as
`curate train --method dpo` would start it) trains a LoRA adapter on the packaged
SmolLM2-135M-Instruct; then `training.preference_eval` scores the held-out pairs with the
base model and the tuned one (both in the same precision, same encoding) and the gain in
points is printed last.

The pairs are built here as `PreferencePair` objects and written into the run folder
directly; in the app they come from the store's preference pairs of a snapshot.

    OMP_NUM_THREADS=2 python bench/dpo_gsm8k.py                # the acceptance run
    OMP_NUM_THREADS=1 python bench/dpo_gsm8k.py --train 16 --eval 16 --epochs 1   # a smoke run

`--sft-weight`, `--beta`, `--lr`, `--rank` and the sizes are there to try other settings,
`--train-seed` reruns the same pairs with another adapter init and batch order, and
`--sft-epochs N` first trains an SFT run on the train pairs' chosen answers and starts DPO from
its adapter (the app's "Start from SFT run"), timed together; the runs made and their results
are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation.preference import PreferencePair

_ROOT = Path(__file__).resolve().parent.parent
DATA = next((p for p in (_ROOT.parent / "shared", _ROOT.parent.parent / "shared")
             if (p / "datasets").is_dir()), _ROOT.parent / "shared") / "datasets" / "gsm8k" / \
    "gsm8k_train_alpaca.json"  # ../shared beside the checkout (or beside its worktree folder)
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")
KINDS = ("final", "step", "skip")
STEP_RESULT = re.compile(r"=\s*\$?(\d+(?:\.\d+)?)(?![\w.])")


def corrupt_number(text: str, rng: random.Random) -> str:
    """A different number of the same shape: off by a few, one digit changed, or x/÷ 10."""
    whole = "." not in text
    value = float(text)
    for _ in range(20):
        how = rng.choice(["offset", "digit", "scale"])
        if how == "offset":
            new = value + rng.choice([-1, 1]) * rng.randint(1, 9)
        elif how == "digit":
            i = rng.randrange(len(text))
            if not text[i].isdigit():
                continue
            d = rng.choice([c for c in "0123456789" if c != text[i]])
            candidate = text[:i] + d + text[i + 1:]
            if candidate[0] == "0" and len(candidate) > 1 and candidate[1] != ".":
                continue
            return candidate
        else:
            new = value * 10 if rng.random() < 0.5 or value < 10 else value / 10
        if new <= 0:
            continue
        out = str(int(new)) if whole and float(new).is_integer() else f"{new:g}"
        if out != text:
            return out
    return str(int(value) + 1) if whole else f"{value + 1:g}"


def corrupt(solution: str, kind: str, rng: random.Random) -> str | None:
    """The solution with its final answer (`final`) or an earlier step's result (`step`)
    corrupted; None when it has nothing to corrupt of that kind."""
    if kind == "final":
        found = list(NUMBER.finditer(solution))
        if not found:
            return None
        m = found[-1]
        return solution[:m.start()] + corrupt_number(m.group(), rng) + solution[m.end():]
    if kind == "skip":
        lines = solution.split("\n")
        if len(lines) < 3:
            return None
        drop = rng.randrange(len(lines) - 1)  # never the last line, which holds the answer
        return "\n".join(lines[:drop] + lines[drop + 1:])
    steps = list(STEP_RESULT.finditer(solution))[:-1]  # not the last: that is `final`
    if not steps:
        return None
    m = rng.choice(steps)
    return solution[:m.start(1)] + corrupt_number(m.group(1), rng) + solution[m.end(1):]


def build_pairs(n_train: int, n_eval: int, max_chars: int, seed: int, data: Path = DATA
                ) -> tuple[list[PreferencePair], dict[int, str]]:
    rows = json.loads(Path(data).read_text())
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    pairs, kind_of = [], {}
    for index in order:
        row = rows[index]
        question = (row["instruction"] + ("\n" + row["input"] if row["input"] else "")).strip()
        solution = row["output"].strip()
        if len(question) + len(solution) > max_chars:
            continue
        kind = KINDS[len(pairs) % len(KINDS)]  # in turn: a third of each kind
        rejected = corrupt(solution, kind, rng)
        if rejected is None or rejected == solution:
            continue
        split = "eval" if len(pairs) < n_eval else "train"  # held out first: a fixed set
        kind_of[index] = kind
        pairs.append(PreferencePair(
            example_id=index, prompt=({"role": "user", "content": question},),
            chosen=({"role": "assistant", "content": solution},),
            rejected=({"role": "assistant", "content": rejected},), split=split))
        if len(pairs) == n_train + n_eval:
            break
    return pairs, kind_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="GSM8K Alpaca JSON file")
    parser.add_argument("--train", type=int, default=480, help="train pairs")
    parser.add_argument("--eval", type=int, default=150, help="held-out eval pairs")
    parser.add_argument("--max-chars", type=int, default=380,
                        help="longest problem + solution kept, in characters")
    parser.add_argument("--max-seq-length", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--sft-weight", type=float, default=0.0,
                        help="weight of the SFT term on the chosen answers (RPO)")
    parser.add_argument("--sft-epochs", type=int, default=0,
                        help="first an SFT run of this many epochs on the train pairs' chosen "
                             "answers, then DPO from its adapter (as --sft-run does); 0: DPO "
                             "from the base model")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--target-modules", default="all-linear",
                        help="the adapted modules: all-linear, or names joined by commas "
                             "(q_proj,k_proj,v_proj,o_proj: attention only)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the pair set (which problems, which corruptions)")
    parser.add_argument("--train-seed", type=int, default=None,
                        help="seed of the training run (adapter init, batch order); "
                             "default: --seed. Another value reruns the same pair set.")
    parser.add_argument("--keep", default=None, help="run folder to keep (default: temporary)")
    args = parser.parse_args()

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from curation.formats import to_openai
    from training.config import TrainConfig
    from training.dpo import PAIRS_FILE, read_pairs, write_pairs
    from training.preference_eval import evaluate_preferences
    from training.run_folder import (ADAPTER, MANIFEST, TRAIN_FILE, RunManifest, read_json,
                                     write_json)
    from training.trainer import main as trainer_main

    pairs, kind_of = build_pairs(args.train, args.eval, args.max_chars, args.seed, args.data)
    config = TrainConfig(method="dpo", beta=args.beta, sft_weight=args.sft_weight,
                         epochs=args.epochs, batch_size=args.batch_size,
                         learning_rate=args.lr, r=args.rank, alpha=2 * args.rank,
                         target_modules=(args.target_modules if args.target_modules ==
                                         "all-linear" else args.target_modules.split(",")),
                         max_seq_length=args.max_seq_length, precision=args.precision,
                         seed=args.seed if args.train_seed is None else args.train_seed,
                         checkpoint_every_steps=0)
    run_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dpo-gsm8k-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    n_train = sum(p.split == "train" for p in pairs)
    held = [kind_of[p.example_id] for p in pairs if p.split == "eval"]
    print(f"pairs: {n_train} train, {len(pairs) - n_train} eval ("
          + ", ".join(f"{held.count(k)} {k}" for k in KINDS) + f"); run folder {run_dir}",
          flush=True)

    started = time.perf_counter()
    extra = {}
    if args.sft_epochs:  # SFT on the chosen answers first, in a run folder of its own
        sft_dir = run_dir.with_name(run_dir.name + "-sft")
        sft_dir.mkdir(parents=True, exist_ok=True)
        sft_config = dataclasses.replace(config, method="sft", sft_weight=0.0,
                                         epochs=args.sft_epochs)
        with open(sft_dir / TRAIN_FILE, "w") as f:
            for p in pairs:
                if p.split == "train":
                    f.write(json.dumps(to_openai([*p.prompt, *p.chosen], plain=True)) + "\n")
        write_json(sft_dir / MANIFEST, RunManifest(
            run_id=sft_dir.name, base_model=config.base_model, config=sft_config.to_dict(),
            examples=n_train).to_json())
        if trainer_main([str(sft_dir)]) != 0:
            raise SystemExit(f"SFT run failed: {read_json(sft_dir / 'status.json')}")
        print(f"SFT on the chosen answers: {args.sft_epochs} epoch(s) in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        extra = {"sft_adapter": str(sft_dir / ADAPTER)}
    write_pairs(run_dir / PAIRS_FILE, pairs)
    write_json(run_dir / MANIFEST, RunManifest(
        run_id=run_dir.name, base_model=config.base_model, config=config.to_dict(),
        examples=len(pairs), extra=extra).to_json())
    code = trainer_main([str(run_dir)])
    train_seconds = time.perf_counter() - started
    status = read_json(run_dir / "status.json")
    if code != 0:
        raise SystemExit(f"training {status.get('state')}: {status.get('reason')}")
    print(f"trained {status['final']['steps']} steps in {train_seconds:.0f} s "
          f"({status.get('precision')}, {status.get('data')})", flush=True)

    started = time.perf_counter()
    eval_pairs = read_pairs(run_dir / PAIRS_FILE, "eval")
    result = evaluate_preferences(run_dir, eval_pairs, batch_size=16)
    eval_seconds = time.perf_counter() - started
    by_kind = {}
    for system in ("base", *(["sft"] if args.sft_epochs else []), "tuned"):
        for kind in KINDS:
            margins = [e[system] for e in result["examples"] if kind_of[e["id"]] == kind]
            by_kind[f"{system}/{kind}"] = (sum(m > 0 for m in margins) / len(margins)
                                          if margins else None)
    base = result["systems"]["base"]["accuracy"]
    tuned = result["systems"]["tuned"]["accuracy"]
    print(f"scored {result['pairs']} held-out pairs x {len(result['systems'])} models in "
          f"{eval_seconds:.0f} s")
    print("by corruption: " + ", ".join(f"{k} {v:.1%}" for k, v in by_kind.items()
                                        if v is not None))
    if "sft" in result["systems"]:
        print(f"after SFT alone: {result['systems']['sft']['accuracy']:.1%}")
    print(f"mean margin (sum log-prob chosen - rejected): base "
          f"{result['systems']['base']['mean_margin']}, tuned "
          f"{result['systems']['tuned']['mean_margin']}")
    print(f"training time {train_seconds / 60:.1f} min "
          f"({'within' if train_seconds <= 900 else 'OVER'} the 15-minute budget)")
    print(f"pairwise accuracy: base {base:.1%} -> DPO {tuned:.1%}: "
          f"{100 * (tuned - base):+.1f} points (target +20)")


if __name__ == "__main__":
    main()
