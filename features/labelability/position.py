"""The position describer: where a token sits, as bucketed look-ups of P(fire | index).

Four indices per unmasked token, all from the cache's token grid (no activations):
- `seq_pos`: index in the packed sequence (what a model with absolute position embeddings sees; a [CLS] at 0 is
  masked, so the first text token is at 1);
- `doc_pos`: index in the document, counting unmasked tokens only; a document is a contiguous run of one doc id in
  the flat stream, so it may span sequences;
- `to_end`: unmasked tokens after this one in its sequence (0 for the last text token before [SEP] or padding);
- `since_boundary`: tokens since the start of the sentence: 0 on a document's first token and on the token after a
  sentence boundary (a token ending in `.`, `!` or `?`, or a newline-like token: one containing a newline, `Ċ` or
  `<0x0A>`, after stripping `##`, `Ġ` and `▁`).

Buckets (`[labelability] position_exact` = e, default 16): indices 0 .. e-1 have a bucket each; from e on they are
log2-spaced, [e * 2^k, e * 2^(k+1)), so 16-31, 32-63, 64-127, ... Each look-up is P(fire | bucket) over the sampled
train windows, smoothed towards their firing rate (`lookup_smoothing`); the describer keeps the one of the four with
the highest train AUROC (ties: the order above) and says which index it is, the share of train windows that
fire over power-of-two ranges of it (0, 1, 2-3, 4-7, ...) and its peak bucket. It costs a few
bincounts per latent, like the token describer, so it is `cheap`: its train AUROC can prune the costly describers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from features.columns import Column
from features.labelability.registry import Description, LatentSample, PassData, auroc_column
from features.labelability.windows import CacheIndex

INDICES = ("seq_pos", "doc_pos", "to_end", "since_boundary")
"""The four indices, in tie order."""
MEANING = {
    "seq_pos": "index in the packed sequence",
    "doc_pos": "index in the document",
    "to_end": "tokens to the end of the sequence",
    "since_boundary": "tokens since the sentence start",
}
_PREFIXES = ("##", "Ġ", "▁")
_NEWLINES = ("\n", "\r", "Ċ", "<0x0A>")


def sentence_end_tokens(vocab: list[str]) -> np.ndarray:
    """(V,) bool: the token ends a sentence (ends in . ! ? after stripping word-piece marks) or is newline-like."""
    out = np.zeros(len(vocab), bool)
    for i, s in enumerate(vocab):
        core = s
        for p in _PREFIXES:
            core = core.removeprefix(p)
        out[i] = any(n in s for n in _NEWLINES) or core.rstrip().endswith((".", "!", "?"))
    return out


def bucket(x: np.ndarray, exact: int) -> np.ndarray:
    """Bucket of each index x >= 0: x below `exact`, else exact + floor(log2(x // exact)); -1 stays -1."""
    x = np.asarray(x, np.int64)
    log = np.floor(np.log2(np.maximum(x // exact, 1))).astype(np.int64)
    return np.where(x < 0, -1, np.where(x < exact, x, exact + log))


def bucket_text(b: int, exact: int) -> str:
    """`3` for an exact bucket, `16-31` for a log2-spaced one."""
    if b < exact:
        return str(b)
    lo = exact * 2 ** (b - exact)
    return f"{lo}-{2 * lo - 1}"


def position_indices(index: CacheIndex, sentence_end: np.ndarray) -> dict[str, np.ndarray]:
    """The four indices per flat position (T,) int64, -1 at masked positions."""
    v = index.valid_idx  # valid flat positions in stream order
    n = len(v)
    step = np.arange(n, dtype=np.int64)
    doc = index.doc[v]
    doc_start = np.r_[True, doc[1:] != doc[:-1]] if n else np.zeros(0, bool)
    ends = sentence_end[index.tokens[v]]
    sent_start = doc_start | np.r_[False, ends[:-1]] if n else doc_start
    seq = v // index.seq_len
    last = np.full(int(seq.max(initial=-1)) + 1, -1, np.int64)
    np.maximum.at(last, seq, index.pos[v])
    out = {}
    for name, values in (
        ("seq_pos", index.pos[v]),
        ("doc_pos", step - np.maximum.accumulate(np.where(doc_start, step, 0))),
        ("to_end", last[seq] - index.pos[v] - _masked_between(index, v, last[seq])),
        ("since_boundary", step - np.maximum.accumulate(np.where(sent_start, step, 0))),
    ):
        full = np.full(len(index.tokens), -1, np.int64)
        full[v] = values
        out[name] = full
    return out


def _masked_between(index: CacheIndex, v: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Masked positions between each valid position `v` and its sequence's last valid position `last` (rare: a
    masked token inside the text), so `to_end` counts unmasked tokens."""
    masked = np.cumsum(~index.valid)  # masked positions up to and including each flat position
    seq_base = (v // index.seq_len) * index.seq_len
    return masked[seq_base + last] - masked[v]


@dataclass(frozen=True)
class PositionState:
    """Pass-wide buckets of the four indices."""

    buckets: dict[str, np.ndarray]
    """Index name -> (T,) int64 bucket per flat position (-1 masked)."""
    n_buckets: dict[str, int]
    """Index name -> number of buckets (max bucket + 1)."""
    exact: int


def position_state(index: CacheIndex, vocab: list[str], exact: int) -> PositionState:
    """The buckets of the four indices of every flat position (built once per pass, O(T))."""
    idx = position_indices(index, sentence_end_tokens(vocab))
    buckets = {name: bucket(values, exact) for name, values in idx.items()}
    return PositionState(buckets, {n: int(b.max(initial=0)) + 1 for n, b in buckets.items()}, exact)


def lookup(b: np.ndarray, y: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p, fire, count) per bucket from buckets `b` and labels `y`: p = (fire + alpha * rate) / (count + alpha)."""
    count = np.bincount(b, minlength=n)
    fire = np.bincount(b[y], minlength=n)
    rate = float(y.mean()) if len(y) else 0.0
    return (fire + alpha * rate) / (count + alpha), fire, count


def lookup_auroc(p: np.ndarray, fire: np.ndarray, count: np.ndarray) -> float:
    """AUROC, ties counted half, of the scores p[bucket] on the windows the look-up was fit on, from the per-bucket
    counts alone (equal to `metrics.auroc` on those windows; O(buckets), which keeps the describer cheap)."""
    uniq, group = np.unique(p, return_inverse=True)
    pos = np.bincount(group, weights=fire, minlength=len(uniq))
    neg = np.bincount(group, weights=count - fire, minlength=len(uniq))
    den = pos.sum() * neg.sum()
    if den == 0:
        return 0.5
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / den)


@dataclass(frozen=True)
class _Fit:
    name: str
    scores: np.ndarray
    train_auroc: float
    p: np.ndarray
    fire: np.ndarray
    count: np.ndarray


def fit_position(sample: LatentSample, state: PositionState, alpha: float) -> _Fit:
    """The look-up of the index with the best train AUROC (ties: `INDICES` order), scored on every window."""
    tr, y = sample.train, sample.label
    best: _Fit | None = None
    for name in INDICES:
        b = state.buckets[name][sample.centre]
        p, fire, count = lookup(b[tr], y[tr], state.n_buckets[name], alpha)
        a = lookup_auroc(p, fire, count)
        if best is None or a > best.train_auroc:
            best = _Fit(name, p[b], a, p, fire, count)
    assert best is not None
    return best


def bucket_low(b: np.ndarray, exact: int) -> np.ndarray:
    """Smallest index of each bucket."""
    b = np.asarray(b, np.int64)
    return np.where(b < exact, b, exact * 2 ** np.maximum(b - exact, 0))


def position_readable(fit: _Fit, exact: int, rate: float) -> str:
    """Which index, its firing profile over power-of-two ranges (0, 1, 2-3, 4-7, 8-15, ...; the share of train
    windows there that fire, with counts) and its peak bucket, e.g.
    `index in the packed sequence (seq_pos): 1: 1.00 (40/40), 2-3: 0.99 (80/81), 4-7: 0.60 (...), ...; peak 2: ...`."""
    seen = np.flatnonzero(fit.count > 0)
    if not fit.fire.any():
        return f"{MEANING[fit.name]} ({fit.name}): no bucket fires in train windows"
    low = bucket_low(seen, exact)
    group = np.where(low == 0, 0, np.floor(np.log2(np.maximum(low, 1))).astype(np.int64) + 1)
    parts = []
    for g in np.unique(group):
        members = seen[group == g]
        fire, count = int(fit.fire[members].sum()), int(fit.count[members].sum())
        lo = 0 if g == 0 else 2 ** (g - 1)
        hi = max(lo, 2**g - 1)
        name = str(lo) if lo == hi else f"{lo}-{hi}"
        parts.append(f"{name}: {fire / count:.2f} ({fire}/{count})")
    cand = np.flatnonzero(fit.fire > 0)
    peak = int(cand[np.lexsort((-fit.fire[cand], -fit.p[cand]))][0])
    peak_text = f"{bucket_text(peak, exact)}: {fit.fire[peak] / fit.count[peak]:.2f} ({fit.fire[peak]}/{fit.count[peak]})"
    return f"{MEANING[fit.name]} ({fit.name}): {', '.join(parts)}; peak {peak_text}; all train windows {rate:.2f}"


class PositionDescriber:
    """P(fire | where the token sits): the best of four bucketed position look-ups."""

    name = "position"
    tie_order = 3
    summary = (
        "P(fire | index in the sequence, in the document, to the sequence end or since the sentence start)"
    )
    cheap = True

    def prepare(self, data: PassData) -> PositionState:
        return position_state(data.index, data.vocab, data.cfg.position_exact)

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        fit = fit_position(sample, state, data.cfg.lookup_smoothing)
        tr = sample.train
        readable = position_readable(fit, state.exact, float(sample.label[tr].mean()))
        return Description(test_scores=fit.scores[~tr], readable=readable, train_scores=fit.scores[tr])

    def window_features(
        self,
        sample: LatentSample,
        data: PassData,
        state: Any,  # noqa: ANN401
    ) -> tuple[sp.csr_matrix, list[str]]:
        """Per index: one indicator per bucket (`seq_pos = 3`, `seq_pos in 16-31`) and one per threshold
        (`seq_pos <= 3`), so a rule can say "within the first 4 tokens" in one term. Uses no labels."""
        n = len(sample.centre)
        blocks, names = [], []
        for name in INDICES:
            b = state.buckets[name][sample.centre]
            k = state.n_buckets[name]
            rows = np.arange(n)
            one_hot = sp.csr_matrix((np.ones(n), (rows, b)), shape=(n, k))
            upto = sp.csr_matrix((b[:, None] <= np.arange(k - 1)[None, :]).astype(np.float64))  # (n, k - 1)
            blocks += [one_hot, upto]
            names += [_bucket_name(name, i, state.exact) for i in range(k)]
            names += [f"{name} <= {_bucket_hi(i, state.exact)}" for i in range(k - 1)]
        return sp.csr_matrix(sp.hstack(blocks)), names

    def columns(self) -> list[Column]:
        return [auroc_column(self)]


def _bucket_hi(b: int, exact: int) -> int:
    return b if b < exact else exact * 2 ** (b - exact + 1) - 1


def _bucket_name(index: str, b: int, exact: int) -> str:
    return f"{index} = {b}" if b < exact else f"{index} in {bucket_text(b, exact)}"


DESCRIBER = PositionDescriber()
