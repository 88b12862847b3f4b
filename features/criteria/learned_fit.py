"""C7's read-out: how much of each latent a random network predicts, as a held-out R² from streamed sums.

The prediction of latent i's activation at token t from the random network is

    ŷ_ti = M[x_t, i] + r̄_i + (z_t - μ)ᵀ w_i

where M[v, i] is the mean activation of i over the train tokens whose id is v (the token look-up: the random copy's
embedding layer is a look-up of the current token, read exactly; 0 for ids not seen in train, and left out
altogether with `lookup=False`), z_t the random network's activation at the hook (d features) and w_i a ridge fit of
what the look-up leaves, y - M[x], on z over train documents (intercept r̄ - μᵀw unpenalised, penalty `ridge` times
each feature's variance). The R² is taken on held-out documents.

Everything is computed from sums gathered in one pass over the tokens, per side (train / test): n, Σz, Σzzᵀ, Σzyᵀ,
Σy, Σy² and, per token id v, its count n_v, Σ_{x=v} z and Σ_{x=v} y (sparse). With r = y - M[x]:

    Σr²  = Σy² - 2 Σ_v (Σ_{x=v} y)∘M_v + Σ_v n_v M_v²
    Σz̃r  = Σz̃y - Σ_v (Σ_{x=v} z - n_v μ) M_vᵀ                         (z̃ = z - μ, μ the train mean of z)

so every latent is scored at once without a (T, F) prediction anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp

CHUNK_TOKENS = 8192
"""Flat positions per forward chunk of the random network (bounds its memory: chunk x d floats)."""

Network = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""The random network: tokens (n, L), attention (n, L) bool -> activations (n, L, d) float32."""


class RidgeSums:
    """The sums of one side (train or test) over its tokens (float64); token ids are compact ids in [0, n_ids)."""

    def __init__(self, d: int, n_targets: int, n_ids: int) -> None:
        self.n = 0
        self.sz = np.zeros(d)
        self.szz = np.zeros((d, d))
        self.szy = np.zeros((d, n_targets))
        self.sy = np.zeros(n_targets)
        self.syy = np.zeros(n_targets)
        self.fires = np.zeros(n_targets, dtype=np.int64)
        self.id_n = np.zeros(n_ids)
        self.id_z = np.zeros((n_ids, d))
        self.id_y = sp.csr_matrix((n_ids, n_targets))

    def update(self, z: np.ndarray, y: sp.spmatrix, ids: np.ndarray) -> None:
        """Add tokens: inputs z (m, d), targets y (m, F) sparse, compact token ids (m,)."""
        z = np.asarray(z, dtype=np.float64)
        y = sp.csr_matrix(y, dtype=np.float64)
        m = len(z)
        self.n += m
        self.sz += z.sum(axis=0)
        self.szz += z.T @ z
        self.szy += np.asarray((y.T @ z).T)  # (d, F)
        self.sy += np.asarray(y.sum(axis=0)).ravel()
        self.syy += np.asarray(y.multiply(y).sum(axis=0)).ravel()
        self.fires += np.diff(y.tocsc().indptr)
        onehot = sp.csr_matrix((np.ones(m), (ids, np.arange(m))), shape=(len(self.id_n), m))  # (ids, m)
        self.id_n += np.bincount(ids, minlength=len(self.id_n))
        self.id_z += onehot @ z
        self.id_y = self.id_y + onehot @ y


def lookup_means(train: RidgeSums) -> sp.csr_matrix:
    """(n_ids, F) mean target per token id over the train tokens (rows of ids unseen in train are 0)."""
    inv = np.divide(1.0, train.id_n, out=np.zeros_like(train.id_n), where=train.id_n > 0)
    return sp.csr_matrix(sp.diags(inv) @ train.id_y)


def ridge_r2(
    train: RidgeSums, test: RidgeSums, ridge: float, min_test_fires: int = 1, lookup: bool = True
) -> np.ndarray:
    """(F,) held-out R² of the look-up plus ridge prediction (module docstring) fit on `train`, scored on `test`;
    NaN where the test targets do not vary or fire on fewer than `min_test_fires` tokens."""
    n, m = max(train.n, 1), test.n
    look = lookup_means(train) if lookup else sp.csr_matrix(train.id_y.shape)  # (ids, F)
    mu = train.sz / n
    rbar = (train.sy - look.T @ train.id_n) / n  # train mean of r = y - M[x] (0 with the look-up)
    g = train.szz - n * np.outer(mu, mu)
    zr = train.szy - np.asarray((look.T @ train.id_z).T)  # Σ z rᵀ over train
    c = zr - n * np.outer(mu, rbar)
    diag = np.clip(np.diag(g), 0.0, None)
    reg = ridge * diag + 1e-9 * max(float(diag.mean()), 1e-30)  # the floor keeps constant inputs solvable
    w = np.linalg.solve(g + np.diag(reg), c)  # (d, F)
    # test sums of the residual r = y - M[x] and of z̃ = z - μ
    sr = test.sy - look.T @ test.id_n
    srr = (
        test.syy
        - 2 * np.asarray(test.id_y.multiply(look).sum(axis=0)).ravel()
        + look.multiply(look).T @ test.id_n
    )
    a = test.szz - np.outer(test.sz, mu) - np.outer(mu, test.sz) + m * np.outer(mu, mu)  # Σ z̃z̃ᵀ
    zt_r = (test.szy - np.outer(mu, test.sy)) - np.asarray(
        (look.T @ (test.id_z - test.id_n[:, None] * mu[None])).T
    )  # Σ z̃ rᵀ
    b = zt_r - np.outer(test.sz - m * mu, rbar)  # Σ z̃ (r - r̄)ᵀ
    see = srr - 2 * rbar * sr + m * rbar**2  # Σ (r - r̄)²
    sse = see - 2 * np.einsum("df,df->f", w, b) + np.einsum("df,df->f", w, a @ w)
    sst = test.syy - test.sy**2 / max(m, 1)
    ok = (sst > 1e-12 * np.maximum(test.syy, 1e-30)) & (test.fires >= min_test_fires)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, 1.0 - sse / np.where(ok, sst, 1.0), np.nan)


def signed_targets(n_latents: int, partner: np.ndarray | None) -> sp.csr_matrix:
    """(F, F) map from codes to C7's targets: column i is a_i, or a_i - a_partner(i) for an antipodal pair."""
    m = sp.identity(n_latents, dtype=np.float64, format="lil")
    if partner is not None:
        for i in np.flatnonzero(np.asarray(partner) >= 0):
            m[int(partner[i]), i] = -1.0
    return m.tocsr()


def test_documents(doc_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(T,) bool: the flat positions whose document is held out (a seeded draw per document id)."""
    doc_ids = np.asarray(doc_ids, dtype=np.int64)
    top = int(doc_ids.max()) + 1 if doc_ids.size else 0
    u = np.random.default_rng(seed).random(max(top, 1))
    return (doc_ids >= 0) & (u[np.clip(doc_ids, 0, None)] < fraction)


def learned_r2(
    network: Network,
    tokens: np.ndarray,
    doc_ids: np.ndarray,
    mask: np.ndarray,
    acts: sp.spmatrix,
    cfg,  # noqa: ANN001 - features.criteria.learned.LearnedConfig
    partner: np.ndarray | None = None,
) -> np.ndarray:
    """(F,) C7's R² for codes `acts` (n_seq * L, F) on the cache grid: tokens and mask (n_seq, L), doc_ids (n_seq, L)
    or flat (n_seq * L,) (-1 on padding, which the network does not attend to), under the
    `[learned]` settings `cfg`. Streams the random network over chunks of whole sequences (its one forward pass)."""
    n_seq, L = tokens.shape
    if cfg.max_tokens:
        n_seq = min(n_seq, -(-cfg.max_tokens // L))
    T = n_seq * L
    docs = np.asarray(doc_ids).reshape(tokens.shape)[:n_seq]  # flat (T,) or grid (n_seq, L) in
    codes = sp.csr_matrix(acts)[:T] @ signed_targets(acts.shape[1], partner)  # (T, F)
    held = test_documents(docs.reshape(-1), cfg.test_fraction, cfg.seed)
    keep = ~np.asarray(mask).reshape(-1)[:T]
    flat = np.asarray(tokens).reshape(-1)[:T]
    ids = np.zeros(T, dtype=np.int64)
    uniq, ids[keep] = np.unique(flat[keep], return_inverse=True)
    sums: dict[bool, RidgeSums] = {}
    for a, z in _chunks(network, np.asarray(tokens)[:n_seq], docs >= 0):
        rows = np.arange(a * L, a * L + len(z))
        if not sums:
            sums = {s: RidgeSums(z.shape[1], codes.shape[1], len(uniq)) for s in (False, True)}
        for side in (False, True):
            sel = rows[keep[rows] & (held[rows] == side)]
            sums[side].update(z[sel - a * L], codes[sel], ids[sel])
    if not sums or sums[False].n == 0 or sums[True].n == 0:
        return np.full(acts.shape[1], np.nan)
    return ridge_r2(sums[False], sums[True], cfg.ridge, cfg.min_test_fires, cfg.token_lookup)


def _chunks(network: Network, tokens: np.ndarray, attention: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first sequence, flat activations (b * L, d)) per chunk of whole sequences."""
    n_seq, L = tokens.shape
    step = max(1, CHUNK_TOKENS // L)
    for a in range(0, n_seq, step):
        z = network(tokens[a : a + step], attention[a : a + step])
        yield a, np.asarray(z, dtype=np.float32).reshape(-1, z.shape[-1])
