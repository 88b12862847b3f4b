"""The feature store round-trips: what `xenofeat score` writes is what `FeatureStore` reads, checked against sae-lens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from activations.cache import ActivationCache
from activations.errors import UserError
from features.definition import Definition, load_definition
from features.store import FeatureStore
from sae_training.run import load_member
from tests.helpers.scored_run import TRAIN

REQUIRED = [
    "feature",
    "firing_count",
    "n_docs",
    "density",
    "dense",
    "antipodal_partner",
    "support_pass",
    "stability",
    "match_cos",
    "stability_pass",
    "delta_sse",
    "null_q95",
    "function_pass",
    "dl_bits",
    "bits_saved",
    "mdl_pass",
    "well_defined",
    "labelability",
    "labelability_hi",
    "best_describer",
    "auroc_token",
    "auroc_rule",
    "auroc_semantic",
    "n_test_pos",
    "readable",
    "spearman",
    "flag",
    "duplicate",
    "composite",
    "multi_d",
    "mixture",
]


def test_table_and_summary(scored_run) -> None:  # noqa: F811
    store = FeatureStore.open(scored_run.run)
    t = store.table
    assert list(t["feature"]) == list(range(TRAIN.width))
    assert not set(REQUIRED) - set(t.columns)
    s = store.summary
    assert s["n_latents"] == TRAIN.width and s["flagged"] == int(t["flag"].sum())
    assert s["well_defined"] == int(t["well_defined"].sum()) and s["seeds"] == [0, 1, 2]
    assert s["alive"] == int((t["firing_count"] > 0).sum())
    assert (t["flag"] <= t["well_defined"]).all()
    assert load_definition(store.folder / "definition.toml") == Definition()
    assert store.definition_toml.startswith("# xenofeat feature definition")
    with ActivationCache.open(scored_run.cache) as cache:
        assert store.vocab == cache.vocab


def test_examples_match_sae_lens(scored_run) -> None:  # noqa: F811
    store = FeatureStore.open(scored_run.run)
    t = store.table
    sae = load_member(scored_run.run, 0)
    latent = int(t.loc[(t["antipodal_partner"] < 0) & (t["firing_count"] > 500), "feature"].iloc[0])
    ex = store.examples(latent)
    with ActivationCache.open(scored_run.cache) as cache:
        L = cache.context_size
        hook = cache.hooks[0]
        flat = np.concatenate([ex.top.flat_idx, ex.test.flat_idx])
        x = np.stack([cache.read_acts(hook, int(f // L), int(f // L) + 1)[0, f % L] for f in flat])
        tokens = cache.tokens.reshape(-1)
    with torch.no_grad():
        a = sae.encode(torch.from_numpy(x))[:, latent].numpy()  # independent re-encoding by sae-lens
    n_top = len(ex.top.flat_idx)
    assert n_top == 20
    np.testing.assert_allclose(ex.top.value, a[:n_top], rtol=1e-2, atol=1e-3)
    assert np.all(np.diff(ex.top.value) <= 1e-3)  # sorted, largest first
    np.testing.assert_array_equal(ex.top.tokens[:, ex.top.center], tokens[ex.top.flat_idx])
    assert ex.test.label.any() and (~ex.test.label).any()
    np.testing.assert_array_equal(ex.test.label, a[n_top:] > 0)
    np.testing.assert_array_equal(ex.test.tokens[:, -1], tokens[ex.test.flat_idx])
    assert int(ex.hist_counts.sum()) == int(t.loc[latent, "firing_count"])
    assert ex.hist_edges[-1] == pytest.approx(float(ex.top.value[0]), rel=1e-2)
    assert len(ex.deciles.flat_idx) == 50 and set(ex.deciles.decile) == set(range(10))
    assert [m[0] for m in ex.matches] == [1, 2] and latent not in ex.nearest
    assert np.all(np.diff(ex.nearest_cos) <= 1e-6) and ex.decile_auroc.shape == (10,)


def test_refuses_newer_format_and_missing_files(scored_run, tmp_path: Path) -> None:  # noqa: F811
    copy = tmp_path / "run"
    shutil.copytree(scored_run.run / "features", copy / "features")
    summary = copy / "features" / "summary.json"
    data = json.loads(summary.read_text())
    summary.write_text(json.dumps({**data, "format_version": "2.0"}))
    with pytest.raises(UserError, match="newer xenofeat"):
        FeatureStore.open(copy)
    summary.write_text(json.dumps(data))
    table = pq.read_table(copy / "features" / "features.parquet")
    meta = dict(table.schema.metadata)
    meta[b"xenofeat"] = json.dumps({"format": "xenofeat.feature-store", "format_version": "3.1"}).encode()
    pq.write_table(table.replace_schema_metadata(meta), copy / "features" / "features.parquet")
    with pytest.raises(UserError, match="newer xenofeat"):
        FeatureStore.open(copy)
    (copy / "features" / "examples.h5").unlink()
    with pytest.raises(UserError, match="examples.h5: missing"):
        FeatureStore.open(copy)
    with pytest.raises(UserError, match="no feature store"):
        FeatureStore.open(tmp_path)
