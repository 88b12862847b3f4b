"""The following-token describer: latents decided by the token after the centre are labelled by it, others not."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from features.labelability import LBLConfig, labelability
from features.labelability.following import fit_following, next_tokens
from features.labelability.windows import build_index

N_SEQ, L, V = 200, 64, 60
IS, UNDERSCORE, OPEN = 3, 4, 5  # token ids of the planted patterns
BEFORE_OPEN, IS_THEN_UNDERSCORE, RANDOM = range(3)
CFG = LBLConfig(max_positives=200, bootstrap=50, prune=False)


def planted() -> tuple[sp.csc_matrix, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(5)
    vocab = ["[CLS]", "[SEP]", "."] + [f"w{i}" for i in range(3, V)]
    vocab[IS], vocab[UNDERSCORE], vocab[OPEN] = "is", "_", "("
    tokens = rng.integers(6, V, size=(N_SEQ, L))
    u = rng.random((N_SEQ, L))
    tokens[u < 0.12] = IS
    tokens[(u >= 0.12) & (u < 0.24)] = UNDERSCORE
    tokens[(u >= 0.24) & (u < 0.28)] = OPEN
    mask = np.zeros((N_SEQ, L), bool)
    mask[:, 0] = True
    tokens[:, 0] = 0
    nxt = np.full((N_SEQ, L), -1)
    nxt[:, :-1] = tokens[:, 1:]
    fires = (
        np.stack(
            [
                nxt == OPEN,  # fires before "(": what it predicts
                (tokens == IS)
                & (nxt == UNDERSCORE),  # on "is" only when "_" follows: a minority of its occurrences
                rng.random((N_SEQ, L)) < 0.08,
            ],
            axis=-1,
        )
        & ~mask[..., None]
    )
    values = rng.uniform(0.5, 5.0, size=fires.shape) * fires
    doc_ids = (np.arange(N_SEQ * L) // 200).reshape(N_SEQ, L).astype(np.int32)
    return sp.csc_matrix(values.reshape(N_SEQ * L, -1)), tokens.astype(np.int32), doc_ids, mask, vocab


@pytest.fixture(scope="module")
def scored():
    acts, tokens, doc_ids, mask, vocab = planted()
    return labelability(acts, tokens, doc_ids, mask, np.arange(3), CFG, 1, vocab=vocab, progress=False)


def test_next_tokens_stay_inside_their_sequence():
    tokens = np.array([[0, 7, 8, 9], [0, 4, 5, 1]], np.int32)
    mask = np.array([[True, False, False, False], [True, False, False, True]])
    index = build_index(tokens, np.zeros_like(tokens), mask, 10, seed=0)
    assert next_tokens(index).tolist() == [7, 8, 9, -1, 4, 5, -1, -1]  # a masked next token is unknown (-1)


@pytest.mark.parametrize("latent", [BEFORE_OPEN, IS_THEN_UNDERSCORE])
def test_a_latent_decided_by_the_next_token_is_labelled_by_it(scored, latent):
    got = {n: a[latent] for n, a in scored.aurocs.items()}
    assert got["following"] > 0.95, got
    assert got["token"] < got["following"] - 0.1 and got["rule"] < got["following"] - 0.1, got
    assert scored.best_describer[latent] in ("following", "compose") and scored.labelability[latent] > 0.85
    want = "next '('" if latent == BEFORE_OPEN else "'is' -> '_'"
    frame = scored.to_frame()
    if scored.best_describer[latent] == "following":
        assert want in frame.loc[latent, "readable"], frame.loc[latent, "readable"]


def test_a_random_latent_stays_unlabelled(scored):
    assert abs(scored.aurocs["following"][RANDOM] - 0.5) < 0.1
    assert scored.labelability[RANDOM] < 0.3


def test_the_pair_look_up_wins_only_when_the_current_token_matters():
    rng = np.random.default_rng(0)
    n = 4000
    cur, nxt = rng.integers(0, 20, n), rng.integers(0, 20, n)
    tr = rng.random(n) < 0.5
    before = nxt == 3
    assert fit_following(cur, nxt, tr, before, 1.0).kind == "next"
    both = (cur == 7) & (nxt == 3)
    fit = fit_following(cur, nxt, tr, both, 1.0)
    assert fit.kind == "pair" and fit.train_auroc > 0.95
    # leave-one-out: a key seen once in train says nothing about its own window
    unique = np.arange(n)
    noise = rng.random(n) < 0.5
    assert abs(fit_following(unique, unique, tr, noise, 1.0).train_auroc - 0.5) < 0.05


def test_the_compose_describer_can_use_the_next_token(scored):
    cfg = dataclasses.replace(CFG)
    assert cfg.rule_max_terms >= 2
    assert scored.aurocs["compose"][IS_THEN_UNDERSCORE] > 0.9
