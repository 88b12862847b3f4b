"""Per-latent cost of LBL-v1, against the token describer alone (one vocab x latent table for all latents).

Builds a Zipf token grid with planted latents (half fire on token sets, so pruning applies; half on a context hash,
so every describer runs), then times in the same process:
  baseline  the token tables for all latents (`windows.token_tables`, one sparse matmul)
  full      `labelability` (sampling, the registered describers, bootstrap) with pruning
  no-prune  the same with pruning off
and reports seconds per latent and the extrapolation to the size of `xenofeat run`'s default (3,072 latents over 1M tokens).

    python benchmarks/bench_labelability.py [--tokens 262144] [--latents 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import scipy.sparse as sp
import torch

from features.labelability import LBLConfig, labelability
from features.labelability.windows import build_index, token_tables


def planted(n_tokens: int, n_latents: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    seq_len = 128
    n_seq = n_tokens // seq_len
    p = 1.0 / np.arange(1, vocab + 1) ** 1.05
    tokens = rng.choice(vocab, size=(n_seq, seq_len), p=p / p.sum()).astype(np.int32)
    doc_ids = (np.arange(n_seq)[:, None] * 2 + (np.arange(seq_len)[None, :] >= seq_len // 2)).astype(np.int32)
    mask = np.zeros_like(tokens, bool)
    mask[:, 0] = True
    flat = tokens.reshape(-1).astype(np.int64)
    prev = np.roll(flat, 1)
    cols, rows = [], []
    for j in range(n_latents):
        if j % 2 == 0:  # token-set latent
            fire = np.flatnonzero(np.isin(flat, rng.choice(np.arange(20, vocab), 3, replace=False)))
        else:  # hash of (prev, cur) at ~1% density
            h = (prev * 1_000_003 + flat * 7919 + j) * 2654435761 % 2**32
            fire = np.flatnonzero(h < 0.01 * 2**32)
        fire = fire[~mask.reshape(-1)[fire]]
        rows.append(fire)
        cols.append(np.full(len(fire), j))
    r, c = np.concatenate(rows), np.concatenate(cols)
    acts = sp.csc_matrix(
        (rng.uniform(0.1, 5, len(r)).astype(np.float32), (r, c)), shape=(flat.size, n_latents)
    )
    return acts, tokens, doc_ids, mask, [f"t{i}" for i in range(vocab)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=262_144)
    ap.add_argument("--latents", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=30_000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    acts, tokens, doc_ids, mask, vocab = planted(args.tokens, args.latents, args.vocab)
    latents = np.arange(args.latents)
    cfg = LBLConfig()

    # warm-up (imports, first sklearn fit) so neither timed run pays one-off costs
    labelability(
        acts, tokens, doc_ids, mask, latents[:4], dataclasses.replace(cfg, prune=False), 1, vocab=vocab
    )
    t0 = time.perf_counter()
    index = build_index(tokens, doc_ids, mask, len(vocab), 0)
    token_tables(acts, index.tokens, ~index.is_test, len(vocab))
    t_base = time.perf_counter() - t0

    t0 = time.perf_counter()
    table = labelability(acts, tokens, doc_ids, mask, latents, cfg, 0, vocab=vocab)
    t_full = time.perf_counter() - t0

    t0 = time.perf_counter()
    labelability(acts, tokens, doc_ids, mask, latents, dataclasses.replace(cfg, prune=False), 0, vocab=vocab)
    t_noprune = time.perf_counter() - t0

    n = args.latents
    pruned = np.isnan(table.aurocs["rule"]).sum()
    print(f"tokens {args.tokens:,}  latents {n}  vocab {len(vocab):,}  (pruned {pruned}/{n})")
    print(f"baseline token tables, all latents : {t_base:7.2f} s  ({1e3 * t_base / n:6.2f} ms/latent)")
    print(f"LBL with pruning                   : {t_full:7.2f} s  ({1e3 * t_full / n:6.2f} ms/latent)")
    print(f"LBL without pruning                : {t_noprune:7.2f} s  ({1e3 * t_noprune / n:6.2f} ms/latent)")
    print(f"ratio LBL / baseline               : {t_full / t_base:7.1f}x")
    print(f"ratio no-prune / prune             : {t_noprune / t_full:7.2f}x")
    # per-latent work is capped by the window sample; the table and index grow with tokens
    per_latent = (t_full - t_base) / n
    est = 3072 * per_latent + t_base * (1_000_000 / args.tokens) * (3072 / n)
    print(f"estimate, 3,072 latents x 1M tokens: {est / 60:7.2f} min (one core)")
    lab = table.labelability
    print(f"mean LBL token-set latents {np.nanmean(lab[::2]):.3f}, hash latents {np.nanmean(lab[1::2]):.3f}")


if __name__ == "__main__":
    main()
