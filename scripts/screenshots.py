"""Screenshots of every page of the app on the demo workspace, for docs/ and the README.

Usage: .venv/bin/python scripts/screenshots.py [OUT_DIR]   (default docs/screenshots)
Needs Debian's chromium at /usr/bin/chromium. Runs the quality checks first so the Quality
and Coverage pages have findings to show, then a short real training run (one epoch, rank 8,
over the demo's leak, which the run records) and its evaluation, so the Training and
Evaluation pages have a run to show: about 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = {"overview": "", "review": "review", "browse": "browse",
         "import_export": "import_export", "quality": "quality", "coverage": "coverage",
         "training": "training", "evaluation": "evaluation"}
TALL = {"training": 1500, "evaluation": 1500}  # viewport heights of the longer pages
TRAIN = {"epochs": 1, "r": 8, "max_seq_length": 192, "checkpoint_every_steps": 0}


def train_and_evaluate(workspace: Path) -> None:
    """A real training run on the demo's accepted train examples, then its evaluation."""
    from curation import Store
    from curation.auth import User
    from training.config import TrainConfig
    from training.eval import eval_rows_from_store, evaluate, train_rows_from_run
    from training.launcher import ENDED_STATES, launch, read_run

    with Store(workspace) as store:
        run = launch(store, User("demo", "admin"), TrainConfig(**TRAIN), allow_leakage=True)
        while read_run(run.dir).status.state not in ENDED_STATES:
            time.sleep(2)
        run = read_run(run.dir)
        if run.state != "completed":
            raise SystemExit(f"training run {run.id} {run.state}: {run.status.reason}")
        evaluate(run.dir, eval_rows_from_store(store), train_rows_from_run(run.dir))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp()) / "curate.duckdb"
    curate = [sys.executable, "-m", "curate"]
    subprocess.run([*curate, "init", "--demo", "--db", str(workspace)], check=True, cwd=ROOT)
    for command in ("dedupe", "noise"):
        subprocess.run([*curate, command, "--db", str(workspace), "--json"], check=True,
                       cwd=ROOT, stdout=subprocess.DEVNULL)
    train_and_evaluate(workspace)
    server = subprocess.Popen([*curate, "app", "--single-user", "--db", str(workspace),
                               "--port", "8799"], cwd=ROOT, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen("http://127.0.0.1:8799/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-gpu",
                                              "--disable-background-networking",
                                              "--disable-component-update", "--no-first-run"])
            for name, path in PAGES.items():
                page = browser.new_page(viewport={"width": 1440,
                                                  "height": TALL.get(name, 960)})
                page.goto(f"http://127.0.0.1:8799/{path}")
                page.wait_for_selector("h1", timeout=60_000)
                page.wait_for_function("() => !document.querySelector("
                                       "'[data-testid=stSkeleton], [data-testid=stSpinner]')",
                                       timeout=180_000)
                page.wait_for_timeout(3000)
                page.screenshot(path=str(out / f"{name}.png"), full_page=False)
                print(f"wrote {out / name}.png")
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
