"""The synthetic ground-truth generator: the cache it writes, the truth beside it, and the planted properties."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from activations.cache import ActivationCache
from activations.errors import UserError
from activations.synth import (
    ANCHORED,
    CIRCLE,
    DENSE_PAIR,
    DOCUMENT,
    HASH,
    HIDDEN,
    HOOK,
    POSITION,
    RULE,
    TOKEN,
    SynthConfig,
    load_truth,
    truth_paths,
)
from activations.synth_write import generate_synthetic
from features.cli import main as xenofeat

SMALL = SynthConfig(n_seq=300, seed=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "small.h5"
    generate_synthetic(path, SMALL)
    return path


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache at the default size (about 256k tokens): what the support and recovery claims are about."""
    path = tmp_path_factory.mktemp("synth") / "default.h5"
    generate_synthetic(path, SynthConfig())
    return path


def test_cache_opens_with_requested_shape(small: Path) -> None:
    cache = ActivationCache.open(small)
    cfg = SMALL
    assert cache.meta.source == "synthetic" and cache.meta.complete
    assert cache.hooks == (HOOK,)
    assert cache.tokens.shape == (cfg.n_seq, cfg.context_size)
    assert cache.activations(HOOK).shape == (cfg.n_seq, cfg.context_size, cfg.d_model)
    assert len(cache.vocab) == cfg.vocab_size and cache.vocab[17] == "tok17"
    assert cache.meta.settings == json.loads(json.dumps(cfg.to_dict()))
    # [CLS] at position 0 of every sequence, padding at the end of the last one: both masked, nothing else is
    assert (cache.tokens[:, 0] == 0).all() and cache.mask[:, 0].all()
    pad = cache.tokens == 1
    assert pad[-1, -1] and pad.sum() == pad[-1].sum() > 0
    assert (cache.mask == (pad | (cache.tokens == 0))).all()
    assert (cache.doc_ids[pad] == -1).all() and (cache.doc_ids[~pad] >= 0).all()
    truth = load_truth(small)
    a = truth.activations()
    assert a.shape == (cfg.n_seq * cfg.context_size, cfg.n_features)
    assert truth.directions.shape == (cfg.n_features, cfg.d_model) and truth.directions.dtype == np.float32
    assert len(truth.kinds) == len(truth.names) == len(set(truth.names)) == cfg.n_features
    assert np.diff(a.indptr)[cache.mask.reshape(-1)].sum() == 0  # masked rows carry no planted feature
    assert truth.planted_l0 == pytest.approx(a.nnz / cache.n_tokens)
    assert cfg.n_features > 2 * cfg.d_model  # superposition


def _rows(cache: ActivationCache) -> np.ndarray:
    return np.asarray(cache.activations(HOOK)[:], dtype=np.float64).reshape(-1, cache.d_model)


def test_activations_are_truth_times_directions_plus_noise(small: Path, tmp_path: Path) -> None:
    # without noise, in float32, the stored rows are exactly the truth times the directions
    exact = tmp_path / "exact.h5"
    truth = generate_synthetic(exact, SynthConfig(n_seq=40, noise_std=0.0, dtype="float32"))
    cache = ActivationCache.open(exact)
    x = _rows(cache)
    keep = ~cache.mask.reshape(-1)
    a = truth.activations()
    rows = np.flatnonzero(keep)[::7]
    expected = np.zeros((len(rows), cache.d_model))
    for i, r in enumerate(rows):  # by hand, column by column
        lo, hi = a.indptr[r], a.indptr[r + 1]
        for j, v in zip(a.indices[lo:hi], a.data[lo:hi], strict=True):
            expected[i] += v * truth.directions[j].astype(np.float64)
    np.testing.assert_allclose(x[rows], expected, atol=1e-5)
    # with noise (float16 storage), the residual is isotropic Gaussian noise of the configured size
    truth = load_truth(small)
    cache = ActivationCache.open(small)
    keep = ~cache.mask.reshape(-1)
    resid = _rows(cache)[keep] - (truth.activations()[keep] @ truth.directions.astype(np.float64))
    per_dim = resid.std(axis=0)
    assert np.abs(resid.mean(axis=0)).max() < 0.01
    np.testing.assert_allclose(per_dim, SMALL.noise_std, rtol=0.1)
    # the noise does not lie along the planted directions more than along any other
    along = resid @ truth.directions.T.astype(np.float64)
    np.testing.assert_allclose(along.std(axis=0), SMALL.noise_std, rtol=0.15)


def test_token_features_fire_exactly_on_their_token_sets(small: Path) -> None:
    truth = load_truth(small)
    cache = ActivationCache.open(small)
    tokens = cache.tokens.reshape(-1)
    a = truth.activations().tocsc()
    seen: set[int] = set()
    for j in truth.indices_of(TOKEN):
        toks = truth.features[j]["token_set"]
        assert 1 <= len(toks) <= SMALL.token_set_max and not seen & set(toks)
        seen |= set(toks)
        fires = np.zeros(len(tokens), dtype=bool)
        fires[a[:, j].indices] = True
        np.testing.assert_array_equal(fires, np.isin(tokens, toks))
        assert (a[:, j].data > 0).all()
    # the circle: values r * (cos t, sin t), with the angle t fixed by the token
    cos_j, sin_j = truth.indices_of(CIRCLE)
    ring = truth.features[cos_j]
    on = np.flatnonzero(np.isin(tokens, ring["token_set"]))
    c, s = a[on, cos_j].toarray().ravel(), a[on, sin_j].toarray().ravel()
    angle = dict(zip(ring["token_set"], ring["angles"], strict=True))
    want = np.array([angle[t] for t in tokens[on]])
    np.testing.assert_allclose(np.mod(np.arctan2(s, c), 2 * np.pi), np.mod(want, 2 * np.pi), atol=1e-5)
    assert abs(truth.directions[cos_j] @ truth.directions[sin_j]) < 1e-6
    # the dense pair: one direction, both signs, never both at once
    plus, minus = truth.indices_of(DENSE_PAIR)
    np.testing.assert_allclose(truth.directions[plus], -truth.directions[minus])
    both = a[:, plus].multiply(a[:, minus])
    assert both.nnz == 0
    assert min(truth.frequencies[plus], truth.frequencies[minus]) > 0.1


def test_position_document_anchored_and_rule_features(small: Path) -> None:
    truth = load_truth(small)
    cache = ActivationCache.open(small)
    tok = cache.tokens.reshape(-1)
    keep = ~cache.mask.reshape(-1)
    doc = cache.doc_ids.reshape(-1)
    pos = np.tile(np.arange(SMALL.context_size), SMALL.n_seq)
    a = truth.activations().tocsc()

    def fires(j: int) -> np.ndarray:
        out = np.zeros(len(tok), bool)
        out[a[:, j].indices] = True
        return out

    assert [truth.kinds.count(k) for k in (POSITION, DOCUMENT, ANCHORED, RULE)] == [1, 1, 1, 1]
    assert truth.kinds[-4:] == [POSITION, DOCUMENT, ANCHORED, RULE]  # the later kinds' columns come last
    (j,) = truth.indices_of(POSITION)
    lo, hi = truth.features[j]["positions"]
    np.testing.assert_array_equal(fires(j), keep & (pos >= lo) & (pos < hi))
    (j,) = truth.indices_of(DOCUMENT)
    topic = np.unique(doc[fires(j)])
    np.testing.assert_array_equal(fires(j), keep & np.isin(doc, topic))  # every token of its documents
    words = np.isin(tok, truth.features[j]["topic_words"])
    in_topic = np.isin(doc, topic) & keep
    assert words[in_topic].mean() > 0.5 * SMALL.document_shift  # topic words shift the topic documents ...
    assert words[keep & ~in_topic].mean() < 0.01  # ... and are rare elsewhere
    taken = {t for k in (TOKEN, CIRCLE) for i in truth.indices_of(k) for t in truth.features[i]["token_set"]}
    (j,) = truth.indices_of(ANCHORED)
    (x,) = truth.features[j]["token_set"]
    assert x not in taken and fires(j).sum() >= 100 and (tok[fires(j)] == x).all()
    assert abs(np.mean(tok[keep] == x) - SMALL.anchored_token_freq) < 0.01
    share = fires(j).sum() / (keep & (tok == x)).sum()
    assert 0.15 < share < 0.5  # the hidden state is on about anchored_on of the time
    (j,) = truth.indices_of(RULE)
    (x,) = truth.features[j]["token_set"]
    prev = np.r_[-1, tok[:-1]]
    same_doc = np.r_[False, doc[1:] == doc[:-1]] & np.r_[False, keep[:-1]]  # and the same sequence
    np.testing.assert_array_equal(
        fires(j), keep & (tok == x) & (prev == truth.features[j]["previous"]) & same_doc
    )
    assert {x, truth.features[j]["previous"]}.isdisjoint(taken) and 0.3 < fires(j).sum() / (
        keep & (tok == x)
    ).sum() < 0.5


def test_without_the_later_kinds_the_first_kinds_are_as_before(tmp_path: Path) -> None:
    """Position features change nothing else; document, anchored and rule features edit the stream, so only token
    sets, directions and scales of the first kinds stay (counts 0 give the generator's earlier caches)."""
    base = SynthConfig(n_seq=60, seed=5, n_position=0, n_document=0, n_anchored=0, n_rule=0)
    first = generate_synthetic(tmp_path / "first.h5", base)
    n = first.n_features
    calm = generate_synthetic(tmp_path / "calm.h5", dataclasses.replace(base, n_position=2))
    full = generate_synthetic(tmp_path / "full.h5", SynthConfig(n_seq=60, seed=5))
    assert (calm.activations()[:, :n] != first.activations()).nnz == 0
    with h5py.File(tmp_path / "first.h5") as f, h5py.File(tmp_path / "calm.h5") as g:
        np.testing.assert_array_equal(f["tokens"][:], g["tokens"][:])
    np.testing.assert_array_equal(full.directions[:n], first.directions)
    assert [f.get("token_set") for f in full.features[:n]] == [f.get("token_set") for f in first.features]


def _lookup_aurocs(path: Path, kinds: tuple[str, ...]) -> dict[str, list[float]]:
    """AUROC of P(fire | current token), fit on the even documents, scored on the odd ones."""
    truth = load_truth(path)
    cache = ActivationCache.open(path)
    keep = ~cache.mask.reshape(-1)
    tokens = cache.tokens.reshape(-1)[keep]
    docs = cache.doc_ids.reshape(-1)[keep]
    fires = (truth.activations()[keep] != 0).astype(np.float64).tocsc()
    train = docs % 2 == 0
    onehot = sp.csr_matrix(
        (np.ones(train.sum()), (np.arange(train.sum()), tokens[train])), (train.sum(), 1000)
    )
    counts = np.asarray((onehot.T @ fires[np.flatnonzero(train)]).todense())  # (vocab, F)
    n_tok = np.asarray(onehot.sum(axis=0)).ravel()[:, None]
    prior = fires[np.flatnonzero(train)].mean(axis=0).A  # (1, F)
    rate = (counts + prior) / (n_tok + 1)  # unseen tokens fall back on the overall rate
    test = np.flatnonzero(~train)
    fires_test = fires[test].tocsc()
    test_tokens = tokens[test]
    # AUROC is the same in expectation on all positives and a random sample of negatives; sampling keeps it fast
    sample = np.random.default_rng(0).choice(len(test), size=min(len(test), 20_000), replace=False)
    out: dict[str, list[float]] = {k: [] for k in kinds}
    for kind in kinds:
        for j in truth.indices_of(kind):
            pos = fires_test[:, j].indices
            neg = np.setdiff1d(sample, pos)
            y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
            out[kind].append(roc_auc_score(y, rate[test_tokens[np.r_[pos, neg]], j]))
    return out


def test_token_lookup_predicts_token_features_but_not_hash_or_hidden(default: Path) -> None:
    auc = _lookup_aurocs(default, (TOKEN, HASH, HIDDEN))
    assert min(auc[TOKEN]) > 0.99
    for kind in (HASH, HIDDEN):
        assert np.mean(auc[kind]) < 0.55, kind
        assert max(auc[kind]) < 0.6, (kind, max(auc[kind]))


def test_same_seed_same_files_other_seed_other_files(small: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.h5"
    other = tmp_path / "other.h5"
    generate_synthetic(again, SMALL)
    generate_synthetic(other, SynthConfig(n_seq=SMALL.n_seq, seed=SMALL.seed + 1))
    for name in ("tokens", "doc_ids", "positions", "mask", f"acts/{HOOK}"):
        with h5py.File(small) as f, h5py.File(again) as g, h5py.File(other) as h:
            np.testing.assert_array_equal(f[name][:], g[name][:])
            if name in ("tokens", f"acts/{HOOK}"):
                assert not np.array_equal(f[name][:], h[name][:])
    for a, b, c in zip(truth_paths(small), truth_paths(again), truth_paths(other), strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()


def test_support_at_default_size(default: Path) -> None:
    """Every planted feature fires on >= 200 tokens in >= 20 documents, and every non-token feature leaves >= 50
    positives in a held-out third of the documents (counted from the truth matrix and the cache's doc ids)."""
    truth = load_truth(default)
    cache = ActivationCache.open(default)
    assert 200_000 <= cache.n_tokens <= 300_000
    docs = cache.doc_ids.reshape(-1)
    a = truth.activations().tocsc()
    held_out = np.random.default_rng(0).random(docs.max() + 1) < 1 / 3
    for j in range(truth.n_features):
        rows = a[:, j].indices
        assert len(rows) >= 200, truth.names[j]
        assert len(np.unique(docs[rows])) >= 20, truth.names[j]
        if truth.kinds[j] != TOKEN:
            assert held_out[docs[rows]].sum() >= 50, truth.names[j]
    f = truth.frequencies
    assert (
        truth.kinds.count(HASH) == SynthConfig().n_hash
        and truth.kinds.count(HIDDEN) == SynthConfig().n_hidden
    )
    # Zipf-like: the firing frequencies of hash and hidden features spread over an order of magnitude
    spread = f[truth.indices_of(HASH)]
    assert spread.max() / spread.min() > 5


def test_cli_writes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.h5"
    assert (
        xenofeat(["cache", "synth", "--out", str(out), "--tokens", "5000", "--seed", "4", "--n-hash", "10"])
        == 0
    )
    text = capsys.readouterr().out
    truth = load_truth(out)
    assert str(out) in text and str(truth_paths(out)[0]) in text
    assert "hash 10" in text and f"{truth.planted_l0:.3f}" in text
    assert truth.config.seed == 4 and truth.config.n_seq * truth.config.context_size >= 5000


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--freq-min", "0.5", "--freq-max", "0.1"], "--freq-min"),
        (["--tokens", "0"], "--tokens"),
        (["--context-size", "2"], "--context-size"),
        (["--d-model", "0"], "--d-model"),
        (["--n-token", "400"], "--vocab-size"),
    ],
)
def test_bad_options_are_user_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    out = tmp_path / "bad.h5"
    assert xenofeat(["cache", "synth", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not out.exists()


def test_existing_output_refused_without_overwrite(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = small.read_bytes()
    assert xenofeat(["cache", "synth", "--out", str(small), "--tokens", "1000"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert small.read_bytes() == before
    with pytest.raises(UserError, match="truth"):
        load_truth(small.with_name("nothing.h5"))
    with pytest.raises(ValueError, match="noise_std"):
        SynthConfig(noise_std=-1.0)
