"""Crash safety: a cache killed with SIGKILL (or stopped by a full disk) resumes to exactly the uninterrupted file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from activations import format as fmt
from tests.helpers.common import PROSE, REPO, error_line, run_cli


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("long")
    rng = random.Random(0)
    for i in range(60):
        (d / f"d{i:03d}.txt").write_text(" ".join(rng.choice(PROSE) for _ in range(6)), encoding="utf-8")
    return d


ARGS = ["--context-size", "32", "--batch-size", "2", "--max-tokens", "5000"]


def cache_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["cache", "--corpus", str(corpus), "--out", str(out), *ARGS, *extra]


def assert_same_cache(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        n = int(fa.attrs[fmt.A_SEQS_WRITTEN])
        assert n == int(fb.attrs[fmt.A_SEQS_WRITTEN]) and n > 0
        assert bool(fa.attrs[fmt.A_COMPLETE]) and bool(fb.attrs[fmt.A_COMPLETE])
        for name in (*fmt.ROW_DATASETS, *(f"acts/{h}" for h in ["blocks.3.hook_resid_post"])):
            assert fa[name].shape == fb[name].shape, name
            np.testing.assert_array_equal(fa[name][:], fb[name][:], err_msg=name)
        assert fa.attrs[fmt.A_SETTINGS] == fb.attrs[fmt.A_SETTINGS]
        assert fa.attrs[fmt.A_TOKENS_WRITTEN] == fb.attrs[fmt.A_TOKENS_WRITTEN]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, long_corpus) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    r = run_cli(*cache_args(long_corpus, out))
    assert r.returncode == 0, r.stderr
    return out


def test_kill_after_a_known_chunk_then_resume_equals_uninterrupted(tmp_path, long_corpus, reference):
    out = tmp_path / "killed.h5"
    r = run_cli(*cache_args(long_corpus, out), env={"XENOFEAT_FAULT": "cache.after_chunk:5"})
    assert r.returncode == -signal.SIGKILL and "fault injected at cache.after_chunk" in r.stderr
    with h5py.File(out, "r") as f:  # exactly the five chunks of two sequences the counter vouches for
        assert int(f.attrs[fmt.A_SEQS_WRITTEN]) == 10 and not bool(f.attrs[fmt.A_COMPLETE])
    r = run_cli("cache", "validate", str(out))
    assert r.returncode == 2 and "incomplete" in r.stderr
    r = run_cli(*cache_args(long_corpus, out, "--resume"))
    assert r.returncode == 0, r.stderr
    assert_same_cache(out, reference)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, long_corpus, reference):
    # the same with a kill at a random moment (extra coverage beyond the fault points)
    out = tmp_path / "killed.h5"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    rng = random.Random(1234)
    killed_partial = False
    for _attempt in range(4):
        out.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", "from features.cli import entry; entry()", *cache_args(long_corpus, out)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not out.exists() and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.1, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with h5py.File(out, "r") as f:
            if not bool(f.attrs[fmt.A_COMPLETE]):
                killed_partial = True
                break
    assert killed_partial, "the cache always finished before the kill; make the job longer"
    # a partial cache is refused by readers unless accepted explicitly
    r = run_cli("cache", "validate", str(out))
    assert r.returncode == 2 and "incomplete" in r.stderr
    r = run_cli(*cache_args(long_corpus, out, "--resume"))
    assert r.returncode == 0, r.stderr
    assert_same_cache(out, reference)


def test_resume_with_changed_settings_is_refused(tmp_path, long_corpus, reference):
    out = tmp_path / "partial.h5"
    import shutil

    shutil.copy(reference, out)
    with h5py.File(out, "r+") as f:  # make it look interrupted
        f.attrs[fmt.A_COMPLETE] = False
        f.attrs[fmt.A_SEQS_WRITTEN] = 10
    before = out.read_bytes()
    r = run_cli(
        "cache",
        "--corpus",
        str(long_corpus),
        "--out",
        str(out),
        "--context-size",
        "32",
        "--batch-size",
        "2",
        "--max-tokens",
        "5000",
        "--dtype",
        "float32",
        "--resume",
    )
    line = error_line(r)
    assert "dtype" in line and "float16" in line
    assert out.read_bytes() == before


def test_disk_full_leaves_a_resumable_cache(tmp_path, long_corpus, reference):
    out = tmp_path / "full.h5"
    limit = 2_500_000  # bytes: the file can grow this far, then writes fail as on a full disk

    def small_disk() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", "from features.cli import entry; entry()", *cache_args(long_corpus, out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        timeout=300,
    )
    assert "--resume" in error_line(r)
    # the file may now claim more bytes than the disk took; resuming repairs that and continues
    r = run_cli(*cache_args(long_corpus, out, "--resume"))
    assert r.returncode == 0, r.stderr
    assert_same_cache(out, reference)
