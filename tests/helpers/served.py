"""Starting `xenofeat view` for the tests in tests/browser: a free port, the server's process group, the wait until
Streamlit has drawn a page, and the playwright chromium launcher (skipping when chromium or playwright is missing).

The server runs in a session of its own, so a test can check that stopping `xenofeat view` left no process behind
and can always clean up the whole group, whatever happened to the command.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether anything accepts connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` still exists (a zombie counts until it is reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process we may not signal: it exists
        return True
    return True


@dataclass
class Served:
    """A running `xenofeat view`: its URL, port and process (the leader of its own process group)."""

    url: str
    port: int
    proc: subprocess.Popen


def view_command() -> list[str]:
    """`xenofeat view` (`python -m viewer.cli` when the package is not installed)."""
    installed = any(ep.name == "view" for ep in entry_points(group="xenofeat.commands"))
    if installed:
        return [sys.executable, "-c", "from features.cli import entry; entry()", "view"]
    return [sys.executable, "-m", "viewer.cli"]


def start(run: Path, log: Path) -> Served:
    """Start `xenofeat view RUN` on a free port and wait until it answers its health check."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*view_command(), str(run), "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    served = Served(f"http://127.0.0.1:{port}", port, proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if urllib.request.urlopen(f"{served.url}/_stcore/health", timeout=1).read() == b"ok":
                return served
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                kill_group(proc)
                raise RuntimeError(f"the viewer did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.2)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL everything left in the process group of `proc` and reap `proc`."""
    with suppress(ProcessLookupError):  # nothing left in the group: nothing to kill
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextmanager
def viewer(run: Path, log: Path) -> Iterator[str]:
    """`xenofeat view RUN` on a free port; yields the URL. Stopped with SIGTERM (what a service manager sends) and
    asserted to leave nothing running; the group is killed in any case so a failing test leaks no server."""
    served = start(run, log)
    try:
        yield served.url
        served.proc.terminate()
        served.proc.wait(30)
        assert not group_alive(served.proc.pid), "xenofeat view left a process running after SIGTERM"
    finally:
        kill_group(served.proc)


def settle(page) -> None:  # noqa: ANN001 - playwright Page
    """Wait until Streamlit is connected, its script has finished and no skeleton is left (Streamlit's own e2e wait)."""
    from playwright.sync_api import expect

    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=20_000)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=30_000)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=20_000)


def browser():  # noqa: ANN201
    """A playwright chromium launcher context (skips when chromium or playwright is missing)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: run .ci/browser-deps (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: run .ci/browser-deps (pip install playwright)")
    return sync_playwright()
