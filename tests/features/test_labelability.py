"""LBL-v1 on planted data: token, bigram, context-hash and hidden-state latents, the document split, the control."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from features.labelability import LBLConfig, auroc, conditional, labelability, shuffled_control
from features.labelability.windows import build_index, window_matrix
from tests.helpers.common import FIXTURES
from tests.helpers.describers import only_describers
from tests.helpers.planted_lbl import CFG, N_SEQ, TOKEN_SET, L, V, planted

torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def v1_describers():
    """This file pins LBL-v1 (token, rule, semantic; the fixture's numbers): the LBL-v2 describers have their own
    tests (tests/features/test_describers_v2.py)."""
    with only_describers():
        yield


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def table(data):
    acts, tokens, doc_ids, mask, vocab = data
    return labelability(acts, tokens, doc_ids, mask, np.arange(5), CFG, seed=3, vocab=vocab)


def test_token_latent_is_labelable_by_tokens(table):
    assert table.labelability[0] >= 0.9
    assert table.best_describer[0] == "token"
    assert all(
        f"'t{t}'" in table.readable[0] for t in TOKEN_SET
    )  # the readable form names the planted tokens


def test_bigram_latent_is_won_by_the_rule(table):
    assert table.labelability[1] >= 0.9
    assert table.best_describer[1] == "rule"
    assert table.aurocs["rule"][1] > table.aurocs["token"][1]
    assert "bigram='t6' 't0'" in table.readable[1] or "prev='t6'" in table.readable[1]


@pytest.mark.parametrize("latent", [2, 3])
def test_hash_and_hidden_state_latents_are_not_labelable(table, latent):
    assert table.labelability[latent] < 0.4
    assert table.labelability_hi[latent] < 0.5
    assert table.n_test_pos[latent] >= 50


def test_dead_latent_is_reported_not_scored(table):
    assert np.isnan(table.labelability[4]) and table.best_describer[4] == "none"


def test_frame_columns_and_deciles(table):
    frame = table.to_frame()
    assert list(frame["feature"]) == [0, 1, 2, 3, 4]
    for name in ["labelability", "labelability_hi", "best_describer", "auroc_token", "auroc_rule"]:
        assert name in frame
    assert len(frame["decile_auroc"][0]) == 10
    assert np.nanmin(table.decile_auroc[0]) >= 0.9  # a token latent is labelable in every decile
    assert np.all(table.labelability_hi >= table.labelability) or np.isnan(table.labelability).any()


def test_split_is_by_document_and_test_windows_are_consistent(data, table):
    acts, tokens, doc_ids, mask, vocab = data
    index = build_index(tokens, doc_ids, mask, V, seed=3)
    flat_docs = doc_ids.reshape(-1)
    assert not np.intersect1d(
        flat_docs[index.is_test & index.valid], flat_docs[~index.is_test & index.valid]
    ).size
    n_docs = len(np.unique(flat_docs))
    assert abs(len(np.unique(flat_docs[index.is_test])) - n_docs / 2) <= 1
    for latent in range(4):
        tw = table.test_windows[latent]
        assert index.is_test[tw.flat_idx].all() and not mask.reshape(-1)[tw.flat_idx].any()
        fired = np.asarray(acts[:, latent].todense()).ravel()[tw.flat_idx] != 0
        assert np.array_equal(fired, tw.label)
        assert tw.label.sum() == table.n_test_pos[latent]
        assert ((tw.decile >= 0) == tw.label).all()


def test_hard_negatives_contain_top_tokens(data, table):
    acts, tokens, doc_ids, mask, vocab = data
    flat = np.where(mask.reshape(-1), -1, tokens.reshape(-1))
    tw = table.test_windows[0]
    win = window_matrix(tw.flat_idx[~tw.label], flat, np.tile(np.arange(L), N_SEQ), CFG.window)
    has_top = np.isin(win, TOKEN_SET).any(axis=1).mean()
    pos = np.tile(np.arange(L), N_SEQ)
    others = np.flatnonzero((flat >= 0) & ~np.isin(flat, TOKEN_SET))
    base = np.isin(window_matrix(others, flat, pos, CFG.window), TOKEN_SET).any(axis=1).mean()
    # half the negatives are hard (all contain a top token), half random (contain one at the base rate)
    assert has_top == pytest.approx(0.5 + 0.5 * base, abs=0.08)
    assert not np.isin(win[:, -1], TOKEN_SET).any()  # and none is a firing centre


def test_deterministic_for_a_seed_and_subset_invariant(data, table):
    acts, tokens, doc_ids, mask, vocab = data
    again = labelability(acts, tokens, doc_ids, mask, np.array([3, 1]), CFG, seed=3, vocab=vocab)
    assert (
        again.labelability[1] == table.labelability[1]
        and again.labelability_hi[0] == table.labelability_hi[3]
    )
    assert np.array_equal(again.test_windows[3].flat_idx, table.test_windows[3].flat_idx)
    other = labelability(acts, tokens, doc_ids, mask, np.array([3]), CFG, seed=4, vocab=vocab)
    assert not np.array_equal(other.test_windows[3].flat_idx, table.test_windows[3].flat_idx)


def test_shuffled_control_is_near_zero(data):
    acts, tokens, doc_ids, mask, vocab = data
    ctrl = shuffled_control(acts, tokens, doc_ids, mask, np.arange(4), CFG, seed=3, vocab=vocab)
    assert np.nanmean(ctrl.labelability) <= 0.1
    assert not np.isnan(ctrl.aurocs["rule"]).any()  # no pruning in the control: every describer competed


def test_pruning_skips_costly_describers_only_when_token_suffices(data):
    acts, tokens, doc_ids, mask, vocab = data
    full = labelability(
        acts, tokens, doc_ids, mask, np.array([0]), dataclasses.replace(CFG, prune=False), seed=3, vocab=vocab
    )
    pruned = labelability(acts, tokens, doc_ids, mask, np.array([0]), CFG, seed=3, vocab=vocab)
    assert np.isnan(pruned.aurocs["rule"][0]) and not np.isnan(full.aurocs["rule"][0])
    assert pruned.aurocs["token"][0] == full.aurocs["token"][0]


EXPECTED = FIXTURES / "lbl_planted_expected.json"


@pytest.mark.parametrize("case", ["planted", "planted_noprune", "planted_window_boot", "planted_control"])
def test_tables_equal_those_of_the_code_before_the_registry(data, table, case):
    """Same seeds, same numbers: every column and every latent's test windows equal the stored expectation, which
    the single-module LBL (before the describer registry) computed. Without centre hard negatives
    (`centre_neg_per_pos = 0`) the sampling is LBL-v1's, so the expectation holds exactly; the conditional
    columns come on top."""
    acts, tokens, doc_ids, mask, vocab = data
    v1 = dataclasses.replace(CFG, centre_neg_per_pos=0.0)
    if case == "planted":
        got = labelability(acts, tokens, doc_ids, mask, np.arange(5), v1, 3, vocab=vocab)
    elif case == "planted_noprune":
        got = labelability(acts, tokens, doc_ids, mask, np.arange(5), dataclasses.replace(v1, prune=False), 3,
                           vocab=vocab)  # fmt: skip
    elif case == "planted_window_boot":
        cfg = dataclasses.replace(v1, bootstrap_by_document=False)
        got = labelability(acts, tokens, doc_ids, mask, np.arange(5), cfg, 5, vocab=vocab)
    else:
        got = shuffled_control(acts, tokens, doc_ids, mask, np.arange(4), v1, 3, vocab=vocab)
    want = json.loads(EXPECTED.read_text())["cases"][case]
    frame = got.to_frame()
    assert list(frame.columns) == list(want["columns"]) + list(conditional.KEYS) + ["labelability_strong"]
    for name, values in want["columns"].items():
        if name == "decile_auroc":
            np.testing.assert_array_equal(np.array(frame[name].tolist()), np.array(values), err_msg=name)
        elif isinstance(values[0], str):
            assert frame[name].tolist() == values, name
        else:
            np.testing.assert_array_equal(frame[name].to_numpy(), np.array(values, float), err_msg=name)
    for latent, digest in want["test_windows_sha256"].items():
        tw = got.test_windows[int(latent)]
        h = hashlib.sha256()
        for arr, dtype in ((tw.flat_idx, np.int64), (tw.label, bool), (tw.decile, np.int8)):
            h.update(np.asarray(arr, dtype).tobytes())
        assert h.hexdigest() == digest, f"test windows of latent {latent}"


def test_auroc_matches_hand_computation():
    scores = np.array([0.9, 0.5, 0.5, 0.1, 0.5])
    labels = np.array([True, True, False, False, False])
    # pairs (pos, neg): 0.9 beats all 3; 0.5 beats 0.1, ties 0.5 twice -> (3 + 1 + 0.5 + 0.5) / 6
    assert auroc(scores, labels)[0] == pytest.approx(5 / 6)
    w = np.array([[2, 0, 1, 1, 0]], float)  # only the first positive (twice) vs two negatives it beats
    assert auroc(scores, labels, w)[0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"window": 0},
        {"rule_bag": 20},
        {"test_fraction": 1.0},
        {"bootstrap": 2.5},
        {"prune": "yes"},
        {"rule_c_start": 0.0},
        {"rule_intercept_scaling": -1.0},
        {"spearman_min_pos": 1},
        {"n_deciles": 0},
        {"max_positives": 4},  # fewer than the 10 deciles it is shared by
        {"centre_neg_per_pos": -0.5},
        {"anchor_coverage": 0.0},
        {"anchor_max_tokens": 0},
    ],
)
def test_config_validation_names_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LBLConfig(**bad)


def test_n_deciles_sets_the_strata_of_positives(data):
    acts, tokens, doc_ids, mask, vocab = data
    cfg = dataclasses.replace(CFG, n_deciles=4, spearman_min_pos=10**6)
    got = labelability(acts, tokens, doc_ids, mask, np.array([0]), cfg, seed=3, vocab=vocab)
    assert got.decile_auroc.shape == (1, 4) and len(got.to_frame()["decile_auroc"][0]) == 4
    assert set(got.test_windows[0].decile[got.test_windows[0].label]) == {0, 1, 2, 3}
    assert np.isnan(got.spearman[0])  # fewer test positives than spearman_min_pos


def test_planted_truth_of_the_synthetic_generator(tmp_path):
    synth = pytest.importorskip("activations.synth")
    from activations.cache import ActivationCache

    cfg = synth.SynthConfig(
        n_seq=600,
        d_model=16,
        vocab_size=300,
        n_token=6,
        n_hash=6,
        n_hidden=6,
        n_dense_pair=0,
        n_circle=0,
        freq_min=0.01,
        seed=1,
    )
    from activations.synth_write import generate_synthetic

    truth = generate_synthetic(tmp_path / "synth.h5", cfg)
    with ActivationCache.open(tmp_path / "synth.h5") as cache:
        tokens, doc_ids, mask, vocab = cache.tokens, cache.doc_ids, cache.mask, cache.vocab
    acts = sp.csc_matrix(truth.activations())
    table = labelability(acts, tokens, doc_ids, mask, np.arange(acts.shape[1]), seed=0, vocab=vocab)
    kinds = np.array(truth.kinds)
    scored = table.n_test_pos >= 20  # the rarest planted features may have too few held-out firings
    assert scored[kinds == "token"].all() and (table.labelability[kinds == "token"] >= 0.6).all()
    unlabelable = np.isin(kinds, ["hash", "hidden"]) & (table.n_test_pos >= 50)  # the flag's support
    assert unlabelable.sum() >= 6 and (table.labelability[unlabelable] < 0.4).all()
    ctrl = shuffled_control(acts, tokens, doc_ids, mask, np.flatnonzero(scored), seed=0, vocab=vocab)
    assert np.nanmean(ctrl.labelability) <= 0.1
