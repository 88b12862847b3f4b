"""Training's data order (sae_training.data.PoolSchedule): every unmasked training token once per epoch, seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from activations.cache import ActivationCache
from activations.writer import CacheWriter
from sae_training.data import PoolSchedule, member_order

HOOK = "blocks.0.hook_resid_post"


def _numbered_cache(tmp_path: Path, n_seq: int = 40, L: int = 16) -> Path:
    """A cache of 4-sequence chunks whose first activation component is the token's row index (seq * L + pos);
    position 0 of every sequence is masked."""
    acts = np.zeros((n_seq, L, 4), np.float32)
    acts[..., 0] = np.arange(n_seq * L).reshape(n_seq, L)
    mask = np.zeros((n_seq, L), bool)
    mask[:, 0] = True
    zeros = np.zeros((n_seq, L), np.int32)
    w = CacheWriter.create(
        tmp_path / "c.h5",
        hooks=[HOOK],
        d_model=4,
        context_size=L,
        dtype="float32",
        vocab=["w0"],
        model_id="test",
        model_fingerprint="test",
        corpus="test",
        corpus_fingerprint="test",
        settings={},
        chunk_bytes=4 * L * 4 * 4,
    )
    w.append(zeros, zeros, zeros, mask, {HOOK: acts})
    w.finish()
    return tmp_path / "c.h5"


def _ids(schedule: PoolSchedule, n_pools: int) -> np.ndarray:
    pools = []
    for index, pool in schedule.pools(0, prefetch=1):
        pools.append(pool[:, 0].numpy().astype(np.int64))
        if index + 1 == n_pools:
            break
    return np.concatenate(pools)


def test_pools_cover_each_training_token_once_per_epoch_in_a_seeded_order(tmp_path: Path) -> None:
    cache = ActivationCache.open(_numbered_cache(tmp_path))
    n_train, L = 30, 16
    epoch = n_train * (L - 1)  # unmasked tokens of sequences [0, 30)
    schedule = PoolSchedule(cache, HOOK, n_train, pool_tokens=epoch // 5, data_seed=3)
    assert schedule.epoch_tokens == epoch
    ids = _ids(schedule, 5)
    expected = np.arange(n_train * L).reshape(n_train, L)[:, 1:].ravel()
    np.testing.assert_array_equal(np.sort(ids), expected)  # each once; held-out sequences never appear
    assert not np.all(np.diff(ids) > 0)  # the block order is shuffled
    again = PoolSchedule(cache, HOOK, n_train, pool_tokens=epoch // 5, data_seed=3)
    other = PoolSchedule(cache, HOOK, n_train, pool_tokens=epoch // 5, data_seed=4)
    np.testing.assert_array_equal(_ids(again, 5), ids)
    assert not np.array_equal(_ids(other, 5), ids)
    # the second epoch starts over in another block order and again covers every token
    two = _ids(schedule, 10)
    np.testing.assert_array_equal(np.sort(two[epoch:]), expected)
    assert not np.array_equal(two[epoch:], ids)
    cache.close()


def test_members_serve_one_pool_in_different_orders() -> None:
    a, b = member_order(0, 7, 100).numpy(), member_order(1, 7, 100).numpy()
    np.testing.assert_array_equal(np.sort(a), np.arange(100))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(member_order(0, 7, 100).numpy(), a)
