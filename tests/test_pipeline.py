"""`xenofeat run` end to end on a tiny budget (the embedded model on a small corpus), and resumable by stage."""

from __future__ import annotations

from pathlib import Path

from features.store import FeatureStore
from tests.helpers.common import error_line, run_cli
from tests.helpers.pipeline import tiny_run_config


def test_run_tiny_is_resumable(tmp_path: Path, corpus_dir: Path) -> None:
    out = tmp_path / "out"
    cfg = tiny_run_config(tmp_path, corpus_dir)
    first = run_cli("run", "--out", str(out), "--config", str(cfg), "--quiet")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "latents alive" in first.stdout and "PW-MCC" in first.stdout
    assert f"xenofeat view {out}" in first.stdout
    assert "[1/3] cache" in first.stderr  # --quiet: the stage lines are log lines, not bars, and stay
    for bar in (
        "%|",
        "it/s",
        "tok/s",
        "\r",
        "caching:",
        "tokenising:",
        "training ",
    ):  # but no stage draws a bar
        assert bar not in first.stderr, (bar, first.stderr[-2000:])
    store = FeatureStore.open(out)
    assert len(store.table) == 96 and store.summary["seeds"] == [0, 1, 2]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cache.h5", out / "sae" / "run.json")}
    # a finished run is not redone; a lost store is rebuilt from the finished cache and ensemble only
    again = run_cli("run", "--out", str(out), "--config", str(cfg), "--quiet")
    assert again.returncode == 0 and again.stdout == first.stdout
    assert "not redone" in again.stderr
    for p in (out / "features").iterdir():
        p.unlink()
    (out / "features").rmdir()
    third = run_cli("run", "--out", str(out), "--config", str(cfg), "--quiet")
    assert third.returncode == 0, third.stderr[-3000:]
    lines = lambda text: [ln for ln in text.splitlines() if "shuffled control" not in ln]  # noqa: E731
    assert lines(third.stdout) == lines(first.stdout)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_run_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[train]\nwidht = 96\n")
    assert "widht" in error_line(run_cli("run", "--out", str(tmp_path / "o"), "--config", str(cfg)))
    cfg.write_text("[scoring]\nmax_tokens = 5\n")
    assert "[scoring]" in error_line(run_cli("run", "--out", str(tmp_path / "o"), "--config", str(cfg)))
