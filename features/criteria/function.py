"""C3 function (offline): does removing a latent raise the reconstruction error more than chance would?

For latent i with decoder row d_i, activation a_ti and residual r_t = x_t - x̂_t, removing i from the reconstruction
raises the squared error by

    ΔSSE_i = Σ_t [a_ti² ‖d_i‖² + 2 a_ti d_iᵀ r_t]                       (over tokens where i fires)

The null asks what a *random* direction would have done in i's place, at the same tokens with the same magnitudes
a_ti ‖d_i‖. Replacing a_ti d_i by a_ti ‖d_i‖ u (u a random unit vector) and then removing it gives

    ΔSSE_null(u) = Σ_t [2 a_ti ‖d_i‖ uᵀ r_t + 2 a_ti² ‖d_i‖ uᵀ d_i − a_ti² ‖d_i‖²]

(expand ‖r_{−i}‖² − ‖r_{−i} − a‖d‖u‖² with r_{−i} = r + a d_i). This differs from the form in literature.md §E1,
Σ_t [a² ‖d‖² + 2 a ‖d‖ uᵀ r_t], which keeps i's own a²‖d‖² term and i's residual: its mean equals ΔSSE_i of any latent
whose direction the SAE fits well (dᵀr ≈ 0), so a real direction sits at its median and would pass 5% of the time.
The replacement null puts a random direction near −Σ a²‖d‖² (it adds error), a real one near +Σ a²‖d‖², and a
latent pointing nowhere useful at the null itself. A latent passes when ΔSSE_i exceeds the null's `null_quantile`
over `n_null` directions and (by default) ΔSSE_i > 0.

`FunctionAccumulator` streams chunks: the cross terms for all nonzeros by a gather-dot (numpy einsum over sub-blocks of
nonzeros; 10x faster than the same gather in torch on CPU), the null for all latents and directions by acts_csrᵀ @ (r @ Uᵀ). The model-based mode (the
ablation effect on the downstream output) is a separate seam: `FunctionConfig.mode` is "offline" only for now.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from features.definition import FunctionConfig


class FunctionResult(NamedTuple):
    """C3 per latent (pair values on both members of an antipodal pair) and the totals C4 needs."""

    delta_sse: np.ndarray  # (F,) float64: increase of the summed squared error when the latent is removed
    null_q: np.ndarray  # (F,) float64: the null's null_quantile
    sse_total: float  # Σ_t ‖r_t‖² of the full reconstruction
    n_tokens: int
    passes: np.ndarray  # (F,) bool


class FunctionAccumulator:
    """Streaming sums for C3 over chunks of (x, x̂, activations); memory O(F·n_null), independent of tokens."""

    def __init__(
        self,
        W_dec: np.ndarray,
        n_null: int,
        seed: int,
        partner: np.ndarray | None = None,
        sub_block: int = 8192,
    ) -> None:
        self.W_dec = np.ascontiguousarray(W_dec, dtype=np.float32)  # (F, d)
        n_latents, d = self.W_dec.shape
        rng = np.random.default_rng(seed)
        u = rng.standard_normal((n_null, d))
        self.U = (u / np.linalg.norm(u, axis=1, keepdims=True)).astype(np.float32)  # (K, d) unit rows
        self.norms = np.linalg.norm(self.W_dec, axis=1).astype(np.float64)  # (F,)
        self.u_dot_d = (self.U @ self.W_dec.T).astype(np.float64)  # (K, F): uᵀ d_i
        self.partner = None if partner is None else np.asarray(partner, dtype=np.int64)
        self.sub_block = sub_block
        self.sum_a2 = np.zeros(n_latents)  # Σ a²
        self.cross = np.zeros(n_latents)  # Σ a dᵀr
        self.null_cross = np.zeros((n_null, n_latents))  # Σ a uᵀr
        self.pair_cofire = np.zeros(n_latents)  # Σ a_i a_partner(i)
        self.sse_total = 0.0
        self.n_tokens = 0

    def update(self, x: np.ndarray, x_hat: np.ndarray, acts_csr: sp.spmatrix) -> None:
        """Add a chunk: inputs x (n, d), reconstructions x̂ (n, d), activations (n, F) of the same tokens."""
        r = np.asarray(x, dtype=np.float32) - np.asarray(x_hat, dtype=np.float32)  # (n, d)
        a = sp.csr_matrix(acts_csr, dtype=np.float32)
        if a.shape != (len(r), len(self.W_dec)):
            raise ValueError(f"activations have shape {a.shape}, expected ({len(r)}, {len(self.W_dec)})")
        self.sse_total += float(np.einsum("nd,nd->", r, r, dtype=np.float64))
        self.n_tokens += len(r)
        rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
        cols, vals = a.indices, a.data
        self.sum_a2 += np.bincount(cols, weights=vals.astype(np.float64) ** 2, minlength=len(self.sum_a2))
        for s in range(0, len(cols), self.sub_block):
            sl = slice(s, s + self.sub_block)
            dots = np.einsum("nd,nd->n", r[rows[sl]], self.W_dec[cols[sl]])  # (b,): d_iᵀ r_t per nonzero
            self.cross += np.bincount(cols[sl], weights=vals[sl] * dots, minlength=len(self.cross))
        ru = r @ self.U.T  # (n, K): uᵀ r_t
        self.null_cross += np.asarray((a.T @ ru).T, dtype=np.float64)  # (K, F)
        if self.partner is not None:
            paired = np.flatnonzero(self.partner >= 0)
            if len(paired):
                ac = a.tocsc()
                self.pair_cofire[paired] += np.asarray(
                    ac[:, paired].multiply(ac[:, self.partner[paired]]).sum(axis=0)
                ).ravel()

    def result(self, cfg: FunctionConfig) -> FunctionResult:
        """ΔSSE, the null quantile and the pass decision for every latent."""
        q = self.sum_a2 * self.norms**2  # Σ a²‖d‖²
        delta = q + 2 * self.cross
        null = 2 * self.norms * self.null_cross + 2 * self.sum_a2 * self.norms * self.u_dot_d - q  # (K, F)
        if self.partner is not None:
            delta, null = self._pair_values(delta, null)
        null_q = np.quantile(null, cfg.null_quantile, axis=0)
        passes = delta > null_q
        if cfg.require_positive:
            passes &= delta > 0
        return FunctionResult(delta, null_q, self.sse_total, self.n_tokens, passes)

    def _pair_values(self, delta: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Removing a pair removes both: ΔSSE adds, plus the co-firing term 2 Σ a_i a_j d_iᵀd_j (≈ 0 for antipodes).

        The pair's null uses the same random direction for both members' magnitudes, exact where they do not
        co-fire (antipodal latents rarely do).
        """
        delta, null = delta.copy(), null.copy()
        i = np.flatnonzero(self.partner >= 0)
        j = self.partner[i]
        dij = np.einsum("fd,fd->f", self.W_dec[i], self.W_dec[j]).astype(np.float64)
        delta[i] = delta[i] + delta[j] + 2 * self.pair_cofire[i] * dij
        null[:, i] = null[:, i] + null[:, j]
        return delta, null
