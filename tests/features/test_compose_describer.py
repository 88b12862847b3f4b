"""The composition describer: one sparse rule over the window features of every describer that offers them. A latent
that fires on `(` only within 3 tokens of its document's start is expressed by compose (the rule's `cur='('` with a
toy describer's "document position <= 3") and by neither the token describer, the rule, nor the toy describer alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from features.columns import Column
from features.labelability import (
    Description,
    LatentSample,
    LBLConfig,
    PassData,
    auroc_column,
    get_describer,
    labelability,
    register_describer,
    unregister_describer,
)
from features.labelability.compose import composed_features, feature_providers
from tests.helpers.describers import only_describers

torch.set_num_threads(1)

N_SEQ, L, V = 200, 48, 60
PAREN = 0  # the token `(`: a third of all tokens, so "the centre is `(`" alone is a weak description
START = 3


def doc_position(doc: np.ndarray) -> np.ndarray:
    """(T,) position of each flat position inside its document (documents are contiguous runs of `doc`)."""
    first = np.r_[0, np.flatnonzero(np.diff(doc)) + 1]
    run = np.repeat(first, np.diff(np.r_[first, len(doc)]))
    return np.arange(len(doc)) - run


class StartDescriber:
    """Toy describer with window features: whether the centre is within `START` tokens of its document's start
    (documents are packed across sequences, so the window's tokens do not show where a document begins)."""

    name = "start"
    tie_order = 4
    summary = "P(fire | centre within 3 tokens of its document's start)"
    cheap = False

    def prepare(self, data: PassData) -> np.ndarray:
        return doc_position(data.index.doc) <= START

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        near, tr, y = state[sample.centre], sample.train, sample.label
        p = np.array([y[tr & (near == v)].mean() if (tr & (near == v)).any() else 0.0 for v in (False, True)])
        return Description(test_scores=p[near[~tr].astype(int)], readable=f"near the start: {p[1]:.2f}")

    def window_features(
        self,
        sample: LatentSample,
        data: PassData,
        state: Any,  # noqa: ANN401
    ) -> tuple[sp.csr_matrix, list[str]]:
        near = state[sample.centre].astype(np.float64)
        return sp.csr_matrix(near[:, None]), [f"document position <= {START}"]

    def columns(self) -> list[Column]:
        return [auroc_column(self)]


def planted():
    """Uniform tokens with `(` a third of the time; documents of 6-16 tokens packed across sequences; position 0
    of each sequence masked (a CLS). Latent 0 fires on `(` within `START` tokens of its document's start, latent 1
    on every `(` (a plain token latent)."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, V, size=(N_SEQ, L))
    tokens[rng.random((N_SEQ, L)) < 1 / 3] = PAREN
    lengths = rng.integers(6, 17, size=N_SEQ * L)
    doc = np.repeat(np.arange(len(lengths)), lengths)[: N_SEQ * L]
    mask = np.zeros((N_SEQ, L), bool)
    mask[:, 0] = True
    near = (doc_position(doc) <= START).reshape(N_SEQ, L)
    fires = np.stack([(tokens == PAREN) & near, tokens == PAREN], -1) & ~mask[..., None]
    values = rng.uniform(0.5, 5.0, size=fires.shape) * fires
    vocab = ["("] + [f"w{i}" for i in range(1, V)]
    return sp.csc_matrix(values.reshape(N_SEQ * L, 2)), tokens, doc.reshape(N_SEQ, L), mask, vocab


CFG = LBLConfig(max_positives=200, bootstrap=20, prune=False)


@pytest.fixture(scope="module")
def data():
    return planted()


ONLY = ("token", "rule", "compose")
"""The describers these tests run (with the toy one): other built-in describers with window features (position,
properties, ...) would compose this latent their own way, and have their own tests."""


@pytest.fixture
def start():
    d = StartDescriber()
    with only_describers(ONLY):
        register_describer(d)
        try:
            yield d
        finally:
            unregister_describer(d.name)


def test_compose_expresses_a_token_near_the_start(data, start):
    acts, tokens, doc_ids, mask, vocab = data
    t = labelability(acts, tokens, doc_ids, mask, np.array([0, 1]), CFG, seed=0, vocab=vocab, progress=False)
    a = {name: v[0] for name, v in t.aurocs.items()}
    assert a["compose"] >= 0.97
    assert set(a) == {"token", "rule", "start", "compose"}
    assert max(a["token"], a["rule"], a["start"]) <= a["compose"] - 0.1
    assert t.best_describer[0] == "compose"
    assert "rule: cur='('" in t.readable[0] and "start: document position <= 3" in t.readable[0]
    # a plain token latent stays the token describer's (compose ties at best; the simpler description wins)
    assert t.best_describer[1] == "token" and t.aurocs["compose"][1] <= t.aurocs["token"][1]


def test_compose_without_extra_providers_is_the_rule(data):
    """With only the rule's features, compose fits the rule's own model: same scores, same AUROC."""
    acts, tokens, doc_ids, mask, vocab = data
    with only_describers(ONLY):
        assert [d.name for d in feature_providers("compose")] == ["rule"]
        t = labelability(acts, tokens, doc_ids, mask, np.array([0]), CFG, seed=0, vocab=vocab, progress=False)
    assert t.aurocs["compose"][0] == t.aurocs["rule"][0]


def test_window_features_are_fit_on_train_windows_only(data, start):
    """A key seen only in test windows is no column: the rule's features come from the train windows."""
    acts, tokens, doc_ids, mask, vocab = data
    from features.labelability.windows import build_index, token_tables, window_matrix

    index = build_index(tokens, doc_ids, mask, V, 0, 0.5)
    pd_ = PassData(index, token_tables(acts.tocsc(), index.tokens, ~index.is_test, V), vocab, CFG)
    centre = index.valid_idx[:40]
    win = window_matrix(centre, index.tokens, index.pos, CFG.window)
    train = np.zeros(40, bool)
    train[:20] = True
    sample = LatentSample(0, centre, win, np.arange(40) % 2 == 0, train, np.zeros(V, np.int64), False)
    state = start.prepare(pd_)
    x, names = composed_features((get_describer("rule"), start), {"rule": None, "start": state}, sample, pd_)
    assert x.shape == (40, len(names)) and names[-1] == "start: document position <= 3"
    seen = {f"rule: cur={vocab[t]!r}" for t in win[train, -1]}
    assert {n for n in names if n.startswith("rule: cur=")} == seen
    np.testing.assert_array_equal(x[:, -1].toarray().ravel(), doc_position(index.doc)[centre] <= START)


def test_a_provider_returning_the_wrong_shape_is_named(data, start):
    acts, tokens, doc_ids, mask, vocab = data
    start.window_features = lambda sample, d, state: (sp.csr_matrix((3, 1)), ["x"])  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="describer start: window_features returned"):
        labelability(acts, tokens, doc_ids, mask, np.array([0]), CFG, seed=0, vocab=vocab, progress=False)
