"""Iterating over a cache: shuffled training batches and in-order scans.

Both read whole HDF5 chunks (the cheap unit: one decompression and one checksum each) in a background thread, so
disk reads overlap the consumer's compute.

Shuffling = random chunk order per epoch + a shuffle buffer that mixes the unmasked tokens of several chunks. The
order depends only on (seed, epoch), never on timing, so two runs with the same seed see the same batches.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

if TYPE_CHECKING:
    from activations.cache import ActivationCache

T = TypeVar("T")
_DONE = object()


def prefetched(make: Callable[[], Iterator[T]], depth: int) -> Iterator[T]:
    """Run the iterator `make()` in a daemon thread, `depth` items ahead; errors re-raise in the consumer."""
    if depth <= 0:
        yield from make()
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in make():
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            q.put(err)

    thread = threading.Thread(target=work, daemon=True, name="xenofeat-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _chunk_bounds(start: int, stop: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(s + step, stop)) for s in range(start, stop, step)]


def shuffled_batches(
    cache: ActivationCache,
    hook: str,
    *,
    batch_size: int,
    seed: int,
    epochs: int | None,
    shuffle_buffer: int,
    prefetch: int,
    seq_range: tuple[int, int] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield (batch_size, d) float32 tensors of unmasked tokens in a seeded random order.

    `epochs=None` repeats forever. The last partial batch of each epoch is carried into the next epoch (or dropped
    after the final one), so every batch has exactly `batch_size` rows. `seq_range` limits reading to sequences
    [a, b) (used to hold out evaluation tokens).
    """
    lo, hi = seq_range if seq_range is not None else (0, cache.n_seq)
    bounds = _chunk_bounds(lo, hi, cache.chunk_seqs)
    mask = cache.mask
    ds = cache.activations(hook)

    def chunks() -> Iterator[np.ndarray]:
        epoch = 0
        while epochs is None or epoch < epochs:
            order = np.random.default_rng([seed, epoch]).permutation(len(bounds))
            for i in order:
                a, b = bounds[i]
                keep = ~mask[a:b]
                if not keep.any():
                    continue
                try:
                    block = ds[a:b]
                except OSError as err:
                    from activations.errors import UserError

                    raise UserError(
                        f"{cache.path}: activations of {hook} rows {a}-{b} are corrupt ({err})"
                    ) from err
                yield block[keep].astype(np.float32, copy=False)  # (n_unmasked, d)
            epoch += 1

    rng = np.random.default_rng([seed, 1_000_003])
    pool: list[np.ndarray] = []
    pooled = 0
    for rows in prefetched(chunks, prefetch):
        pool.append(rows)
        pooled += len(rows)
        if pooled < max(shuffle_buffer, batch_size):
            continue
        buf = np.concatenate(pool)
        buf = buf[rng.permutation(len(buf))]
        n_out = (len(buf) // batch_size) * batch_size
        # emit all but what does not fill a batch; keep half the buffer back so chunks keep mixing
        keep_back = min(len(buf) - n_out + (shuffle_buffer // 2 // batch_size) * batch_size, len(buf))
        emit = len(buf) - keep_back
        emit -= emit % batch_size
        for s in range(0, emit, batch_size):
            yield torch.from_numpy(np.ascontiguousarray(buf[s : s + batch_size]))
        pool = [buf[emit:]]
        pooled = len(pool[0])
    if pool:
        buf = np.concatenate(pool)
        buf = buf[rng.permutation(len(buf))]
        for s in range(0, len(buf) - batch_size + 1, batch_size):
            yield torch.from_numpy(np.ascontiguousarray(buf[s : s + batch_size]))


@dataclass(frozen=True)
class ScanChunk:
    """Consecutive sequences [seq_start, seq_start + n) of a cache, in order."""

    seq_start: int
    acts: np.ndarray  # (n, L, d) float32
    tokens: np.ndarray  # (n, L) int32
    doc_ids: np.ndarray  # (n, L) int32
    mask: np.ndarray  # (n, L) bool, True = excluded


def scan(cache: ActivationCache, hook: str, *, chunk_seqs: int | None, prefetch: int) -> Iterator[ScanChunk]:
    """Read the whole cache in order, `chunk_seqs` sequences at a time (default: the file's chunk size x 4)."""
    step = chunk_seqs or cache.chunk_seqs * 4
    tokens, doc_ids, mask = cache.tokens, cache.doc_ids, cache.mask

    def chunks() -> Iterator[ScanChunk]:
        for a, b in _chunk_bounds(0, cache.n_seq, step):
            yield ScanChunk(a, cache.read_acts(hook, a, b), tokens[a:b], doc_ids[a:b], mask[a:b])

    return prefetched(chunks, prefetch)
