"""Conditional labelability: among the occurrences of a latent's anchor tokens, which ones fire?

LBL asks whether a description predicts *when* a latent fires; a latent that fires on a context-dependent minority
of a token's occurrences passes it through the token alone. Conditional labelability asks the next question: given
that the current token is one of the latent's **anchor tokens** (its top firing tokens in train documents, up to
`anchor_coverage` of its firings and at most `anchor_max_tokens`), does any describer predict which occurrences fire?

- The windows are LBL's own test windows whose centre token is an anchor (the firing ones against the non-firing
  ones, mostly the centre hard negatives `windows.sample_centre_negatives` adds); the describers' scores are those
  they gave in the LBL pass (fit on the train windows), so nothing is refit.
- The AUROC is *stratified by centre token*: only pairs of a positive and a negative on the same anchor token count
  (per-token AUROCs weighted by positives x negatives). So a describer is never credited for telling anchor tokens
  apart (that is the token's job, and LBL's), and every describer that reads only the centre token (the token
  describer, any token-property describer) scores exactly 0.5: the "max over describers except the token
  describer" of the design, without naming one.
- `lbl_conditional = clip(2 * max AUROC - 1, 0, 1)` over the describers; it is measured only when every registered
  describer ran (none pruned: "resists every describer" needs all of them) and there are at least `min_test_pos`
  anchored test positives and negatives, NaN otherwise. `lbl_conditional_hi` is the upper end of the same bootstrap
  as `labelability_hi` (test documents, or windows by class), the max over describers in every resample.
- `anchor_fraction` is the share of its anchor tokens' occurrences on which the latent fires, averaged over its
  firings (each anchor's firing rate weighted by its firings, train documents): "a typical firing is on a token
  that fires on this share of its occurrences", so an anchor it fires on only incidentally does not dilute it.
  `anchor_coverage` is the share of its firings (train documents) that fall on the anchors.
- The centre hard negatives are at most the anchors' own ratio of non-firing to firing occurrences per positive
  (capped by `centre_neg_per_pos`): a latent that fires on 90% of a token's occurrences has few of them, and the
  token describer keeps most of its AUROC; one that fires on a third of them gets the full `centre_neg_per_pos`.

The flag of its own kind that reads these columns (`token_anchored`) lives in `features.flags`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from features.columns import Column
from features.labelability.config import LBLConfig
from features.labelability.metrics import auroc

_OWNER = "labelability"
COLUMNS = (
    Column("lbl_conditional", "float64", "conditional labelability: clip(2 * best AUROC - 1, 0, 1) of the describers "
           "at telling firing from non-firing occurrences of the anchor tokens (pairs on the same token); NaN when "
           "not measured", _OWNER),
    Column("lbl_conditional_hi", "float64", "upper end of lbl_conditional's bootstrap interval (bootstrap_level)",
           _OWNER),
    Column("conditional_describer", "str", "the describer with the best conditional AUROC, or none (not measured)",
           _OWNER),
    Column("n_cond_test_pos", "int64", "held-out positive windows centred on an anchor token", _OWNER),
    Column("anchor_tokens", "str", "the anchor tokens: top firing tokens covering anchor_coverage of the firings, "
           "each with fired / occurrences in train documents", _OWNER),
    Column("anchor_fraction", "float64", "share of its anchor tokens' occurrences on which the latent fires, "
           "each anchor's share weighted by its firings (train documents)", _OWNER),
    Column("anchor_coverage", "float64", "share of the latent's firings (train documents) on its anchor tokens",
           _OWNER),
)  # fmt: skip
"""The columns conditional labelability adds to LBL's (in `LBLTable.to_frame`'s order)."""
KEYS = tuple(c.name for c in COLUMNS)


@dataclass(frozen=True)
class Anchors:
    """A latent's anchor tokens and how much of its firing they explain (train documents)."""

    tokens: np.ndarray
    """(k,) int64 token ids, most firings first."""
    fraction: float
    """Firing-weighted mean over the anchors of the share of their occurrences that fire (NaN without anchors)."""
    neg_ratio: float
    """Non-firing per firing occurrence of the anchors (0 without anchors): the most centre negatives per positive."""
    coverage: float
    """Share of the latent's firings that fall on the anchors (NaN without anchors)."""
    readable: str


def find_anchors(
    fire_tok: np.ndarray, count: np.ndarray, vocab: list[str], coverage: float, max_tokens: int
) -> Anchors:
    """The fewest top firing tokens (by firing count, ties to the lower id) that cover `coverage` of the firings,
    at most `max_tokens`; `fire_tok` and `count` are the (V,) train-document firing and occurrence counts."""
    total = int(fire_tok.sum())
    if total == 0:
        return Anchors(np.empty(0, np.int64), np.nan, 0.0, np.nan, "no firing token in train documents")
    order = np.argsort(-fire_tok, kind="stable")[:max_tokens]
    order = order[fire_tok[order] > 0]
    k = min(int(np.searchsorted(np.cumsum(fire_tok[order]) / total, coverage - 1e-12)) + 1, len(order))
    tokens = order[:k].astype(np.int64)
    fire, seen = fire_tok[tokens].astype(np.float64), count[tokens].astype(np.float64)
    fraction = float((fire * fire / np.maximum(seen, 1)).sum() / fire.sum())
    readable = ", ".join(f"{vocab[t]!r} {fire_tok[t]}/{count[t]}" for t in tokens)
    return Anchors(
        tokens, fraction, float((seen.sum() - fire.sum()) / fire.sum()), fire.sum() / total, readable
    )


def stratified_auroc(
    scores: np.ndarray, labels: np.ndarray, strata: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """AUROC over pairs (positive, negative) of the same stratum, one value per row of `weights` (B, n): each
    stratum's AUROC weighted by its positive weight x negative weight; NaN where no stratum has both classes."""
    w = np.ones((1, len(scores))) if weights is None else np.asarray(weights, np.float64)
    num = np.zeros(w.shape[0])
    den = np.zeros(w.shape[0])
    for s in np.unique(strata):
        sel = strata == s
        y, ws = labels[sel], w[:, sel]
        pairs = (ws * y).sum(axis=1) * (ws * ~y).sum(axis=1)
        if not pairs.any():
            continue
        num += np.nan_to_num(auroc(scores[sel], y, ws)) * pairs
        den += pairs
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def empty_conditional(anchors: Anchors | None = None, why: str = "none") -> dict[str, Any]:
    """The conditional columns of a latent where it is not measured (the anchors' facts when known)."""
    return {
        "lbl_conditional": np.nan,
        "lbl_conditional_hi": np.nan,
        "conditional_describer": why,
        "n_cond_test_pos": 0,
        "anchor_tokens": anchors.readable if anchors else "–",
        "anchor_fraction": anchors.fraction if anchors else np.nan,
        "anchor_coverage": anchors.coverage if anchors else np.nan,
    }


def conditional_row(
    scores: dict[str, np.ndarray],
    y_te: np.ndarray,
    centre_tok_te: np.ndarray,
    doc_te: np.ndarray,
    anchors: Anchors,
    complete: bool,
    cfg: LBLConfig,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Conditional labelability of one latent from its LBL test scores (`scores` by describer, in tie order, over
    the test windows with labels `y_te`, centre tokens `centre_tok_te`, documents `doc_te`); `complete`: every
    registered describer ran. Draws from `rng` only for the bootstrap of a measured latent."""
    sub = np.isin(centre_tok_te, anchors.tokens)
    y, tok = y_te[sub], centre_tok_te[sub]
    row = empty_conditional(anchors)
    row["n_cond_test_pos"] = n_pos = int(y.sum())
    if not complete:
        row["conditional_describer"] = "none (describers pruned)"
        return row
    if min(n_pos, int((~y).sum())) < cfg.min_test_pos:
        return row
    per = {name: float(stratified_auroc(sc[sub], y, tok)[0]) for name, sc in scores.items()}
    best = max(per, key=lambda name: (np.nan_to_num(per[name], nan=-1.0), -list(per).index(name)))
    lbl = float(np.clip(2 * per[best] - 1, 0, 1)) if np.isfinite(per[best]) else np.nan
    w = _bootstrap_weights(y, doc_te[sub], cfg, rng)
    boot = np.max([stratified_auroc(sc[sub], y, tok, w) for sc in scores.values()], axis=0)  # (B,)
    hi = float(np.nanquantile(np.clip(2 * boot - 1, 0, 1), (1 + cfg.bootstrap_level) / 2))
    row.update(lbl_conditional=lbl, lbl_conditional_hi=max(hi, lbl), conditional_describer=best)
    return row


def _bootstrap_weights(
    y: np.ndarray, doc: np.ndarray, cfg: LBLConfig, rng: np.random.Generator
) -> np.ndarray:
    """(B, n) resample counts: whole documents (`bootstrap_by_document`), else windows stratified by class."""
    if cfg.bootstrap_by_document:
        _, doc_of = np.unique(doc, return_inverse=True)
        n_docs = int(doc_of.max()) + 1
        return rng.multinomial(n_docs, np.full(n_docs, 1 / n_docs), size=cfg.bootstrap)[:, doc_of].astype(
            float
        )
    w = np.zeros((cfg.bootstrap, len(y)))
    for cls in (y, ~y):
        idx = np.flatnonzero(cls)
        w[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1 / len(idx)), size=cfg.bootstrap)
    return w


def conditional_arrays(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The conditional columns of a list of per-latent rows, as arrays in `COLUMNS`' order and dtypes."""
    dtypes = {"float64": np.float64, "int64": np.int64, "str": object}
    return {c.name: np.array([r[c.name] for r in rows], dtype=dtypes[c.dtype]) for c in COLUMNS}
