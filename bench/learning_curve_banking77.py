"""Acceptance run on real data: the learning curve of the Banking77 pilot, with its plot.

    .venv/bin/python bench/learning_curve_banking77.py [--svg docs/learning_curve_banking77.svg]
        [--out DIR] [--seed 77] [--json RESULT.json]

What it does:
1. Builds the pilot's workspace with bench/pilot_banking77.py's `build_pilot` (same options,
   same seed, so the same 10 intents, 50 training queries of each and the official test
   queries as the eval split, the leaked eval examples rejected).
2. Runs `curate.Workspace.learning_curve(TrainConfig())`, what `curate curve` calls: one
   snapshot of the accepted train examples, nested subsets stratified by label (25%, 50%,
   100%), each an ordinary run with the default settings and seed, each evaluated by the
   ordinary background evaluation at its defaults (zero-shot, few-shot with 3 shots, the
   fine-tuned model).
3. Prints per point the examples, the fine-tuned accuracy and macro-F1, the baseline (the
   better prompt-only system of that point's evaluation) and the wall times (training from
   launch to completion, evaluation from request to completion), then the curve's advice.
4. Writes the plot as SVG (`--svg`; none by default): eval accuracy against training
   examples, the points joined, the baseline as a dashed line. The SVG is written by
   `curve_svg` (no plotting library: the project has none, and an SVG of a few lines is
   readable in any browser and diffable in git).

The figures in docs/benchmarks.md are for the defaults; `--per-intent 12 --set epochs=1` makes
a quick smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pilot_banking77 as pilot_bench


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds between two run-file timestamps (ISO, "Z"), or None if one is missing."""
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def point_figures(workspace, point: dict) -> dict:
    """One evaluated curve point with its evaluation's figures and its wall times, read from
    the run folder (manifest, status, eval.json and eval_status.json)."""
    from training.evaluate import read_eval_job
    from training.run_folder import read_eval

    run = workspace.run(point["run_id"])
    result, job = read_eval(run.dir), read_eval_job(run.dir)
    training = seconds_between(run.manifest.created_at, run.status.ended_at)
    evaluation = seconds_between(job.status.requested_at, job.status.ended_at)
    return {"fraction": point["fraction"], "examples": point["examples"],
            "run_id": point["run_id"], "steps": run.last.get("step"),
            "metric": point["metric"], "score": point["score"],
            "accuracy": result.systems["fine_tuned"]["accuracy"],
            "macro_f1": result.systems["fine_tuned"].get("macro_f1"),
            "baseline_system": result.baseline["system"],
            "baseline_accuracy": result.baseline["accuracy"],
            "eval_examples": result.settings["eval_examples"], "shots": result.settings["shots"],
            "seconds": {"training": training, "evaluation": evaluation,
                        "total": training + evaluation}}


def curve_svg(points: list[dict], title: str, baseline_label: str = "baseline") -> str:
    """An SVG line chart of accuracy (points, 0-100) against training examples: `points`
    are dicts with `examples`, `accuracy` and optionally `baseline_accuracy` (fractions);
    the baseline is drawn dashed when every point has one."""
    width, height = 680, 420
    left, right, top, bottom = 78, 40, 82, 62
    plot_w, plot_h = width - left - right, height - top - bottom
    most = max(p["examples"] for p in points)
    step = 10 ** max(0, len(str(most)) - 1)  # ticks every 10, 100, 1000... examples
    step = step // 2 if most / step < 4 and step >= 10 else step
    x_max = -(-most // step) * step

    def x(n: float) -> float:
        return left + plot_w * n / x_max

    def y(fraction: float) -> float:
        return top + plot_h * (1 - fraction)

    def label_y(value: float, other: float | None) -> float:
        """Where a point's value goes: on the side away from the other line, clear of the
        legend and the x axis."""
        above = other is None or value >= other
        if above and y(value) - 9 < top - 8 or not above and y(value) + 19 > top + plot_h - 4:
            above = not above
        return y(value) - 9 if above else y(value) + 19

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" '
            'font-size="13" fill="#222">'),
           f'<rect width="{width}" height="{height}" fill="#fff"/>',
           (f'<text x="{width / 2}" y="26" text-anchor="middle" font-size="16" '
            f'font-weight="bold">{escape(title)}</text>')]
    for tick in range(0, 101, 20):  # y grid and labels
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick / 100):.1f}" '
                   f'y2="{y(tick / 100):.1f}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{left - 8}" y="{y(tick / 100) + 4:.1f}" '
                   f'text-anchor="end">{tick}</text>')
    for tick in range(0, x_max + 1, step):  # x ticks and labels
        out.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top + plot_h}" '
                   f'y2="{top + plot_h + 5}" stroke="#444"/>')
        out.append(f'<text x="{x(tick):.1f}" y="{top + plot_h + 20}" '
                   f'text-anchor="middle">{tick}</text>')
    out.append(f'<path d="M{left},{top}V{top + plot_h}H{left + plot_w}" fill="none" '
               'stroke="#444"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 16}" text-anchor="middle">'
               'training examples</text>')
    out.append(f'<text transform="translate(24 {top + plot_h / 2}) rotate(-90)" '
               'text-anchor="middle">eval accuracy (%)</text>')

    legend_y = 54
    out.append(f'<line x1="{left}" x2="{left + 28}" y1="{legend_y}" y2="{legend_y}" '
               'stroke="#1f6fb4" stroke-width="2.5"/>'
               f'<circle cx="{left + 14}" cy="{legend_y}" r="4.5" fill="#1f6fb4"/>'
               f'<text x="{left + 36}" y="{legend_y + 4}">fine-tuned model</text>')
    if all(p.get("baseline_accuracy") is not None for p in points):
        base = " ".join(f"{x(p['examples']):.1f},{y(p['baseline_accuracy']):.1f}"
                        for p in points)
        out.append(f'<polyline points="{base}" fill="none" stroke="#c0392b" '
                   'stroke-width="2" stroke-dasharray="7 5"/>')
        for p in points:
            ly = label_y(p["baseline_accuracy"], p["accuracy"])
            out.append(f'<text x="{x(p["examples"]):.1f}" y="{ly:.1f}" text-anchor="middle" '
                       'fill="#c0392b">'
                       f'{p["baseline_accuracy"] * 100:.1f}</text>')
        out.append(f'<line x1="{left + 200}" x2="{left + 228}" y1="{legend_y}" '
                   f'y2="{legend_y}" stroke="#c0392b" stroke-width="2" '
                   'stroke-dasharray="7 5"/>'
                   f'<text x="{left + 236}" y="{legend_y + 4}">{escape(baseline_label)}</text>')
    line = " ".join(f"{x(p['examples']):.1f},{y(p['accuracy']):.1f}" for p in points)
    out.append(f'<polyline points="{line}" fill="none" stroke="#1f6fb4" stroke-width="2.5"/>')
    for p in points:
        px = x(p["examples"])
        out.append(f'<circle cx="{px:.1f}" cy="{y(p["accuracy"]):.1f}" r="4.5" '
                   'fill="#1f6fb4"/>')
        ly = label_y(p["accuracy"], p.get("baseline_accuracy"))
        # above-left or below-right of the point: clear of a rising line's two segments
        lx, anchor = (px - 6, "end") if ly < y(p["accuracy"]) else (px + 6, "start")
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" '
                   f'font-weight="bold" fill="#1f6fb4">{p["accuracy"] * 100:.1f}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def pilot_plot(points: list[dict], intents: int, eval_examples: int) -> str:
    """The SVG of the pilot's curve (`points` as `point_figures` gives them), its baseline
    named by system and shots."""
    systems = sorted({(p["baseline_system"] or "").replace("_", "-") for p in points} - {""})
    shots = sorted({p["shots"] for p in points if p["baseline_system"] == "few_shot"})
    detail = ", ".join(systems) + (f", {'/'.join(map(str, shots))} shots" if shots else "")
    return curve_svg(points, f"Learning curve: Banking77 pilot ({intents} intents, "
                             f"{eval_examples} eval examples)",
                     f"best prompt-only baseline ({detail})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    pilot_bench.add_pilot_options(parser)
    parser.add_argument("--svg", type=Path, help="write the plot here (SVG)")
    args = parser.parse_args()

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the pilot and the CLI
    from curate import Workspace
    from curation.auth import User
    from training.config import TrainConfig

    config = TrainConfig(**pilot_bench.parse_settings(args.settings))
    folder = pilot_bench.fresh_workspace(args.out, "curve-banking77-")
    began = time.perf_counter()
    with Workspace.open(folder / "curate.duckdb", User(pilot_bench.ACTOR, "admin")) as workspace:
        pilot = pilot_bench.build_pilot(workspace.store, folder, workspace.user, args)
        print(f"training: {config.to_dict()}", flush=True)
        curve = workspace.learning_curve(
            config, on_event=lambda line: print(f"[{time.perf_counter() - began:5.0f} s] "
                                                f"{line}", flush=True))
        workspace.record_runs()
        if curve.state != "completed":
            sys.exit(f"learning curve {curve.id} {curve.state}: {curve.reason} (workspace "
                     f"{folder} kept)")
        points = [point_figures(workspace, p) for p in curve.points]
    total = time.perf_counter() - began

    print(f"\nlearning curve {curve.id} on {pilot.eval_examples} eval examples "
          f"({len(pilot.leaks)} leaked ones rejected):")
    print(f"  {'subset':>6} {'examples':>8} {'accuracy':>8} {'macro-F1':>8} {'baseline':>8}"
          f" {'training':>8} {'eval':>6} {'total':>6}")
    for p in points:
        s = p["seconds"]
        f1 = "-" if p["macro_f1"] is None else f"{p['macro_f1'] * 100:.1f}"
        print(f"  {p['fraction']:>6.0%} {p['examples']:>8} {p['accuracy'] * 100:>8.1f} "
              f"{f1:>8} {p['baseline_accuracy'] * 100:>8.1f} "
              f"{s['training']:>7.0f}s {s['evaluation']:>5.0f}s {s['total']:>5.0f}s")
    print(f"whole curve (with building the workspace): {total / 60:.1f} min")
    print(curve.advice)
    if args.svg:
        args.svg.write_text(pilot_plot(points, len(pilot.intents), pilot.eval_examples))
        print(f"plot: {args.svg}")
    if args.json:
        args.json.write_text(json.dumps({
            "intents": pilot.intents, "train_examples": len(pilot.train_rows),
            "eval_examples": pilot.eval_examples, "leaked_eval_rejected": len(pilot.leaks),
            "config": config.to_dict(), "curve_id": curve.id, "points": points,
            "advice": curve.advice, "seconds_total": round(total, 1)}, indent=2))
    if not args.out:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
