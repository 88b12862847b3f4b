"""LBL-v1 labelability: does a short, human-checkable description predict when a latent fires?

Entry point `labelability(acts, tokens, doc_ids, mask, latents, cfg, seed, vocab=...)` scores latents of one SAE from
their activations over a cache, returning an `LBLTable`. Per latent: sample positive and negative token windows
(`features.windows`), split them by document, fit the token, rule and semantic describers on train windows
(`features.describers`) and score each by AUROC on test windows; `LBL = clip(2 * max AUROC - 1, 0, 1)`.

Choices worth knowing:
- The token describer for all latents comes from one vocab x latent table over every train-document token.
- Candidate pruning: when the token describer alone reaches `prune_token_auroc` on the *train* windows, the rule and
  semantic describers are skipped (their AUROCs are NaN). They could only raise the max, and a latent whose token
  table already separates train windows that well is labelable whatever they add; skipping them is where most of
  the time goes for token-like latents.
- The bootstrap upper bound resamples test documents (or, optionally, test positives and negatives separately) and
  takes the max over the describers that ran in every resample, so choosing the best describer on test data is part
  of the bound.
  `labelability_hi` is the upper end of the two-sided `bootstrap_level` interval (the 95th percentile for 0.9).
- Every latent draws from its own generator seeded by (seed, latent), so scoring a subset or in chunks gives the same
  numbers as scoring everything at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import spearmanr
from tqdm import tqdm

from features import describers as d
from features.windows import N_DECILES, CacheIndex, build_index, sample_windows, window_matrix

log = logging.getLogger(__name__)

DESCRIBERS = ("token", "rule", "semantic")  # tie order: the simplest description wins a tie


@dataclass(frozen=True)
class LBLConfig:
    """Settings of LBL-v1 (the `[labelability]` table of the definition file, by field name)."""

    window: int = 16
    """Tokens before the centre token in a window (the window is these plus the centre)."""
    max_positives: int = 400
    """Cap on positive windows per latent, shared equally by the 10 activation deciles."""
    random_neg_per_pos: float = 1.0
    """Random non-firing windows per positive."""
    hard_neg_per_pos: float = 1.0
    """Hard negatives per positive: non-firing windows that contain one of the latent's top firing tokens."""
    hard_top_tokens: int = 5
    """How many of the latent's most frequent firing token ids define the hard negatives."""
    test_fraction: float = 0.5
    """Fraction of documents held out for testing (the split is by document, one split for all latents)."""
    token_smoothing: float = 1.0
    """Additive smoothing of P(fire | token) towards the latent's base rate, in pseudo-occurrences."""
    rule_max_terms: int = 8
    """Most non-zero weights a rule may keep (so a person can read it)."""
    rule_bag: int = 8
    """Preceding tokens in the rule's bag-of-tokens features (at most `window`)."""
    rule_screen: int = 64
    """Features kept by univariate screening before the L1 fit (cheaper than a full path; see describers)."""
    rule_c_steps: int = 12
    """Most doublings of the L1 inverse strength C, starting from sklearn's l1_min_c."""
    semantic_k: int = 10
    """Nearest train positives (and negatives) averaged by the semantic describer."""
    bootstrap: int = 200
    """Bootstrap resamples of the test windows for the upper bound."""
    bootstrap_level: float = 0.9
    """Two-sided confidence level; `labelability_hi` is the interval's upper end."""
    bootstrap_by_document: bool = True
    """Resample test documents (True) rather than test windows stratified by class (False): firings of one
    document are correlated, so a window-level bootstrap understates the uncertainty of clustered latents."""
    min_test_pos: int = 10
    """Below this many test positives a latent is not scored (NaN, best_describer "none")."""
    prune: bool = True
    """Skip the rule and semantic describers when the token describer is already good enough on train."""
    prune_token_auroc: float = 0.95
    """Train AUROC of the token describer at which pruning skips the costlier describers."""

    def __post_init__(self) -> None:
        ints = {
            "window": (1, 512),
            "max_positives": (N_DECILES, 10**6),
            "hard_top_tokens": (1, 1000),
            "rule_max_terms": (1, 1000),
            "rule_bag": (1, self.window),
            "rule_screen": (1, 10**6),
            "rule_c_steps": (1, 100),
            "semantic_k": (1, 10**4),
            "bootstrap": (1, 10**5),
            "min_test_pos": (1, 10**6),
        }
        for name, (lo, hi) in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError(f"{name}: must be an integer in [{lo}, {hi}], got {value!r}")
        floats = {
            "random_neg_per_pos": (0.0, 100.0, True),
            "hard_neg_per_pos": (0.0, 100.0, True),
            "test_fraction": (0.0, 1.0, False),
            "token_smoothing": (0.0, 1e6, False),
            "bootstrap_level": (0.0, 1.0, False),
            "prune_token_auroc": (0.5, 1.0, True),
        }
        for name, (lo, hi, closed) in floats.items():
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and (lo <= value <= hi if closed else lo < value < hi)
            if not ok:
                bounds = f"[{lo}, {hi}]" if closed else f"({lo}, {hi})"
                raise ValueError(f"{name}: must be a number in {bounds}, got {value!r}")
        if self.random_neg_per_pos + self.hard_neg_per_pos <= 0:
            raise ValueError("random_neg_per_pos: random and hard negatives cannot both be 0")
        for name in ("prune", "bootstrap_by_document"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be true or false, got {getattr(self, name)!r}")


class TestWindows(NamedTuple):
    """The held-out windows of one latent, as the label tester scores them."""

    flat_idx: np.ndarray
    """(n,) int64 flat centre index into the cache (seq * L + pos)."""
    label: np.ndarray
    """(n,) bool: the latent fires at the centre."""
    decile: np.ndarray
    """(n,) int8 activation decile of positives, -1 for negatives."""


@dataclass
class LBLTable:
    """LBL-v1 results, one entry per scored latent (arrays aligned with `latents`)."""

    latents: np.ndarray
    labelability: np.ndarray
    labelability_hi: np.ndarray
    best_describer: np.ndarray
    auroc_token: np.ndarray
    auroc_rule: np.ndarray
    auroc_semantic: np.ndarray
    decile_auroc: np.ndarray
    """(n, 10) AUROC of the best describer per activation decile of test positives vs all test negatives."""
    n_test_pos: np.ndarray
    readable: list[str]
    spearman: np.ndarray
    """Spearman correlation of the winner's score with the activation on test positives (graded add-on)."""
    seed: int
    config: LBLConfig
    test_windows: dict[int, TestWindows] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per latent; `decile_auroc` is a list column of 10 floats."""
        return pd.DataFrame(
            {
                "feature": self.latents.astype(np.int64),
                "labelability": self.labelability,
                "labelability_hi": self.labelability_hi,
                "best_describer": self.best_describer.astype(str),
                "auroc_token": self.auroc_token,
                "auroc_rule": self.auroc_rule,
                "auroc_semantic": self.auroc_semantic,
                "decile_auroc": [list(map(float, r)) for r in self.decile_auroc],
                "n_test_pos": self.n_test_pos.astype(np.int64),
                "readable": self.readable,
                "spearman": self.spearman,
            }
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
) -> LBLTable:
    """Score LBL-v1 for `latents` (columns of `acts` (T, F), T = n_seq * L) over the (n_seq, L) token grid.

    `mask` is True where a position is excluded (never a positive or a negative). Without `vocab`, tokens are
    named `#id` in the readable descriptions.
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
) -> LBLTable:
    """LBL with labels shuffled within each latent's sampled windows: the null, which must be about 0.

    The windows and the document split are those of `labelability`; labels (with their deciles and activations)
    are permuted across the windows. The token table is fit on the shuffled train windows (the global table would
    carry the real labels), and pruning is off, so all three describers compete as in the worst case.
    """
    return _run(acts, tokens, doc_ids, mask, latents, cfg or LBLConfig(), seed, vocab, shuffle=True)


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
    tables = d.token_tables(sub, index.tokens, ~index.is_test, vocab_size)

    rows, windows = [], {}
    for j, latent in enumerate(
        tqdm(latents, desc="labelability", unit="latent", disable=not progress or len(latents) < 50)
    ):
        lo, hi = sub.indptr[j], sub.indptr[j + 1]
        fire_idx, fire_val = sub.indices[lo:hi].astype(np.int64), sub.data[lo:hi]
        keep = index.valid[fire_idx] & (fire_val != 0)
        fire_idx, fire_val = fire_idx[keep], fire_val[keep]
        rng = np.random.default_rng([seed, int(latent)])
        if len(fire_idx) == 0:
            rows.append(_empty_row("latent does not fire on unmasked tokens"))
            windows[int(latent)] = TestWindows(np.empty(0, np.int64), np.empty(0, bool), np.empty(0, np.int8))
            continue
        row, tw = _score_latent(index, tables, j, fire_idx, fire_val, names, cfg, rng, shuffle)
        rows.append(row)
        windows[int(latent)] = tw

    def col(key: str) -> np.ndarray:
        return np.array([r[key] for r in rows], np.float64)

    return LBLTable(
        latents=latents,
        labelability=col("labelability"),
        labelability_hi=col("labelability_hi"),
        best_describer=np.array([r["best_describer"] for r in rows], dtype=object),
        auroc_token=col("auroc_token"),
        auroc_rule=col("auroc_rule"),
        auroc_semantic=col("auroc_semantic"),
        decile_auroc=np.array([r["decile_auroc"] for r in rows], np.float64).reshape(len(rows), N_DECILES),
        n_test_pos=np.array([r["n_test_pos"] for r in rows], np.int64),
        readable=[r["readable"] for r in rows],
        spearman=col("spearman"),
        seed=seed,
        config=cfg,
        test_windows=windows,
    )


def _empty_row(why: str, n_test_pos: int = 0) -> dict:
    return {
        "labelability": np.nan,
        "labelability_hi": np.nan,
        "best_describer": "none",
        "auroc_token": np.nan,
        "auroc_rule": np.nan,
        "auroc_semantic": np.nan,
        "decile_auroc": np.full(N_DECILES, np.nan),
        "n_test_pos": n_test_pos,
        "readable": why,
        "spearman": np.nan,
    }


def _score_latent(
    index: CacheIndex,
    tables: d.TokenTables,
    j: int,
    fire_idx: np.ndarray,
    fire_val: np.ndarray,
    vocab: list[str],
    cfg: LBLConfig,
    rng: np.random.Generator,
    shuffle: bool,
) -> tuple[dict, TestWindows]:
    """Sample, fit and score one latent (the j-th column of the token tables)."""
    fire_tok = d.token_column(tables, j)  # (V,)
    top = np.argsort(-fire_tok, kind="stable")[: cfg.hard_top_tokens]
    top = top[fire_tok[top] > 0]
    if len(top) == 0:  # fires in test documents only: use the centre tokens it fires on
        top = np.unique(index.tokens[fire_idx])[: cfg.hard_top_tokens]
    s = sample_windows(
        index,
        fire_idx,
        fire_val,
        top,
        max_positives=cfg.max_positives,
        random_neg_per_pos=cfg.random_neg_per_pos,
        hard_neg_per_pos=cfg.hard_neg_per_pos,
        width=cfg.window,
        rng=rng,
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
        return _empty_row(f"too few windows to score ({n_test_pos} test positives)", n_test_pos), tw

    if shuffle:
        tok_fire, tok_count, base = d.fit_token_from_windows(win[tr, -1], y_tr, len(vocab))
    else:
        tok_fire, tok_count, base = fire_tok, tables.count, float(tables.base_rate[j])
    tok_scores = d.token_scores(tok_fire, tok_count, base, win[:, -1], cfg.token_smoothing)
    scores: dict[str, np.ndarray] = {"token": tok_scores[te]}
    readable = {"token": d.token_readable(tok_fire, tok_count, vocab)}
    pruned = not shuffle and cfg.prune and d.auroc(tok_scores[tr], y_tr)[0] >= cfg.prune_token_auroc
    if not pruned:
        rule = d.fit_rule(
            win[tr],
            y_tr,
            win[te],
            vocab,
            bag=cfg.rule_bag,
            max_terms=cfg.rule_max_terms,
            screen=cfg.rule_screen,
            c_steps=cfg.rule_c_steps,
        )
        scores["rule"] = rule.test_scores
        readable["rule"] = d.rule_readable(rule.terms)
        scores["semantic"] = d.semantic_scores(win[tr], y_tr, win[te], len(vocab), cfg.semantic_k)
        readable["semantic"] = "nearest positive windows (TF-IDF of window tokens)"

    aurocs = {name: float(d.auroc(sc, y_te)[0]) for name, sc in scores.items()}
    best = max(aurocs, key=lambda name: (aurocs[name], -DESCRIBERS.index(name)))
    lbl = float(np.clip(2 * aurocs[best] - 1, 0, 1))

    # bootstrap over test documents (windows of one document are correlated: a burst of firings, shared context),
    # or over windows stratified by class; the max over describers is taken in every resample
    pos, neg = np.flatnonzero(y_te), np.flatnonzero(~y_te)
    if cfg.bootstrap_by_document:
        _, doc_of = np.unique(index.doc[s.centre[te]], return_inverse=True)
        n_docs = int(doc_of.max()) + 1
        w = rng.multinomial(n_docs, np.full(n_docs, 1 / n_docs), size=cfg.bootstrap)[:, doc_of].astype(float)
    else:
        w = np.zeros((cfg.bootstrap, len(y_te)))
        w[:, pos] = rng.multinomial(len(pos), np.full(len(pos), 1 / len(pos)), size=cfg.bootstrap)
        w[:, neg] = rng.multinomial(len(neg), np.full(len(neg), 1 / len(neg)), size=cfg.bootstrap)
    boot = np.max([d.auroc(sc, y_te, w) for sc in scores.values()], axis=0)  # (B,) NaN if a class is missing
    hi = float(np.nanquantile(np.clip(2 * boot - 1, 0, 1), (1 + cfg.bootstrap_level) / 2))

    dec_w = (decile[te][None, :] == np.arange(N_DECILES)[:, None]) | ~y_te[None, :]  # (10, n_test)
    dec_auroc = d.auroc(scores[best], y_te, dec_w.astype(np.float64))

    rho = np.nan
    if n_test_pos >= 3 and np.ptp(scores[best][pos]) > 0 and np.ptp(act[te][pos]) > 0:
        rho = float(spearmanr(scores[best][pos], act[te][pos]).statistic)
    row = {
        "labelability": lbl,
        "labelability_hi": max(hi, lbl),
        "best_describer": best,
        "auroc_token": aurocs["token"],
        "auroc_rule": aurocs.get("rule", np.nan),
        "auroc_semantic": aurocs.get("semantic", np.nan),
        "decile_auroc": dec_auroc,
        "n_test_pos": n_test_pos,
        "readable": readable[best],
        "spearman": rho,
    }
    return row, tw
