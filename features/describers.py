"""The three LBL-v1 describers (token, rule, semantic) and a tie-aware, bootstrap-ready AUROC.

Each describer is fit on the train windows of one latent and returns a score per test window; higher means "the
latent fires here". They are deliberately simple, so a person could check them by hand:

- token: P(fire | current token) with additive smoothing towards the latent's base rate. In the main pass it is
  computed for ALL latents at once from a vocab x latent table of firing counts over every train-document token
  (`token_tables`), a better estimate than the sampled windows alone and one sparse matmul for the whole SAE.
- rule: an L1-logistic rule over current token, previous token, bigram and the bag of preceding tokens with at most
  `max_terms` non-zero weights.
- semantic: TF-IDF cosine of a window's tokens to its k nearest train positives minus its k nearest train negatives.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.svm import l1_min_c


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


# ---------------------------------------------------------------------------------------------- token describer


@dataclass(frozen=True)
class TokenTables:
    """Firing counts per (token, latent) over the train documents, for the latents being scored."""

    fire: sp.csc_matrix
    """(V, n_latents) int64: how often the latent fires on each token in train documents."""
    count: np.ndarray
    """(V,) int64: occurrences of each token in train documents (unmasked)."""
    base_rate: np.ndarray
    """(n_latents,) float64: firing rate over unmasked train tokens."""


def token_tables(
    acts: sp.csc_matrix, flat_tokens: np.ndarray, train: np.ndarray, vocab_size: int
) -> TokenTables:
    """Build the vocab x latent firing table for the columns of `acts` (T, n_latents) in one sparse matmul.

    `flat_tokens` (T,) has -1 at masked positions; `train` (T,) marks positions in train documents.
    """
    rows = np.flatnonzero(train & (flat_tokens >= 0))
    onehot = sp.csr_matrix(
        (np.ones(len(rows), np.int64), (flat_tokens[rows], rows)), shape=(vocab_size, len(flat_tokens))
    )  # (V, T)
    fired = acts.copy()
    fired.data = (fired.data != 0).astype(np.int64)
    fire = sp.csc_matrix(onehot @ fired)  # (V, n_latents)
    fire.eliminate_zeros()
    count = np.bincount(flat_tokens[rows], minlength=vocab_size)
    return TokenTables(
        fire=fire, count=count, base_rate=np.asarray(fire.sum(axis=0)).ravel() / max(len(rows), 1)
    )


def token_column(tables: TokenTables, j: int) -> np.ndarray:
    """(V,) firing counts of the j-th latent of the tables."""
    col = np.zeros(tables.fire.shape[0], np.int64)
    lo, hi = tables.fire.indptr[j], tables.fire.indptr[j + 1]
    col[tables.fire.indices[lo:hi]] = tables.fire.data[lo:hi]
    return col


def token_scores(
    fire: np.ndarray, count: np.ndarray, base_rate: float, tok: np.ndarray, alpha: float
) -> np.ndarray:
    """Smoothed P(fire | token) for token ids `tok` (n,): (k + alpha * base) / (n_tok + alpha); -1 gets the base."""
    safe = np.maximum(tok, 0)
    p = (fire[safe] + alpha * base_rate) / (count[safe] + alpha)
    return np.where(tok >= 0, p, base_rate)


def fit_token_from_windows(
    tok: np.ndarray, label: np.ndarray, vocab_size: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """(fire, count, base_rate) of a look-up table fit on sampled windows only (used by the shuffled control)."""
    keep = tok >= 0
    count = np.bincount(tok[keep], minlength=vocab_size)
    fire = np.bincount(tok[keep & label], minlength=vocab_size)
    return fire, count, float(label.mean()) if len(label) else 0.0


def token_readable(fire: np.ndarray, count: np.ndarray, vocab: list[str], top: int = 5) -> str:
    """The tokens with the highest empirical P(fire | token) among those it fires on, e.g. `'the' 0.93 (14/15)`."""
    cand = np.flatnonzero(fire > 0)
    if len(cand) == 0:
        return "no firing token in train documents"
    p = fire[cand] / count[cand]
    order = np.lexsort((-fire[cand], -p))[:top]  # by P, then by support
    return ", ".join(
        f"{vocab[t]!r} {p[i]:.2f} ({fire[t]}/{count[t]})" for i, t in zip(order, cand[order], strict=True)
    )


# ----------------------------------------------------------------------------------------------- rule describer

# scikit-learn 1.8 deprecated penalty="l1" in favour of l1_ratio=1.0 (which older releases ignore for liblinear)
_L1 = (
    {"l1_ratio": 1.0}
    if tuple(int(x) for x in sklearn.__version__.split(".")[:2]) >= (1, 8)
    else {"penalty": "l1"}
)

_CUR, _PREV, _BAG = 0, 1, 2  # key = kind * V + token; bigrams use 4 * V + prev * V + cur


def rule_keys(windows: np.ndarray, bag: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary features of windows (n, w + 1) as (row, key) pairs; key = kind offset + token (or bigram) id."""
    n = windows.shape[0]
    v = np.int64(vocab_size)
    cur, prev = windows[:, -1], windows[:, -2]
    bagged = windows[:, -1 - bag : -1]  # (n, bag) preceding tokens, -1 outside the sequence
    rows = [np.arange(n), np.arange(n), np.repeat(np.arange(n), bagged.shape[1]), np.arange(n)]
    keys = [cur, v + prev, 2 * v + bagged.ravel(), 4 * v + prev * v + cur]
    ok = [cur >= 0, prev >= 0, bagged.ravel() >= 0, (prev >= 0) & (cur >= 0)]
    r = np.concatenate([x[m] for x, m in zip(rows, ok, strict=True)])
    k = np.concatenate([x[m] for x, m in zip(keys, ok, strict=True)])
    pair = np.unique(r * (5 * v + v * v) + k)  # one entry per (row, key): features are binary
    return pair // (5 * v + v * v), pair % (5 * v + v * v)


def describe_key(key: int, vocab: list[str]) -> str:
    """Readable name of a rule feature key."""
    v = len(vocab)
    kind, tok = divmod(int(key), v)
    if kind == _CUR:
        return f"cur={vocab[tok]!r}"
    if kind == _PREV:
        return f"prev={vocab[tok]!r}"
    if kind == _BAG:
        return f"bag={vocab[tok]!r}"
    prev, cur = divmod(int(key) - 4 * v, v)
    return f"bigram={vocab[prev]!r} {vocab[cur]!r}"


@dataclass(frozen=True)
class RuleFit:
    """A fitted sparse rule: its test scores and readable terms."""

    test_scores: np.ndarray
    """(n_test,) decision function on the test windows."""
    terms: list[tuple[str, float]]
    """(feature, weight) of the non-zero terms, largest |weight| first."""


def fit_rule(
    train_win: np.ndarray,
    y: np.ndarray,
    test_win: np.ndarray,
    vocab: list[str],
    *,
    bag: int,
    max_terms: int,
    screen: int,
    c_steps: int,
) -> RuleFit:
    """Fit the L1-logistic rule with the weakest penalty that keeps <= max_terms non-zero weights.

    Cheaper path than a full regularisation path: features are first screened to the `screen` with the largest
    |P(feature | pos) - P(feature | neg)| (a rule of <= 8 terms only ever uses strongly associated features),
    then C doubles from sklearn's l1_min_c until a fit exceeds max_terms; the last fit within budget is kept.
    """
    v = len(vocab)
    r_tr, k_tr = rule_keys(train_win, bag, v)
    cols, col_of = np.unique(k_tr, return_inverse=True)
    x_tr = sp.csr_matrix((np.ones(len(r_tr)), (r_tr, col_of)), shape=(len(y), len(cols)))
    n_pos, n_neg = max(y.sum(), 1), max((~y).sum(), 1)
    assoc = np.abs(
        np.asarray(x_tr[y].sum(axis=0)).ravel() / n_pos - np.asarray(x_tr[~y].sum(axis=0)).ravel() / n_neg
    )
    keep = np.sort(np.argsort(-assoc, kind="stable")[:screen])
    x_tr, cols = x_tr[:, keep], cols[keep]

    r_te, k_te = rule_keys(test_win, bag, v)
    at = np.minimum(np.searchsorted(cols, k_te), max(len(cols) - 1, 0))
    hit = (cols[at] == k_te) if len(cols) else np.zeros(len(k_te), bool)
    x_te = sp.csr_matrix((np.ones(hit.sum()), (r_te[hit], at[hit])), shape=(len(test_win), len(cols)))

    best: LogisticRegression | None = None
    if len(cols) and 0 < y.sum() < len(y):
        c = l1_min_c(x_tr, y, loss="log") * 1.5
        for _ in range(c_steps):
            model = LogisticRegression(
                **_L1,
                solver="liblinear",
                C=c,
                class_weight="balanced",
                intercept_scaling=10.0,
                random_state=0,
            )
            with warnings.catch_warnings():  # an unconverged fit at a tiny C is still a valid sparse rule
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(x_tr, y)
            nnz = int(np.count_nonzero(model.coef_))
            if nnz > max_terms:
                break
            if nnz > 0:
                best = model
            c *= 2.0
    if best is None:
        return RuleFit(test_scores=np.zeros(len(test_win)), terms=[])
    w = best.coef_.ravel()
    nz = np.flatnonzero(w)
    nz = nz[np.argsort(-np.abs(w[nz]))]
    return RuleFit(
        test_scores=np.asarray(x_te @ w).ravel(),
        terms=[(describe_key(cols[i], vocab), float(w[i])) for i in nz],
    )


def rule_readable(terms: list[tuple[str, float]]) -> str:
    """`+2.31 bigram='a' 'b'; -0.80 bag='x'`, or a note when no term survived."""
    return "; ".join(f"{w:+.2f} {name}" for name, w in terms) if terms else "no rule within the term budget"


# ------------------------------------------------------------------------------------------- semantic describer


def _tfidf(windows: np.ndarray, vocab_size: int, idf: np.ndarray | None) -> tuple[sp.csr_matrix, np.ndarray]:
    """L2-normalised TF-IDF rows of window tokens; the idf is fit when not given."""
    n, w = windows.shape
    rows = np.repeat(np.arange(n), w)
    tok = windows.ravel()
    ok = tok >= 0
    x = sp.csr_matrix((np.ones(ok.sum()), (rows[ok], tok[ok])), shape=(n, vocab_size))
    x.sum_duplicates()
    if idf is None:
        df = np.bincount(x.indices, minlength=vocab_size)
        idf = np.log((1.0 + n) / (1.0 + df)) + 1.0  # sklearn's smoothed idf
    x = sp.csr_matrix(x.multiply(idf[None, :]))
    norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norm, 1e-12)) @ x), idf


def _mean_top_k(sim: np.ndarray, k: int) -> np.ndarray:
    """Mean of each row's k largest entries (all entries when fewer)."""
    if sim.shape[1] == 0:
        return np.zeros(sim.shape[0])
    k = min(k, sim.shape[1])
    return np.partition(sim, sim.shape[1] - k, axis=1)[:, -k:].mean(axis=1)


def semantic_scores(
    train_win: np.ndarray, y: np.ndarray, test_win: np.ndarray, vocab_size: int, k: int
) -> np.ndarray:
    """Mean cosine to the k nearest train positives minus to the k nearest train negatives, per test window."""
    x_tr, idf = _tfidf(train_win, vocab_size, None)
    x_te, _ = _tfidf(test_win, vocab_size, idf)
    sim = (x_te @ x_tr.T).toarray()  # (n_test, n_train)
    return _mean_top_k(sim[:, y], k) - _mean_top_k(sim[:, ~y], k)
