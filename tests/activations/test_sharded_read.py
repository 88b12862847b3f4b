"""Reading sharded caches (FORMAT.md, "Sharded caches"): the assignment of sequences to ranks, the kept 1.1 fixture,
and missing, corrupt or deleted shards, which are one-line errors naming the shard, never silent wrong values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from activations import format as fmt
from activations.cache import ActivationCache
from activations.errors import UserError
from activations.shards import assign, shards_dir
from tests.helpers.common import FIXTURES, error_line, run_cli
from tests.helpers.sharded import HOOK, write_sharded

FIXTURE = FIXTURES / "cache-v1.1-sharded.h5"
SHARD1 = "rank-00001-of-00002.h5"


def formula(n: int, L: int, d: int) -> np.ndarray:
    s, p, k = np.meshgrid(np.arange(n), np.arange(L), np.arange(d), indexing="ij")
    return (100 * s + 10 * p + k).astype(np.float32)


@pytest.mark.parametrize("n_seq", [1, 5, 26, 64, 97])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 32])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_assignment_gives_every_batch_of_a_one_process_run_to_one_rank(n_seq, batch_size, world_size):
    ranges = assign(n_seq, batch_size, world_size)
    assert len(ranges) == world_size
    assert ranges[0][0] == 0 and ranges[-1][1] == n_seq
    assert all(ranges[r][1] == ranges[r + 1][0] for r in range(world_size - 1))  # contiguous, in rank order
    batches = [(a, min(a + batch_size, n_seq)) for a in range(0, n_seq, batch_size)]
    for a, b in batches:  # the batch a one-process run feeds the model lies within exactly one rank's block
        assert sum(lo <= a and b <= hi for lo, hi in ranges) == 1
    per_rank = [sum(lo <= a < hi for a, _ in batches) for lo, hi in ranges]
    assert max(per_rank) - min(per_rank) <= 1  # balanced to one batch, however the world size divides


def test_format_v1_1_sharded_fixture_reads_back():
    """A sharded cache of format 1.1 is kept in the repository and must stay readable, by xenofeat and h5py."""
    expected = json.loads((FIXTURES / "cache-v1.1-sharded.json").read_text())
    tokens = np.array(expected["tokens"])
    with ActivationCache.open(FIXTURE) as cache:
        assert cache.meta.format_version == "1.1" and list(cache.hooks) == expected["hooks"]
        assert [list(r) for r in cache.shards.manifest.ranges] == expected["ranges"]
        np.testing.assert_array_equal(cache.tokens, tokens)
        np.testing.assert_array_equal(cache.read_acts(HOOK, 0, cache.n_seq), formula(5, 8, 6))
        chunks = list(cache.scan(HOOK, chunk_seqs=2))  # across the boundary between the shards (at 2)
        np.testing.assert_array_equal(np.concatenate([c.acts for c in chunks]), formula(5, 8, 6))
        assert cache.vocab[:5] == expected["vocab_head"]
        assert cache.context(3, 4, width=1).token_ids == tokens[3, 3:6].tolist()
        with h5py.File(cache.shards.manifest.path(FIXTURE, 0), "r") as shard:
            assert cache.chunk_seqs == shard[fmt.acts_path(HOOK)].chunks[0]  # the shards' unit of reading
    with h5py.File(FIXTURE, "r") as f:  # plain h5py: one dataset in global order
        assert f[fmt.acts_path(HOOK)].is_virtual
        np.testing.assert_array_equal(f[fmt.acts_path(HOOK)][:], formula(5, 8, 6))


def test_each_shard_is_a_cache_by_itself():
    with ActivationCache.open(shards_dir(FIXTURE) / SHARD1) as shard:
        assert shard.shards is None and shard.n_seq == 3  # sequences 2-5
        np.testing.assert_array_equal(shard.read_acts(HOOK, 0, 3), formula(5, 8, 6)[2:])
    r = run_cli("cache", "validate", str(FIXTURE))
    assert r.returncode == 0 and "sound" in r.stdout, r.stderr
    r = run_cli("cache", "info", str(FIXTURE))
    assert r.returncode == 0 and "shards          2" in r.stdout and "sequences 2-5, complete" in r.stdout


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    out = tmp_path / FIXTURE.name  # moved with its folder: the index names its shards relative to itself
    shutil.copy(FIXTURE, out)
    shutil.copytree(shards_dir(FIXTURE), shards_dir(out))
    return out


def test_a_moved_index_reads_and_a_renamed_one_is_refused(copy: Path):
    with ActivationCache.open(copy) as cache:
        np.testing.assert_array_equal(cache.read_acts(HOOK, 0, 5), formula(5, 8, 6))
    renamed = copy.with_name("renamed.h5")
    copy.rename(renamed)
    line = error_line(run_cli("cache", "info", str(renamed)))
    assert "renamed.h5" in line and "keeps the name it was written with" in line


def test_a_missing_shard_is_one_line_naming_it(copy: Path):
    (shards_dir(copy) / SHARD1).unlink()
    with pytest.raises(UserError, match=f"{SHARD1}: shard 1 of 2 of .* is missing"):
        ActivationCache.open(copy)
    line = error_line(run_cli("cache", "info", str(copy)))
    assert SHARD1 in line and "missing" in line
    r = run_cli("cache", "validate", str(copy))
    assert r.returncode == 2 and r.stderr.count("xenofeat: invalid:") == 1 and SHARD1 in r.stderr
    with h5py.File(copy, "r") as f:  # a reader that bypasses xenofeat sees values no cache holds, not zeros
        assert np.isnan(f[fmt.acts_path(HOOK)][2:]).all() and (f[fmt.TOKENS][2:] == -1).all()


def flip_byte(path: Path, chunk: int) -> None:
    """Flip one byte inside chunk `chunk` of the activations of the cache at `path`."""
    with h5py.File(path, "r") as f:
        offset = f[fmt.acts_path(HOOK)].id.get_chunk_info(chunk).byte_offset + 5
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_shard_is_named(tmp_path: Path):
    acts = formula(5, 8, 6)
    one_seq = 8 * 6 * 2  # bytes of one sequence in float16: one sequence per chunk
    out = write_sharded(
        tmp_path / "c.h5",
        np.zeros((5, 8), np.int32),
        acts,
        world_size=2,
        batch_size=2,
        vocab=["a"],
        chunk_bytes=one_seq,
    )
    shard = shards_dir(out) / SHARD1
    flip_byte(shard, 1)  # global sequence 3
    with ActivationCache.open(out) as cache:
        np.testing.assert_array_equal(cache.read_acts(HOOK, 0, 3), acts[:3])
        with pytest.raises(UserError, match=f"{SHARD1}: activations of {HOOK} rows 2-5 are corrupt"):
            cache.read_acts(HOOK, 2, 5)
    r = run_cli("cache", "validate", str(out))
    assert r.returncode == 2 and SHARD1 in r.stderr and "checksum" in r.stderr
    flip_byte(shard, 0)  # the first row of a shard is read when the cache opens
    line = error_line(run_cli("cache", "info", str(out)))
    assert SHARD1 in line and "is corrupt" in line
    shard.write_bytes(b"not hdf5")  # not a cache at all
    line = error_line(run_cli("cache", "info", str(out)))
    assert SHARD1 in line and "not a readable cache" in line


def test_a_shard_from_another_run_is_refused(copy: Path):
    shard = shards_dir(copy) / SHARD1
    with h5py.File(shard, "r+") as f:
        own = json.loads(f.attrs[fmt.A_SHARD])
        f.attrs[fmt.A_SHARD] = json.dumps({**own, "run_id": "another"})
    with pytest.raises(UserError, match=f"{SHARD1}: this shard belongs to another run"):
        ActivationCache.open(copy)


def test_a_shard_deleted_behind_the_readers_back(copy: Path):
    """A reader that has the cache open keeps reading the right values; the next one to open it is told."""
    with ActivationCache.open(copy) as cache:
        (shards_dir(copy) / SHARD1).unlink()
        np.testing.assert_array_equal(cache.read_acts(HOOK, 0, 5), formula(5, 8, 6))
        np.testing.assert_array_equal(cache.activations(HOOK)[2:5], formula(5, 8, 6)[2:])
        assert (cache.tokens >= 0).all()
    with pytest.raises(UserError, match=f"{SHARD1}: shard 1 of 2 .* is missing"):
        ActivationCache.open(copy)


def test_more_ranks_than_batches_leaves_empty_shards(tmp_path: Path):
    acts = formula(3, 4, 2)
    out = write_sharded(
        tmp_path / "c.h5", np.zeros((3, 4), np.int32), acts, world_size=4, batch_size=2, vocab=["a"]
    )
    with ActivationCache.open(out) as cache:
        assert [tuple(r) for r in cache.shards.manifest.ranges] == [(0, 0), (0, 2), (2, 2), (2, 3)]
        np.testing.assert_array_equal(cache.read_acts(HOOK, 0, 3), acts)
    r = run_cli("cache", "validate", str(out))
    assert r.returncode == 0, r.stderr


def test_one_process_overwrite_replaces_the_shards_too_and_refuses_foreign_files(
    copy: Path, corpus_dir: Path
):
    args = [
        "cache",
        "--corpus",
        str(corpus_dir),
        "--out",
        str(copy),
        "--context-size",
        "16",
        "--max-tokens",
        "60",
    ]
    stray = shards_dir(copy) / "notes.txt"
    stray.write_text("mine")
    line = error_line(run_cli(*args, "--overwrite"))
    assert "notes.txt" in line and "nothing was changed" in line
    assert stray.read_text() == "mine" and (shards_dir(copy) / SHARD1).exists()
    stray.unlink()
    r = run_cli(*args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert not shards_dir(copy).exists()
    with ActivationCache.open(copy) as cache:
        assert cache.shards is None and cache.meta.format_version == fmt.FORMAT_VERSION
