"""Token windows for labelability (LBL-v1): the document split, the per-token firing table, positive/negative sampling
and window matrices.

A *window* is named by its centre: a flat index `seq * L + pos` into the cache's (n_seq, L) token grid. Its tokens
are the `width` tokens before the centre in the same sequence plus the centre token itself (the last column), which
is what the model saw when it produced the activation. Masked tokens (padding, BOS/CLS/SEP) never serve as centres
and appear as -1 inside a window's context, so padding can never become part of a description.

Positives are firing centres stratified over `n_deciles` activation deciles (rank deciles, so ties cannot empty a decile);
negatives are random non-firing centres plus *hard* negatives: non-firing centres whose window contains one of the
latent's top firing token ids (they stop "the window contains token X" from passing as a description of a latent
that fires on X only in some contexts). The train/test split is by document of the centre, one split for all
latents, drawn from the seed. The firing table per (token, latent) over train documents (`token_tables`) is built
here because sampling needs it (a latent's top firing tokens define its hard negatives); the token describer reads
the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class CacheIndex:
    """Per-position look-ups shared by every latent of one labelability pass (built once, O(T))."""

    tokens: np.ndarray
    """(T,) int64 token id per flat position; -1 where masked (never part of a window)."""
    pos: np.ndarray
    """(T,) int64 position inside its sequence."""
    valid: np.ndarray
    """(T,) bool: may serve as a centre (not masked)."""
    valid_idx: np.ndarray
    """(n_valid,) int64 flat indices of valid positions."""
    is_test: np.ndarray
    """(T,) bool: the position's document is in the test half."""
    doc: np.ndarray
    """(T,) int64 document id per flat position."""
    token_order: np.ndarray
    """(n_valid,) int64 valid flat indices sorted by token id (stable): occurrences of a token are contiguous."""
    token_start: np.ndarray
    """(V + 1,) int64 offsets into token_order per token id."""
    seq_len: int
    """L, the sequence length."""


def split_documents(
    doc_ids: np.ndarray, mask: np.ndarray, seed: int, test_fraction: float = 0.5
) -> np.ndarray:
    """Assign whole documents to the test half; returns (n_seq, L) bool `is_test`.

    Only documents with at least one unmasked token are drawn, so a split of real text is 50/50 in documents.
    """
    docs = np.unique(doc_ids[~mask])  # (n_docs,) sorted
    rng = np.random.default_rng([seed, 0x5EED])
    n_test = int(round(test_fraction * len(docs)))
    test_docs = np.sort(rng.permutation(docs)[:n_test])
    pos = np.searchsorted(test_docs, doc_ids)
    pos = np.minimum(pos, max(len(test_docs) - 1, 0))
    return (test_docs[pos] == doc_ids) if len(test_docs) else np.zeros(doc_ids.shape, bool)


def build_index(
    tokens: np.ndarray,
    doc_ids: np.ndarray,
    mask: np.ndarray,
    vocab_size: int,
    seed: int,
    test_fraction: float = 0.5,
) -> CacheIndex:
    """Flatten the (n_seq, L) grids and index token occurrences for hard-negative sampling."""
    n_seq, seq_len = tokens.shape
    valid = ~mask.reshape(-1)
    toks = np.where(valid, tokens.reshape(-1).astype(np.int64), -1)
    if toks.max(initial=-1) >= vocab_size:
        raise ValueError(f"tokens: id {int(toks.max())} is outside the vocabulary of {vocab_size}")
    valid_idx = np.flatnonzero(valid)
    order = valid_idx[np.argsort(toks[valid_idx], kind="stable")]
    start = np.zeros(vocab_size + 1, np.int64)
    start[1:] = np.cumsum(np.bincount(toks[valid_idx], minlength=vocab_size))
    return CacheIndex(
        tokens=toks,
        pos=np.tile(np.arange(seq_len, dtype=np.int64), n_seq),
        valid=valid,
        valid_idx=valid_idx,
        is_test=split_documents(doc_ids, mask, seed, test_fraction).reshape(-1),
        doc=doc_ids.reshape(-1).astype(np.int64),
        token_order=order,
        token_start=start,
        seq_len=seq_len,
    )


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


def window_matrix(centres: np.ndarray, flat_tokens: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """(n, width + 1) token ids of the windows ending at `centres` (last column = centre); -1 outside the sequence.

    `flat_tokens` must already hold -1 at masked positions (`CacheIndex.tokens`, or `context_tokens`).
    """
    offsets = np.arange(width, -1, -1, dtype=np.int64)  # (width + 1,) distance back from the centre
    idx = centres[:, None] - offsets[None, :]  # (n, width + 1)
    inside = pos[centres][:, None] >= offsets[None, :]
    return np.where(inside, flat_tokens[np.where(inside, idx, 0)], -1)


def context_tokens(tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat token ids with -1 at masked positions, and the in-sequence position: the inputs of `window_matrix`."""
    n_seq, seq_len = tokens.shape
    flat = np.where(mask.reshape(-1), -1, tokens.reshape(-1).astype(np.int64))
    return flat, np.tile(np.arange(seq_len, dtype=np.int64), n_seq)


@dataclass(frozen=True)
class WindowSample:
    """The sampled windows of one latent (positives first, then negatives)."""

    centre: np.ndarray
    """(n,) int64 flat index of each window's centre."""
    label: np.ndarray
    """(n,) bool: the latent fires at the centre."""
    decile: np.ndarray
    """(n,) int8 activation decile of a positive (0 = weakest), -1 for negatives."""
    act: np.ndarray
    """(n,) float64 activation at the centre (0 for negatives)."""
    is_test: np.ndarray
    """(n,) bool: the centre's document is in the test half."""


def sample_positives(
    fire_idx: np.ndarray, fire_val: np.ndarray, cap: int, rng: np.random.Generator, n_deciles: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to `cap` firing centres, an equal share per activation rank decile: (centre, decile, act)."""
    n = len(fire_idx)
    rank = np.empty(n, np.int64)
    rank[np.argsort(fire_val, kind="stable")] = np.arange(n)
    decile = (rank * n_deciles) // max(n, 1)
    per = max(cap // n_deciles, 1)
    picks = []
    for d in range(n_deciles):
        members = np.flatnonzero(decile == d)
        picks.append(members if len(members) <= per else rng.choice(members, per, replace=False))
    chosen = np.sort(np.concatenate(picks))
    return fire_idx[chosen], decile[chosen].astype(np.int8), fire_val[chosen].astype(np.float64)


def _not_firing(candidates: np.ndarray, fire_idx: np.ndarray) -> np.ndarray:
    """Mask of candidates that are not in the sorted array `fire_idx`."""
    if len(fire_idx) == 0:
        return np.ones(len(candidates), bool)
    at = np.minimum(np.searchsorted(fire_idx, candidates), len(fire_idx) - 1)
    return fire_idx[at] != candidates


def sample_random_negatives(
    index: CacheIndex, fire_idx: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """`n` distinct valid non-firing centres, uniformly (rejection sampling: latents are sparse)."""
    got = np.empty(0, np.int64)
    for attempt in range(4):
        draw = index.valid_idx[rng.integers(0, len(index.valid_idx), size=2 * n + 16 << attempt)]
        got = np.unique(np.concatenate([got, draw[_not_firing(draw, fire_idx)]]))
        if len(got) >= n:
            return rng.choice(got, n, replace=False)
    # a dense latent: enumerate the complement instead of drawing
    rest = index.valid_idx[_not_firing(index.valid_idx, fire_idx)]
    return rng.choice(rest, min(n, len(rest)), replace=False)


def sample_hard_negatives(
    index: CacheIndex,
    fire_idx: np.ndarray,
    top_tokens: np.ndarray,
    n: int,
    width: int,
    exclude: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Up to `n` distinct non-firing centres whose window contains one of `top_tokens` (not in `exclude`).

    Draws an occurrence of a top token (weighted by its count), then a centre 0..width tokens after it in the same
    sequence; occurrences are never materialised, so frequent top tokens cost nothing extra.
    """
    starts, ends = index.token_start[top_tokens], index.token_start[top_tokens + 1]
    counts = (ends - starts).astype(np.float64)
    if n == 0 or counts.sum() == 0:
        return np.empty(0, np.int64)
    got = np.empty(0, np.int64)
    for attempt in range(4):
        m = 2 * n + 16 << attempt
        which = rng.choice(len(top_tokens), size=m, p=counts / counts.sum())
        occ = index.token_order[starts[which] + (rng.random(m) * counts[which]).astype(np.int64)]
        shift = rng.integers(0, width + 1, size=m)
        centre = (occ + shift)[
            index.pos[occ] + shift < index.seq_len
        ]  # stay inside the occurrence's sequence
        centre = centre[index.valid[centre] & _not_firing(centre, fire_idx)]
        centre = centre[~np.isin(centre, exclude)]
        got = np.unique(np.concatenate([got, centre]))
        if len(got) >= n:
            return rng.choice(got, n, replace=False)
    return got


def sample_centre_negatives(
    index: CacheIndex,
    fire_idx: np.ndarray,
    anchors: np.ndarray,
    n: int,
    exclude: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Up to `n` distinct non-firing centres whose own token is one of `anchors` (not in `exclude`), uniformly over
    those occurrences. Anchors are a few token ids, so their occurrences are listed outright (exact, no rejection);
    draws nothing from `rng` when `n` is 0, so a sample without centre negatives is the one it always was."""
    if n == 0 or len(anchors) == 0:
        return np.empty(0, np.int64)
    occ = np.concatenate(
        [index.token_order[index.token_start[t] : index.token_start[t + 1]] for t in anchors]
    )
    occ = occ[_not_firing(occ, fire_idx) & ~np.isin(occ, exclude)]
    return np.sort(occ if len(occ) <= n else rng.choice(occ, n, replace=False))


def sample_windows(
    index: CacheIndex,
    fire_idx: np.ndarray,
    fire_val: np.ndarray,
    top_tokens: np.ndarray,
    *,
    max_positives: int,
    random_neg_per_pos: float,
    hard_neg_per_pos: float,
    width: int,
    n_deciles: int,
    rng: np.random.Generator,
    anchors: np.ndarray | None = None,
    centre_neg_per_pos: float = 0.0,
) -> WindowSample:
    """Sample one latent's windows. `fire_idx` sorted flat indices where it fires (valid only), `fire_val` values.

    Centre negatives (on `anchors`) are drawn last, so the positives, random and hard negatives are the same draws
    whatever `centre_neg_per_pos` is."""
    pos_c, pos_d, pos_a = sample_positives(fire_idx, fire_val, max_positives, rng, n_deciles)
    n_rand = int(round(random_neg_per_pos * len(pos_c)))
    rand = sample_random_negatives(index, fire_idx, n_rand, rng)
    n_hard = int(round(hard_neg_per_pos * len(pos_c)))
    hard = sample_hard_negatives(index, fire_idx, top_tokens, n_hard, width, rand, rng)
    n_centre = int(round(centre_neg_per_pos * len(pos_c)))
    anchors = np.empty(0, np.int64) if anchors is None else anchors
    centre_neg = sample_centre_negatives(index, fire_idx, anchors, n_centre, np.r_[rand, hard], rng)
    neg = np.sort(np.concatenate([rand, hard, centre_neg]))
    centre = np.concatenate([pos_c, neg]).astype(np.int64)
    n_pos, n_neg = len(pos_c), len(neg)
    return WindowSample(
        centre=centre,
        label=np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)],
        decile=np.r_[pos_d, np.full(n_neg, -1, np.int8)].astype(np.int8),
        act=np.r_[pos_a, np.zeros(n_neg)],
        is_test=index.is_test[centre],
    )


def sample_activation_windows(
    index: CacheIndex,
    fire_idx: np.ndarray,
    fire_val: np.ndarray,
    top_tokens: np.ndarray,
    *,
    max_positives: int,
    random_neg_per_pos: float,
    hard_neg_per_pos: float,
    width: int,
    n_deciles: int,
    extreme: int,
    rng: np.random.Generator,
) -> WindowSample:
    """The windows of a dense latent labelled by its activation VALUE (`[labelability] dense_target = "activation"`).

    Firings are ranked into `n_deciles` quantiles; positives are up to `max_positives` firings of the top `extreme`
    quantiles, negatives up to as many firings of the bottom `extreme` quantiles plus the usual random and hard
    non-firing negatives (per positive). The middle quantiles are left out. `decile` keeps the quantile of a
    positive (-1 for every negative, as `TestWindows` expects); `act` is the activation (0 where not firing).
    """
    quantile = activation_quantiles(fire_val, n_deciles)
    per = max(max_positives // extreme, 1)

    def pick(qs: range) -> np.ndarray:
        out = []
        for q in qs:
            members = np.flatnonzero(quantile == q)
            out.append(members if len(members) <= per else rng.choice(members, per, replace=False))
        return np.sort(np.concatenate(out))

    top, low = pick(range(n_deciles - extreme, n_deciles)), pick(range(extreme))
    n_pos = len(top)
    rand = sample_random_negatives(index, fire_idx, int(round(random_neg_per_pos * n_pos)), rng)
    hard = sample_hard_negatives(
        index, fire_idx, top_tokens, int(round(hard_neg_per_pos * n_pos)), width, rand, rng
    )
    quiet = np.sort(np.concatenate([rand, hard]))
    centre = np.concatenate([fire_idx[top], fire_idx[low], quiet]).astype(np.int64)
    n_neg = len(low) + len(quiet)
    return WindowSample(
        centre=centre,
        label=np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)],
        decile=np.r_[quantile[top], np.full(n_neg, -1)].astype(np.int8),
        act=np.r_[fire_val[top], fire_val[low], np.zeros(len(quiet))].astype(np.float64),
        is_test=index.is_test[centre],
    )


def activation_quantiles(fire_val: np.ndarray, n_deciles: int) -> np.ndarray:
    """(n,) int64 activation rank quantile 0..n_deciles-1 of each firing (rank quantiles: ties cannot empty one)."""
    n = len(fire_val)
    rank = np.empty(n, np.int64)
    rank[np.argsort(fire_val, kind="stable")] = np.arange(n)
    return (rank * n_deciles) // max(n, 1)


def top_quantile_counts(
    index: CacheIndex,
    fire_idx: np.ndarray,
    fire_val: np.ndarray,
    n_deciles: int,
    extreme: int,
    vocab_size: int,
) -> np.ndarray:
    """(V,) int64 firings in the top `extreme` activation quantiles per token, over train documents: the token
    table of the activation target (the counterpart of `token_column` for firing)."""
    top = activation_quantiles(fire_val, n_deciles) >= n_deciles - extreme
    keep = fire_idx[top & ~index.is_test[fire_idx]]
    return np.bincount(index.tokens[keep], minlength=vocab_size).astype(np.int64)
