"""C7 learned: does the latent carry something the model learned, or does a random-init copy of it already carry it?

A random-init transformer of the same architecture and tokenizer computes a lot by itself: its random token and
position embeddings, random mixing of nearby tokens (Heap et al. 2025 train SAEs on such copies and find
"interpretable" latents all the same). C7 asks, for every latent of the reference SAE, how much of its activation
the random copy predicts at the same tokens:

    a_ti ≈ M[x_t, i] + w_iᵀ z_t + b_i,    x_t the token, z_t the random copy's activation at the same hook (d dims),

M the latent's mean activation per token id and w_i a ridge fit of the rest on z (`features.criteria.learned_fit`),
both fit on train documents and scored by R² on held-out documents. A latent counts as **learned** when that R² is
below `max_r2`. The random copy is the `random-init:MODEL` model `xenofeat run --control` uses (seed 0; for the control's own cache, a second draw, seed 1); for a
synthetic cache, the seeded random network of its token stream (`activations.synth_random`); a cache imported from
arrays has none, and C7 is not applicable there.

Why this read-out (measured on the embedded default, block 3, 150k tokens, a 3,072-latent TopK SAE; see
benchmarks/RESULTS.md): a ridge on z alone credits the random copy with too little. Latents that are a single token
(a token look-up predicts them at R² 0.99) got a ridge R² of only 0.38: in 384 dimensions a linear read-out cannot
single out a token of frequency 0.2% among 30k others plus 128 random position vectors. But the copy's first layer
*is* a look-up of the token, so the token is read exactly (M) and the ridge reads what the copy adds: position,
neighbouring tokens, random mixing. A latent firing on a context-dependent quarter of a token's occurrences keeps
R² ≈ 0.25 and stays learned; a pure token or position latent is not. The default `max_r2` of 0.3 sits below the
dense position latents of the default (R² 0.43-0.63, the ones issue 11 found flagged) with a margin.

Why not matching against an SAE trained on the copy: that needs a cache and an SAE of the copy (the cost of
`--control`), and asks whether one particular, itself seed-unstable, SAE happened to isolate the feature; the
read-out needs one forward pass of the copy over the scored tokens and is computed exactly from streamed sums, every
latent at once. R² rather than AUROC of firing: AUROC would call a latent that fires on a quarter of a token's
occurrences "carried" (the token alone ranks its firings at the top), and R² also judges dense latents by value.

An antipodal pair (from C1) is one signed feature: the target is a_i - a_partner(i), and both members get its R².

The definition decides whether C7 gates `well_defined` (`gate`): "auto" gates wherever a random network is
available (the cache's model loads, or the cache is synthetic) and records C7 as not applicable elsewhere (NaN R²);
"always" makes a cache without one an error; "never" computes C7 where it can, as a tag. The gate is applied
through `learned_pass` (like C3's `function_pass`, "as the definition decides"): it equals `learned` where C7
gates and is True where it does not, so `well_defined` needs no other change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activations.errors import UserError
from activations.settings import Settings, choice, integer, number, switch
from features.columns import Column
from features.criteria.learned_fit import Network, learned_r2
from features.criteria.registry import Context, Criterion, Outcome, VerdictRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnedConfig(Settings):
    """C7 learned: a random-init copy of the model (same hook, same tokens) does not already carry the latent."""

    gate: str = choice("auto", "auto", "always", "never")
    """Whether C7 gates well_defined. auto: wherever a random network is available (the cache's model can be
    loaded, or the cache is synthetic), else C7 is recorded as not applicable; always: a cache without one is an
    error; never: C7 is computed where it can be, as a tag."""
    max_r2: float = number(0.3, 0.0, 1.0, lo_open=True)
    """A latent is learned when the random copy's held-out R² is below this. Measured on the embedded default
    (block 3): single-token latents reach 0.8-0.99, dense position latents 0.43-0.63; synthetic hidden-state and
    hash features stay below 0.05."""
    ridge: float = number(1e-3, 0.0)
    """Ridge penalty, relative to each input feature's variance (so it does not depend on the activations' scale)."""
    test_fraction: float = number(0.3, 0.0, 1.0, lo_open=True, hi_open=True)
    """Fraction of documents held out for the R²."""
    min_test_fires: int = integer(10, 1)
    """Fewest held-out firing tokens for an R² (fewer: NaN, and the latent does not count as learned)."""
    max_tokens: int = integer(250_000, 0)
    """Cap on the scored tokens C7 uses (whole sequences from the start; 0: all scored tokens). The
    random copy's forward pass costs about 0.4 ms of CPU per token on MiniLM, so 250k keeps `xenofeat run` near its
    10-minute budget; a latent needs `min_test_fires` held-out firings within them to be judged."""
    token_lookup: bool = switch(True)
    """Give the read-out the current token exactly (its mean activation per token id on train documents) besides
    the ridge on the random copy's activations: the copy's embedding layer is a look-up of the token, which a linear
    read-out of d dimensions recovers only in part."""
    seed: int = integer(0, 0)
    """Seed of the document split and of a synthetic cache's random network (the random-init copy of a real model
    is always the seed-0 copy `xenofeat run --control` uses)."""


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
    """The `random-init:MODEL` copy of the cache's model, reading `hook` (None network when it cannot load).

    When the cache's model is itself a random-init copy (the `--control` run), C7 compares it with another random
    draw of the same architecture (init seed 1), not with itself: a latent of the control then counts as learned
    only if a second random network of its shape does not carry it, which is what "any random network of that
    shape computes it" means. Compared with itself, every latent would trivially be "not learned".
    """
    import torch

    from activations.model import RANDOM_INIT, capture, load_model

    control = model_id.startswith(RANDOM_INIT)
    name = model_id if control else RANDOM_INIT + model_id
    init_seed = 1 if control else 0
    try:
        model = load_model(name, init_seed=init_seed)
    except UserError as err:
        return RandomNetwork(
            None, name, f"its random-init copy cannot be loaded ({str(err).removeprefix('--model: ')})"
        )
    if control:
        name = f"{name} (init seed {init_seed})"
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
                f'{ctx.cache_path}: [learned] gate = "always" but C7 cannot be computed: {rnd.why_not}; set '
                'gate = "never" in the definition\'s [learned] section to keep C7 as a tag (computed where it '
                'can be), or "auto" to gate only where a random network exists'
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
                {str(q): float(np.quantile(finite, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)}
                if len(finite)
                else None
            ),
        }
    }
    columns = {
        "learned_r2": r2,
        "learned": learned,
        "learned_pass": learned if gates else np.ones_like(learned),
    }
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
        Column("learned_r2", "float64", "C7: held-out R² of the random copy's prediction of the latent's activation "
               "(its mean per token id plus a ridge on the random-init copy's activations at the same hook and "
               "tokens; antipodal pairs: the signed pair); NaN where C7 is not applicable or too few held-out "
               "firings", _OWNER),
        Column("learned", "bool", "C7: learned_r2 < max_r2 (the random copy does not carry the latent)", _OWNER),
        Column("learned_pass", "bool", "C7 as the definition's `[learned] gate` applies it: `learned` where C7 "
               "gates, True where it does not (gate = never, or auto without a random network)", _OWNER),
    ),
    verdicts=(VerdictRow("R² predicted by the random-init copy", "learned_r2", "<", setting="max_r2"),),
    compute=_compute,
)  # fmt: skip
