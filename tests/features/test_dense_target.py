"""Dense latents are labelled by their activation value: a latent on for 40% of tokens whatever the token, whose
VALUE follows a token, is unlabelable as firing-vs-not and labelled under the activation target (`lbl_target`);
non-dense latents keep exactly the results they had."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from features.labelability import LBLConfig, labelability, shuffled_control

torch.set_num_threads(1)

N_SEQ, L, V = 150, 40, 80
HIGH = tuple(range(0, V, 2))  # the dense latent's value is high on these tokens (half of the vocabulary)


def planted():
    """Latent 0: fires on 40% of tokens at random; its value is 4-5 on HIGH tokens and 0.1-1 elsewhere. Latent 1: a
    sparse token latent (tokens 20, 21). Two documents per sequence, position 0 masked."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, size=(N_SEQ, L))
    doc_ids = 2 * np.arange(N_SEQ)[:, None] + (np.arange(L)[None, :] >= L // 2)
    mask = np.zeros((N_SEQ, L), bool)
    mask[:, 0] = True
    on = (rng.random((N_SEQ, L)) < 0.4) & ~mask
    high = np.isin(tokens, HIGH)
    dense = on * np.where(high, rng.uniform(4.0, 5.0, (N_SEQ, L)), rng.uniform(0.1, 1.0, (N_SEQ, L)))
    sparse = (np.isin(tokens, (20, 21)) & ~mask) * rng.uniform(0.5, 5.0, (N_SEQ, L))
    acts = sp.csc_matrix(np.stack([dense, sparse], -1).reshape(N_SEQ * L, 2))
    return acts, tokens, doc_ids, mask, [f"t{i}" for i in range(V)]


CFG = LBLConfig(max_positives=300, bootstrap=50)
DENSE = np.array([True, False])


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def tables(data):
    acts, tokens, doc_ids, mask, vocab = data
    run = dict(seed=1, vocab=vocab, progress=False)
    return (
        labelability(acts, tokens, doc_ids, mask, np.arange(2), CFG, **run),
        labelability(acts, tokens, doc_ids, mask, np.arange(2), CFG, dense=DENSE, **run),
    )


def test_firing_of_a_dense_latent_says_nothing_its_value_is_labelled(tables):
    firing, value = tables
    assert list(firing.to_frame()["lbl_target"]) == ["firing", "firing"]
    assert list(value.to_frame()["lbl_target"]) == ["activation", "firing"]
    assert firing.labelability[0] < 0.2  # on 40% of tokens whatever the token
    # non-firing windows (value 0) are negatives too, and they fire at random: 1 - (their share) / 2 at best
    assert value.labelability[0] >= 0.6 and value.best_describer[0] == "token"
    listed = [int(t) for t in re.findall(r"'t(\d+)'", value.readable[0])]
    assert listed and set(listed) <= set(HIGH)


def test_activation_target_windows(data, tables):
    """Positives are the top quantiles' firings; negatives the bottom quantiles' firings plus non-firing windows."""
    acts, *_ = data
    _, value = tables
    tw = value.test_windows[0]
    act = acts[:, [0]].toarray().ravel()[tw.flat_idx]
    low_firing = ~tw.label & (act > 0)
    assert tw.label.any() and low_firing.any() and (~tw.label & (act == 0)).any()
    assert act[tw.label].min() > act[low_firing].max()  # the middle quantiles are left out
    n_deciles, extreme = CFG.n_deciles, CFG.dense_extreme
    assert set(tw.decile[tw.label]) == set(range(n_deciles - extreme, n_deciles))
    assert (tw.decile[~tw.label] == -1).all()


def test_non_dense_latents_keep_their_results(tables):
    firing, value = tables
    for name in firing.aurocs:
        np.testing.assert_array_equal(firing.aurocs[name][1], value.aurocs[name][1])
    assert firing.labelability_hi[1] == value.labelability_hi[1]
    np.testing.assert_array_equal(firing.test_windows[1].flat_idx, value.test_windows[1].flat_idx)


def test_dense_target_firing_turns_it_off(data, tables):
    acts, tokens, doc_ids, mask, vocab = data
    firing, _ = tables
    cfg = dataclasses.replace(CFG, dense_target="firing")
    got = labelability(acts, tokens, doc_ids, mask, np.arange(2), cfg, seed=1, vocab=vocab, dense=DENSE)
    assert list(got.to_frame()["lbl_target"]) == ["firing", "firing"]
    np.testing.assert_array_equal(got.labelability, firing.labelability)


def test_shuffled_control_of_the_activation_target_is_near_zero(data):
    acts, tokens, doc_ids, mask, vocab = data
    ctl = shuffled_control(acts, tokens, doc_ids, mask, np.array([0]), CFG, seed=1, vocab=vocab, dense=DENSE)
    assert ctl.to_frame()["lbl_target"][0] == "activation" and ctl.labelability[0] < 0.25


@pytest.mark.parametrize("bad", [{"dense_target": "value"}, {"dense_extreme": 0}])
def test_dense_settings_are_checked(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LBLConfig(**bad)


def test_xenofeat_score_labels_dense_latents_by_activation(scored_run):  # noqa: F811
    """Through `xenofeat score`: C1's `dense` column decides the target; latents LBL did not score say "none"."""
    from features.store import FeatureStore

    with FeatureStore.open(scored_run.run / "features") as store:
        t = store.table
    ran = t["best_describer"] != "none"
    assert set(t["lbl_target"]) <= {"firing", "activation", "none"}
    assert (t.loc[t["dense"] & ran, "lbl_target"] == "activation").all() and (t["dense"] & ran).any()
    assert (t.loc[~t["dense"] & ran, "lbl_target"] == "firing").all()
    assert (t.loc[t["readable"].str.startswith("not scored"), "lbl_target"] == "none").all()
