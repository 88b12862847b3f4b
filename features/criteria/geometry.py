"""C6 geometry (a tag, not a filter): clusters of latents whose joint activations form a multi-dimensional shape.

Engels et al. (2024), `JoshEngels/MultiDimensionalFeatures`:
1. cluster decoder rows: keep each row's `top_k` nearest other rows with cosine > `min_cos`, symmetrise, take
   connected components of size `min_size`..`max_size`;
2. per cluster, the joint reconstruction Σ_{i∈cluster} a_ti d_i on tokens where any member fires (a seeded sample of
   at most `max_points`), projected on its first `n_components` principal components;
3. score each adjacent pair of components (0-1, 1-2, ...) and keep the largest value per cluster:
   - separability S = min over `n_angles` rotations in [0, 2π) of the mutual information (bits) of the two rotated
     axes, from a `bins` x `bins` equal-width histogram. High S: no rotation makes the axes independent (a circle).
   - mixture index M_ε = max over directions v and offsets c of the fraction of points with |z| < ε,
     z = (v·f + c) / rms(v·f + c). High M: many points lie on a line, i.e. the shape is a mixture of features that
     do not co-occur. Brute force: `mixture_directions` directions in [0, π) and `mixture_offsets` offsets at
     quantiles of the projection, counted with sorted projections and closed-form RMS.
A feature is irreducible when it is neither separable nor a mixture, so a cluster is tagged mixture when M >=
`mixture_index` and multi_d when S >= `separability_bits` and it is not a mixture (two rays that never co-fire form
a V that no rotation separates, so S alone would call them irreducible). Clusters firing on
fewer than `min_points` tokens are not scored (NaN; the plug-in MI is biased upward by about (B−1)²/(2N ln 2) bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from activations.settings import SettingError, Settings, integer, number
from features.columns import Column
from features.criteria.registry import Context, Criterion, Outcome, VerdictRow
from sae_training.matching import unit_rows


@dataclass(frozen=True)
class GeometryConfig(Settings):
    """C6 geometry (tag): clusters of decoder rows whose joint activations are irreducibly multi-dimensional."""

    top_k: int = integer(2, 1, 1000)
    """Neighbours per decoder row kept in the cluster graph (Engels et al.: 2)."""
    min_cos: float = number(0.5, -1.0, 1.0)
    """Least decoder cosine of a kept neighbour."""
    min_size: int = integer(2, 2)
    """Smallest cluster scored."""
    max_size: int = integer(999, 2)
    """Largest cluster scored."""
    n_components: int = integer(5, 2, 64)
    """PCA components of the cluster reconstruction; adjacent pairs are scored."""
    separability_bits: float = number(0.5, 0.0, 100.0)
    """Separability index S (bits) at which a cluster is tagged multi_d (irreducible)."""
    mixture_index: float = number(0.4, 0.0, 1.0)
    """Mixture index M_eps at which a cluster is tagged mixture."""
    epsilon: float = number(0.1, 0.0, 10.0, lo_open=True)
    """Half-width eps of the hyperplane slab of the mixture index, in units of the projection's RMS."""
    bins: int = integer(10, 2, 1000)
    """Histogram bins per axis for the mutual information of S."""
    n_angles: int = integer(100, 1, 100_000)
    """Rotations in [0, 2 pi) searched by S."""
    mixture_directions: int = integer(180, 1, 100_000)
    """Directions in [0, pi) searched by the mixture index."""
    mixture_offsets: int = integer(200, 1, 100_000)
    """Offsets per direction searched by the mixture index (quantiles of the projection)."""
    min_points: int = integer(2000, 10)
    """Fewest tokens on which a cluster fires for it to be scored (the MI estimate is biased below)."""
    max_points: int = integer(4096, 10)
    """Tokens sampled per cluster (cost bound)."""
    seed: int = integer(0, 0)
    """Seed of the token sample."""

    def check(self) -> None:
        if self.max_size < self.min_size:
            raise SettingError("max_size", self.max_size, f"must be >= min_size ({self.min_size})")
        if self.max_points < self.min_points:
            raise SettingError("max_points", self.max_points, f"must be >= min_points ({self.min_points})")


class GeometryResult(NamedTuple):
    """C6 per latent (each latent carries its cluster's values; -1 / NaN / False outside scored clusters)."""

    cluster: np.ndarray  # (F,) int64: cluster id (0.. in order of the smallest member), -1 when in none
    cluster_size: np.ndarray  # (F,) int64
    n_points: np.ndarray  # (F,) int64: tokens where the cluster fires
    separability: np.ndarray  # (F,) float64: S in bits
    mixture: np.ndarray  # (F,) float64: M_ε
    multi_d: np.ndarray  # (F,) bool: S >= separability_bits and not a mixture (irreducible)
    is_mixture: np.ndarray  # (F,) bool: M >= mixture_index


def decoder_clusters(dec_rows: np.ndarray, cfg: GeometryConfig, block: int = 2048) -> np.ndarray:
    """(F,) cluster id of each row in the top-k cosine graph, -1 outside components of size min..max_size."""
    ud = unit_rows(dec_rows)
    n = len(ud)
    if n < 2:
        return np.full(n, -1, dtype=np.int64)
    k = min(cfg.top_k, n - 1)
    src, dst = [], []
    for s in range(0, n, block):
        c = ud[s : s + block] @ ud.T  # (b, F)
        r = np.arange(len(c))
        c[r, s + r] = -np.inf
        nb = np.argpartition(-c, k - 1, axis=1)[:, :k]  # (b, k) the k most similar rows
        ok = c[r[:, None], nb] > cfg.min_cos
        src.append(np.broadcast_to((s + r)[:, None], nb.shape)[ok])
        dst.append(nb[ok])
    src_a, dst_a = np.concatenate(src), np.concatenate(dst)
    graph = sp.coo_matrix((np.ones(len(src_a)), (src_a, dst_a)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    valid = (sizes[labels] >= cfg.min_size) & (sizes[labels] <= cfg.max_size)
    out = np.full(n, -1, dtype=np.int64)
    _, out[valid] = np.unique(labels[valid], return_inverse=True)
    return out


def separability(points: np.ndarray, bins: int = 10, n_angles: int = 100) -> float:
    """S: min over rotations of the mutual information (bits) of a 2-D cloud's two axes (N, 2)."""
    pts = np.asarray(points, dtype=np.float64)
    theta = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    # a quarter turn only swaps the axes and flips a sign, which leaves an equal-width histogram's MI unchanged
    theta = np.unique(np.round(np.mod(theta, np.pi / 2), 12))
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x = cos * pts[:, 0] - sin * pts[:, 1]  # (A, N) rotated coordinates
    y = sin * pts[:, 0] + cos * pts[:, 1]
    keys = np.arange(len(theta))[:, None] * bins * bins
    for axis, mult in ((x, bins), (y, 1)):
        lo, hi = axis.min(axis=1, keepdims=True), axis.max(axis=1, keepdims=True)
        keys = keys + mult * np.clip(
            ((axis - lo) / np.maximum(hi - lo, 1e-12) * bins).astype(np.int64), 0, bins - 1
        )
    joint = np.bincount(keys.ravel(), minlength=len(theta) * bins * bins).reshape(-1, bins, bins) / len(pts)
    px, py = joint.sum(axis=2, keepdims=True), joint.sum(axis=1, keepdims=True)
    ratio = np.where(joint > 0, joint / np.maximum(px * py, 1e-300), 1.0)
    mi = (joint * np.log2(ratio)).sum(axis=(1, 2))
    return float(mi.min())


def mixture_index(
    points: np.ndarray, epsilon: float = 0.1, n_directions: int = 180, n_offsets: int = 200
) -> float:
    """M_ε: the largest fraction of a 2-D cloud (N, 2) within ε RMS of a line (brute force)."""
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    theta = np.linspace(0, np.pi, n_directions, endpoint=False)
    proj = np.sort(pts @ np.stack([np.cos(theta), np.sin(theta)]), axis=0).T  # (D, N) sorted projections
    mean, mean_sq = proj.mean(axis=1, keepdims=True), (proj**2).mean(axis=1, keepdims=True)
    qs = np.linspace(0, n - 1, n_offsets).round().astype(np.int64)
    centre = proj[:, qs]  # (D, O): put the slab's centre at quantiles of the projection (c = −centre)
    rms = np.sqrt(np.maximum(mean_sq - 2 * centre * mean + centre**2, 1e-300))
    # one searchsorted for all directions: shift each direction's sorted projections into its own disjoint range
    half = epsilon * rms  # (D, O)
    span = float(proj.max() - proj.min() + 2 * half.max() + 1.0)
    shift = (np.arange(n_directions) * 2 * span)[:, None]
    flat = (proj + shift).ravel()
    lo = np.searchsorted(flat, (centre - half + shift).ravel(), side="right")
    hi = np.searchsorted(flat, (centre + half + shift).ravel(), side="left")
    best = int((hi - lo).max())
    return best / n


def cluster_shape(
    acts_csc: sp.csc_matrix, dec_rows: np.ndarray, members: np.ndarray, cfg: GeometryConfig, seed: int
) -> tuple[int, float, float]:
    """(tokens where the cluster fires, S, M) of one cluster; S and M are NaN below min_points."""
    sub = acts_csc[:, members].tocsr()  # (T, c)
    rows = np.flatnonzero(np.diff(sub.indptr) > 0)
    if len(rows) < cfg.min_points:
        return len(rows), float("nan"), float("nan")
    if len(rows) > cfg.max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, cfg.max_points, replace=False))
    a = sub[rows].toarray().astype(np.float64)  # (N, c)
    a -= a.mean(axis=0)
    # PCA of a @ D (N, d) without forming it: with Dᵀ = QR, a @ D = (a Rᵀ) Qᵀ and Q has orthonormal columns
    _, r = np.linalg.qr(np.asarray(dec_rows[members], dtype=np.float64).T)  # r: (c, c)
    u, s, _ = np.linalg.svd(a @ r.T, full_matrices=False)
    scores = u * s  # (N, c) principal component scores, largest first
    n_comp = min(cfg.n_components, scores.shape[1])
    s_best, m_best = 0.0, 0.0
    for c in range(n_comp - 1):
        pair = scores[:, c : c + 2]
        if np.ptp(pair[:, 1]) <= 1e-9 * max(np.ptp(pair[:, 0]), 1e-300):
            break  # a flat component: this and later pairs carry no 2-D shape
        s_best = max(s_best, separability(pair, cfg.bins, cfg.n_angles))
        m_best = max(m_best, mixture_index(pair, cfg.epsilon, cfg.mixture_directions, cfg.mixture_offsets))
    return len(rows), s_best, m_best


def geometry(acts_csc: sp.spmatrix, dec_rows: np.ndarray, cfg: GeometryConfig) -> GeometryResult:
    """C6 tags for every latent from the activations (T, F) and decoder rows (F, d)."""
    a = sp.csc_matrix(acts_csc)
    n = a.shape[1]
    cluster = decoder_clusters(dec_rows, cfg)
    size = np.zeros(n, dtype=np.int64)
    n_points = np.zeros(n, dtype=np.int64)
    s_val = np.full(n, np.nan)
    m_val = np.full(n, np.nan)
    for cid in range(int(cluster.max()) + 1 if n else 0):
        members = np.flatnonzero(cluster == cid)
        pts, s_c, m_c = cluster_shape(a, dec_rows, members, cfg, seed=cfg.seed + cid)
        size[members], n_points[members], s_val[members], m_val[members] = len(members), pts, s_c, m_c
    with np.errstate(invalid="ignore"):
        is_mixture = m_val >= cfg.mixture_index
        multi_d = (s_val >= cfg.separability_bits) & ~is_mixture
    return GeometryResult(cluster, size, n_points, s_val, m_val, multi_d, is_mixture)


def _compute(ctx: Context, cfg: GeometryConfig) -> Outcome:
    geo = geometry(ctx.acts, ctx.dec, cfg)
    columns = {
        "cluster": geo.cluster,
        "separability": geo.separability,
        "mixture_index": geo.mixture,
        "multi_d": geo.multi_d,
        "mixture": geo.is_mixture,
    }
    return Outcome(columns, geo)


_OWNER = "criterion:geometry"
CRITERION = Criterion(
    number=6,
    name="geometry",
    title="geometry",
    config=GeometryConfig,
    gates=False,
    columns=(
        Column("cluster", "int64", "C6: cluster of co-firing decoder rows, -1 when in none", _OWNER),
        Column("separability", "float64", "C6: the cluster's separability index S, bits (NaN unscored)", _OWNER),
        Column("mixture_index", "float64", "C6: the cluster's mixture index M (NaN unscored)", _OWNER),
        Column("multi_d", "bool", "C6 tag: irreducibly multi-dimensional (S high, not a mixture)", _OWNER),
        Column("mixture", "bool", "C6 tag: a mixture of features that do not co-occur (M high)", _OWNER),
    ),
    verdicts=(
        VerdictRow("separability S (bits)", "separability", "tag multi_d if ≥", setting="separability_bits",
                   verdict="multi_d"),
        VerdictRow("mixture index M", "mixture_index", "tag mixture if ≥", setting="mixture_index",
                   verdict="mixture"),
    ),
    compute=_compute,
)  # fmt: skip
