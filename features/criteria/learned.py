"""C7 learned: does the latent carry something the model learned, or does a random-init copy of it already carry it?

A random-init transformer of the same architecture and tokenizer computes a lot by itself: its random token and
position embeddings, random mixing of nearby tokens (Heap et al. 2025 train SAEs on such copies and find
"interpretable" latents all the same). C7 asks, for every latent of the reference SAE, how much of its activation
the same hook of a random copy predicts at the same tokens:

    ridge regression  a_i ≈ w_iᵀ z_t + b_i,   z_t the random copy's activation (d features) at token t,

fit on train documents and scored by R² on held-out documents. A latent counts as **learned** when that R² is below
`max_r2`. The random copy is the `random-init:MODEL` model `xenofeat run --control` uses (seed 0); for a synthetic
cache, the seeded random network of its token stream (`activations.synth_random`); a cache imported from arrays has
none, and C7 is not applicable there.

Why ridge R² and not matching against an SAE trained on the copy: it needs one forward pass of the copy over the
scored tokens and no training; it asks whether the information is linearly present at all, not whether one
particular (itself seed-unstable) SAE of the copy happened to isolate it; and R² is computed exactly from streamed
sufficient statistics (Σz, Σzzᵀ, Σza, Σa, Σa² for train and test documents), so every latent is scored at once
without materialising a prediction (T x F) anywhere. R² rather than AUROC of firing: it is closed-form from those sums
and it also judges dense latents by their value, not only by whether they are on (a position-tracking latent that
is on for a third of tokens is predicted in value by a random copy's position embeddings).

An antipodal pair (from C1) is one signed feature: the target is a_i - a_partner(i), and both members get its R².

The definition decides whether C7 gates `well_defined` (`gate`): "auto" gates wherever a random network is
available (the cache's model loads, or the cache is synthetic) and records C7 as not applicable elsewhere (NaN R²);
"always" makes a cache without one an error; "never" computes C7 where it can, as a tag. The gate is applied
through `learned_pass` (like C3's `function_pass`, "as the definition decides"): it equals `learned` where C7
gates and is True where it does not, so `well_defined` needs no other change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from activations.errors import UserError
from activations.settings import Settings, choice, integer, number
from features.columns import Column
from features.criteria.registry import Context, Criterion, Outcome, VerdictRow

log = logging.getLogger(__name__)

CHUNK_TOKENS = 8192
"""Flat positions per forward chunk of the random network (bounds its memory: chunk x d floats)."""

Network = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""The random network: tokens (n, L), attention (n, L) bool -> activations (n, L, d) float32."""


@dataclass(frozen=True)
class LearnedConfig(Settings):
    """C7 learned: a random-init copy of the model (same hook, same tokens) does not already carry the latent."""

    gate: str = choice("auto", "auto", "always", "never")
    """Whether C7 gates well_defined. auto: wherever a random network is available (the cache's model can be
    loaded, or the cache is synthetic), else C7 is recorded as not applicable; always: a cache without one is an
    error; never: C7 is computed where it can be, as a tag."""
    max_r2: float = number(0.5, 0.0, 1.0, lo_open=True)
    """A latent is learned when the random copy's held-out R² is below this."""
    ridge: float = number(1e-3, 0.0)
    """Ridge penalty, relative to each input feature's variance (so it does not depend on the activations' scale)."""
    test_fraction: float = number(0.3, 0.0, 1.0, lo_open=True, hi_open=True)
    """Fraction of documents held out for the R²."""
    min_test_fires: int = integer(10, 1)
    """Fewest held-out firing tokens for an R² (fewer: NaN, and the latent does not count as learned)."""
    max_tokens: int | None = integer(None, 1, optional=True)
    """Cap on the scored tokens C7 uses (whole sequences from the start); not set: all scored tokens."""
    seed: int = integer(0, 0)
    """Seed of the document split and of a synthetic cache's random network (the random-init copy of a real model
    is always the seed-0 copy `xenofeat run --control` uses)."""


# ---- the ridge R², from streamed sums ----------------------------------------------------------------------------


class RidgeSums:
    """Sufficient statistics of (z, y) over a set of tokens: n, Σz, Σzzᵀ, Σzyᵀ, Σy, Σy² (float64)."""

    def __init__(self, d: int, n_targets: int) -> None:
        self.n = 0
        self.sz = np.zeros(d)
        self.szz = np.zeros((d, d))
        self.szy = np.zeros((d, n_targets))
        self.sy = np.zeros(n_targets)
        self.syy = np.zeros(n_targets)
        self.fires = np.zeros(n_targets, dtype=np.int64)

    def update(self, z: np.ndarray, y: sp.csr_matrix) -> None:
        """Add tokens: inputs z (m, d), targets y (m, F) sparse."""
        z = np.asarray(z, dtype=np.float64)
        y = sp.csr_matrix(y, dtype=np.float64)
        self.n += len(z)
        self.sz += z.sum(axis=0)
        self.szz += z.T @ z
        self.szy += np.asarray((y.T @ z).T)  # (d, F)
        self.sy += np.asarray(y.sum(axis=0)).ravel()
        self.syy += np.asarray(y.multiply(y).sum(axis=0)).ravel()
        self.fires += np.diff(y.tocsc().indptr)


def ridge_r2(train: RidgeSums, test: RidgeSums, ridge: float, min_test_fires: int = 1) -> np.ndarray:
    """(F,) held-out R² of the ridge fit on `train` (intercept unpenalised), evaluated on `test`; NaN where the test
    targets do not vary or fire on fewer than `min_test_fires` tokens.

    With μ, ȳ the train means, the fit is W = (G + ridge·diag G)⁻¹ C, G and C the centred train sums; on test
    tokens, with z̃ = z - μ and ỹ = y - ȳ, SSE = Σỹ² - 2 Σ_d W∘(z̃ᵀỹ) + Σ_d W∘(z̃ᵀz̃ W), all from the test sums.
    """
    n = max(train.n, 1)
    mu, ybar = train.sz / n, train.sy / n
    g = train.szz - n * np.outer(mu, mu)
    c = train.szy - n * np.outer(mu, ybar)
    diag = np.clip(np.diag(g), 0.0, None)
    reg = ridge * diag + 1e-9 * max(float(diag.mean()), 1e-30)  # the floor keeps constant inputs solvable
    w = np.linalg.solve(g + np.diag(reg), c)  # (d, F)
    m = test.n
    a = test.szz - np.outer(test.sz, mu) - np.outer(mu, test.sz) + m * np.outer(mu, mu)  # z̃ᵀz̃
    b = test.szy - np.outer(test.sz, ybar) - np.outer(mu, test.sy) + m * np.outer(mu, ybar)  # z̃ᵀỹ
    syy = test.syy - 2 * ybar * test.sy + m * ybar**2  # Σỹ²
    sse = syy - 2 * np.einsum("df,df->f", w, b) + np.einsum("df,df->f", w, a @ w)
    sst = test.syy - test.sy**2 / max(m, 1)
    ok = (sst > 1e-12 * np.maximum(test.syy, 1e-30)) & (test.fires >= min_test_fires)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, 1.0 - sse / np.where(ok, sst, 1.0), np.nan)


def signed_targets(n_latents: int, partner: np.ndarray | None) -> sp.csr_matrix:
    """(F, F) map from codes to C7's targets: column i is a_i, or a_i - a_partner(i) for an antipodal pair."""
    m = sp.identity(n_latents, dtype=np.float64, format="lil")
    if partner is not None:
        for i in np.flatnonzero(np.asarray(partner) >= 0):
            m[int(partner[i]), i] = -1.0
    return m.tocsr()


def test_documents(doc_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(T,) bool: the flat positions whose document is held out (a seeded draw per document id)."""
    doc_ids = np.asarray(doc_ids, dtype=np.int64)
    top = int(doc_ids.max()) + 1 if doc_ids.size else 0
    u = np.random.default_rng(seed).random(max(top, 1))
    return (doc_ids >= 0) & (u[np.clip(doc_ids, 0, None)] < fraction)


def learned_r2(
    network: Network,
    tokens: np.ndarray,
    doc_ids: np.ndarray,
    mask: np.ndarray,
    acts: sp.spmatrix,
    cfg: LearnedConfig,
    partner: np.ndarray | None = None,
) -> np.ndarray:
    """(F,) C7's R² for codes `acts` (n_seq * L, F) on the cache grid tokens / doc_ids / mask (n_seq, L).

    Streams the random network over chunks of whole sequences (its one forward pass over the scored tokens).
    """
    n_seq, L = tokens.shape
    if cfg.max_tokens is not None:
        n_seq = min(n_seq, -(-cfg.max_tokens // L))
    codes = sp.csr_matrix(acts)[: n_seq * L] @ signed_targets(acts.shape[1], partner)  # (T, F)
    flat_docs = np.asarray(doc_ids).reshape(-1)[: n_seq * L]
    held = test_documents(flat_docs, cfg.test_fraction, cfg.seed)
    keep = ~np.asarray(mask).reshape(-1)[: n_seq * L]
    sums: dict[bool, RidgeSums] = {}
    for a, z in _chunks(network, tokens[:n_seq], np.asarray(doc_ids)[:n_seq] >= 0):
        rows = np.arange(a * L, a * L + len(z))
        if not sums:
            sums = {s: RidgeSums(z.shape[1], codes.shape[1]) for s in (False, True)}
        for side in (False, True):
            sel = keep[rows] & (held[rows] == side)
            sums[side].update(z[sel], codes[rows[sel]])
    if not sums or sums[False].n == 0 or sums[True].n == 0:
        return np.full(acts.shape[1], np.nan)
    return ridge_r2(sums[False], sums[True], cfg.ridge, cfg.min_test_fires)


def _chunks(network: Network, tokens: np.ndarray, attention: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first sequence, flat activations (b * L, d)) per chunk of whole sequences."""
    n_seq, L = tokens.shape
    step = max(1, CHUNK_TOKENS // L)
    for a in range(0, n_seq, step):
        z = network(tokens[a : a + step], attention[a : a + step])
        yield a, np.asarray(z, dtype=np.float32).reshape(-1, z.shape[-1])


# ---- the random network of a cache --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomNetwork:
    """The random counterpart of the model a cache came from: a network, what it is, or why there is none."""

    network: Network | None
    name: str
    """e.g. "random-init:sentence-transformers/all-MiniLM-L6-v2" or "synthetic random network (seed 0)"."""
    why_not: str | None = None


def random_network_for(cache_path: Path | None, hook: str, seed: int) -> RandomNetwork:
    """The random network C7 compares a cache's activations at `hook` with (loads the random-init copy)."""
    from activations.cache import ActivationCache

    if cache_path is None:
        return RandomNetwork(None, "", "the scorer was given no cache to read the model from")
    with ActivationCache.open(cache_path, allow_partial=True) as cache:
        meta = cache.meta
        vocab_size = len(cache.vocab)
    if meta.source == "synthetic":
        from activations.synth_random import network_width, random_network

        width = network_width(meta.d_model)

        def synthetic(tokens: np.ndarray, attention: np.ndarray) -> np.ndarray:
            return random_network(tokens, vocab_size, width, seed)

        return RandomNetwork(synthetic, f"synthetic random network (seed {seed})")
    if meta.source != "model":
        return RandomNetwork(None, "", f"the cache was not made from a model (source: {meta.source})")
    return _random_init_copy(meta.model_id, hook)


def _random_init_copy(model_id: str, hook: str) -> RandomNetwork:
    """The `random-init:MODEL` copy of the cache's model, reading `hook` (None network when it cannot load)."""
    import torch

    from activations.model import RANDOM_INIT, capture, load_model

    name = model_id if model_id.startswith(RANDOM_INIT) else RANDOM_INIT + model_id
    try:
        model = load_model(name)
    except UserError as err:
        return RandomNetwork(None, name, f"its random-init copy cannot be loaded ({str(err).removeprefix('--model: ')})")
    if hook not in model.bridge.hook_dict:
        return RandomNetwork(None, name, f"its random-init copy has no hook {hook}")

    def forward(tokens: np.ndarray, attention: np.ndarray) -> np.ndarray:
        toks = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
        attn = torch.from_numpy(np.asarray(attention, dtype=np.int64))
        return capture(model, toks, attn, [hook])[hook].float().numpy()

    return RandomNetwork(forward, name)


# ---- the criterion -------------------------------------------------------------------------------------------------


def _compute(ctx: Context, cfg: LearnedConfig) -> Outcome:
    nan = np.full(ctx.n_latents, np.nan)
    rnd = random_network_for(ctx.cache_path, ctx.hook, cfg.seed)
    if rnd.network is None:
        if cfg.gate == "always":
            raise UserError(
                f"{ctx.cache_path}: [learned] gate = \"always\" but C7 cannot be computed: {rnd.why_not}; set "
                "gate = \"never\" in the definition's [learned] section to keep C7 as a tag (computed where it "
                "can be), or \"auto\" to gate only where a random network exists"
            )
        log.info("C7 learned not applicable: %s", rnd.why_not)
        r2 = nan
    else:
        r2 = learned_r2(rnd.network, ctx.tokens, ctx.doc_ids, ctx.mask, ctx.acts, cfg, ctx.partner)
    applicable = rnd.network is not None
    gates = applicable and cfg.gate != "never"
    learned = np.nan_to_num(r2, nan=np.inf) < cfg.max_r2
    finite = r2[np.isfinite(r2)]
    summary = {
        "learned": {
            "applicable": applicable,
            "gates": gates,
            "network": rnd.name or None,
            "why_not": rnd.why_not,
            "max_r2": cfg.max_r2,
            "n_learned": int(learned.sum()) if applicable else None,
            "n_judged": int(len(finite)),
            "r2_quantiles": (
                {str(q): float(np.quantile(finite, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)} if len(finite) else None
            ),
        }
    }
    columns = {"learned_r2": r2, "learned": learned, "learned_pass": learned if gates else np.ones_like(learned)}
    return Outcome(columns, r2, summary=summary)


_OWNER = "criterion:learned"
CRITERION = Criterion(
    number=7,
    name="learned",
    title="learned",
    config=LearnedConfig,
    gates=True,
    passes="learned_pass",
    needs=("support",),
    columns=(
        Column("learned_r2", "float64", "C7: held-out R² of a ridge prediction of the latent's activation from the "
               "random-init copy's activations at the same hook and tokens (antipodal pairs: the signed pair); NaN "
               "where C7 is not applicable or too few held-out firings", _OWNER),
        Column("learned", "bool", "C7: learned_r2 < max_r2 (the random copy does not carry the latent)", _OWNER),
        Column("learned_pass", "bool", "C7 as the definition's `[learned] gate` applies it: `learned` where C7 "
               "gates, True where it does not (gate = never, or auto without a random network)", _OWNER),
    ),
    verdicts=(VerdictRow("R² predicted by the random-init copy", "learned_r2", "<", setting="max_r2"),),
    compute=_compute,
)  # fmt: skip
