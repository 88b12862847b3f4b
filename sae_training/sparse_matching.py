"""One-to-one matching of two large sets of unit rows without the dense similarity matrix: candidates, then LAPJVsp.

Exact Hungarian matching (`scipy.optimize.linear_sum_assignment`) needs the whole (n_a, n_b) similarity matrix and
O(n³) time: 1 GiB and minutes at 16k rows, 16 GiB and hours at 65k (Paulo & Belrose report 8 h and 300+ GB at
131k). Here the similarity is computed in row blocks and only each row's and each column's `k` best partners are
kept (a blocked top-k). The maximum-weight matching of that sparse graph (`scipy.sparse.csgraph.
min_weight_full_bipartite_matching`, LAPJVsp) is taken with one extra "unmatched" column per row, worth the lowest
possible similarity (-1), so that a full matching always exists and no row is forced onto a poor candidate to make
room for another; the rows left unmatched (none when the candidates suffice) are then matched to the columns left
over by exact Hungarian on that small block. The result is one-to-one like Hungarian's, and has the same total
whenever the exact optimum uses only candidate edges: the exact matching is feasible here, and anything feasible
here is a partial matching whose value only grows when it is completed in the dense problem.

A latent found again in the other SAE has its partner among its few best rows; the exact optimum leaves that set
only for rows whose best similarity is low anyway (unmatched latents), which take their partner from deeper in the
list. Too few candidates starve those rows, and the sparse optimum can then move even a found latent to make room
(at 1,024 x 128 with half the rows planted: k = 8 moved 1 of 560 found latents, k = 16 none, k = 64 matched every
row as Hungarian did). `tests/features/test_stability.py` and `benchmarks/bench_stability.py` measure the agreement.

The similarity of row i of A and row j of B is the minimum over `pairs` of the cosines of their rows (one pair:
the plain cosine; (decoder, encoder): the C2 similarity min(decoder cos, encoder cos)). Rows must be unit rows.
Peak memory: O((n_a + n_b) * d) for the rows, O(block * n_b) for one block and O((n_a + n_b) * k) for the graph.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

DEFAULT_K = 64
"""Candidates kept per row and per column: at 3,072 x 384 with random + planted rows the same partners as Hungarian
(32 candidates: 50 of 3,072 random rows matched differently, every planted one the same)."""
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
    """(n_a, n_b) sparse similarity holding each row's and each column's k best entries."""
    tp = [(torch.from_numpy(np.ascontiguousarray(a, np.float32)), torch.from_numpy(np.ascontiguousarray(b, np.float32)))
          for a, b in pairs]  # fmt: skip
    n_a, n_b = len(tp[0][0]), len(tp[0][1])
    kr, kc = min(k, n_b), min(k, n_a)
    col_val = torch.full((kc, n_b), -np.inf)  # running top-k of every column over the blocks seen
    col_idx = torch.zeros((kc, n_b), dtype=torch.int64)
    rows, cols, vals = [], [], []
    with torch.no_grad():
        for s in range(0, n_a, block):
            e = min(s + block, n_a)
            sim = _block_similarity(tp, s, e)  # (B, n_b)
            v, j = sim.topk(kr, dim=1)
            rows.append(np.repeat(np.arange(s, e), kr))
            cols.append(j.reshape(-1).numpy())
            vals.append(v.reshape(-1).numpy())
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


def _complete(
    pairs: list[tuple[np.ndarray, np.ndarray]], partner: np.ndarray, sim: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Match the rows left unmatched to the columns left over, by exact Hungarian on that block."""
    rows = np.flatnonzero(partner < 0)
    n_b = len(pairs[0][1])
    cols = np.setdiff1d(np.arange(n_b), partner[partner >= 0])
    if len(rows) == 0 or len(cols) == 0:
        return partner, sim
    block = np.min([a[rows] @ b[cols].T for a, b in pairs], axis=0)
    r, c = linear_sum_assignment(block, maximize=True)
    partner, sim = partner.copy(), sim.copy()
    partner[rows[r]] = cols[c]
    sim[rows[r]] = block[r, c]
    return partner, sim


def sparse_assignment(graph: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(partner (n_a,) int64 with -1 where unmatched, similarity (n_a,) float32 with NaN there) of the maximum-weight
    matching of the candidate graph in which a row may also stay unmatched at similarity -1."""
    n_a = graph.shape[0]
    # LAPJVsp treats a stored zero as no edge: similarities (>= -1) are shifted by 2, so every edge weighs >= 1 and
    # an unmatched row (its own extra column) weighs -1 + 2 = 1, the least any real edge can weigh.
    shifted = graph.copy()
    shifted.data = shifted.data + 2.0
    augmented = sp.hstack([shifted, sp.identity(n_a, format="csr")], format="csr")
    r, c = min_weight_full_bipartite_matching(augmented, maximize=True)
    real = c < graph.shape[1]
    partner = np.full(n_a, -1, dtype=np.int64)
    sim = np.full(n_a, np.nan, dtype=np.float32)
    partner[r[real]] = c[real]
    sim[r[real]] = np.asarray(graph[r[real], c[real]]).reshape(-1)
    return partner, sim


def sparse_match(
    pairs: list[tuple[np.ndarray, np.ndarray]], k: int = DEFAULT_K, block: int = DEFAULT_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-similarity one-to-one matching of A's rows to B's (unit rows; similarity the min over `pairs` of the
    cosines) from the candidate graph, completed by Hungarian on what it leaves (see the module docstring).
    Returns (partner (n_a,) int64, -1 where unmatched (n_a > n_b), similarity (n_a,) float32, NaN there)."""
    partner, sim = sparse_assignment(candidate_graph(pairs, k, block))
    return _complete(pairs, partner, sim)
