"""LBL-v1 over many latents in parallel: forked worker processes, each scoring interleaved chunks of latents.

LBL's results do not depend on the chunking (each latent draws from its own seeded generator), so the table merged
here equals a single-process run. Workers inherit the big read-only inputs through fork instead of pickled copies.

Under torchrun the same holds across ranks: rank 0 (`RankLBL`, the runner `features.scoring.run_labelability`
calls) hands the latents to score to every rank, rank r scores the interleaved share `latents[r::WORLD_SIZE]` with
its own forked workers, and rank 0 gathers the tables (small: a few values per latent and its test windows) and
merges them. The other ranks wait for their share in `follow_lbl`. Every rank holds the same codes (the streaming
pass gathers them), so no activations move here.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager

import numpy as np
from tqdm import tqdm

from activations.distributed import SharedError, World
from activations.errors import UserError
from features.labelability.config import LBLConfig
from features.labelability.run import labelability
from features.labelability.table import LBLTable, merge_tables

_LBL_ARGS: tuple = ()
"""The big read-only inputs of an LBL fan-out, set in the parent just before forking so workers inherit them
instead of receiving pickled copies (the pool is created and torn down inside `run_lbl`)."""


def _lbl_part(latents: np.ndarray) -> LBLTable:
    acts, tokens, doc_ids, mask, cfg, seed, vocab, dense = _LBL_ARGS
    return labelability(
        acts, tokens, doc_ids, mask, latents, cfg, seed, vocab=vocab, progress=False, dense=dense
    )


def run_lbl(
    acts,
    tokens,
    doc_ids,
    mask,
    latents,
    cfg: LBLConfig,
    seed: int,
    vocab,
    workers: int,
    progress: bool = True,
    dense=None,
) -> LBLTable:  # noqa: ANN001
    """LBL-v1 for `latents`, in `workers` forked processes when there are enough latents.

    Latents are dealt into interleaved chunks (a few per worker, so one progress bar in this process can count
    them as they finish); LBL's results do not depend on the chunking (each latent has its own seeded generator).
    `dense` (F,) bool marks the dense latents (see `labelability`).
    """
    global _LBL_ARGS
    latents = np.asarray(latents, np.int64)
    if workers <= 1 or len(latents) < 32 or "fork" not in mp.get_all_start_methods():
        return labelability(
            acts, tokens, doc_ids, mask, latents, cfg, seed, vocab=vocab, progress=progress, dense=dense
        )
    n_chunks = workers * 4
    chunks = [latents[i::n_chunks] for i in range(n_chunks) if len(latents[i::n_chunks])]
    _LBL_ARGS = (acts, tokens, doc_ids, mask, cfg, seed, vocab, dense)
    parts: list[LBLTable] = []
    try:
        with (
            ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex,
            tqdm(total=len(latents), desc="labelability", unit="latent", disable=not progress) as bar,
        ):
            for part in as_completed([ex.submit(_lbl_part, c) for c in chunks]):
                parts.append(part.result())
                bar.update(len(parts[-1].latents))
    finally:
        _LBL_ARGS = ()
    return merge_tables(parts)


def _share(latents: np.ndarray, world: World) -> np.ndarray:
    """The latents rank `world.rank` scores: every WORLD_SIZE-th, from its rank on (interleaved, as the workers)."""
    return np.asarray(latents, np.int64)[world.rank :: world.world_size]


def _gather_tables(world: World, mine: LBLTable | None, error: str | None) -> list[LBLTable]:
    """Every rank's table (rank order); SharedError on every rank when any rank failed."""
    gathered = world.all_gather((mine, error))
    world.agree(next((err for _, err in gathered if err is not None), None))
    return [table for table, _ in gathered]


class RankLBL:
    """Rank 0's LBL runner under torchrun: the `run` of `features.scoring.run_labelability` (see module docstring).

    Every other rank waits in `follow_lbl` until rank 0 either calls the runner or stops: rank 0 runs everything
    before LBL (the criteria) inside `guard()`, which tells the waiting ranks to stop when it fails.
    """

    def __init__(self, world: World, workers: int, progress: bool) -> None:
        self.world, self.workers, self.progress = world, workers, progress
        self.sent = False

    def _send(self, task: tuple) -> None:
        self.sent = True
        self.world.all_gather(task)  # rank 0's entry is the task; the others contribute None

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run rank 0's work before LBL; on an error, the waiting ranks stop (a UserError stops every rank as one
        SharedError, so rank 0 says it once)."""
        try:
            yield
        except BaseException as err:
            if self.sent or not self.world.distributed:
                raise
            self._send(
                ("stop", str(err) if isinstance(err, UserError) else f"rank 0 failed ({type(err).__name__})")
            )
            if isinstance(err, UserError) and not isinstance(err, SharedError):
                raise SharedError(str(err)) from err
            raise

    def __call__(self, acts, tokens, doc_ids, mask, latents, cfg: LBLConfig, seed: int, vocab,
                 dense=None) -> LBLTable:  # fmt: skip  # noqa: ANN001
        latents = np.asarray(latents, np.int64)
        if not self.world.distributed:
            return run_lbl(
                acts, tokens, doc_ids, mask, latents, cfg, seed, vocab, self.workers, self.progress, dense
            )
        self._send(("lbl", latents, cfg, seed, dense))
        mine, error = None, None
        try:
            mine = run_lbl(acts, tokens, doc_ids, mask, _share(latents, self.world), cfg, seed, vocab, self.workers,
                           self.progress, dense)  # fmt: skip
        except UserError as err:
            error = str(err)
        tables = _gather_tables(self.world, mine, error)
        return merge_tables([tables[0], *(t for t in tables[1:] if len(t.latents))])


def follow_lbl(world: World, acts, tokens, doc_ids, mask, vocab, workers: int) -> None:  # noqa: ANN001
    """A rank other than 0: wait for rank 0's LBL task, score this rank's share, hand the table to rank 0.

    Raises SharedError when rank 0 stopped (its message) or any rank's share failed.
    """
    task = world.all_gather(None)[0]
    if task[0] == "stop":
        raise SharedError(task[1])
    _, latents, cfg, seed, dense = task
    mine, error = None, None
    try:
        mine = run_lbl(
            acts, tokens, doc_ids, mask, _share(latents, world), cfg, seed, vocab, workers, False, dense
        )
    except UserError as err:
        error = str(err)
    _gather_tables(world, mine, error)
