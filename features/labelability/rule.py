"""The rule describer: an L1-logistic rule over the current token, the previous token, the bigram and the bag of
preceding tokens, with at most `rule_max_terms` non-zero weights (so a person can read and check it)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.svm import l1_min_c

from features.columns import Column
from features.labelability.registry import Description, LatentSample, PassData, auroc_column

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


def rule_features(
    windows: np.ndarray, train: np.ndarray, vocab: list[str], bag: int
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary rule features of all windows (n, w + 1) over the keys seen in the `train` windows: (x (n, m), keys).

    Columns are the distinct keys of the train windows only (a key seen only in test windows cannot be part of a
    rule fit on train), sorted; `describe_key(keys[i], vocab)` names column i.
    """
    v = len(vocab)
    tr_rows = np.flatnonzero(train)
    r_tr, k_tr = rule_keys(windows[tr_rows], bag, v)
    cols = np.unique(k_tr)
    r_all, k_all = rule_keys(windows, bag, v)
    at = np.minimum(np.searchsorted(cols, k_all), max(len(cols) - 1, 0))
    hit = (cols[at] == k_all) if len(cols) else np.zeros(len(k_all), bool)
    x = sp.csr_matrix((np.ones(hit.sum()), (r_all[hit], at[hit])), shape=(len(windows), len(cols)))
    return x, cols


def fit_sparse_rule(
    x_tr: sp.csr_matrix,
    y: np.ndarray,
    x_te: sp.csr_matrix,
    names: Sequence[str],
    *,
    max_terms: int,
    screen: int,
    c_steps: int,
    c_start: float,
    intercept_scaling: float,
) -> RuleFit:
    """Fit an L1-logistic rule over the columns of `x_tr` (named by `names`) with the weakest penalty that keeps
    <= max_terms non-zero weights; the rule describer's fit, shared by the composition describer.

    Cheaper path than a full regularisation path: features are first screened to the `screen` with the largest
    |mean(feature | pos) - mean(feature | neg)| (a rule of <= 8 terms only ever uses strongly associated features),
    then C doubles from `c_start` x sklearn's l1_min_c until a fit exceeds max_terms; the last fit within budget is kept.
    """
    n_pos, n_neg = max(y.sum(), 1), max((~y).sum(), 1)
    assoc = np.abs(
        np.asarray(x_tr[y].sum(axis=0)).ravel() / n_pos - np.asarray(x_tr[~y].sum(axis=0)).ravel() / n_neg
    )
    keep = np.sort(np.argsort(-assoc, kind="stable")[:screen])
    x_tr, x_te = x_tr[:, keep], x_te[:, keep]

    best: LogisticRegression | None = None
    if len(keep) and 0 < y.sum() < len(y):
        c = l1_min_c(x_tr, y, loss="log") * c_start
        for _ in range(c_steps):
            model = LogisticRegression(
                **_L1,
                solver="liblinear",
                C=c,
                class_weight="balanced",
                intercept_scaling=intercept_scaling,
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
        return RuleFit(test_scores=np.zeros(x_te.shape[0]), terms=[])
    w = best.coef_.ravel()
    nz = np.flatnonzero(w)
    nz = nz[np.argsort(-np.abs(w[nz]))]
    return RuleFit(
        test_scores=np.asarray(x_te @ w).ravel(),
        terms=[(names[keep[i]], float(w[i])) for i in nz],
    )


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
    c_start: float,
    intercept_scaling: float,
) -> RuleFit:
    """The rule describer's fit: `rule_features` of the windows, then `fit_sparse_rule`."""
    windows = np.concatenate([train_win, test_win])
    train = np.r_[np.ones(len(train_win), bool), np.zeros(len(test_win), bool)]
    x, keys = rule_features(windows, train, vocab, bag)
    names = _KeyNames(keys, vocab)
    return fit_sparse_rule(
        x[: len(train_win)],
        y,
        x[len(train_win) :],
        names,
        max_terms=max_terms,
        screen=screen,
        c_steps=c_steps,
        c_start=c_start,
        intercept_scaling=intercept_scaling,
    )


class _KeyNames(Sequence[str]):
    """Readable names of rule keys, made on demand (a window set has thousands of keys; a rule reads <= 8)."""

    def __init__(self, keys: np.ndarray, vocab: list[str]) -> None:
        self.keys, self.vocab = keys, vocab

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]  # integer indices only
        return describe_key(self.keys[i], self.vocab)


def rule_readable(terms: list[tuple[str, float]]) -> str:
    """`+2.31 bigram='a' 'b'; -0.80 bag='x'`, or a note when no term survived."""
    return "; ".join(f"{w:+.2f} {name}" for name, w in terms) if terms else "no rule within the term budget"


class RuleDescriber:
    """A sparse L1-logistic rule over current/previous token, bigram and bag of preceding tokens."""

    name = "rule"
    tie_order = 1
    summary = "sparse rule over current/previous token, bigram and preceding tokens"
    cheap = False

    def prepare(self, data: PassData) -> None:
        return None

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        cfg, tr, win = data.cfg, sample.train, sample.windows
        fit = fit_rule(
            win[tr],
            sample.label[tr],
            win[~tr],
            data.vocab,
            bag=cfg.rule_bag,
            max_terms=cfg.rule_max_terms,
            screen=cfg.rule_screen,
            c_steps=cfg.rule_c_steps,
            c_start=cfg.rule_c_start,
            intercept_scaling=cfg.rule_intercept_scaling,
        )
        return Description(test_scores=fit.test_scores, readable=rule_readable(fit.terms))

    def window_features(
        self,
        sample: LatentSample,
        data: PassData,
        state: Any,  # noqa: ANN401
    ) -> tuple[sp.csr_matrix, list[str]]:
        """The rule's binary features (current/previous token, bigram, bag) of every window, over the keys of the
        train windows, for the composition describer."""
        x, keys = rule_features(sample.windows, sample.train, data.vocab, data.cfg.rule_bag)
        return x, list(_KeyNames(keys, data.vocab))

    def columns(self) -> list[Column]:
        return [auroc_column(self)]


DESCRIBER = RuleDescriber()
