"""LBL-v2's position, properties and document describers on planted data whose behaviour is known.

A synthetic corpus (documents spanning sequences, a [CLS] at position 0, sentence ends, rare capitalised names,
rare lower-case words, topic documents) carries five latents: one fires at sequence positions 1-3 (0 is the masked [CLS]), one on
capitalised tokens (thousands of rare names, so most test names were never seen in train), one on every token of
the topic documents, one at random, one on a hidden per-document state. Each new describer labels its latent
(LBL >= 0.6 held out) and no other describer beats it there; on the random and hidden latents its AUROC is about
0.5, and so it is with shuffled labels. The LBL pass runs through `run_lbl` (registry, columns, the process fan-out)
and through `labelability` with pruning (the position describer is cheap).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from features.labelability import (
    LatentSample,
    LBLConfig,
    PassData,
    describer_names,
    get_describer,
    labelability,
    lbl_columns,
    run_lbl,
    shuffled_control,
)
from features.labelability.document import document_segments, rocchio_scores, rocchio_weights
from features.labelability.metrics import auroc
from features.labelability.position import bucket, lookup, lookup_auroc, position_indices, sentence_end_tokens
from features.labelability.properties import CLASSES, char_class, fit_logistic, vocab_scheme, word_start
from features.labelability.windows import build_index, sample_windows, token_tables, window_matrix
from tests.helpers.common import error_line, run_cli

torch.set_num_threads(1)

N_SEQ, L, DOC_LEN = 150, 64, 160
N_COMMON, N_TOPIC, N_NAMES = 40, 20, 3000  # names: capitalised; as many rare lower-case words
POSITION, CAPITAL, DOCUMENT, RANDOM, HIDDEN = range(5)
OWNER = {POSITION: "position", CAPITAL: "properties", DOCUMENT: "document"}
COPIES = 7  # 35 latents: enough for run_lbl to fan out over processes
CFG = LBLConfig(max_positives=200, bootstrap=50)


def vocabulary() -> list[str]:
    common = [f"w{i}" for i in range(N_COMMON)]
    topic = [f"topic{i}" for i in range(N_TOPIC)]
    names = [f"Name{i}" for i in range(N_NAMES)]
    rare = [f"rare{i}" for i in range(N_NAMES)]
    return ["[CLS]", ".", ","] + common + topic + names + rare


def planted() -> tuple[sp.csc_matrix, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(11)
    vocab = vocabulary()
    common0, topic0, names0 = 3, 3 + N_COMMON, 3 + N_COMMON + N_TOPIC
    n_flat = N_SEQ * L
    doc_ids = (np.arange(n_flat) // DOC_LEN).reshape(N_SEQ, L).astype(np.int32)  # documents span sequences
    n_docs = int(doc_ids.max()) + 1
    topic_doc = rng.random(n_docs) < 0.3
    hidden_doc = rng.random(n_docs) < 0.5
    zipf = 1.0 / np.arange(1, N_COMMON + 1)
    tokens = common0 + rng.choice(N_COMMON, size=(N_SEQ, L), p=zipf / zipf.sum())
    u = rng.random((N_SEQ, L))
    # as many rare lower-case words as rare names: a token unseen in train is no more likely a name
    tokens = np.where(u < 0.16, names0 + rng.integers(0, 2 * N_NAMES, (N_SEQ, L)), tokens)
    tokens = np.where((u >= 0.16) & (u < 0.21), 1, tokens)  # "." ends a sentence
    topical = topic_doc[doc_ids] & (u >= 0.21) & (u < 0.25)
    tokens = np.where(topical, topic0 + rng.integers(0, N_TOPIC, (N_SEQ, L)), tokens)
    mask = np.zeros((N_SEQ, L), bool)
    mask[:, 0] = True
    tokens[:, 0] = 0
    pos = np.broadcast_to(np.arange(L), (N_SEQ, L))
    fires = np.stack(
        [
            (pos <= 3) & (rng.random((N_SEQ, L)) < 0.95),
            (tokens >= names0) & (tokens < names0 + N_NAMES),
            topic_doc[doc_ids],
            rng.random((N_SEQ, L)) < 0.1,
            hidden_doc[doc_ids] & (rng.random((N_SEQ, L)) < 0.3),
        ],
        axis=-1,
    )
    fires &= ~mask[..., None]
    values = rng.uniform(0.5, 5.0, size=fires.shape) * fires
    return sp.csc_matrix(values.reshape(n_flat, -1)), tokens.astype(np.int32), doc_ids, mask, vocab


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def fan(data):
    """All six describers, no pruning (so every one competes), over 35 latents in two forked workers."""
    acts, tokens, doc_ids, mask, vocab = data
    many = sp.csc_matrix(sp.hstack([acts] * COPIES))
    cfg = dataclasses.replace(CFG, prune=False)
    return run_lbl(
        many, tokens, doc_ids, mask, np.arange(5 * COPIES), cfg, 2, vocab, workers=2, progress=False
    )


def test_the_new_describers_are_registered_with_their_columns():
    assert {"position", "properties", "document"} <= set(describer_names())
    cols = {c.name: c for c in lbl_columns()}
    for name in ("position", "properties", "document"):
        assert cols[f"auroc_{name}"].owner == f"describer:{name}"
    assert get_describer("position").cheap and not get_describer("document").cheap


@pytest.mark.parametrize("latent", [POSITION, CAPITAL, DOCUMENT])
def test_each_describer_labels_its_latent_and_no_other_beats_it(fan, latent):
    owner = OWNER[latent]
    for j in range(latent, 5 * COPIES, 5):  # every copy (each draws its own windows)
        # compose fits one rule over every describer's features, the owner's included: it may tie or edge past
        # the owner by noise, and the label it gives is then the owner's feature
        assert fan.best_describer[j] in (owner, "compose"), (j, {n: a[j] for n, a in fan.aurocs.items()})
        assert fan.labelability[j] >= 0.6
        assert fan.labelability_hi[j] >= fan.labelability[j]
        others = [a[j] for n, a in fan.aurocs.items() if n not in (owner, "compose")]
        assert max(others) < fan.aurocs[owner][j]
    frame = fan.to_frame()
    readable = frame.loc[latent, "readable"]
    expected = {POSITION: "(seq_pos): 1: 1.00", CAPITAL: "cur is capitalised", DOCUMENT: "'topic"}
    if fan.best_describer[latent] == "compose":  # the rule's leading term is then one of the owner's features
        expected = {
            POSITION: "position: seq_pos",
            CAPITAL: "properties: cur is capitalised",
            DOCUMENT: "document:",
        }
    assert expected[latent] in readable, readable


@pytest.mark.parametrize("latent", [RANDOM, HIDDEN])
def test_new_describers_cannot_see_an_unrelated_latent(fan, latent):
    for name in ("position", "properties", "document"):
        got = fan.aurocs[name][latent::5]  # 7 copies, ~100 test positives each: sd of one AUROC ~0.04
        assert abs(got.mean() - 0.5) < 0.05 and np.all(np.abs(got - 0.5) < 0.15), (name, got)
    assert np.all(fan.labelability[latent::5] < 0.3)


def test_shuffled_labels_give_nothing(data):
    acts, tokens, doc_ids, mask, vocab = data
    ctrl = shuffled_control(acts, tokens, doc_ids, mask, np.arange(5), CFG, seed=2, vocab=vocab)
    for name in ("position", "properties", "document"):
        assert np.all(np.abs(ctrl.aurocs[name] - 0.5) < 0.1), (name, ctrl.aurocs[name])
    assert np.nanmean(ctrl.labelability) <= 0.1


def test_the_cheap_position_describer_prunes_the_costly_ones(data, fan):
    acts, tokens, doc_ids, mask, vocab = data
    one = labelability(acts, tokens, doc_ids, mask, np.array([POSITION, HIDDEN]), CFG, seed=2, vocab=vocab)
    assert one.best_describer[0] == "position" and one.labelability[0] >= 0.6
    for name in ("rule", "semantic", "properties", "document"):
        assert np.isnan(one.aurocs[name][0]) and not np.isnan(one.aurocs[name][1])
    # the fan-out gives what one process gives: the cheap describers are those of the same latent and seed
    for name in ("token", "position"):
        assert one.aurocs[name][0] == fan.aurocs[name][POSITION]


# ---- the pieces, by hand ----------------------------------------------------------------------------------------


def test_buckets_are_exact_then_log2_spaced():
    x = np.array([0, 3, 15, 16, 31, 32, 63, 64, 1000, -1])
    assert bucket(x, 16).tolist() == [0, 3, 15, 16, 16, 17, 17, 18, 21, -1]
    assert bucket(np.array([0, 1, 2, 3, 4, 7, 8]), 2).tolist() == [0, 1, 2, 2, 3, 3, 4]


def test_position_indices_by_hand():
    # two sequences of 6: [CLS] a . b | [CLS] c . ; a document (7) spans both sequences, then document 8 starts
    vocab = ["[CLS]", "a", ".", "b", "Ċ"]
    tokens = np.array([[0, 1, 2, 3, 1, 4], [0, 1, 3, 2, 1, 3]])
    doc_ids = np.array([[7, 7, 7, 7, 7, 7], [7, 7, 8, 8, 8, 8]])
    mask = tokens == 0
    mask[1, 5] = True  # a [SEP]: the sequence's text ends at position 4
    index = build_index(tokens, doc_ids, mask, len(vocab), seed=0)
    idx = position_indices(index, sentence_end_tokens(vocab))
    assert sentence_end_tokens(vocab).tolist() == [False, False, True, False, True]
    assert idx["seq_pos"].tolist() == [-1, 1, 2, 3, 4, 5, -1, 1, 2, 3, 4, -1]
    assert idx["doc_pos"].tolist() == [-1, 0, 1, 2, 3, 4, -1, 5, 0, 1, 2, -1]
    assert idx["to_end"].tolist() == [-1, 4, 3, 2, 1, 0, -1, 3, 2, 1, 0, -1]
    # a sentence starts at a document start and after '.' or a newline-like token ('Ċ')
    assert idx["since_boundary"].tolist() == [-1, 0, 1, 0, 1, 2, -1, 0, 0, 1, 0, -1]


def test_token_properties_of_common_vocabularies():
    assert vocab_scheme(["[CLS]", "the"] + [f"##x{i}" for i in range(20)]) == "wordpiece"
    assert vocab_scheme(["the"] + [f"Ġw{i}" for i in range(20)]) == "space-prefix"
    assert vocab_scheme([f"t{i}" for i in range(50)]) == "none"
    assert word_start(["the", "##ing"], "wordpiece").tolist() == [True, False]
    assert word_start(["Ġthe", "ing"], "space-prefix").tolist() == [True, False]
    assert word_start(["t1"], "none") is None
    got = [CLASSES[char_class(s)] for s in ("1999", ",", "USA", "Paris", "##ing", "Ġthe", "x2", "I")]
    assert got == ["number", "punctuation", "all caps", "capitalised", "lower case", "lower case", "lower case",
                   "capitalised"]  # fmt: skip


def test_lookup_auroc_from_counts_equals_the_auroc_of_its_scores():
    rng = np.random.default_rng(0)
    b = rng.integers(0, 9, 500)
    y = rng.random(500) < 0.2 + 0.06 * b
    p, fire, count = lookup(b, y, 12, 1.0)
    p[3] = p[4]  # a tie between buckets counts half, as in `auroc`
    assert np.isclose(lookup_auroc(p, fire, count), auroc(p[b], y)[0])


def test_the_properties_fit_is_sklearns_balanced_l2_logistic():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = (rng.random((400, 12)) < 0.3).astype(float)
    y = rng.random(400) < 1 / (1 + np.exp(-(3 * x[:, 0] - 2 * x[:, 1] - 1.5)))
    want = LogisticRegression(C=0.5, class_weight="balanced", tol=1e-10, max_iter=5000).fit(x, y)
    coef, intercept = fit_logistic(x, y, 0.5)
    np.testing.assert_allclose(coef, want.coef_.ravel(), atol=1e-4)
    assert abs(intercept - want.intercept_[0]) < 1e-4


def test_documents_are_contiguous_runs_of_one_id():
    assert document_segments(np.array([4, 4, 9, 9, 4, -1, -1])).tolist() == [0, 0, 1, 1, 2, -1, -1]


def _sample(data, latent: int) -> tuple[LatentSample, PassData]:
    """One latent's sampled windows and the pass data, as `run` builds them."""
    acts, tokens, doc_ids, mask, vocab = data
    index = build_index(tokens, doc_ids, mask, len(vocab), seed=2)
    col = sp.csc_matrix(acts[:, [latent]])
    pd_ = PassData(index, token_tables(col, index.tokens, ~index.is_test, len(vocab)), vocab, CFG)
    fire = np.flatnonzero(col.toarray().ravel())
    s = sample_windows(index, fire, col.data, np.array([3]), max_positives=200, random_neg_per_pos=1.0,
                       hard_neg_per_pos=1.0, width=16, n_deciles=10, rng=np.random.default_rng(0))  # fmt: skip
    win = window_matrix(s.centre, index.tokens, index.pos, 16)
    fire_tok = np.bincount(index.tokens[fire[~index.is_test[fire]]], minlength=len(vocab))
    return LatentSample(0, s.centre, win, s.label, ~s.is_test, fire_tok, False), pd_


@pytest.mark.parametrize("name", ["position", "properties", "document"])
def test_window_features_name_every_column_and_ignore_test_labels(data, name):
    sample, pdata = _sample(data, {"position": POSITION, "properties": CAPITAL, "document": DOCUMENT}[name])
    d = get_describer(name)
    state = d.prepare(pdata)
    x, names = d.window_features(sample, pdata, state)
    assert sp.issparse(x) and x.shape == (len(sample.centre), len(names)) and len(set(names)) == len(names)
    flipped = dataclasses.replace(sample, label=np.where(sample.train, sample.label, ~sample.label))
    x2, names2 = d.window_features(flipped, pdata, state)
    assert names2 == names and (x != x2).nnz == 0
    # the planted behaviour is one readable column
    y = sample.label
    want = {"position": "seq_pos <= 3", "properties": "cur is capitalised", "document": "doc like {"}[name]
    col = next(i for i, n in enumerate(names) if n.startswith(want))
    hit = x[:, col].toarray().ravel() > 0
    assert (hit == y).mean() > 0.9, (names[col], (hit == y).mean())


def test_document_train_scores_leave_their_own_document_out(data):
    sample, pdata = _sample(data, DOCUMENT)
    state = get_describer("document").prepare(pdata)
    doc = state.segment[sample.centre]
    x, tr, y = state.rows[doc], sample.train, sample.label
    got = rocchio_scores(x, doc, tr, y)
    full = np.asarray(x @ rocchio_weights(x, tr, y)).ravel()
    np.testing.assert_allclose(got[~tr], full[~tr])
    for i in np.flatnonzero(tr)[:30]:  # by brute force: refit without the window's document
        w = rocchio_weights(x, tr & (doc != doc[i]), y)
        assert np.isclose((x[i] @ w).item(), got[i])


def test_a_describer_setting_out_of_range_is_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[labelability]\nposition_exact = 0\n")
    line = error_line(run_cli("definition", "show", "--definition", str(path)))
    assert f"{path}: [labelability] position_exact = 0 is out of range [1, 4096]" in line
