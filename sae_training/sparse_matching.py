"""One-to-one matching of two large sets of unit rows without the dense similarity matrix: candidates, then LAPJVsp.

Exact Hungarian matching (`scipy.optimize.linear_sum_assignment`) needs the whole (n_a, n_b) similarity matrix and
O(n³) time: 1 GiB and minutes at 16k rows, 16 GiB and hours at 65k (Paulo & Belrose report 8 h and 300+ GB at
131k). Here the similarity is computed in row blocks and only each row's and each column's `k` best partners are
kept (a blocked top-k), plus the diagonal edges (i, i) so that a full matching always exists; the maximum-weight full
matching of that sparse graph (`scipy.sparse.csgraph.min_weight_full_bipartite_matching`, LAPJVsp) is the answer.

It equals the exact assignment whenever the exact one uses only candidate edges. For latents that are found again
in the other SAE their partner is among their few best rows by construction; the rows it can differ on are those
whose best similarity is low anyway (unmatched latents), where it can give a slightly lower similarity than the
exact one. `benchmarks/bench_stability.py` and `tests/test_stability.py` measure the agreement.

The similarity of row i of A and row j of B is the minimum over `pairs` of the cosines of their rows (one pair:
the plain cosine; (decoder, encoder): the C2 similarity min(decoder cos, encoder cos)). Rows must be unit rows.
Peak memory: O((n_a + n_b) * d) for the rows, O(block * n_b) for one block and O((n_a + n_b) * k) for the graph.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

DEFAULT_K = 32
"""Candidates kept per row and per column (measured enough at 3,072 x 384 and 16,384 x 768: see RESULTS.md)."""
DEFAULT_BLOCK = 1024


def _block_similarity(pairs: list[tuple[torch.Tensor, torch.Tensor]], s: int, e: int) -> torch.Tensor:
    """(e - s, n_b) min over pairs of the cosine of rows s..e of A with every row of B."""
    out = None
    for a, b in pairs:
        c = a[s:e] @ b.T
        out = c if out is None else torch.minimum(out, c)
    assert out is not None
    return out


def candidate_graph(
    pairs: list[tuple[np.ndarray, np.ndarray]], k: int = DEFAULT_K, block: int = DEFAULT_BLOCK
) -> sp.csr_matrix:
    """(n_a, n_b) sparse similarity holding each row's and each column's k best entries and the diagonal."""
    tp = [(torch.from_numpy(np.ascontiguousarray(a, np.float32)), torch.from_numpy(np.ascontiguousarray(b, np.float32)))
          for a, b in pairs]  # fmt: skip
    n_a, n_b = len(tp[0][0]), len(tp[0][1])
    kr, kc = min(k, n_b), min(k, n_a)
    col_val = torch.full((kc, n_b), -np.inf)  # running top-k of every column over the blocks seen
    col_idx = torch.zeros((kc, n_b), dtype=torch.int64)
    rows, cols, vals = [], [], []
    n_diag = min(n_a, n_b)
    with torch.no_grad():
        for s in range(0, n_a, block):
            e = min(s + block, n_a)
            sim = _block_similarity(tp, s, e)  # (B, n_b)
            v, j = sim.topk(kr, dim=1)
            rows.append(np.repeat(np.arange(s, e), kr))
            cols.append(j.reshape(-1).numpy())
            vals.append(v.reshape(-1).numpy())
            d_end = min(e, n_diag)
            if d_end > s:  # the diagonal edges (i, i): a full matching always exists
                i = np.arange(s, d_end)
                rows.append(i)
                cols.append(i)
                vals.append(sim[i - s, i].numpy())
            bv, bi = sim.topk(min(kc, e - s), dim=0)
            merged_v = torch.cat([col_val, bv])
            merged_i = torch.cat([col_idx, bi + s])
            top_v, top_pos = merged_v.topk(kc, dim=0)
            col_val, col_idx = top_v, merged_i.gather(0, top_pos)
            del sim
    keep = torch.isfinite(col_val).reshape(-1).numpy()
    rows.append(col_idx.reshape(-1).numpy()[keep])
    cols.append(np.tile(np.arange(n_b), kc)[keep])
    vals.append(col_val.reshape(-1).numpy()[keep])
    r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals).astype(np.float64)
    key, first = np.unique(r.astype(np.int64) * n_b + c, return_index=True)  # one edge per (row, column)
    return sp.csr_matrix((w[first], (key // n_b, key % n_b)), shape=(n_a, n_b))


def sparse_assignment(graph: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(partner (n_a,) int64 with -1 where unmatched, similarity (n_a,) float32 with NaN there) of the maximum-weight
    full matching of the candidate graph."""
    # LAPJVsp treats a stored zero as no edge and maximises the total weight: shifting every similarity (>= -1)
    # by 2 keeps every edge and, a full matching having a fixed number of edges, the same optimum.
    shifted = graph.copy()
    shifted.data = shifted.data + 2.0
    r, c = min_weight_full_bipartite_matching(shifted, maximize=True)
    partner = np.full(graph.shape[0], -1, dtype=np.int64)
    sim = np.full(graph.shape[0], np.nan, dtype=np.float32)
    partner[r] = c
    sim[r] = np.asarray(graph[r, c]).reshape(-1)
    return partner, sim


def sparse_match(
    pairs: list[tuple[np.ndarray, np.ndarray]], k: int = DEFAULT_K, block: int = DEFAULT_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-similarity one-to-one matching of A's rows to B's on the candidate graph (see the module docstring)."""
    return sparse_assignment(candidate_graph(pairs, k, block))
