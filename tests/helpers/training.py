"""Planted-feature activation caches for the training tests, written with the real `CacheWriter`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HOOK = "blocks.0.hook_resid_post"


def planted_cache(
    path: Path,
    *,
    n_seq: int = 160,
    seq_len: int = 32,
    d: int = 32,
    n_features: int = 48,
    l0: int = 3,
    seed: int = 0,
    complete: bool = True,
    nan_at_seq: int | None = None,
    scale: float = 7.0,
) -> np.ndarray:
    """Write a cache whose tokens are sparse sums of planted unit directions; returns the directions (n, d)."""
    from activations.writer import CacheWriter

    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((n_features, d)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    n_tok = n_seq * seq_len
    acts = np.zeros((n_tok, d), np.float32)
    for t in range(n_tok):
        idx = rng.choice(n_features, size=l0, replace=False)
        acts[t] = (rng.uniform(0.5, 1.5, size=l0).astype(np.float32)) @ dirs[idx]
    acts = (acts * scale).reshape(n_seq, seq_len, d)
    if nan_at_seq is not None:
        acts[nan_at_seq, 3, 0] = np.nan
    mask = np.zeros((n_seq, seq_len), bool)
    mask[:, 0] = True  # a "CLS" token, excluded from training
    acts[:, 0] = 1000.0  # its outlier norm must not leak into training
    w = CacheWriter.create(
        path,
        hooks=[HOOK],
        d_model=d,
        context_size=seq_len,
        dtype="float32",
        vocab=[f"t{i}" for i in range(50)],
        model_id="planted",
        model_fingerprint="p" * 32,
        corpus="planted",
        corpus_fingerprint=f"{seed:032d}",
        settings={"seed": seed},
        source="synthetic",
        chunk_bytes=8 * seq_len * d * 4,
    )
    tokens = rng.integers(0, 50, size=(n_seq, seq_len)).astype(np.int32)
    doc = np.repeat(np.arange(n_seq, dtype=np.int32)[:, None], seq_len, axis=1)
    pos = np.repeat(np.arange(seq_len, dtype=np.int32)[None], n_seq, axis=0)
    for a in range(0, n_seq, 40):
        b = min(a + 40, n_seq)
        w.append(tokens[a:b], doc[a:b], pos[a:b], mask[a:b], {HOOK: acts[a:b]})
    if complete:
        w.finish()
    else:
        w.close()
    return dirs
