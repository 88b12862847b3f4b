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

    def _blocks(self, start_token: int, first_pool: int) -> Iterator[np.ndarray]:
        """Unmasked (n, d) float32 token blocks of the stream from token `start_token` on."""
        epoch, skip = divmod(start_token, self.epoch_tokens)
        ds = self.cache.activations(self.hook)
        mask = self.cache.mask
        while True:
            order = self._order(epoch)
            cum = np.cumsum(self.counts[order])
            pos = int(np.searchsorted(cum, skip, side="right"))
            skip -= int(cum[pos - 1]) if pos > 0 else 0
            for bi in order[pos:]:
                if self.counts[bi] == 0:
                    continue
                a, b = self.bounds[bi]
                try:
                    block = ds[a:b][~mask[a:b]].astype(np.float32, copy=False)  # (n_unmasked, d)
                except OSError as err:
                    raise corrupt_rows(self.cache.path, self.hook, a, b, err) from err
                if not np.isfinite(block).all():
                    pool = first_pool  # refined below by the consumer, which knows the pool it is filling
                    raise NonFiniteActivations(
                        f"{self.cache.path}: NaN/inf in the activations of {self.hook}, sequences {a}-{b}",
                        (a, b),
                        pool,
                    )
                yield block[skip:] if skip else block
                skip = 0
            epoch += 1

    def pools(self, start_pool: int, *, prefetch: int = 2) -> Iterator[tuple[int, torch.Tensor]]:
        """(index, (P, d) float32 pool) from pool `start_pool` on, read `prefetch` pools ahead in a thread."""

        def make() -> Iterator[tuple[int, torch.Tensor]]:
            index = start_pool
            parts: list[np.ndarray] = []
            have = 0
            blocks = self._blocks(start_pool * self.pool_tokens, start_pool)
            while True:
                try:
                    block = next(blocks)
                except NonFiniteActivations as err:
                    err.pool = index
                    raise
                parts.append(block)
                have += len(block)
                while have >= self.pool_tokens:
                    buf = np.concatenate(parts)
                    yield index, torch.from_numpy(np.ascontiguousarray(buf[: self.pool_tokens]))
                    index += 1
                    parts, have = [buf[self.pool_tokens :]], len(buf) - self.pool_tokens

        return prefetched(make, prefetch)


def mean_squared_norm(schedule: PoolSchedule, n_tokens: int) -> float:
    """Mean squared L2 norm of the first `n_tokens` tokens of the stream (float64 sums)."""
    total, seen = 0.0, 0
    for _, pool in schedule.pools(0, prefetch=0):
        take = pool[: n_tokens - seen].double()
        total += float(take.pow(2).sum())
        seen += len(take)
        if seen >= n_tokens:
            break
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
