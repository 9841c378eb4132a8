"""`curate app` as a newcomer starts it: from another folder, stdin closed, no prompt; single-user
mode on this computer only; and from a `pip install .` copy of the package, not the checkout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.e2e.conftest import AppServer, _free_port

pytestmark = pytest.mark.browser


def _curate(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


def _listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on `port` (Linux's /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
                    found.add(socket.inet_ntop(socket.AF_INET6, b"".join(words)))
    return found


class CurateApp(AppServer):
    """`curate app --single-user` with a relative --db, started from `cwd` with stdin closed."""

    def __init__(self, cwd: Path, env: dict | None = None):
        super().__init__(cwd / "ws" / "curate.duckdb")
        self.cwd, self.env = cwd, env

    def start(self) -> "CurateApp":
        self.log = open(self.cwd / "server.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "curate", "app", "--single-user", "--db",
             "ws/curate.duckdb", "--port", str(self.port)],
            cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT)
        self.wait_until_healthy(self.cwd / "server.log")
        return self


def test_app_starts_headless_with_stdin_closed_on_loopback_only(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _curate("init", "--db", "ws/curate.duckdb", cwd=elsewhere).returncode == 0
    server = CurateApp(elsewhere).start()
    try:
        assert server.process.poll() is None  # still serving: nothing waited for a keystroke
        assert _listening_addresses(server.port) == {"127.0.0.1"}
        log = (elsewhere / "server.log").read_text()
        assert "Email" not in log and f"http://localhost:{server.port}" in log
    finally:
        server.stop()
    with socket.socket() as probe:  # stopping `curate app` stopped the Streamlit server too
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0


def test_single_user_refuses_a_network_address_without_the_loud_flag(tmp_path):
    result = _curate("app", "--single-user", "--address", "0.0.0.0", "--db", "ws/c.duckdb",
                     "--port", str(_free_port()), cwd=tmp_path)
    assert result.returncode == 1
    assert "anyone who can reach port" in result.stderr
    assert "--unsafe-single-user-on-network" in result.stderr
    assert "Traceback" not in result.stderr


PAGES = ("Overview", "Review", "Browse", "Quality", "Coverage", "Import / Export", "Training",
         "Evaluation")


def test_a_pip_installed_copy_serves_the_app(tmp_path, browser):
    """`pip install .` (not editable) into a folder of its own; the app runs from there."""
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-compile", "--target", str(site), str(PROJECT_ROOT)],
        capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import curate.ui, curation, training; "
                            "print(curate.ui.__file__, curation.__file__, training.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert all(path.startswith(str(site)) for path in where.stdout.split())
    assert _curate("init", "--demo", "--db", "ws/curate.duckdb", cwd=elsewhere,
                   env=env).returncode == 0
    server = CurateApp(elsewhere, env).start()
    try:
        page = browser.new_page()
        page.goto(server.url)
        page.get_by_role("heading", name="Overview").wait_for(timeout=60_000)
        banner = page.get_by_text("Single-user mode")
        assert f"127.0.0.1:{server.port}" in banner.inner_text()
        page.get_by_role("link", name="Review").click()
        page.get_by_role("textbox", name="Assistant").first.wait_for(timeout=30_000)
        # every page opens: in the real app a page module could shadow a package of the same
        # name (curate/ui/training.py hid `training`), which AppTest's process never shows
        for name in PAGES:
            page.get_by_role("link", name=name, exact=True).click()
            page.get_by_role("heading", name=name, exact=True).wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle")
            assert page.get_by_text("This app has encountered an error").count() == 0, name
        page.close()
    finally:
        server.stop()
