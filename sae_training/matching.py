"""Matching the latents of two SAEs (or an SAE and planted directions) by cosine similarity.

Pure functions on arrays. Hungarian matching (`scipy.optimize.linear_sum_assignment`) is exact and fine up to a few
ten thousand rows on a 24 GiB machine (a 16k x 16k float32 similarity matrix is 1 GiB). PW-MCC follows Song et al.
(2025): mean signed cosine of Hungarian-matched unit decoder rows, averaged over pairs of runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.optimize import linear_sum_assignment


def unit_rows(w: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero). (n, d) -> (n, d) float32."""
    w = np.asarray(w, dtype=np.float32)
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return w / np.maximum(norms, 1e-12)


def cosine_matrix(a: np.ndarray, b: np.ndarray, block: int = 4096) -> np.ndarray:
    """(n, m) cosine similarities between the rows of a (n, d) and b (m, d), computed in row blocks."""
    ua, ub = unit_rows(a), unit_rows(b)
    out = np.empty((len(ua), len(ub)), dtype=np.float32)
    for s in range(0, len(ua), block):
        out[s : s + block] = ua[s : s + block] @ ub.T
    return out


@dataclass(frozen=True)
class Matching:
    """A one-to-one matching of the rows of A to rows of B."""

    partner: np.ndarray  # (n_a,) int64: matched row of B for each row of A, -1 where unmatched (n_a > n_b)
    similarity: np.ndarray  # (n_a,) float32: similarity of each row to its partner (nan where unmatched)

    @property
    def mean(self) -> float:
        """Mean similarity over matched rows (the MCC when the similarity is the cosine)."""
        return float(np.nanmean(self.similarity)) if len(self.similarity) else float("nan")


def hungarian(similarity: np.ndarray) -> Matching:
    """Maximum-weight one-to-one matching of rows to columns of a (n, m) similarity matrix."""
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    partner = np.full(similarity.shape[0], -1, dtype=np.int64)
    sim = np.full(similarity.shape[0], np.nan, dtype=np.float32)
    partner[rows] = cols
    sim[rows] = similarity[rows, cols]
    return Matching(partner, sim)


def match_rows(a: np.ndarray, b: np.ndarray, *, absolute: bool = False) -> Matching:
    """Hungarian matching of rows of a to rows of b by (optionally absolute) cosine."""
    c = cosine_matrix(a, b)
    return hungarian(np.abs(c) if absolute else c)


def pw_mcc(decoders: list[np.ndarray]) -> tuple[float, float]:
    """Pairwise mean correlation coefficient over runs: (mean, std) of the Hungarian-matched signed decoder cosine."""
    if len(decoders) < 2:
        raise ValueError("PW-MCC needs at least two runs")
    scores = [match_rows(a, b).mean for a, b in combinations(decoders, 2)]
    return float(np.mean(scores)), float(np.std(scores))
