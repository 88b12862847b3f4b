"""Resumable, shared data order for ensemble training: shuffle pools read once and served to every member.

The training sequences [0, n_train) of a cache are cut into chunk-aligned blocks (the HDF5 chunk is the cheap read
unit). Epoch e visits the blocks in the order `default_rng([data_seed, e]).permutation(n_blocks)`; the unmasked
tokens of the blocks, in that order, form one endless token stream. Pool i is tokens [i*P, (i+1)*P) of the stream
(P = pool_batches x batch_size). Member s serves pool i in the order `default_rng([s, i]).permutation(P)`, so members
read each pool once between them, yet each sees its own order of batches, and only a few pools (P tokens each) are
in memory at a time.

Block token counts come from the mask alone, so any pool can be located without reading activations: a resumed run
fast-forwards to the pool of its checkpoint and sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from activations.cache import ActivationCache
from activations.errors import UserError, corrupt_rows
from activations.loader import prefetched


class NonFiniteActivations(UserError):
    """NaN or inf in the activations of a cache block; `rows` are its sequences [a, b)."""

    def __init__(self, message: str, rows: tuple[int, int], pool: int) -> None:
        super().__init__(message)
        self.rows = rows
        self.pool = pool


def split_sequences(n_seq: int, eval_fraction: float) -> int:
    """Number of training sequences: the last `eval_fraction` of the sequences (at least one) is held out."""
    n_eval = max(1, round(n_seq * eval_fraction))
    if n_seq - n_eval < 1:
        raise UserError(
            f"--cache: {n_seq} sequence(s) are too few to hold out {eval_fraction:.0%} for evaluation"
        )
    return n_seq - n_eval


def member_order(seed: int, pool_index: int, pool_tokens: int) -> torch.Tensor:
    """The order (pool_tokens,) int64 in which member `seed` serves pool `pool_index`."""
    return torch.from_numpy(np.random.default_rng([seed, pool_index]).permutation(pool_tokens))


@dataclass
class PoolSchedule:
    """The endless, deterministic stream of shuffle pools over sequences [0, n_train) of a cache's hook."""

    cache: ActivationCache
    hook: str
    n_train: int
    pool_tokens: int
    data_seed: int

    def __post_init__(self) -> None:
        step = self.cache.chunk_seqs
        self.bounds = [(a, min(a + step, self.n_train)) for a in range(0, self.n_train, step)]
        keep = ~self.cache.mask[: self.n_train]
        self.counts = np.array([int(keep[a:b].sum()) for a, b in self.bounds], dtype=np.int64)
        self.epoch_tokens = int(self.counts.sum())
        if self.epoch_tokens == 0:
            raise UserError(f"{self.cache.path}: every training token is masked; nothing to train on")

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.data_seed, epoch]).permutation(len(self.bounds))

    def _segments(self, start_token: int) -> Iterator[tuple[int, int, int, int]]:
        """(a, b, skip, n) per block of the stream from token `start_token` on, without reading: the block holds
        sequences [a, b), of whose unmasked tokens the stream takes `n` after the first `skip`."""
        epoch, skip = divmod(start_token, self.epoch_tokens)
        while True:
            order = self._order(epoch)
            cum = np.cumsum(self.counts[order])
            pos = int(np.searchsorted(cum, skip, side="right"))
            skip -= int(cum[pos - 1]) if pos > 0 else 0
            for bi in order[pos:]:
                if self.counts[bi] == 0:
                    continue
                a, b = self.bounds[bi]
                yield a, b, skip, int(self.counts[bi]) - skip
                skip = 0
            epoch += 1

    def _read(self, a: int, b: int, pool: int) -> np.ndarray:
        """The unmasked (n, d) float32 tokens of sequences [a, b); `pool` names the pool it feeds in an error."""
        mask = self.cache.mask
        try:
            block = self.cache.activations(self.hook)[a:b][~mask[a:b]].astype(np.float32, copy=False)
        except OSError as err:
            raise corrupt_rows(self.cache.path, self.hook, a, b, err) from err
        if not np.isfinite(block).all():
            raise NonFiniteActivations(
                f"{self.cache.path}: NaN/inf in the activations of {self.hook}, sequences {a}-{b}",
                (a, b),
                pool,
            )
        return block

    def pools(
        self, start_pool: int, *, prefetch: int = 2, share: tuple[int, int] | None = None, pin: bool = False
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(index, pool) from pool `start_pool` on, read `prefetch` pools ahead in a thread. A pool is (P, d)
        float32; with `share=(lo, hi)` only its tokens [lo, hi), and only the blocks that hold them are read
        (a data-parallel rank's disjoint part; see `pool_share`). `pin`: in page-locked memory (for an
        asynchronous copy to a GPU; pinned in the reading thread, off the training loop's path)."""
        P = self.pool_tokens
        lo, hi = share if share is not None else (0, P)

        def make() -> Iterator[tuple[int, torch.Tensor]]:
            index, pos, parts = start_pool, start_pool * P, []  # pos: stream position of the segment's start
            for a, b, skip, n in self._segments(start_pool * P):
                block = None
                while True:
                    s, e = max(pos, index * P + lo), min(pos + n, index * P + hi)
                    if s < e:
                        block = self._read(a, b, index) if block is None else block
                        parts.append(block[skip + s - pos : skip + e - pos])
                    if pos + n < index * P + hi:
                        break  # the pool part continues in the next block
                    pool = torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)))
                    yield index, pool.pin_memory() if pin else pool
                    index, parts = index + 1, []
                pos += n

        return prefetched(make, prefetch)


def pool_share(pool_tokens: int, rank: int, world_size: int) -> tuple[int, int]:
    """The tokens [lo, hi) of every pool that a data-parallel rank reads: contiguous, disjoint, covering the pool."""
    return pool_tokens * rank // world_size, pool_tokens * (rank + 1) // world_size


def squared_norm_sum(
    schedule: PoolSchedule, n_tokens: int, share: tuple[int, int] | None = None
) -> tuple[float, int]:
    """(sum of squared L2 norms, count) over the first `n_tokens` tokens of the stream (float64 sums); with
    `share`, over this rank's part of them only (the parts of all ranks add up to the whole)."""
    P = schedule.pool_tokens
    lo = share[0] if share is not None else 0
    total, seen = 0.0, 0
    for index, part in schedule.pools(0, prefetch=0, share=share):
        start = index * P + lo  # stream position of the part's first token
        if start >= n_tokens:
            break
        take = part[: n_tokens - start].double()
        total += float(take.pow(2).sum())
        seen += len(take)
        if (index + 1) * P >= n_tokens:
            break
    return total, seen


def mean_squared_norm(schedule: PoolSchedule, n_tokens: int) -> float:
    """Mean squared L2 norm of the first `n_tokens` tokens of the stream (float64 sums)."""
    total, seen = squared_norm_sum(schedule, n_tokens)
    return total / seen


def heldout_blocks(
    cache: ActivationCache, hook: str, seq_range: tuple[int, int], max_tokens: int
) -> Iterator[np.ndarray]:
    """Unmasked (n, d) float32 tokens of sequences [a, b), in order, up to `max_tokens` in all."""
    left = max_tokens
    step = cache.chunk_seqs * 4
    for a in range(seq_range[0], seq_range[1], step):
        b = min(a + step, seq_range[1])
        block = cache.read_acts(hook, a, b)[~cache.mask[a:b]]
        if not np.isfinite(block).all():
            raise UserError(f"{cache.path}: NaN/inf in the held-out activations of {hook}, sequences {a}-{b}")
        yield block[:left]
        left -= min(left, len(block))
        if left == 0:
            return
