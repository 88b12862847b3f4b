"""What many tests share: the repository root, a small prose corpus, and running the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"

PROSE = [
    "The quick brown fox jumps over the lazy dog. Sphinx of black quartz, judge my vow.",
    "Activation caches store what a model computes at a hook point, token by token, for later study.",
    "Sparse autoencoders decompose those activations into latents that fire rarely and, one hopes, mean something.",
    "A feature defined before looking must be reproducible across seeds, carry function, and pay for itself.",
    "Some features resist every short description a person can write; xenofeat flags those for a closer look.",
    "Python's documentation explains statements, expressions, the data model and the standard library in detail.",
]


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `xenofeat ARGS` in a subprocess (as the console script does), capturing output."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "from features.cli import entry; entry()", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_line(result) -> str:
    """The one `xenofeat: error:` line of a failed command (asserting exit status 2 and exactly one such line)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("xenofeat: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]
