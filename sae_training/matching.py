"""Matching the latents of two SAEs (or an SAE and planted directions) by cosine similarity.

Pure functions on arrays. Hungarian matching (`scipy.optimize.linear_sum_assignment`) is exact, O(n³) in time and
needs the dense similarity (a 16k x 16k float32 matrix is 1 GiB); `match_min_cosine` uses it up to `exact_max` rows
and the sparse candidate matching of `sae_training.sparse_matching` above. PW-MCC follows Song et al. (2025): mean
signed cosine of matched unit decoder rows, averaged over pairs of runs; `pw_mcc_null` is its value for seeded random
unit rows of the same shapes (what PW-MCC reads against: about 0.17 at 3,072 x 384 by chance alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.optimize import linear_sum_assignment

from sae_training.sparse_matching import DEFAULT_K, sparse_match

EXACT_MAX = 8192
"""Largest number of rows matched by exact Hungarian by default; above it the sparse candidate matching is used."""
NULL_SEED = 0
"""Seed of the random dictionaries of the null (fixed, so the null of a shape is one number)."""


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


def min_cosine_matrix(pairs: list[tuple[np.ndarray, np.ndarray]], block: int = 2048) -> np.ndarray:
    """(n_a, n_b) float32 min over `pairs` (a (n_a, d), b (n_b, d)) of the cosine of their rows, in row blocks."""
    units = [(unit_rows(a), unit_rows(b)) for a, b in pairs]
    n_a, n_b = len(units[0][0]), len(units[0][1])
    out = np.empty((n_a, n_b), dtype=np.float32)
    for s in range(0, n_a, block):
        out[s : s + block] = units[0][0][s : s + block] @ units[0][1].T
        for ua, ub in units[1:]:
            np.minimum(out[s : s + block], ua[s : s + block] @ ub.T, out=out[s : s + block])
    return out


def match_min_cosine(
    pairs: list[tuple[np.ndarray, np.ndarray]], exact_max: int = EXACT_MAX, k: int = DEFAULT_K
) -> Matching:
    """One-to-one matching of A's rows to B's by the min over `pairs` of their cosines: exact Hungarian when both
    sides have at most `exact_max` rows, the sparse candidate matching (k candidates per row and column) above."""
    if max(len(pairs[0][0]), len(pairs[0][1])) <= exact_max:
        return hungarian(min_cosine_matrix(pairs))
    partner, sim = sparse_match([(unit_rows(a), unit_rows(b)) for a, b in pairs], k)
    return Matching(partner, sim)


def pw_mcc(decoders: list[np.ndarray], exact_max: int = EXACT_MAX) -> tuple[float, float]:
    """Pairwise mean correlation coefficient over runs: (mean, std) of the matched signed decoder cosine."""
    if len(decoders) < 2:
        raise ValueError("PW-MCC needs at least two runs")
    scores = [match_min_cosine([(a, b)], exact_max).mean for a, b in combinations(decoders, 2)]
    return float(np.mean(scores)), float(np.std(scores))


def random_unit_rows(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(n, d) float32 rows drawn uniformly on the unit sphere (normalised Gaussians)."""
    return unit_rows(rng.standard_normal(shape, dtype=np.float32))


def pw_mcc_null(
    shapes: list[tuple[int, int]], exact_max: int = EXACT_MAX, seed: int = NULL_SEED
) -> tuple[float, float]:
    """PW-MCC (mean, std) of random dictionaries: seeded random unit rows of each run's (n_latents, d), matched by
    the same code as `pw_mcc`; the value a PW-MCC is to be read against."""
    rng = np.random.default_rng(seed)
    return pw_mcc([random_unit_rows(s, rng) for s in shapes], exact_max)
