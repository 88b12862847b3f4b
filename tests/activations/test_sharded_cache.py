"""`torchrun --nproc-per-node 2 xenofeat cache ...` on gloo: the sharded cache equals the one-process cache, survives
a rank killed mid-cache and a rank whose disk fills, and refuses mismatched ranks and foreign shard folders in one
line (exit 2 on rank 0, nothing written or lost).

Both runs pin torch to one thread per process (torchrun does so for its workers), so the one-process batches and the
ranks' batches, which are the same batches (shards.assign), give bit-equal activations.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from activations import format as fmt
from activations.cache import ActivationCache
from activations.shards import shards_dir
from tests.helpers.common import error_line, run_cli
from tests.helpers.sharded import torchrun

pytestmark = pytest.mark.slow  # each test starts torchrun and two model processes

HOOK = "blocks.3.hook_resid_post"
# 26 sequences in 13 batches of 2: two ranks take 6 and 7 batches, so the world size does not divide the work
ARGS = ["--context-size", "32", "--batch-size", "2", "--max-tokens", "1000"]
SHARD0, SHARD1 = "rank-00000-of-00002.h5", "rank-00001-of-00002.h5"


def cache_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["cache", "--corpus", str(corpus), "--out", str(out), *ARGS, *extra]


def assert_same_cache(sharded: Path, one: Path) -> None:
    """Every dataset, the settings and the counters of the sharded cache equal the one-process cache's, bit for bit."""
    with h5py.File(sharded, "r") as fs, h5py.File(one, "r") as fo:
        assert bool(fs.attrs[fmt.A_COMPLETE]) and fs.attrs[fmt.A_SHARDS] is not None
        for key in (fmt.A_SEQS_WRITTEN, fmt.A_TOKENS_WRITTEN, fmt.A_SETTINGS, fmt.A_MODEL_FINGERPRINT):
            assert fs.attrs[key] == fo.attrs[key], key
        for name in (*fmt.ROW_DATASETS, fmt.acts_path(HOOK), fmt.VOCAB):
            np.testing.assert_array_equal(fs[name][:], fo[name][:], err_msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus_dir) -> Path:
    out = tmp_path_factory.mktemp("one") / "one.h5"
    r = run_cli(*cache_args(corpus_dir, out), env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, corpus_dir) -> Path:
    d = tmp_path_factory.mktemp("sharded")
    r, err, out = torchrun(*cache_args(corpus_dir, d / "cache.h5"), logs=d / "logs")
    assert r.returncode == 0, err
    assert "cache written" in out[0] and "2 shards" in out[0] and out[1] == ""  # rank 0 speaks for all
    return d / "cache.h5"


def test_sharded_cache_equals_the_one_process_cache(sharded, reference):
    assert_same_cache(sharded, reference)
    with ActivationCache.open(sharded) as cache, ActivationCache.open(reference) as one:
        assert [tuple(r) for r in cache.shards.manifest.ranges] == [(0, 12), (12, 26)]  # 6 and 7 batches
        assert cache.chunk_seqs == one.chunk_seqs  # training draws the same shuffle blocks from either
        np.testing.assert_array_equal(cache.read_acts(HOOK, 0, 26), one.read_acts(HOOK, 0, 26))
        assert cache.context(12, 3).tokens == one.context(12, 3).tokens
    for shard, (a, b) in ((SHARD0, (0, 12)), (SHARD1, (12, 26))):  # each shard a cache of its own block
        with (
            ActivationCache.open(shards_dir(sharded) / shard) as part,
            ActivationCache.open(reference) as one,
        ):
            assert part.n_seq == b - a
            np.testing.assert_array_equal(part.read_acts(HOOK, 0, b - a), one.read_acts(HOOK, a, b))
    r = run_cli("cache", "validate", str(sharded))
    assert r.returncode == 0 and "sound" in r.stdout, r.stderr


def test_a_rank_killed_mid_cache_resumes_to_the_same_cache(tmp_path, corpus_dir, reference):
    out = tmp_path / "cache.h5"
    env = {"XENOFEAT_FAULT": "cache.after_chunk:3", "XENOFEAT_FAULT_RANK": "1"}
    r, err, _ = torchrun(*cache_args(corpus_dir, out), logs=tmp_path / "logs1", env=env)
    assert r.returncode != 0 and "fault injected at cache.after_chunk (hit 3)" in err[1]
    assert "Traceback" not in err[0]  # the survivor stops with one line (or torchrun stops it first)
    with h5py.File(shards_dir(out) / SHARD1, "r") as f:  # the three batches the counter vouches for
        assert int(f.attrs[fmt.A_SEQS_WRITTEN]) == 6 and not bool(f.attrs[fmt.A_COMPLETE])
    r = run_cli("cache", "validate", str(out))
    assert r.returncode == 2 and "incomplete" in r.stderr
    r = run_cli("cache", "info", str(out))
    assert r.returncode == 0 and "6 of 14 written" in r.stdout, r.stderr
    r, err, _ = torchrun(*cache_args(corpus_dir, out, "--resume"), logs=tmp_path / "logs2")
    assert r.returncode == 0, err
    assert_same_cache(out, reference)


def test_ranks_with_different_arguments_are_refused_before_writing(tmp_path, corpus_dir):
    out = tmp_path / "cache.h5"
    command = rank_wrapper(tmp_path / "w.py", "args += ['--max-tokens', str(1000 + int(os.environ['RANK']))]")
    args = ["cache", "--corpus", str(corpus_dir), "--out", str(out), "--context-size", "32"]
    r, err, _ = torchrun(*command, *args, logs=tmp_path / "logs", no_python=True)
    line = error_line_of(err, rank_exit=r)
    assert "different arguments" in line and "--max-tokens: rank 0 has 1000, rank 1 has 1001" in line
    assert not out.exists() and not shards_dir(out).exists()


def error_line_of(err: dict[int, str], rank_exit) -> str:
    """The one `xenofeat: error:` line of a failed torchrun job: rank 0 says it, no rank spills a traceback, and
    every rank exited with status 2 (torchrun lists the exit codes)."""
    assert "exitcode  : 2" in rank_exit.stderr and "exitcode  : 1" not in rank_exit.stderr
    lines = [ln for text in err.values() for ln in text.splitlines() if ln.startswith("xenofeat: error:")]
    assert len(lines) == 1 and lines[0] in err[0], err
    assert not any("Traceback" in text for text in err.values()), err
    return lines[0]


def test_a_rank_whose_disk_fills_stops_every_rank_and_the_cache_resumes(tmp_path, corpus_dir, reference):
    out = tmp_path / "cache.h5"
    # rank 1 may write 2.5 MB per file, then its writes fail as on a full disk
    command = rank_wrapper(
        tmp_path / "small_disk.py",
        "if os.environ['RANK'] == '1':\n"
        "    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "    resource.setrlimit(resource.RLIMIT_FSIZE, (2_500_000, 2_500_000))",
    )
    r, err, _ = torchrun(*command, *cache_args(corpus_dir, out), logs=tmp_path / "l1", no_python=True)
    line = error_line_of(err, rank_exit=r)
    assert (
        line.startswith(f"xenofeat: error: rank 1: {shards_dir(out) / SHARD1}: writing failed")
        and "--resume" in line
    )
    r, err, _ = torchrun(*cache_args(corpus_dir, out, "--resume"), logs=tmp_path / "l2")
    assert r.returncode == 0, err
    assert_same_cache(out, reference)


def rank_wrapper(path: Path, prelude: str) -> list[str]:
    """A command that runs `prelude` (Python, may read RANK and extend `args`), then becomes `xenofeat *args`."""
    path.write_text(
        "import os, resource, signal, sys\n"
        "args = sys.argv[1:]\n"
        f"{prelude}\n"
        "os.execv(sys.executable, [sys.executable, '-c', 'from features.cli import entry; entry()', *args])\n"
    )
    return [sys.executable, str(path)]


def snapshot(out: Path) -> dict[str, bytes]:
    files = [out, *sorted(shards_dir(out).iterdir())]
    return {p.name: p.read_bytes() for p in files}


def test_resume_refuses_shards_of_another_run_or_world_size(tmp_path, corpus_dir, sharded):
    out = tmp_path / sharded.name
    shutil.copy(sharded, out)
    shutil.copytree(shards_dir(sharded), shards_dir(out))
    with h5py.File(out, "r+") as f:  # make it look interrupted: the index and shard 1 incomplete
        f.attrs[fmt.A_COMPLETE] = False
    with h5py.File(shards_dir(out) / SHARD1, "r+") as f:
        f.attrs[fmt.A_COMPLETE] = False
        f.attrs[fmt.A_SEQS_WRITTEN] = 4
        own = json.loads(f.attrs[fmt.A_SHARD])
        f.attrs[fmt.A_SHARD] = json.dumps({**own, "run_id": "another run"})
    before = snapshot(out)
    r, err, _ = torchrun(*cache_args(corpus_dir, out, "--resume"), logs=tmp_path / "l1")
    line = error_line_of(err, rank_exit=r)
    assert f"rank 1: {shards_dir(out) / SHARD1}: this shard belongs to another run" in line
    # a folder with the shards of three ranks, resumed by two
    shutil.copy(shards_dir(out) / SHARD0, shards_dir(out) / "rank-00002-of-00003.h5")
    r, err, _ = torchrun(*cache_args(corpus_dir, out, "--resume"), logs=tmp_path / "l2")
    assert "this shard folder was written by 3 ranks, this job has 2" in error_line_of(err, rank_exit=r)
    (shards_dir(out) / "rank-00002-of-00003.h5").unlink()
    # one process resuming what two wrote
    line = error_line(run_cli(*cache_args(corpus_dir, out, "--resume")))
    assert "written by 2 processes and this job has one process" in line
    assert snapshot(out) == before  # nothing written or lost
