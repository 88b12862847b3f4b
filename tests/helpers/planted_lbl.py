"""A planted labelability case shared by the LBL and label-tester tests: Zipf tokens with five planted latents."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from features.labelability import LBLConfig

N_SEQ, L, V = 160, 64, 120
TOKEN_SET = (5, 17, 30)
BIGRAM = (6, 0)  # prev, cur: cur is the most frequent token, so the token alone is a weak description


def planted(seed: int = 0):
    """Zipf tokens, two documents per sequence, position 0 masked (a CLS), and five planted latents."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, V + 1) ** 1.1
    tokens = rng.choice(V, size=(N_SEQ, L), p=p / p.sum()).astype(np.int32)
    at = rng.random((N_SEQ, L)) < 0.03
    at[:, :2] = False
    s, t = np.nonzero(at)
    tokens[s, t - 1], tokens[s, t] = BIGRAM
    pos = np.arange(L)[None, :]
    doc_ids = (2 * np.arange(N_SEQ)[:, None] + (pos >= L // 2)).astype(np.int32)
    mask = np.zeros((N_SEQ, L), bool)
    mask[:, 0] = True

    prev = np.roll(tokens, 1, axis=1)
    prev2, prev3 = np.roll(tokens, 2, axis=1), np.roll(tokens, 3, axis=1)
    mix = (
        (prev3.astype(np.uint64) * 1_000_003 + prev2 * 7919 + prev) * np.uint64(2654435761) % np.uint64(2**32)
    )
    state = rng.random(2 * N_SEQ) < 0.5
    fires = np.stack(
        [
            np.isin(tokens, TOKEN_SET),
            (prev == BIGRAM[0]) & (tokens == BIGRAM[1]) & (pos >= 2),  # prev unmasked
            (mix / 2**32 < 0.08) & (pos >= 3),  # a hash of the previous 3 tokens
            state[doc_ids] & (rng.random((N_SEQ, L)) < 0.25),  # a hidden per-document state
            np.zeros((N_SEQ, L), bool),  # dead
        ],
        axis=-1,
    )  # (N_SEQ, L, 5)
    fires &= ~mask[..., None]
    values = rng.uniform(0.5, 5.0, size=fires.shape) * fires
    acts = sp.csc_matrix(values.reshape(N_SEQ * L, -1).astype(np.float32))
    vocab = [f"t{i}" for i in range(V)]
    return acts, tokens, doc_ids, mask, vocab


CFG = LBLConfig(max_positives=300, bootstrap=100)
