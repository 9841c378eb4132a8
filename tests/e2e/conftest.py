"""End-to-end fixtures: the real app served by Streamlit, driven by headless Chromium.

Each test gets a fresh workspace (real DuckDB file, local accounts) and its own server
process on a free loopback port. The server holds the DuckDB write lock, so a test checks the
store after `server.stop()`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from curation import Store, import_file
from curation.auth import add_user
from tests.conftest import admin

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "e2e-password-1"

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`curate app` on a workspace, started and stopped by the test."""

    def __init__(self, db: Path):
        self.db = db
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "AppServer":
        self.log = open(self.db.parent / "server.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "curate", "app", "--db", str(self.db),
             "--port", str(self.port)],
            cwd=self.db.parent, stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT)
        self.wait_until_healthy(self.db.parent / "server.log")
        return self

    def wait_until_healthy(self, log: Path) -> None:
        """Until the server answers its health check; its log is the error if it never does."""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the app did not start (exit status {self.process.poll()}): "
                           f"{log.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.log.close()


@pytest.fixture
def workspace(tmp_path):
    """A workspace file with accounts rita and ravi (reviewers) and ann (annotator)."""

    def make(records_file: Path) -> Path:
        db = tmp_path / "ws" / "curate.duckdb"
        with Store(db) as store:
            import_file(store, records_file, user=admin("setup"))
            add_user(store, admin("setup"), "rita", "reviewer", password=PASSWORD)
            add_user(store, admin("setup"), "ravi", "reviewer", password=PASSWORD)
            add_user(store, admin("setup"), "ann", "annotator", password=PASSWORD)
        return db

    return make


@pytest.fixture
def app_server():
    servers: list[AppServer] = []

    def start(db: Path) -> AppServer:
        server = AppServer(db).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: install Debian's chromium package "
                    "(bash scripts/dev.sh test does so when run as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"])
        yield chromium
        chromium.close()


def sign_in(page, server: AppServer, name: str) -> None:
    """Open the app and sign in with a local account."""
    page.goto(server.url)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview").wait_for(timeout=30_000)
