"""C2 for groups of latents: is the subspace a group's decoder rows span found again in another seed?

Dense antipodal pairs (Sun et al. 2025) and other small groups of latents can split one stable subspace differently
in every seed: each single latent then has no partner, while the span of the group is the same. Such a group is
matched as a subspace: its reference subspace is the span of its unit decoder rows, cut to its effective rank (the
right singular vectors whose singular value is at least `RANK_RATIO` times the largest: an antipodal pair whose rows
are nearly opposite is one signed direction, a rotated pair two); in the other seed the best-matching span of the
same number of rows is searched among the `N_CANDIDATES` rows with the largest projection on the reference subspace
(every subset of the group's size), and scored by the smallest cosine of the principal angles (Björck & Golub) of
the reference subspace to that span (1: contained in it). The search over candidates is exhaustive for groups of
up to 4 rows, which is all C2 sees: groups are C1's antipodal pairs, because C6's clusters are computed after C2.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

RANK_RATIO = 0.5
"""A singular direction of a group's unit decoder rows counts when its singular value is >= this x the largest."""
N_CANDIDATES = 8
"""Rows of the other seed considered per group (those with the largest projection on the group's subspace)."""
MAX_GROUP = 4
"""Largest group matched as a subspace (C(N_CANDIDATES, size) spans are scored per group and seed)."""


def pair_groups(partner: np.ndarray) -> list[np.ndarray]:
    """The antipodal pairs of a (F,) partner array (-1 = unpaired) as sorted index arrays, each once."""
    i = np.flatnonzero(partner >= 0)
    j = partner[i]
    keep = (i < j) & (partner[j] == i)
    return [np.array([a, b], dtype=np.int64) for a, b in zip(i[keep], j[keep], strict=True)]


def group_basis(unit_dec: np.ndarray) -> np.ndarray:
    """(r, d) orthonormal basis of the effective span of a group's (k, d) unit decoder rows."""
    _, s, vt = np.linalg.svd(unit_dec.astype(np.float64), full_matrices=False)
    r = int((s >= RANK_RATIO * s[0]).sum()) if s[0] > 0 else 0
    return vt[:r]


def subspace_cos(basis: np.ndarray, rows: np.ndarray) -> float:
    """Smallest cosine of the principal angles between the subspace of an (r, d) orthonormal basis and the span of
    (k, d) rows (r <= k): 1 when the subspace lies in the span, near 0 when some direction of it is orthogonal."""
    q, _ = np.linalg.qr(rows.astype(np.float64).T)  # (d, k) orthonormal basis of the span
    s = np.linalg.svd(basis @ q, compute_uv=False)  # cosines of the r principal angles
    return float(s.min()) if len(s) else float("nan")


def best_span_cos(basis: np.ndarray, size: int, other_unit: np.ndarray) -> float:
    """Largest `subspace_cos` of the basis against the span of any `size` rows of another seed's unit decoder rows
    (searched among the N_CANDIDATES rows with the largest projection on the basis)."""
    proj = np.linalg.norm(other_unit @ basis.T.astype(np.float32), axis=1)
    m = min(N_CANDIDATES, len(other_unit))
    cand = np.argpartition(-proj, m - 1)[:m] if m < len(other_unit) else np.arange(len(other_unit))
    best = float("nan")
    for subset in combinations(cand.tolist(), min(size, m)):
        c = subspace_cos(basis, other_unit[list(subset)])
        if np.isnan(best) or c > best:
            best = c
    return best


def group_subspace_cos(
    ref_unit: np.ndarray, groups: list[np.ndarray], others_unit: list[np.ndarray]
) -> np.ndarray:
    """(S-1, n_groups) float64: for every other seed, each group's best `subspace_cos` (NaN for a group too large)."""
    out = np.full((len(others_unit), len(groups)), np.nan)
    for g, members in enumerate(groups):
        if len(members) > MAX_GROUP:
            continue
        basis = group_basis(ref_unit[members])
        if len(basis) == 0:
            continue
        for s, other in enumerate(others_unit):
            out[s, g] = best_span_cos(basis, len(members), other)
    return out


def per_latent(values: np.ndarray, groups: list[np.ndarray], n_latents: int) -> np.ndarray:
    """(F,) float64: each group's value on all its members, NaN outside groups."""
    out = np.full(n_latents, np.nan)
    for g, members in enumerate(groups):
        out[members] = values[g]
    return out
