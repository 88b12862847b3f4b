"""A tie-aware, bootstrap-ready AUROC: how every describer (and the label tester) is scored on held-out windows."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """AUROC of `scores` (n,) for bool `labels` (n,), ties counted half; one value per row of `weights` (B, n).

    Weights are multiplicities (bootstrap counts, or 0/1 selections such as one decile's positives); without them
    the result is the plain AUROC as a (1,) array. NaN where a row has no positive or no negative weight.
    """
    w = np.ones((1, len(scores))) if weights is None else np.asarray(weights, np.float64)
    if len(scores) == 0:
        return np.full(w.shape[0], np.nan)
    uniq, inv = np.unique(scores, return_inverse=True)
    onehot = sp.csr_matrix(
        (np.ones(len(scores)), (np.arange(len(scores)), inv)), shape=(len(scores), len(uniq))
    )
    pos_u = np.asarray((onehot.T @ (w * labels).T).T)  # (B, U) positive weight per distinct score
    neg_u = np.asarray((onehot.T @ (w * ~labels).T).T)  # (B, U)
    below = np.cumsum(neg_u, axis=1) - neg_u  # negative weight strictly below each distinct score
    num = (pos_u * (below + 0.5 * neg_u)).sum(axis=1)
    den = pos_u.sum(axis=1) * neg_u.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)
