"""`xenofeat run --quiet` draws no progress bar at any stage (caching and tokenising included)."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli
from test_pipeline import _config


def test_run_quiet_draws_no_progress_bar(tmp_path: Path, corpus_dir: Path) -> None:
    out = tmp_path / "out"
    r = run_cli(
        "run", "--out", str(out), "--config", str(_config(tmp_path, corpus_dir)), "--quiet", timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[1/3] cache" in r.stderr  # the stage lines are log lines, not bars: they stay
    for bar in ("%|", "it/s", "tok/s", "\r", "caching:", "tokenising:", "training "):
        assert bar not in r.stderr, (bar, r.stderr[-2000:])
