"""Time of each WDF-v1 criterion at the scoring yardstick's width (F = 3,072 latents, d = 384), per token.

Synthetic TopK-like activations (k active latents per token, Zipfian latent frequencies, a few dense latents with
antipodal partners, planted decoder clusters that co-fire) stand in for a cache; 3 seeds for stability. Token-linear
criteria (C1, C3, C4, and the token part of C6) run on `--tokens` tokens and are reported per token and extrapolated
to 1M tokens; token-independent ones (antipodal pairing, C2 matching, C5 meta-SAE, C6 clustering) are reported as
is. The baseline, run in the same script on the same tokens, is the SAE encode a streaming pass cannot avoid
(x @ W_encᵀ); each criterion's cost is also given as a ratio to it.

    python benchmarks/bench_criteria.py [--tokens 100000] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.sparse as sp
import torch

from features.criteria.atomicity import atomicity
from features.criteria.function import FunctionAccumulator
from features.criteria.geometry import decoder_clusters, geometry
from features.criteria.mdl import mdl
from features.criteria.stability import stability
from features.criteria.support import antipodal_pairs, support, with_pairs
from features.definition import Definition

F, D, K, CHUNK = 3072, 384, 32, 4096


def make_sae(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Encoder and decoder rows (F, d): random unit rows, 8 antipodal pairs, 150 clusters of 3 nearby rows."""
    dec = rng.standard_normal((F, D)).astype(np.float32)
    for c in range(150):  # rows 0..449: clusters of 3 around a centre (cos ≈ 0.7)
        centre = rng.standard_normal(D)
        dec[3 * c : 3 * c + 3] = centre + 0.65 * rng.standard_normal((3, D))
    for p in range(8):  # rows 3000..3015: dense antipodal pairs
        dec[3000 + 2 * p + 1] = -dec[3000 + 2 * p] + 0.1 * rng.standard_normal(D)
    dec /= np.linalg.norm(dec, axis=1, keepdims=True)
    enc = (dec + 0.3 * rng.standard_normal((F, D)) / np.sqrt(D)).astype(np.float32)
    return enc, dec


def make_acts(rng: np.random.Generator, n_tokens: int) -> sp.csr_matrix:
    """(T, F) TopK-like activations: K latents per token from a Zipf-like law, the dense pairs on ~15% each."""
    p = 1.0 / np.arange(1, F + 1) ** 0.8
    p[:450] = p[:450].mean() * 4  # the clustered latents fire often enough to be scored
    p /= p.sum()
    cols = rng.choice(F, size=(n_tokens, K), p=p)
    dense_tok = rng.random(n_tokens)
    for q in range(8):  # one side of each antipodal pair fires on a token, never both
        side = (dense_tok * 8 + q) % 1.0 < 0.5
        cols[:, q] = np.where(rng.random(n_tokens) < 0.3, 3000 + 2 * q + side, cols[:, q])
    vals = np.abs(rng.standard_normal((n_tokens, K))).astype(np.float32) + 0.1
    rows = np.repeat(np.arange(n_tokens), K)
    acts = sp.csr_matrix((vals.ravel(), (rows, cols.ravel())), shape=(n_tokens, F))
    acts.sum_duplicates()
    return acts


def timed(label: str, fn, results: dict[str, float]):
    t0 = time.perf_counter()
    out = fn()
    results[label] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    defn = Definition()
    rng = np.random.default_rng(0)
    enc, dec = make_sae(rng)
    others = [make_sae(np.random.default_rng(s)) for s in (1, 2)]
    # the other seeds share the first 2,000 latents (permuted, perturbed)
    for s, (e, d_) in enumerate(others):
        perm = np.random.default_rng(10 + s).permutation(2000)
        e[:2000], d_[:2000] = enc[perm] + 0.02 * e[:2000], dec[perm] + 0.02 * d_[:2000]
    acts = make_acts(rng, args.tokens)
    x_hat = np.asarray(acts @ dec, dtype=np.float32)  # (T, d)
    x = x_hat + 0.1 * rng.standard_normal(x_hat.shape).astype(np.float32)
    doc = np.repeat(np.arange(args.tokens // 128 + 1), 128)[: args.tokens]
    t = {}

    def baseline() -> None:
        et = torch.from_numpy(enc.T.copy())
        for s in range(0, args.tokens, CHUNK):
            torch.from_numpy(x[s : s + CHUNK]) @ et

    timed("baseline: encode x @ W_enc^T", baseline, t)
    acts_csc = timed("csr -> csc (shared input)", lambda: acts.tocsc(), t)
    sup0 = timed("C1 support", lambda: support(acts_csc, doc, defn.support), t)
    pairs = timed("C1 antipodal pairing", lambda: antipodal_pairs(enc, dec, sup0.density, defn.support), t)
    timed("C1 support of pairs", lambda: with_pairs(sup0, acts_csc, doc, pairs.partner, defn.support), t)

    def function():
        acc = FunctionAccumulator(dec, defn.function.n_null, defn.function.seed, partner=pairs.partner)
        for s in range(0, args.tokens, CHUNK):
            acc.update(x[s : s + CHUNK], x_hat[s : s + CHUNK], acts[s : s + CHUNK])
        return acc.result(defn.function)

    fres = timed("C3 function (streamed)", function, t)
    timed("C4 MDL", lambda: mdl(acts_csc, fres.delta_sse, fres.sse_total, D, defn.mdl, pairs.partner), t)
    st = timed("C2 stability, 3 seeds (incl. PW-MCC)", lambda: stability(enc, dec, others, defn.stability), t)
    timed("C5 atomicity (duplicates + meta-SAE)", lambda: atomicity(dec, defn.atomicity, pairs.partner), t)
    labels = timed("C6 decoder clusters", lambda: decoder_clusters(dec, defn.geometry), t)
    geo = timed("C6 geometry (clusters + shapes)", lambda: geometry(acts_csc, dec, defn.geometry), t)

    token_linear = {"baseline: encode x @ W_enc^T", "csr -> csc (shared input)", "C1 support", "C1 support of pairs",
                    "C3 function (streamed)", "C4 MDL"}  # fmt: skip
    scale = 1_000_000 / args.tokens
    base = t["baseline: encode x @ W_enc^T"]
    print(f"F={F} d={D} k={K} tokens={args.tokens} threads={args.threads} cpus={os.cpu_count()}")
    print(f"pairs found: {(pairs.partner >= 0).sum() // 2}, clusters: {labels.max() + 1}, "
          f"scored clusters: {np.unique(geo.cluster[~np.isnan(geo.separability)]).size}, "
          f"PW-MCC {st.pw_mcc:.3f}, shared fraction {st.shared_fraction:.3f}, "
          f"C3 pass {fres.passes.mean():.3f}")  # fmt: skip
    print(f"{'criterion':42s} {'seconds':>9s} {'us/token':>9s} {'x base':>7s} {'est. 1M tokens (s)':>19s}")
    total_1m = 0.0
    for label, sec in t.items():
        lin = label in token_linear
        est = sec * scale if lin else sec
        if not label.startswith("baseline"):
            total_1m += est
        per_tok = f"{sec / args.tokens * 1e6:9.2f}" if lin else f"{'-':>9s}"
        print(f"{label:42s} {sec:9.2f} {per_tok} {sec / base:7.1f} {est:19.1f}")
    print(f"{'WDF total, estimated for 1M tokens':42s} {'':9s} {'':9s} {'':7s} {total_1m:19.1f}")


if __name__ == "__main__":
    main()
