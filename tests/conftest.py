"""Shared fixtures: a small text corpus and a small real cache of the embedded model, built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]

PROSE = [
    "The quick brown fox jumps over the lazy dog. Sphinx of black quartz, judge my vow.",
    "Activation caches store what a model computes at a hook point, token by token, for later study.",
    "Sparse autoencoders decompose those activations into latents that fire rarely and, one hopes, mean something.",
    "A feature defined before looking must be reproducible across seeds, carry function, and pay for itself.",
    "Some features resist every short description a person can write; xenofeat flags those for a closer look.",
    "Python's documentation explains statements, expressions, the data model and the standard library in detail.",
]


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:  # noqa: F821
    """Run `xenofeat ARGS` in a subprocess (as the console script does), capturing output."""
    import subprocess

    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "from features.cli import entry; entry()", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small UTF-8 text files (one document each)."""
    d = tmp_path_factory.mktemp("corpus")
    for i in range(12):
        (d / f"doc{i:02d}.txt").write_text(
            " ".join(PROSE[(i + j) % len(PROSE)] for j in range(3)), encoding="utf-8"
        )
    return d


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """A complete cache of the embedded model on the small corpus: two hooks, float32, 32-token sequences."""
    from activations.build import CacheJob, build_cache

    out = tmp_path_factory.mktemp("cache") / "small.h5"
    job = CacheJob(
        out=out,
        corpus=str(corpus_dir),
        hooks=("blocks.1.hook_resid_post", "blocks.3.hook_resid_post"),
        context_size=32,
        batch_size=4,
        dtype="float32",
    )
    return build_cache(job)


def error_line(result) -> str:
    """The one `xenofeat: error:` line of a failed command (asserting exit status 2 and exactly one such line)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("xenofeat: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]
