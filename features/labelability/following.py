"""The following-token describer: P(fire | next token) and P(fire | current token, next token), as look-ups.

Every other describer reads the window up to the centre token. An encoder (MiniLM, BERT) sees both sides, and a
person labelling a latent looks at what follows too: on the embedded default, latent 701 of block 3 fires on the
`is` of `context . is _ snan (` and not on other `is`, and what decides it is the `_` that follows ("`is` starting a
predicate method name"). For a causal model the next token is what the latent may be predicting ("fires before
`(`"), a label people give as readily. Two look-ups over the sampled train windows:
- `next`: P(fire | next token), smoothed towards the train windows' firing rate (`lookup_smoothing`);
- `pair`: P(fire | current token, next token), smoothed towards the `next` estimate of the same window, so an unseen
  pair falls back to its next token.
The one with the higher train AUROC is kept (ties: `next`, the simpler) and scored on the test windows. The next
token of the last text token of a sequence is unknown (-1, a bucket of its own). It costs a few bincounts and a sort
per latent, so it is `cheap`. Its window features (for the compose describer): one indicator per next token seen in
the sample's train windows (`next='_'`), so a rule can say "`is` followed by `_`" in two terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from features.columns import Column
from features.labelability.metrics import auroc
from features.labelability.registry import Description, LatentSample, PassData, auroc_column
from features.labelability.windows import CacheIndex


def next_tokens(index: CacheIndex) -> np.ndarray:
    """(T,) int64 the token after each flat position in its sequence (-1: none, masked, or the sequence's end)."""
    tokens = np.asarray(index.tokens, np.int64)
    nxt = np.full(len(tokens), -1, np.int64)
    nxt[:-1] = tokens[1:]
    nxt[np.asarray(index.pos) >= index.seq_len - 1] = -1  # the last column has no next token in its sequence
    return nxt


@dataclass(frozen=True)
class FollowingState:
    """The next token of every flat position (built once per pass, O(T))."""

    next_token: np.ndarray


@dataclass(frozen=True)
class _Fit:
    kind: str  # "next" or "pair"
    scores: np.ndarray  # (n,) over every window of the sample; train windows scored leave-one-out
    train_auroc: float


def lookup_scores(
    keys: np.ndarray, tr: np.ndarray, y: np.ndarray, prior: np.ndarray, alpha: float
) -> np.ndarray:
    """Smoothed P(fire | key) fit on the train windows: (fire + alpha * prior) / (count + alpha) for every window,
    leaving each train window's own label out of its score, so the train AUROC that chooses between look-ups is
    not inflated by keys seen once."""
    uniq, inv = np.unique(keys[tr], return_inverse=True)
    count = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    fire = np.bincount(inv, weights=y[tr].astype(np.float64), minlength=len(uniq))
    f, c = np.zeros(len(keys)), np.zeros(len(keys))
    if len(uniq):
        at = np.minimum(np.searchsorted(uniq, keys), len(uniq) - 1)
        seen = uniq[at] == keys
        f[seen], c[seen] = fire[at[seen]], count[at[seen]]
    f[tr] -= y[tr]  # leave one out
    c[tr] -= 1
    return (f + alpha * prior) / (c + alpha)


def fit_following(cur: np.ndarray, nxt: np.ndarray, tr: np.ndarray, y: np.ndarray, alpha: float) -> _Fit:
    """The better (by leave-one-out train AUROC; ties: next) of the next-token and the (current, next) look-ups."""
    rate = float(y[tr].mean()) if tr.any() else 0.0
    by_next = lookup_scores(nxt + 1, tr, y, np.full(len(cur), rate), alpha)
    width = int(max(nxt.max(initial=0), cur.max(initial=0))) + 2
    by_pair = lookup_scores((cur + 1) * width + nxt + 1, tr, y, by_next, alpha)
    a_next, a_pair = (float(auroc(sc[tr], y[tr])[0]) for sc in (by_next, by_pair))
    if a_pair > a_next:
        return _Fit("pair", by_pair, a_pair)
    return _Fit("next", by_next, a_next)


def _token(vocab: list[str], t: int) -> str:
    return "<end>" if t < 0 else repr(vocab[t]) if t < len(vocab) else f"<{t}>"


def following_readable(
    fit: _Fit, cur: np.ndarray, nxt: np.ndarray, tr: np.ndarray, y: np.ndarray, vocab: list[str], top: int = 5
) -> str:
    """The most firing next tokens (or current -> next pairs) in train windows, e.g. `next '_' 1.00 (40/40)`."""
    pos = tr & y
    if not pos.any():
        return "no firing train window"
    if fit.kind == "next":
        keys, names = nxt, {int(k): f"next {_token(vocab, int(k))}" for k in np.unique(nxt[pos])}
    else:
        keys = cur.astype(np.int64) * (len(vocab) + 1) + nxt + 1
        names = {int(c) * (len(vocab) + 1) + int(n) + 1: f"{_token(vocab, int(c))} -> {_token(vocab, int(n))}"
                 for c, n in zip(cur[pos], nxt[pos], strict=True)}  # fmt: skip
    uniq, inv = np.unique(keys[tr], return_inverse=True)
    count = np.bincount(inv, minlength=len(uniq))
    fire = np.bincount(inv, weights=y[tr].astype(np.float64), minlength=len(uniq)).astype(np.int64)
    cand = np.flatnonzero(fire > 0)
    p = fire[cand] / count[cand]
    order = cand[np.lexsort((-fire[cand], -p))][:top]
    return ", ".join(f"{names[int(uniq[i])]} {fire[i] / count[i]:.2f} ({fire[i]}/{count[i]})" for i in order)


class FollowingDescriber:
    """P(fire | what follows the token): the next token, or the current and next token together."""

    name = "following"
    tie_order = 6
    summary = "P(fire | next token) or P(fire | current token, next token)"
    cheap = True

    def prepare(self, data: PassData) -> FollowingState:
        return FollowingState(next_tokens(data.index))

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        cur, tr, y = sample.windows[:, -1].astype(np.int64), sample.train, sample.label.astype(bool)
        nxt = state.next_token[sample.centre]
        fit = fit_following(cur, nxt, tr, y, data.cfg.lookup_smoothing)
        readable = following_readable(fit, cur, nxt, tr, y, data.vocab)
        return Description(test_scores=fit.scores[~tr], readable=readable, train_scores=fit.scores[tr])

    def window_features(
        self,
        sample: LatentSample,
        data: PassData,
        state: Any,  # noqa: ANN401
    ) -> tuple[sp.csr_matrix, list[str]]:
        """One indicator per next token seen in the train windows (`next='_'`); uses no labels."""
        nxt = state.next_token[sample.centre]
        seen = np.unique(nxt[sample.train])
        rows, cols = np.empty(0, np.int64), np.empty(0, np.int64)
        if len(seen):
            at = np.minimum(np.searchsorted(seen, nxt), len(seen) - 1)
            rows = np.flatnonzero(seen[at] == nxt)
            cols = at[rows]
        x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(nxt), len(seen)))
        names = [f"next={_token(data.vocab, int(t))}" for t in seen]
        return x, names

    def columns(self) -> list[Column]:
        return [auroc_column(self)]


DESCRIBER = FollowingDescriber()
