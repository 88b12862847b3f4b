"""LBL-v1 over many latents in parallel: forked worker processes, each scoring interleaved chunks of latents.

LBL's results do not depend on the chunking (each latent draws from its own seeded generator), so the table merged
here equals a single-process run. Workers inherit the big read-only inputs through fork instead of pickled copies.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
from tqdm import tqdm

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
