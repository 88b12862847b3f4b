"""One LBL pass in one process: sample each latent's windows, run every registered describer, score and bootstrap.

Per latent: sample positive and negative windows (`windows`), split by document, run the registered describers
(`registry`) on the train windows and score each by AUROC on the test windows; `LBL = clip(2 * max AUROC - 1, 0, 1)`,
the best describer being the highest AUROC, ties to the lowest `tie_order`.

Choices worth knowing:
- Pruning: when a cheap describer (the token describer) reaches `prune_token_auroc` on the *train* windows, the
  costly describers are skipped (their AUROCs are NaN). They could only raise the max, and a latent whose token table
  already separates train windows that well is labelable whatever they add; skipping them is where most of the time
  goes for token-like latents.
- The bootstrap upper bound resamples test documents (or, optionally, test positives and negatives separately) and
  takes the max over the describers that ran in every resample, so choosing the best describer on test data is part
  of the bound. `labelability_hi` is the upper end of the two-sided `bootstrap_level` interval.
- Every latent draws from its own generator seeded by (seed, latent), and describers draw from none of it, so
  scoring a subset, in chunks, or with another set of describers gives the same samples and bootstrap resamples.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import scipy.sparse as sp
from scipy.stats import spearmanr
from tqdm import tqdm

from features.labelability.conditional import (
    Anchors,
    conditional_arrays,
    conditional_row,
    empty_conditional,
    find_anchors,
)
from features.labelability.config import LBLConfig
from features.labelability.metrics import auroc
from features.labelability.registry import Describer, LatentSample, PassData, registered_describers
from features.labelability.table import LBLTable, TestWindows
from features.labelability.windows import (
    build_index,
    sample_activation_windows,
    sample_windows,
    token_column,
    token_tables,
    top_quantile_counts,
    window_matrix,
)


def labelability(
    acts: sp.csc_matrix,
    tokens: np.ndarray,
    doc_ids: np.ndarray,
    mask: np.ndarray,
    latents: np.ndarray,
    cfg: LBLConfig | None = None,
    seed: int = 0,
    *,
    vocab: list[str] | None = None,
    progress: bool = True,
    dense: np.ndarray | None = None,
) -> LBLTable:
    """Score LBL-v1 for `latents` (columns of `acts` (T, F), T = n_seq * L) over the (n_seq, L) token grid.

    `mask` is True where a position is excluded (never a positive or a negative). Without `vocab`, tokens are
    named `#id` in the readable descriptions. `dense` (F,) bool marks the dense latents (the `dense` column of C1),
    which are labelled by their activation value (`[labelability] dense_target`); None: no latent is dense.
    """
    return _run(
        acts,
        tokens,
        doc_ids,
        mask,
        latents,
        cfg or LBLConfig(),
        seed,
        vocab,
        shuffle=False,
        progress=progress,
        dense=dense,
    )


def shuffled_control(
    acts: sp.csc_matrix,
    tokens: np.ndarray,
    doc_ids: np.ndarray,
    mask: np.ndarray,
    latents: np.ndarray,
    cfg: LBLConfig | None = None,
    seed: int = 0,
    *,
    vocab: list[str] | None = None,
    dense: np.ndarray | None = None,
) -> LBLTable:
    """LBL with labels shuffled within each latent's sampled windows: the null, which must be about 0.

    The windows and the document split are those of `labelability`; labels (with their deciles and activations)
    are permuted across the windows. Describers fit on the shuffled train windows (the pass-wide token table would
    carry the real labels), and pruning is off, so every describer competes as in the worst case.
    """
    return _run(
        acts, tokens, doc_ids, mask, latents, cfg or LBLConfig(), seed, vocab, shuffle=True, dense=dense
    )


def _run(
    acts: sp.csc_matrix,
    tokens: np.ndarray,
    doc_ids: np.ndarray,
    mask: np.ndarray,
    latents: np.ndarray,
    cfg: LBLConfig,
    seed: int,
    vocab: list[str] | None,
    *,
    shuffle: bool,
    progress: bool = True,
    dense: np.ndarray | None = None,
) -> LBLTable:
    if tokens.shape != doc_ids.shape or tokens.shape != mask.shape:
        raise ValueError(f"tokens {tokens.shape}, doc_ids {doc_ids.shape} and mask {mask.shape} must match")
    if acts.shape[0] != tokens.size:
        raise ValueError(f"acts has {acts.shape[0]} rows but the token grid has {tokens.size} positions")
    vocab_size = len(vocab) if vocab is not None else int(tokens.max(initial=0)) + 1
    names = vocab if vocab is not None else [f"#{i}" for i in range(vocab_size)]
    latents = np.asarray(latents, np.int64)
    index = build_index(tokens, doc_ids, mask, vocab_size, seed, cfg.test_fraction)
    sub = sp.csc_matrix(acts[:, latents])  # (T, n) the scored columns only
    sub.sort_indices()
    data = PassData(index, token_tables(sub, index.tokens, ~index.is_test, vocab_size), names, cfg)
    describers = registered_describers()
    states = {d.name: d.prepare(data) for d in describers}

    rows, windows = [], {}
    for j, latent in enumerate(
        tqdm(latents, desc="labelability", unit="latent", disable=not progress or len(latents) < 50)
    ):
        lo, hi = sub.indptr[j], sub.indptr[j + 1]
        fire_idx, fire_val = sub.indices[lo:hi].astype(np.int64), sub.data[lo:hi]
        keep = index.valid[fire_idx] & (fire_val != 0)
        fire_idx, fire_val = fire_idx[keep], fire_val[keep]
        rng = np.random.default_rng([seed, int(latent)])
        target = lbl_target(cfg, dense is not None and bool(dense[latent]))
        if len(fire_idx) == 0:
            rows.append(_empty_row("latent does not fire on unmasked tokens", describers, cfg, target=target))
            windows[int(latent)] = TestWindows(np.empty(0, np.int64), np.empty(0, bool), np.empty(0, np.int8))
            continue
        row, tw = _score_latent(data, describers, states, j, fire_idx, fire_val, rng, shuffle, target)
        rows.append(row)
        windows[int(latent)] = tw

    def col(key: str) -> np.ndarray:
        return np.array([r[key] for r in rows], np.float64)

    return LBLTable(
        latents=latents,
        labelability=col("labelability"),
        labelability_hi=col("labelability_hi"),
        best_describer=np.array([r["best_describer"] for r in rows], dtype=object),
        aurocs={d.name: np.array([r["aurocs"][d.name] for r in rows], np.float64) for d in describers},
        decile_auroc=np.array([r["decile_auroc"] for r in rows], np.float64).reshape(
            len(rows), cfg.n_deciles
        ),
        n_test_pos=np.array([r["n_test_pos"] for r in rows], np.int64),
        readable=[r["readable"] for r in rows],
        spearman=col("spearman"),
        seed=seed,
        lbl_target=np.array([r["lbl_target"] for r in rows], dtype=object),
        config=cfg,
        test_windows=windows,
        conditional=conditional_arrays(rows),
        labelability_strong=col("labelability_strong"),
    )


def strong_lbl(
    scores: dict[str, np.ndarray], y_te: np.ndarray, decile_te: np.ndarray, cfg: LBLConfig
) -> float:
    """LBL of the strong firings: clip(2 * AUROC - 1, 0, 1) with the best describer on the test positives of the
    top `strong_deciles` activation quantiles against all test negatives (NaN when none of them is held out)."""
    top = (decile_te >= cfg.n_deciles - cfg.strong_deciles) & y_te
    if not top.any():
        return float("nan")
    weights = (top | ~y_te).astype(np.float64)
    values = [float(auroc(sc, y_te, weights[None, :])[0]) for sc in scores.values()]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.clip(2 * max(finite) - 1, 0, 1)) if finite else float("nan")


def lbl_target(cfg: LBLConfig, dense: bool) -> str:
    """What LBL predicts for a latent: "activation" (its top activation quantiles against its bottom ones and
    non-firing windows) for a dense latent under `dense_target = "activation"`, else "firing"."""
    if dense and cfg.dense_target == "activation" and min(cfg.dense_extreme, cfg.n_deciles // 2) > 0:
        return "activation"
    return "firing"


def _empty_row(
    why: str, describers: tuple[Describer, ...], cfg: LBLConfig, n_test_pos: int = 0, *, target: str
) -> dict:
    return {
        "lbl_target": target,
        "labelability": np.nan,
        "labelability_hi": np.nan,
        "best_describer": "none",
        "aurocs": {d.name: np.nan for d in describers},
        "decile_auroc": np.full(cfg.n_deciles, np.nan),
        "labelability_strong": np.nan,
        "n_test_pos": n_test_pos,
        "readable": why,
        "spearman": np.nan,
        **empty_conditional(),
    }


def _score_latent(
    data: PassData,
    describers: tuple[Describer, ...],
    states: dict[str, object],
    j: int,
    fire_idx: np.ndarray,
    fire_val: np.ndarray,
    rng: np.random.Generator,
    shuffle: bool,
    target: str = "firing",
) -> tuple[dict, TestWindows]:
    """Sample, describe and score one latent (the j-th column of the pass's token tables); `target` says what is
    predicted (`lbl_target`)."""
    cfg, index = data.cfg, data.index
    fire_tok = token_column(data.tables, j)  # (V,)
    top = np.argsort(-fire_tok, kind="stable")[: cfg.hard_top_tokens]
    top = top[fire_tok[top] > 0]
    if len(top) == 0:  # fires in test documents only: use the centre tokens it fires on
        top = np.unique(index.tokens[fire_idx])[: cfg.hard_top_tokens]
    anchors = _anchors(data, fire_tok)
    sampler, positives_tok = sample_windows, fire_tok
    anchored = {
        "anchors": anchors.tokens,
        "centre_neg_per_pos": min(cfg.centre_neg_per_pos, anchors.neg_ratio),
    }
    if target == "activation":  # a dense latent: its value is labelled, not which occurrences of a token fire
        extreme = min(cfg.dense_extreme, cfg.n_deciles // 2)
        sampler = partial(sample_activation_windows, extreme=extreme)
        positives_tok = top_quantile_counts(index, fire_idx, fire_val, cfg.n_deciles, extreme, len(fire_tok))
        anchored = {}
    s = sampler(
        index,
        fire_idx,
        fire_val,
        top,
        max_positives=cfg.max_positives,
        random_neg_per_pos=cfg.random_neg_per_pos,
        hard_neg_per_pos=cfg.hard_neg_per_pos,
        width=cfg.window,
        n_deciles=cfg.n_deciles,
        rng=rng,
        **anchored,
    )
    label, decile, act = s.label, s.decile, s.act
    if shuffle:
        perm = rng.permutation(len(label))
        label, decile, act = label[perm], decile[perm], act[perm]
    win = window_matrix(s.centre, index.tokens, index.pos, cfg.window)  # (n, window + 1)
    tr, te = ~s.is_test, s.is_test
    y_tr, y_te = label[tr], label[te]
    tw = TestWindows(s.centre[te], y_te, decile[te])
    n_test_pos = int(y_te.sum())
    if n_test_pos < cfg.min_test_pos or y_tr.all() or not y_tr.any() or y_te.all():
        why = f"too few windows to score ({n_test_pos} test positives)"
        return {
            **_empty_row(why, describers, cfg, n_test_pos, target=target),
            **empty_conditional(anchors),
        }, tw

    sample = LatentSample(j, s.centre, win, label, tr, positives_tok, shuffle, target)
    scores, readable = _describe(data, describers, states, sample)
    aurocs = {name: float(auroc(sc, y_te)[0]) for name, sc in scores.items()}
    order = {d.name: d.tie_order for d in describers}
    best = max(aurocs, key=lambda name: (aurocs[name], -order[name]))
    lbl = float(np.clip(2 * aurocs[best] - 1, 0, 1))
    doc_te = index.doc[s.centre[te]]
    hi = _bootstrap_hi(scores, y_te, doc_te, cfg, rng)
    dec_w = (decile[te][None, :] == np.arange(cfg.n_deciles)[:, None]) | ~y_te[None, :]  # (n_deciles, n_test)
    dec_auroc = auroc(scores[best], y_te, dec_w.astype(np.float64))

    pos = np.flatnonzero(y_te)
    rho = np.nan
    if n_test_pos >= cfg.spearman_min_pos and np.ptp(scores[best][pos]) > 0 and np.ptp(act[te][pos]) > 0:
        rho = float(spearmanr(scores[best][pos], act[te][pos]).statistic)
    row = {
        "lbl_target": target,
        "labelability": lbl,
        "labelability_hi": max(hi, lbl),
        "best_describer": best,
        "aurocs": {d.name: aurocs.get(d.name, np.nan) for d in describers},
        "decile_auroc": dec_auroc,
        "labelability_strong": strong_lbl(scores, y_te, decile[te], cfg),
        "n_test_pos": n_test_pos,
        "readable": readable[best],
        "spearman": rho,
        **(
            _conditional(data, scores, y_te, s.centre[te], anchors, len(scores) == len(describers), rng)
            if target == "firing"
            else empty_conditional(anchors)  # a dense latent's labels are its top activations, not firing
        ),
    }
    return row, tw


def _anchors(data: PassData, fire_tok: np.ndarray) -> Anchors:
    """The latent's anchor tokens (`conditional.find_anchors`): its centre hard negatives and conditional LBL."""
    cfg = data.cfg
    return find_anchors(fire_tok, data.tables.count, data.vocab, cfg.anchor_coverage, cfg.anchor_max_tokens)


def _conditional(
    data: PassData,
    scores: dict[str, np.ndarray],
    y_te: np.ndarray,
    centre_te: np.ndarray,
    anchors: Anchors,
    complete: bool,
    rng: np.random.Generator,
) -> dict:
    """Conditional labelability from the test scores of the pass (drawn after LBL's bootstrap, so LBL's numbers
    do not depend on it)."""
    index = data.index
    return conditional_row(
        scores, y_te, index.tokens[centre_te], index.doc[centre_te], anchors, complete, data.cfg, rng
    )


def _describe(
    data: PassData, describers: tuple[Describer, ...], states: dict[str, object], sample: LatentSample
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Test scores and readable forms of the describers that ran: the cheap ones always, the costly ones unless a
    cheap one already separates the train windows well enough (pruning; never in the shuffled control)."""
    cfg, y_tr = data.cfg, sample.label[sample.train]
    found = {}
    for d in describers:
        if d.cheap:
            found[d.name] = d.describe(sample, data, states[d.name])
    pruned = (
        not sample.shuffled
        and cfg.prune
        and any(auroc(r.train_scores, y_tr)[0] >= cfg.prune_token_auroc for r in found.values())
    )
    if not pruned:
        for d in describers:
            if not d.cheap:
                found[d.name] = d.describe(sample, data, states[d.name])
    ordered = [d.name for d in describers if d.name in found]
    return {n: found[n].test_scores for n in ordered}, {n: found[n].readable for n in ordered}


def _bootstrap_hi(
    scores: dict[str, np.ndarray],
    y_te: np.ndarray,
    doc_te: np.ndarray,
    cfg: LBLConfig,
    rng: np.random.Generator,
) -> float:
    """Upper end of the bootstrap interval of LBL: resample test documents (windows of one document are correlated:
    a burst of firings, shared context) or windows stratified by class; the max over describers in every resample."""
    pos, neg = np.flatnonzero(y_te), np.flatnonzero(~y_te)
    if cfg.bootstrap_by_document:
        _, doc_of = np.unique(doc_te, return_inverse=True)
        n_docs = int(doc_of.max()) + 1
        w = rng.multinomial(n_docs, np.full(n_docs, 1 / n_docs), size=cfg.bootstrap)[:, doc_of].astype(float)
    else:
        w = np.zeros((cfg.bootstrap, len(y_te)))
        w[:, pos] = rng.multinomial(len(pos), np.full(len(pos), 1 / len(pos)), size=cfg.bootstrap)
        w[:, neg] = rng.multinomial(len(neg), np.full(len(neg), 1 / len(neg)), size=cfg.bootstrap)
    boot = np.max([auroc(sc, y_te, w) for sc in scores.values()], axis=0)  # (B,) NaN if a class is missing
    return float(np.nanquantile(np.clip(2 * boot - 1, 0, 1), (1 + cfg.bootstrap_level) / 2))
