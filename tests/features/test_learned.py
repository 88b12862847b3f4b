"""C7 learned: the streamed ridge R² against a direct fit, the synthetic random network, C7 on the scored synthetic
run (token features carried by the random network, hidden-state and hash features learned), C7 end to end on a tiny
real MiniLM cache with its random-init copy, and the bad-input lines (a gate on C7 without a model, a model whose
random-init copy cannot be loaded)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from activations.cache import ActivationCache
from activations.synth_random import random_network
from features.criteria.learned import LearnedConfig
from features.criteria.learned_fit import RidgeSums, learned_r2, ridge_r2, signed_targets
from sae_training.config import TrainConfig
from tests.helpers.common import error_line, run_cli

torch.set_num_threads(1)

HOOK = "blocks.3.hook_resid_post"
RIDGE = 0.1
TINY = TrainConfig(seeds=(0, 1), width=48, k=4, tokens=20_000, batch_size=256, lr=3e-3, downstream_seqs=0,
                   checkpoint_every=0)  # fmt: skip


def _direct_r2(
    z: np.ndarray, y: np.ndarray, ids: np.ndarray, test: np.ndarray, ridge: float, lookup: bool
) -> np.ndarray:
    """The same read-out, done the plain way: per-token means on train, a centred ridge of the rest, R² on test."""
    look = np.zeros((ids.max() + 1, y.shape[1]))
    if lookup:
        for v in np.unique(ids[~test]):
            look[v] = y[~test & (ids == v)].mean(0)
    r = y - look[ids]
    zt, rt = z[~test], r[~test]
    mu, rbar = zt.mean(0), rt.mean(0)
    g = (zt - mu).T @ (zt - mu)
    w = np.linalg.solve(g + ridge * np.diag(np.diag(g)), (zt - mu).T @ (rt - rbar))
    pred = look[ids[test]] + rbar + (z[test] - mu) @ w
    resid = ((y[test] - pred) ** 2).sum(0)
    return 1 - resid / ((y[test] - y[test].mean(0)) ** 2).sum(0)


def _sums(z: np.ndarray, y: np.ndarray, ids: np.ndarray, test: np.ndarray) -> dict[bool, RidgeSums]:
    """Both sides' sums, streamed in uneven chunks."""
    sums = {
        False: RidgeSums(z.shape[1], y.shape[1], ids.max() + 1),
        True: RidgeSums(z.shape[1], y.shape[1], ids.max() + 1),
    }
    for a in range(0, len(z), 700):
        sl = slice(a, a + 700)
        for side in (False, True):
            sel = test[sl] == side
            sums[side].update(z[sl][sel], sp.csr_matrix(y[sl][sel]), ids[sl][sel])
    return sums


def test_streamed_read_out_equals_a_direct_fit():
    rng = np.random.default_rng(0)
    T, d, V = 3000, 6, 40
    z = rng.standard_normal((T, d)) * rng.uniform(0.5, 20, d) + rng.normal(
        0, 5, d
    )  # scales and offsets differ
    ids = rng.integers(0, V, T)
    ids[ids == 7] = 8  # an id that never occurs
    ids[:2] = 39  # an id seen only in the first rows
    fires = (z[:, 3] - z[:, 3].mean()) > 0.5 * z[:, 3].std()  # about 30% of tokens, decided by z
    y = np.stack([
        np.where(fires, 1.0 + z[:, 0] * 0.1 + 0.05 * rng.standard_normal(T), 0.0),  # predictable from z
        np.where(rng.random(T) < 0.2, rng.random(T), 0.0),  # independent of everything
        2.0 * z[:, 1] - z[:, 2] + 0.1 * rng.standard_normal(T),  # dense, linear in z
        np.where(np.isin(ids, [3, 5]), 1.0 + 0.1 * rng.random(T), 0.0),  # a token feature
    ], axis=1)  # fmt: skip
    y[:, :2] = np.clip(y[:, :2], 0, None)
    test = rng.random(T) < 0.3
    test[:2] = True  # id 39 is seen in test only
    sums = _sums(z, y, ids, test)
    for ridge in (0.0, 0.05):
        for lookup in (False, True):
            got = ridge_r2(sums[False], sums[True], ridge, lookup=lookup)
            np.testing.assert_allclose(got, _direct_r2(z, y, ids, test, ridge, lookup), rtol=1e-6, atol=1e-8)
    r2 = ridge_r2(sums[False], sums[True], 0.0, lookup=True)
    assert r2[0] > 0.4 and abs(r2[1]) < 0.1 and r2[2] > 0.95 and r2[3] > 0.9
    assert (
        ridge_r2(sums[False], sums[True], 0.0, lookup=False)[3] < 0.2
    )  # 6 dims cannot single out 2 of 40 ids


def test_r2_is_nan_without_enough_held_out_firings():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((200, 3))
    ids = rng.integers(0, 5, 200)
    y = np.zeros((200, 2))
    y[:100, 0] = 1.0  # fires only in the train half
    y[::7, 1] = 1.0
    test = np.arange(200) >= 100
    sums = _sums(z, y, ids, test)
    r2 = ridge_r2(sums[False], sums[True], 1e-3, min_test_fires=5)
    assert np.isnan(r2[0]) and np.isfinite(r2[1])
    assert np.isnan(ridge_r2(sums[False], sums[True], 1e-3, min_test_fires=100)[1])


def test_an_antipodal_pair_is_judged_as_one_signed_target():
    m = signed_targets(4, np.array([2, -1, 0, -1])).toarray()
    a = np.array([[1.0, 5.0, 0.0, 7.0], [0.0, 5.0, 3.0, 7.0]])
    np.testing.assert_array_equal(a @ m, [[1.0, 5.0, -1.0, 7.0], [-3.0, 5.0, 3.0, 7.0]])


def test_the_synthetic_random_network_is_a_fixed_function_of_the_tokens():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, (6, 10))
    h = random_network(tokens, 50, 16, seed=0)
    assert h.shape == (6, 10, 16) and h.dtype == np.float32
    np.testing.assert_array_equal(
        random_network(tokens[2:4], 50, 16, seed=0), h[2:4]
    )  # chunks see one function
    assert not np.allclose(random_network(tokens, 50, 16, seed=1), h)
    # position 0 sees no previous token; a token's vector changes with the tokens before it, not after it
    other = tokens.copy()
    other[:, 5] = (other[:, 5] + 1) % 50
    h2 = random_network(other, 50, 16, seed=0)
    np.testing.assert_array_equal(h2[:, :5], h[:, :5])
    assert not np.allclose(h2[:, 6:8], h[:, 6:8]) and np.allclose(h2[:, 8:], h[:, 8:])
    with pytest.raises(ValueError, match="token ids"):
        random_network(tokens, 40, 16, seed=0)


def _match(run: Path, truth) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """(planted kind of each latent's best-matching direction, that cosine) for the run's reference SAE."""
    from sae_lens import SAE

    dec = SAE.load_from_disk(str(run / "seed-0")).W_dec.detach().numpy()
    cos = (dec / np.linalg.norm(dec, axis=1, keepdims=True)) @ truth.directions.T
    return np.array(truth.kinds)[cos.argmax(1)], cos.max(1)


def test_c7_on_the_synthetic_run_separates_token_features_from_hidden_ones(scored_run):  # noqa: F811
    store = scored_run.run / "features"
    table = pd.read_parquet(store / "features.parquet")
    summary = json.loads((store / "summary.json").read_text())
    learned = summary["learned"]
    assert (
        learned["applicable"]
        and learned["gates"]
        and learned["network"].startswith("synthetic random network")
    )
    kinds, cos = _match(scored_run.run, scored_run.truth)
    found = (cos > 0.9) & table["support_pass"].to_numpy()  # (a latent with a few dozen firings gets no R²)
    max_r2 = LearnedConfig().max_r2
    r2 = table["learned_r2"].to_numpy()
    token = found & (kinds == "token")
    hidden = found & np.isin(kinds, ["hidden", "hash"])
    assert token.sum() >= 10 and hidden.sum() >= 20
    assert (r2[token] >= max_r2).all(), r2[token]  # the random network carries them: not learned
    assert (r2[hidden] < max_r2).all() and np.nanmax(r2[hidden]) < 0.1, r2[hidden]  # learned
    assert not table.loc[token, "learned"].any() and table.loc[hidden, "learned"].all()
    np.testing.assert_array_equal(table["learned_pass"], table["learned"])  # it gates here
    assert not (table["well_defined"] & ~table["learned"]).any()


@pytest.fixture(scope="module")
def real_run(small_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny TopK ensemble on the small MiniLM cache's block 3, scored with C7 (the random-init copy)."""
    from features.score import ScoreJob, score
    from sae_training.trainer import train

    root = tmp_path_factory.mktemp("c7real")
    run = train(TINY, small_cache, root / "run", hook=HOOK, progress=False)
    # a definition's [learned] settings reach C7 (a firmer ridge than the default: ~600 train tokens, 384 inputs)
    (root / "defn.toml").write_text(f"[learned]\nridge = {RIDGE}\n")
    score(ScoreJob(run=run, definition=root / "defn.toml", progress=False, control_latents=0))
    return run


def test_c7_runs_end_to_end_on_a_real_cache_with_the_random_init_copy(
    real_run: Path, small_cache: Path, tmp_path
):
    """C7's column equals the R² computed from a cache of the random-init model itself (built independently by
    `xenofeat cache` on the same corpus), so C7 reads the same tokens through the same random copy."""
    from activations.build import CacheJob, build_cache
    from features.store import FeatureStore

    store = FeatureStore.open(real_run)
    summary = store.summary["learned"]
    assert summary["applicable"] and summary["gates"]
    assert summary["network"] == "random-init:sentence-transformers/all-MiniLM-L6-v2"
    table = store.table
    assert {"learned_r2", "learned", "learned_pass"} <= set(table.columns)
    assert np.isfinite(table["learned_r2"]).sum() >= 5

    with ActivationCache.open(small_cache) as real:
        corpus = real.meta.corpus
        tokens, doc_ids, mask = real.tokens[:], real.doc_ids[:], real.mask[:]
    rnd = build_cache(CacheJob(out=tmp_path / "rnd.h5", corpus=corpus, model="random-init:default", hooks=(HOOK,),
                               context_size=32, batch_size=4, dtype="float32"))  # fmt: skip
    with ActivationCache.open(rnd) as c:
        np.testing.assert_array_equal(c.tokens[:], tokens)
        cached = c.activations(HOOK)[:]
    rows = {}

    def from_cache(tok: np.ndarray, attention: np.ndarray) -> np.ndarray:
        start = rows.setdefault("next", 0)
        rows["next"] = start + len(tok)
        return cached[start : start + len(tok)]

    from sae_lens import SAE

    from features.streaming import stream

    sae = SAE.load_from_disk(str(real_run / "seed-0"))
    with ActivationCache.open(small_cache) as real:
        res = stream(real, HOOK, sae, max_tokens=None, n_null=4, null_seed=0, progress=False)
    partner = table["antipodal_partner"].to_numpy()
    expect = learned_r2(from_cache, tokens, doc_ids, mask, res.acts_csc, LearnedConfig(ridge=RIDGE), partner)
    np.testing.assert_allclose(table["learned_r2"].to_numpy(), expect, rtol=1e-4, atol=1e-4, equal_nan=True)


def _definition(tmp_path: Path, gate: str) -> Path:
    path = tmp_path / f"gate-{gate}.toml"
    path.write_text(f'[learned]\ngate = "{gate}"\n')
    return path


@pytest.fixture(scope="module")
def imported_run(small_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ensemble on a cache imported from arrays (no model behind it)."""
    from activations.importer import import_cache
    from sae_training.trainer import train

    root = tmp_path_factory.mktemp("c7import")
    with ActivationCache.open(small_cache) as c:
        np.save(root / "tokens.npy", c.tokens[:])
        np.save(root / "acts.npy", c.activations(HOOK)[:])
        np.save(root / "docs.npy", c.doc_ids[:])
        np.save(root / "mask.npy", c.mask[:])
    cache = import_cache(tokens=root / "tokens.npy", acts=root / "acts.npy", doc_ids=root / "docs.npy",
                         mask=root / "mask.npy", hook=HOOK, out=root / "imported.h5", dtype="float32")  # fmt: skip
    return train(TINY, cache, root / "run", progress=False)


def test_a_gate_on_c7_without_a_model_is_one_line_and_writes_nothing(imported_run: Path, tmp_path: Path):
    res = run_cli(
        "score",
        str(imported_run),
        "--definition",
        str(_definition(tmp_path, "always")),
        "--quiet",
        "--workers",
        "1",
    )
    line = error_line(res)
    assert "C7 cannot be computed" in line and "not made from a model (source: import)" in line
    assert 'gate = "never"' in line and "tag" in line
    assert not (imported_run / "features").exists()


def test_c7_is_not_applicable_without_a_model_and_the_summary_says_so(imported_run: Path, tmp_path: Path):
    res = run_cli("score", str(imported_run), "--quiet", "--workers", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (
        "learned (C7)        not applicable: the cache was not made from a model (source: import)"
        in res.stdout
    )
    summary = json.loads((imported_run / "features" / "summary.json").read_text())
    assert summary["learned"]["applicable"] is False and summary["learned"]["gates"] is False
    table = pd.read_parquet(imported_run / "features" / "features.parquet")
    assert table["learned_r2"].isna().all() and table["learned_pass"].all() and not table["learned"].any()
    shutil.rmtree(imported_run / "features")


def test_a_model_whose_random_init_copy_cannot_load_is_one_line(small_cache: Path, tmp_path: Path):
    from sae_training.trainer import train

    cache = tmp_path / "moved.h5"
    shutil.copy(small_cache, cache)
    with h5py.File(cache, "r+") as f:
        f.attrs["model_id"] = str(tmp_path / "no-such-model")  # the model directory it came from is gone
    run = train(TINY, cache, tmp_path / "run", hook=HOOK, progress=False)
    res = run_cli(
        "score", str(run), "--definition", str(_definition(tmp_path, "always")), "--quiet", "--workers", "1"
    )
    line = error_line(res)
    assert "C7 cannot be computed: its random-init copy cannot be loaded" in line and "no-such-model" in line
    assert not (run / "features").exists()
