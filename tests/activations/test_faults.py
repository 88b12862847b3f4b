"""Fault injection (activations.faults): XENOFEAT_FAULT kills the process at the named point's N-th hit, no sooner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from activations.faults import fault_point, parse_fault
from tests.helpers.common import REPO

LOOP = (
    "import sys; from activations.faults import fault_point\n"
    "for i in range(1, 6):\n"
    "    fault_point('other.point'); fault_point('test.loop')\n"
    "    print(i, flush=True)\n"
)


def _loop(fault: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "XENOFEAT_FAULT"}
    if fault is not None:
        env["XENOFEAT_FAULT"] = fault
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-c", LOOP], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "spec, want",
    [
        ("cache.after_chunk", ("cache.after_chunk", 1)),
        ("cache.after_chunk:3", ("cache.after_chunk", 3)),
        ("score.stage:labelability", ("score.stage:labelability", 1)),
        ("score.stage:labelability:2", ("score.stage:labelability", 2)),
    ],
)
def test_parse(spec: str, want: tuple[str, int]) -> None:
    assert parse_fault(spec) == want


@pytest.mark.parametrize("bad", ["", ":3", "x:0"])
def test_parse_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_fault(bad)


def test_kill_at_the_nth_hit() -> None:
    r = _loop("test.loop:3")
    assert r.returncode == -signal.SIGKILL
    assert r.stdout.split() == ["1", "2"]  # killed on the third pass, before printing 3
    assert "fault injected at test.loop (hit 3)" in r.stderr


def test_default_is_the_first_hit_and_other_names_do_nothing() -> None:
    r = _loop("test.loop")
    assert r.returncode == -signal.SIGKILL and r.stdout == ""
    for fault in (None, "test.loop:9"):  # unset; hit fewer times than asked
        r = _loop(fault)
        assert r.returncode == 0 and r.stdout.split() == ["1", "2", "3", "4", "5"], (fault, r.stderr)


def test_unset_in_this_process_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XENOFEAT_FAULT", raising=False)
    for _ in range(3):
        fault_point("test.loop")  # returns: the test process is still alive
