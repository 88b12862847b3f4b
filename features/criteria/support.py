"""C1 support: how often and in how many documents a latent fires, and dense antipodal pairing.

`support(acts_csc, doc_ids, cfg, partner=None)` counts firing tokens and distinct documents for every latent at once
(one `np.unique` over (latent, document) keys). Dense latents (density > `max_density`) are not dropped: Sun et al.
(2025) show they come in antipodal pairs that together form one signed direction. `antipodal_pairs` finds, for each
dense latent i, the j maximising s_ij = cos(enc_i, enc_j) * cos(dec_i, dec_j) and pairs them when s_ij >=
`antipodal_score` and cos(dec_i, dec_j) < 0 (a product of two cosines near +1 is otherwise a near-duplicate, not an
antipode). A paired latent is then judged on the support of the pair: the union of the two columns' firing tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from activations.settings import Settings, integer, number
from features.columns import Column
from features.criteria.registry import Context, Criterion, Outcome, VerdictRow
from sae_training.matching import unit_rows


@dataclass(frozen=True)
class SupportConfig(Settings):
    """C1 support: the latent fires often enough, in enough documents; dense latents go the antipodal route."""

    min_firing_tokens: int = integer(200, 0)
    """Fewest firing tokens (delphi's min_examples)."""
    min_documents: int = integer(20, 0)
    """Fewest distinct documents the latent fires in."""
    max_density: float = number(0.1, 0.0, 1.0, lo_open=True)
    """Above this firing rate a latent is dense and is paired with its antipodal partner (Sun et al. 2025)."""
    antipodal_score: float = number(0.8, 0.0, 1.0, lo_open=True)
    """Least cos(enc_i, enc_j) * cos(dec_i, dec_j) (with cos(dec) < 0) for j to be i's antipodal partner."""


class SupportResult(NamedTuple):
    """Per-latent support (pair values on both members of an antipodal pair)."""

    firing_count: np.ndarray  # (F,) int64: tokens where the latent (or its pair) fires
    n_docs: np.ndarray  # (F,) int64: distinct documents among those tokens
    density: np.ndarray  # (F,) float64: firing_count / T
    passes: np.ndarray  # (F,) bool: firing_count >= min_firing_tokens and n_docs >= min_documents


class AntipodalPairs(NamedTuple):
    """Antipodal partners of dense latents (symmetric: partner[partner[i]] == i where paired)."""

    partner: np.ndarray  # (F,) int64: partner latent, -1 when unpaired
    score: (
        np.ndarray
    )  # (F,) float32: best s_ij = cos(enc)·cos(dec) among candidates (nan for non-dense, unpaired)


def _column_rows(acts_csc: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(nnz,) column index and (nnz,) row index of the stored positive entries."""
    a = acts_csc.tocsc()
    cols = np.repeat(np.arange(a.shape[1]), np.diff(a.indptr))
    keep = a.data > 0
    return cols[keep], a.indices[keep]


def support(
    acts_csc: sp.spmatrix,
    doc_ids: np.ndarray,
    cfg: SupportConfig,
    partner: np.ndarray | None = None,
) -> SupportResult:
    """C1 for all latents from the activations (T, F) and the document id (T,) of every token."""
    doc_ids = np.asarray(doc_ids)
    n_tokens, n_latents = acts_csc.shape
    if doc_ids.shape != (n_tokens,):
        raise ValueError(f"doc_ids has shape {doc_ids.shape}, expected ({n_tokens},)")
    cols, rows = _column_rows(acts_csc)
    count = np.bincount(cols, minlength=n_latents).astype(np.int64)
    # distinct documents: unique (latent, document) keys, counted per latent
    _, doc_code = np.unique(doc_ids, return_inverse=True)
    n_doc_codes = int(doc_code.max()) + 1 if n_tokens else 1
    keys = np.unique(cols.astype(np.int64) * n_doc_codes + doc_code[rows])
    n_docs = np.bincount(keys // n_doc_codes, minlength=n_latents).astype(np.int64)
    result = _result(count, n_docs, n_tokens, cfg)
    return result if partner is None else with_pairs(result, acts_csc, doc_ids, partner, cfg)


def _result(count: np.ndarray, n_docs: np.ndarray, n_tokens: int, cfg: SupportConfig) -> SupportResult:
    passes = (count >= cfg.min_firing_tokens) & (n_docs >= cfg.min_documents)
    return SupportResult(count, n_docs, count / max(n_tokens, 1), passes)


def with_pairs(
    result: SupportResult, acts_csc: sp.spmatrix, doc_ids: np.ndarray, partner: np.ndarray, cfg: SupportConfig
) -> SupportResult:
    """`result` with each antipodal pair's members given the support of the pair (the union of their tokens).

    Costs only the paired columns, so the usual order is: `support`, `antipodal_pairs` on its density, this.
    """
    a = sp.csc_matrix(acts_csc)
    count, n_docs = result.firing_count.copy(), result.n_docs.copy()
    doc_ids = np.asarray(doc_ids)
    for i in np.flatnonzero(partner >= 0):
        j = int(partner[i])
        if j < i and partner[j] == i:
            continue  # done with the pair from the lower index
        seg = [
            a.indices[a.indptr[c] : a.indptr[c + 1]][a.data[a.indptr[c] : a.indptr[c + 1]] > 0]
            for c in (i, j)
        ]
        rows = np.union1d(seg[0], seg[1])
        count[[i, j]] = len(rows)
        n_docs[[i, j]] = len(np.unique(doc_ids[rows]))
    return _result(count, n_docs, a.shape[0], cfg)


def antipodal_pairs(
    enc_rows: np.ndarray,
    dec_rows: np.ndarray,
    density: np.ndarray,
    cfg: SupportConfig,
    block: int = 1024,
) -> AntipodalPairs:
    """Pair each dense latent with its antipodal partner (Sun et al. 2025) from encoder and decoder rows (F, d)."""
    n = len(dec_rows)
    ue, ud = unit_rows(enc_rows), unit_rows(dec_rows)  # (F, d) each
    dense = np.flatnonzero(np.asarray(density) > cfg.max_density)
    best = np.full(n, -1, dtype=np.int64)
    score = np.full(n, np.nan, dtype=np.float32)
    for s in range(0, len(dense), block):
        idx = dense[s : s + block]
        cd = ud[idx] @ ud.T  # (b, F)
        prod = (ue[idx] @ ue.T) * cd  # (b, F)
        prod[np.arange(len(idx)), idx] = -np.inf  # not itself
        prod[cd >= 0] = -np.inf  # antipodes point opposite ways
        j = prod.argmax(axis=1)
        s_best = prod[np.arange(len(idx)), j]
        score[idx] = np.where(np.isfinite(s_best), s_best, np.nan)
        best[idx] = np.where(s_best >= cfg.antipodal_score, j, -1)
    # symmetrise, strongest pairs first, each latent in at most one pair
    partner = np.full(n, -1, dtype=np.int64)
    for i in sorted(np.flatnonzero(best >= 0), key=lambda i: -float(score[i])):
        j = int(best[i])
        if partner[i] < 0 and partner[j] < 0:
            partner[i], partner[j] = j, i
    return AntipodalPairs(partner, score)


def _compute(ctx: Context, cfg: SupportConfig) -> Outcome:
    """C1 with antipodal pairing; the density column is the latent's own (before pairing), over unmasked tokens."""
    sup = support(ctx.acts, ctx.doc_ids, cfg)
    density = sup.firing_count / max(ctx.n_tokens, 1)
    partner = antipodal_pairs(ctx.enc, ctx.dec, density, cfg).partner
    sup = with_pairs(sup, ctx.acts, ctx.doc_ids, partner, cfg)
    columns = {
        "firing_count": sup.firing_count,
        "n_docs": sup.n_docs,
        "density": density,
        "dense": density > cfg.max_density,
        "antipodal_partner": partner,
        "support_pass": sup.passes,
    }
    return Outcome(columns, sup, summary={"antipodal_pairs": int((partner >= 0).sum() // 2)}, partner=partner)


_OWNER = "criterion:support"
CRITERION = Criterion(
    number=1,
    name="support",
    title="support",
    config=SupportConfig,
    gates=True,
    passes="support_pass",
    columns=(
        Column(
            "firing_count", "int64", "C1: firing tokens (of the antipodal pair for paired latents)", _OWNER
        ),
        Column("n_docs", "int64", "C1: distinct documents among those tokens", _OWNER),
        Column("density", "float64", "firing_count / unmasked tokens scored", _OWNER),
        Column("dense", "bool", "density > `[support] max_density`", _OWNER),
        Column("antipodal_partner", "int64", "partner latent of a dense antipodal pair, -1 if none", _OWNER),
        Column("support_pass", "bool", "C1", _OWNER),
    ),
    verdicts=(
        VerdictRow("firing tokens", "firing_count", "≥", setting="min_firing_tokens", verdict="support_pass"),
        VerdictRow("documents", "n_docs", "≥", setting="min_documents", verdict="support_pass"),
    ),
    compute=_compute,
)
