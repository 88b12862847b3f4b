"""The "random network" of a synthetic cache: random features of its token stream, the counterpart of a random-init
copy of a real model for C7 (learned vs random, `features.criteria.learned`).

A random-init transformer still carries what its random embeddings and random mixing of nearby tokens give for
free: the current token, its position in the sequence and some function of the previous few tokens. The synthetic
generator has no model, so C7 gets this instead, a fixed, seeded function of the cache's own token grid:

    h_t = E[x_t] + P[t] + tanh(W_1 E[x_{t-1}] + ... + W_c E[x_{t-c}])          (t = position in the sequence)

with E (vocab_size, d) a random token embedding, P (L, d) a random position embedding and W_k (d, d) random
projections of the previous `context` tokens' embeddings (tokens before the start of the sequence count as absent,
as they are for a model that sees one packed sequence). Every entry is N(0, 1/d), so each term has norm about 1.
C7 reads the current token exactly (a per-token look-up, as the copy's embedding layer is) and h linearly: planted
token features (a set of current tokens) and position features are then predictable; planted hidden-state features
(a Markov chain independent of the tokens) and salted hashes of the last tokens (one arbitrary function among the
vocab_size^3 possible ones) are not.

The width d is at least `MIN_WIDTH`, not the cache's d_model (32-64 in the benchmarks): how well a linear read-out
recovers a token from random embeddings (here the previous tokens, through the mixing term) is set by the width,
every other token leaking about 1/d of its probability mass into the read-out, not by the vocabulary; real models
are 384+ wide, and the synthetic counterpart should not be much weaker than theirs. Without the look-up, a planted
token feature's R² is 0.05-0.3 at d = 32 and 0.4-0.8 at d = 256 (the test suite's synthetic cache), while
hidden-state and hash features stay at R² ~ 0 at every width.
"""

from __future__ import annotations

import numpy as np

CONTEXT = 2
"""Previous tokens the random network mixes in."""
MIN_WIDTH = 256
"""Narrowest random network (see the module docstring)."""


def network_width(d_model: int) -> int:
    """Width of the random network for a cache of width `d_model`."""
    return max(d_model, MIN_WIDTH)


def random_network(
    tokens: np.ndarray, vocab_size: int, width: int, seed: int, context: int = CONTEXT
) -> np.ndarray:
    """(n, L) token ids -> (n, L, width) float32 activations of the seeded random network (see module docstring).

    The weights depend only on (vocab_size, width, L, context, seed), so any chunk of sequences gets the same
    function; ids outside [0, vocab_size) raise ValueError.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (n, L), got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    n, L = tokens.shape
    rng = np.random.default_rng(np.random.SeedSequence([seed, vocab_size, width, context]))
    scale = 1.0 / np.sqrt(width)
    emb = (rng.standard_normal((vocab_size, width)) * scale).astype(np.float32)  # (V, d)
    mix = (rng.standard_normal((context, width, width)) * scale).astype(np.float32)  # (c, d, d)
    pos_rng = np.random.default_rng(np.random.SeedSequence([seed, width, 1]))
    pos = (pos_rng.standard_normal((L, width)) * scale).astype(
        np.float32
    )  # (L, d): drawn apart, so L is free
    pre = np.zeros((n, L, width), dtype=np.float32)
    for k in range(1, min(context, L - 1) + 1):
        projected = emb @ mix[k - 1]  # (V, d): every token's embedding projected once, then looked up
        pre[:, k:] += projected[tokens[:, :-k]]  # the token k back, within the sequence
    return emb[tokens] + pos[None] + np.tanh(pre)
