"""Centre hard negatives and conditional labelability on planted latents: which occurrences of a token fire."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from features.labelability import LBLConfig, auroc, labelability
from features.labelability.conditional import find_anchors, stratified_auroc
from features.labelability.windows import build_index

torch.set_num_threads(1)

N_SEQ, L, V = 200, 64, 100
ANCHOR, RULE_TOK, RULE_PREV, TOKEN_SET = 2, 3, (0, 1), (7, 9)


def planted(seed: int = 0):
    """Zipf tokens, two documents per sequence, position 0 masked; latents: 0 fires on every occurrence of its
    tokens, 1 on token ANCHOR only while a hidden per-document state is on (a third of the documents), 2 on token
    RULE_TOK only after one of RULE_PREV, 3 on ANCHOR at random (a third of its occurrences, no state)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, V + 1) ** 1.1
    tokens = rng.choice(V, size=(N_SEQ, L), p=p / p.sum()).astype(np.int32)
    pos = np.arange(L)[None, :]
    doc_ids = (2 * np.arange(N_SEQ)[:, None] + (pos >= L // 2)).astype(np.int32)
    mask = np.zeros((N_SEQ, L), bool)
    mask[:, 0] = True
    prev = np.roll(tokens, 1, axis=1)
    state = rng.random(2 * N_SEQ) < 1 / 3
    fires = np.stack(
        [
            np.isin(tokens, TOKEN_SET),
            (tokens == ANCHOR) & state[doc_ids],
            (tokens == RULE_TOK) & np.isin(prev, RULE_PREV) & (pos >= 2),
            (tokens == ANCHOR) & (rng.random((N_SEQ, L)) < 1 / 3),
        ],
        axis=-1,
    )
    fires &= ~mask[..., None]
    values = rng.uniform(0.5, 5.0, size=fires.shape) * fires
    acts = sp.csc_matrix(values.reshape(N_SEQ * L, -1).astype(np.float32))
    return acts, tokens, doc_ids, mask, [f"t{i}" for i in range(V)]


CFG = LBLConfig(max_positives=300, bootstrap=100)


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def table(data):
    acts, tokens, doc_ids, mask, vocab = data
    return labelability(acts, tokens, doc_ids, mask, np.arange(4), CFG, seed=1, vocab=vocab, progress=False)


def _cond(table, name: str) -> np.ndarray:
    return table.conditional[name]


def test_centre_negatives_are_non_firing_occurrences_of_the_anchor(data, table):
    acts, tokens, doc_ids, mask, vocab = data
    flat = tokens.reshape(-1)
    tw = table.test_windows[1]
    neg_on_anchor = tw.flat_idx[~tw.label & (flat[tw.flat_idx] == ANCHOR)]
    fired = np.asarray(acts[:, 1].todense()).ravel() != 0
    assert not fired[neg_on_anchor].any()
    # a centre negative per two positives (the default), and the random/hard negatives add only a few more
    n_pos = int(tw.label.sum())
    assert 0.5 * n_pos <= len(neg_on_anchor) <= 0.5 * n_pos + 0.1 * (~tw.label).sum()
    # a latent that fires on every occurrence of its tokens has no non-firing occurrence to draw
    tw0 = table.test_windows[0]
    assert not np.isin(flat[tw0.flat_idx[~tw0.label]], TOKEN_SET).any()


def test_without_centre_negatives_the_sample_is_lbl_v1s(data, table):
    acts, tokens, doc_ids, mask, vocab = data
    v1 = labelability(acts, tokens, doc_ids, mask, np.array([1]), dataclasses.replace(CFG, centre_neg_per_pos=0),
                      seed=1, vocab=vocab, progress=False)  # fmt: skip
    new, old = table.test_windows[1], v1.test_windows[1]
    assert np.isin(old.flat_idx, new.flat_idx).all() and len(new.flat_idx) > len(old.flat_idx)
    # LBL-v1 gave the token describer full marks; the centre negatives take them away
    assert v1.aurocs["token"][0] >= 0.95 and table.aurocs["token"][1] < 0.9
    assert np.isnan(v1.conditional["lbl_conditional"][0])  # no anchored negatives: not measured


def test_anchors_and_their_fractions(table):
    assert _cond(table, "anchor_tokens")[1].startswith("'t2' ")
    frac = _cond(table, "anchor_fraction")
    assert frac[0] == 1.0 and _cond(table, "anchor_coverage")[0] == pytest.approx(1.0)
    assert 0.2 < frac[1] < 0.5 and 0.2 < frac[3] < 0.5  # a third of the anchor's occurrences
    assert 0.15 < frac[2] < 0.5  # the share of RULE_TOK's occurrences after one of RULE_PREV


def test_hidden_state_choice_resists_and_a_rule_choice_does_not(table):
    lbl, hi = _cond(table, "lbl_conditional"), _cond(table, "lbl_conditional_hi")
    for latent in (1, 3):  # which occurrences fire: a hidden state, or chance
        assert table.labelability[latent] >= 0.4  # the token still labels the latent as a whole
        assert lbl[latent] < 0.4 and hi[latent] < 0.5, (latent, lbl[latent], hi[latent])
        assert _cond(table, "n_cond_test_pos")[latent] >= 50
    assert lbl[2] >= 0.8 and _cond(table, "conditional_describer")[2] == "rule"
    # the token latent needs no other describer (pruned): not measured, and says why
    assert np.isnan(lbl[0]) and "pruned" in _cond(table, "conditional_describer")[0]
    frame = table.to_frame()
    assert frame["n_cond_test_pos"].dtype == np.int64 and frame["anchor_tokens"][1].startswith("'t2' ")


def test_stratified_auroc_counts_only_pairs_on_the_same_token():
    # token A: perfectly separated; token B: reversed. Pooled scores would mix the tokens' levels.
    scores = np.array([0.9, 0.1, 0.2, 0.8, 5.0, 5.0])
    labels = np.array([True, False, True, False, True, False])
    strata = np.array([0, 0, 1, 1, 2, 2])
    # stratum 0: 1 pair, AUROC 1; stratum 1: 1 pair, AUROC 0; stratum 2: tie, 0.5 -> (1 + 0 + 0.5) / 3
    assert stratified_auroc(scores, labels, strata)[0] == pytest.approx(0.5)
    # a score that is constant within each token (the token describer) is exactly 0.5, however tokens differ,
    # while the pooled AUROC credits it for the tokens' different firing rates
    per_token, y = np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1]), np.array([True, True, False, True, False, False])
    assert stratified_auroc(per_token, y, np.array([0, 0, 0, 1, 1, 1]))[0] == 0.5
    assert auroc(per_token, y)[0] == pytest.approx(6 / 9)
    w = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 1, 1, 0, 1, 1]], float)
    np.testing.assert_array_equal(stratified_auroc(scores, labels, strata, w), [1.0, 0.0, 0.5])


def test_find_anchors_covers_the_firings():
    fire = np.array([0, 50, 30, 15, 5, 0])
    count = np.array([10, 100, 30, 150, 5, 7])
    vocab = [f"t{i}" for i in range(6)]
    a = find_anchors(fire, count, vocab, coverage=0.8, max_tokens=5)
    assert a.tokens.tolist() == [1, 2] and a.coverage == 0.8 and a.neg_ratio == pytest.approx(50 / 80)
    assert a.fraction == pytest.approx(
        (50 * 50 / 100 + 30 * 30 / 30) / 80
    )  # each anchor's rate, by its firings
    assert a.readable == "'t1' 50/100, 't2' 30/30"
    assert find_anchors(fire, count, vocab, 0.99, 2).tokens.tolist() == [1, 2]  # capped
    assert find_anchors(fire, count, vocab, 0.5, 5).tokens.tolist() == [1]
    assert find_anchors(np.zeros(6, int), count, vocab, 0.8, 5).tokens.size == 0


def test_index_lists_occurrences_for_centre_sampling(data):
    acts, tokens, doc_ids, mask, vocab = data
    index = build_index(tokens, doc_ids, mask, V, seed=1)
    occ = index.token_order[index.token_start[ANCHOR] : index.token_start[ANCHOR + 1]]
    assert (index.tokens[occ] == ANCHOR).all() and len(occ) == ((tokens == ANCHOR) & ~mask).sum()


def test_token_anchored_rule_needs_every_condition():
    from features.flags import FlagConfig, apply_flags, summarize

    cfg = FlagConfig()
    ok = dict(support_pass=True, stability_pass=True, function_pass=True, mdl_pass=True, learned_pass=True, labelability=0.7,
              labelability_hi=0.8, n_test_pos=150, firing_count=300, best_describer="token", lbl_conditional=0.1,
              lbl_conditional_hi=0.3, n_cond_test_pos=120, anchor_fraction=0.3, anchor_coverage=0.9)  # fmt: skip
    spoil = [("support_pass", False), ("labelability", 0.39), ("anchor_coverage", 0.49), ("anchor_fraction", 0.5),
             ("lbl_conditional", 0.4), ("lbl_conditional", np.nan), ("lbl_conditional_hi", 0.5),
             ("n_cond_test_pos", 49)]  # fmt: skip
    rows = [ok] + [{**ok, k: v} for k, v in spoil]
    out = apply_flags(pd.DataFrame(rows), cfg)
    assert out["token_anchored"].tolist() == [True] + [False] * (len(rows) - 1)
    assert not (out["token_anchored"] & out["flag"]).any()  # LBL >= max_lbl: never both
    assert summarize(out).token_anchored == 1
    # without the conditional columns (a table scored before them) nothing is token-anchored; with some but
    # not all of them the table is refused
    bare = pd.DataFrame([{k: v for k, v in ok.items() if k not in ("lbl_conditional", "lbl_conditional_hi",
                                                                  "n_cond_test_pos", "anchor_fraction",
                                                                  "anchor_coverage")}])  # fmt: skip
    assert not apply_flags(bare, cfg)["token_anchored"].any()
    with pytest.raises(KeyError, match="anchor_coverage"):
        apply_flags(pd.DataFrame([{k: v for k, v in ok.items() if k != "anchor_coverage"}]), cfg)


def test_out_of_range_anchored_settings_are_one_line_errors(tmp_path):
    from tests.helpers.common import error_line, run_cli

    bad = tmp_path / "bad.toml"
    for section, text, name in (
        ("labelability", "centre_neg_per_pos = -1", "centre_neg_per_pos"),
        ("flag", "anchor_max_fraction = 1.5", "anchor_max_fraction"),
        ("flag", "max_lbl_conditional = 0", "max_lbl_conditional"),
    ):
        bad.write_text(f"[{section}]\n{text}\n")
        line = error_line(run_cli("definition", "show", "--definition", str(bad)))
        assert name in line and str(bad) in line, line
