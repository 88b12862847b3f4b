"""The token-properties describer: does the latent fire on a *kind* of token rather than on listed tokens?

Indicators of the centre token, none of them its identity:
- frequency band: floor(log2(1 + occurrences in the pass's train documents)), so band 0 = never seen in train,
  1 = once, 2 = 2-3 times, 3 = 4-7, ... (the token describer cannot score a token it has not seen; this can);
- character class, one of: number (digits, no letters), punctuation (no letter or digit), all caps (two or more
  letters, all upper case), capitalised (first character an upper-case letter), lower case (first character a
  lower-case letter), other; read after stripping the word-piece marks `##`, `Ġ`, `▁`;
- word start vs continuation: with a WordPiece vocabulary (`##` pieces) a continuation starts with `##`; with a
  space-prefix vocabulary (GPT-2 `Ġ`, SentencePiece `▁`) a word start carries the prefix; with neither (a synthetic
  vocabulary) the two indicators are left out;
- special-token neighbourhood: the previous (next) position is masked ([CLS], [SEP], BOS, padding) or outside the
  sequence.

The describer is an L2 logistic fit (`[labelability] properties_c`, balanced classes) over these indicators on the
train windows; its readable form lists the properties with the largest positive weights. A logistic fit per latent
costs more than the token describer's look-up, so it is not `cheap` (it never prunes, and is pruned itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from features.columns import Column
from features.labelability.registry import Description, LatentSample, PassData, auroc_column
from features.labelability.windows import CacheIndex

CLASSES = ("number", "punctuation", "all caps", "capitalised", "lower case", "other")
_PREFIXES = ("##", "Ġ", "▁")


def vocab_scheme(vocab: list[str]) -> str:
    """`wordpiece` (continuations start with ##), `space-prefix` (word starts carry Ġ or ▁) or `none`."""
    n_hash = sum(s.startswith("##") and len(s) > 2 for s in vocab)
    n_space = sum(s.startswith(("Ġ", "▁")) for s in vocab)
    need = max(10, len(vocab) // 100)
    if n_hash >= need and n_hash >= n_space:
        return "wordpiece"
    return "space-prefix" if n_space >= need else "none"


def char_class(s: str) -> int:
    """Index into `CLASSES` of a token's text (word-piece marks stripped)."""
    core = s
    for p in _PREFIXES:
        core = core.removeprefix(p)
    letters = [c for c in core if c.isalpha()]
    if not core or not any(c.isalnum() for c in core):
        return CLASSES.index("punctuation")
    if not letters:
        return CLASSES.index("number")
    if len(letters) >= 2 and all(c.isupper() for c in letters):
        return CLASSES.index("all caps")
    if core[0].isalpha() and core[0].isupper():
        return CLASSES.index("capitalised")
    if core[0].isalpha() and core[0].islower():
        return CLASSES.index("lower case")
    return CLASSES.index("other")


def word_start(vocab: list[str], scheme: str) -> np.ndarray | None:
    """(V,) bool: the token starts a word; None when the vocabulary does not say (scheme `none`)."""
    if scheme == "wordpiece":
        return np.array([not s.startswith("##") for s in vocab])
    if scheme == "space-prefix":
        return np.array([s.startswith(("Ġ", "▁", " ")) for s in vocab])
    return None


@dataclass(frozen=True)
class PropertyState:
    """Pass-wide property look-ups: per token id and per flat position."""

    band: np.ndarray
    """(V,) int64 frequency band of each token id."""
    cls: np.ndarray
    """(V,) int64 character class of each token id (index into CLASSES)."""
    start: np.ndarray | None
    """(V,) bool word start, or None when the vocabulary does not mark words."""
    prev_special: np.ndarray
    """(T,) bool: the previous position is masked or outside the sequence."""
    next_special: np.ndarray
    """(T,) bool: the next position is masked or outside the sequence."""
    names: list[str]
    """Readable name of each indicator column."""


def property_state(index: CacheIndex, vocab: list[str], train_count: np.ndarray) -> PropertyState:
    """Per-token properties (band from `train_count`, the occurrences in train documents) and per-position
    neighbourhoods, built once per pass; uses no labels."""
    band = np.floor(np.log2(1 + train_count)).astype(np.int64)
    n_bands = int(band.max(initial=0)) + 1
    start = word_start(vocab, vocab_scheme(vocab))
    edge_lo = index.pos == 0
    edge_hi = index.pos == index.seq_len - 1
    prev_special = edge_lo | ~np.r_[True, index.valid[:-1]]
    next_special = edge_hi | ~np.r_[index.valid[1:], True]
    names = [f"cur seen {_band_text(b)} in train documents" for b in range(n_bands)]
    names += [f"cur is {c}" for c in CLASSES]
    if start is not None:
        names += ["cur starts a word", "cur continues a word"]
    names += ["prev is special or the edge", "next is special or the edge"]
    return PropertyState(band, np.array([char_class(s) for s in vocab], np.int64), start, prev_special,
                         next_special, names)  # fmt: skip


def _band_text(b: int) -> str:
    if b == 0:
        return "0 times"
    lo, hi = 2 ** (b - 1), 2**b - 1
    return f"{lo} time" if lo == hi == 1 else (f"{lo} times" if lo == hi else f"{lo}-{hi} times")


def property_matrix(centre: np.ndarray, index: CacheIndex, state: PropertyState) -> sp.csr_matrix:
    """(n, m) 0/1 indicators of the windows centred at `centre`, in the order of `state.names`."""
    tok = index.tokens[centre]
    n = len(centre)
    n_bands = len(state.names) - len(CLASSES) - 2 - (2 if state.start is not None else 0)
    cols = [state.band[tok], n_bands + state.cls[tok]]
    at = n_bands + len(CLASSES)
    if state.start is not None:
        cols.append(at + np.where(state.start[tok], 0, 1))
        at += 2
    rows = [np.arange(n)] * len(cols)
    for flag, off in ((state.prev_special[centre], 0), (state.next_special[centre], 1)):
        rows.append(np.flatnonzero(flag))
        cols.append(np.full(int(flag.sum()), at + off))
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, len(state.names)))


_NEWTON_STEPS, _NEWTON_TOL = 50, 1e-8  # the fit converges in ~10 steps; these only bound a pathological case


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """(coef, intercept) of an L2 logistic fit with balanced class weights, as sklearn's LogisticRegression(C=c,
    class_weight="balanced") defines it (the intercept is not penalised), by damped Newton steps.

    A dozen dense indicator columns make each step a tiny linear solve, so this costs well under a millisecond
    where sklearn's lbfgs costs two orders of magnitude more per latent."""
    n, m = x.shape
    n_pos = max(int(y.sum()), 1)
    w = np.where(y, n / (2 * n_pos), n / (2 * max(n - n_pos, 1)))
    x1 = np.hstack([x, np.ones((n, 1))])
    pen = np.r_[np.full(m, 1.0 / c), 0.0]

    def loss(beta: np.ndarray) -> float:
        z = x1 @ beta
        return float((w * (np.logaddexp(0, z) - y * z)).sum() + 0.5 * (pen * beta**2).sum())

    beta = np.zeros(m + 1)
    f = loss(beta)
    for _ in range(_NEWTON_STEPS):
        prob = 1.0 / (1.0 + np.exp(-(x1 @ beta)))
        grad = x1.T @ (w * (prob - y)) + pen * beta
        hess = (x1.T * (w * prob * (1 - prob))) @ x1 + np.diag(pen + 1e-9)
        step = np.linalg.solve(hess, grad)
        for _ in range(30):  # halve the step until the objective does not rise
            new = beta - step
            f_new = loss(new)
            if f_new <= f:
                break
            step /= 2
        else:
            break
        beta, done = new, f - f_new < _NEWTON_TOL * max(abs(f), 1.0)
        f = f_new
        if done:
            break
    return beta[:m], float(beta[m])


def properties_readable(coef: np.ndarray, names: list[str], top: int = 4) -> str:
    """The properties with the largest positive weights, e.g. `+2.10 cur is capitalised; +0.52 ...`."""
    order = [i for i in np.argsort(-coef, kind="stable")[:top] if coef[i] > 0]
    if not order:
        return "no token property raises firing"
    return "; ".join(f"{coef[i]:+.2f} {names[i]}" for i in order)


class PropertiesDescriber:
    """A logistic fit over token-property indicators (frequency band, character class, word piece, neighbours)."""

    name = "properties"
    tie_order = 4
    summary = "token properties: frequency band, character class, word start, next to a special token"
    cheap = False

    def prepare(self, data: PassData) -> PropertyState:
        return property_state(data.index, data.vocab, data.tables.count)

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        x = property_matrix(sample.centre, data.index, state).toarray()
        tr, y = sample.train, sample.label
        coef, intercept = fit_logistic(x[tr], y[tr], data.cfg.properties_c)
        scores = x @ coef + intercept
        return Description(
            test_scores=scores[~tr],
            readable=properties_readable(coef, state.names),
            train_scores=scores[tr],
        )

    def window_features(
        self,
        sample: LatentSample,
        data: PassData,
        state: Any,  # noqa: ANN401
    ) -> tuple[sp.csr_matrix, list[str]]:
        """The property indicators of every window (`cur is capitalised`, `prev is special or the edge`, ...);
        uses no labels."""
        return property_matrix(sample.centre, data.index, state), list(state.names)

    def columns(self) -> list[Column]:
        return [auroc_column(self)]


DESCRIBER = PropertiesDescriber()
