"""The streaming pass of `xenofeat score`: one in-order scan of the cache, encoding with the reference SAE.

Per chunk of sequences (`ActivationCache.scan`): encode the unmasked tokens with the reference SAE (sae-lens, raw
activations in, post-activation codes out), keep the nonzero codes as a sparse chunk, decode, and feed the residual
to the C3 accumulator (`features.criteria.function.FunctionAccumulator`). At the end the chunks are stacked into the
(T, F) csc matrix every per-latent statistic reads, T = n_seq * L flat positions (row = seq * L + pos), masked rows
empty. Memory is bounded by `max_tokens`: O(max_tokens * L0) for the codes plus one chunk of dense activations.

Antipodal pairs are only known once densities are (after the pass), while the accumulator takes `partner` up front
for its co-firing sums; C3's compute fills those sums from the csc matrix afterwards
(`FunctionAccumulator.set_partner`), which is the same sum.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from activations.cache import ActivationCache
from features.criteria.function import FunctionAccumulator

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What the streaming pass leaves for the criteria, LBL and the store."""

    acts_csc: sp.csc_matrix  # (T, F) float32 codes of the reference SAE, T = n_seq * L, masked rows empty
    tokens: np.ndarray  # (n_seq, L) int32 of the scored sequences
    doc_ids: np.ndarray  # (n_seq, L) int32
    mask: np.ndarray  # (n_seq, L) bool, True = excluded
    function: FunctionAccumulator  # C3 sums (partner filled in by C3's compute)
    n_tokens: int  # unmasked tokens scored
    sum_sq: float  # Σ ‖x_t‖² over scored tokens
    sum_x: np.ndarray  # (d,) Σ x_t, for the explained variance
    l0: float  # mean active latents per scored token

    @property
    def n_seq(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def explained_variance(self) -> float:
        """1 - SSE / total variance around the mean, over the scored tokens."""
        n = max(self.n_tokens, 1)
        var = self.sum_sq - float(self.sum_x @ self.sum_x) / n
        return 1.0 - self.function.sse_total / max(var, 1e-12)


def seqs_for(cache: ActivationCache, max_tokens: int | None) -> int:
    """Sequences scored for a token cap (whole sequences; all of them when the cap is None or exceeds the cache)."""
    if max_tokens is None:
        return cache.n_seq
    return max(1, min(cache.n_seq, math.ceil(max_tokens / cache.context_size)))


def encode_chunk(sae, x: np.ndarray, batch: int = 4096) -> tuple[sp.csr_matrix, np.ndarray]:  # noqa: ANN001
    """Codes (n, F) as csr float32 and reconstructions (n, d) float32 of raw activations x (n, d)."""
    parts, recon = [], np.empty_like(x)
    with torch.no_grad():
        for s in range(0, len(x), batch):
            xb = torch.from_numpy(x[s : s + batch])  # (b, d)
            codes = sae.encode(xb)  # (b, F) dense, mostly zero
            recon[s : s + batch] = sae.decode(codes).numpy()
            rows, cols = torch.nonzero(codes, as_tuple=True)
            vals = codes[rows, cols].numpy().astype(np.float32)
            parts.append(sp.csr_matrix((vals, (rows.numpy(), cols.numpy())), shape=tuple(codes.shape)))
    out = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, sae.cfg.d_sae), dtype=np.float32)
    return out.astype(np.float32), recon


def stream(
    cache: ActivationCache,
    hook: str,
    sae,  # noqa: ANN001 - sae_lens.SAE
    *,
    max_tokens: int | None,
    n_null: int,
    null_seed: int,
    progress: bool = True,
) -> PassResult:
    """One in-order pass over the first `seqs_for(cache, max_tokens)` sequences of `hook`."""
    n_seq = seqs_for(cache, max_tokens)
    L = cache.context_size
    w_dec = sae.W_dec.detach().float().numpy()  # (F, d)
    n_latents = w_dec.shape[0]
    acc = FunctionAccumulator(w_dec, n_null, null_seed)
    blocks: list[sp.csr_matrix] = []
    sum_sq, sum_x, n_tok, nnz = 0.0, np.zeros(w_dec.shape[1]), 0, 0
    bar = tqdm(total=n_seq * L, desc="encoding", unit="tok", unit_scale=True, disable=not progress)
    for chunk in cache.scan(hook):
        if chunk.seq_start >= n_seq:
            break
        take = min(len(chunk.tokens), n_seq - chunk.seq_start)
        acts = chunk.acts[:take].reshape(take * L, -1)  # (n*L, d)
        keep = ~chunk.mask[:take].reshape(-1)  # (n*L,)
        x = np.ascontiguousarray(acts[keep], dtype=np.float32)  # (m, d)
        codes, recon = encode_chunk(sae, x)
        acc.update(x, recon, codes)
        sum_sq += float(np.einsum("nd,nd->", x, x, dtype=np.float64))
        sum_x += x.sum(axis=0, dtype=np.float64)
        n_tok += len(x)
        nnz += codes.nnz
        # place the unmasked rows back on the full grid of flat positions (masked rows stay empty)
        rows = np.flatnonzero(keep)
        counts = np.zeros(take * L, dtype=np.int64)
        counts[rows] = np.diff(codes.indptr)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        blocks.append(sp.csr_matrix((codes.data, codes.indices, indptr), shape=(take * L, n_latents)))
        bar.update(take * L)
    bar.close()
    csr = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_latents), dtype=np.float32)
    acts_csc = csr.tocsc()
    acts_csc.sort_indices()
    del csr, blocks
    log.debug("streamed %d sequences, %d tokens, %d nonzeros", n_seq, n_tok, nnz)
    return PassResult(
        acts_csc=acts_csc,
        tokens=cache.tokens[:n_seq],
        doc_ids=cache.doc_ids[:n_seq],
        mask=cache.mask[:n_seq],
        function=acc,
        n_tokens=n_tok,
        sum_sq=sum_sq,
        sum_x=sum_x,
        l0=nnz / max(n_tok, 1),
    )
