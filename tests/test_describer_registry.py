"""The describer registry: a describer added from outside the built-ins (here a look-up of P(fire | position in the
sequence), the kind of describer issue 11 adds) gets its `auroc_<name>` column, takes part in LBL (best describer,
pruning, the process fan-out) and appears in the viewer, without any other file naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from helpers.demo_store import build_random_store
from helpers.describers import only_describers

from features.columns import Column
from features.labelability import (
    Description,
    LatentSample,
    LBLConfig,
    PassData,
    auroc_column,
    describer_names,
    labelability,
    lbl_columns,
    register_describer,
    registered_describers,
    run_lbl,
    unregister_describer,
)
from features.store import FeatureStore
from viewer.feature_page import describer_rows
from viewer.table import describer_choices, shown_columns

torch.set_num_threads(1)

N_SEQ, L, V = 120, 32, 50
POSITIONS = (5, 6, 7)
CFG = LBLConfig(max_positives=200, bootstrap=50)


class PositionDescriber:
    """P(fire | position of the centre in its sequence), fit on the train windows with add-one smoothing."""

    name = "position"
    tie_order = 3
    summary = "P(fire | position in the sequence)"

    def __init__(self, cheap: bool) -> None:
        self.cheap = cheap

    def prepare(self, data: PassData) -> None:
        return None

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        pos, tr, y = data.index.pos[sample.centre], sample.train, sample.label
        fire = np.bincount(pos[tr & y], minlength=data.index.seq_len)
        count = np.bincount(pos[tr], minlength=data.index.seq_len)
        p = (fire + y[tr].mean()) / (count + 1.0)
        top = np.argsort(-p, kind="stable")[:3]
        readable = ", ".join(f"position {i}: {p[i]:.2f}" for i in sorted(top))
        return Description(test_scores=p[pos[~tr]], readable=readable, train_scores=p[pos[tr]])

    def columns(self) -> list[Column]:
        return [auroc_column(self)]


def planted() -> tuple[sp.csc_matrix, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Uniform tokens; latent 0 fires at positions 5-7 (whatever the token), latent 1 on tokens 3 and 4."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, size=(N_SEQ, L)).astype(np.int32)
    doc_ids = np.repeat(np.arange(N_SEQ), L).reshape(N_SEQ, L).astype(np.int32)
    mask = np.zeros((N_SEQ, L), bool)
    mask[:, 0] = True
    pos = np.broadcast_to(np.arange(L), (N_SEQ, L))
    fires = np.stack([np.isin(pos, POSITIONS) & (rng.random((N_SEQ, L)) < 0.9), np.isin(tokens, (3, 4))], -1)
    fires &= ~mask[..., None]
    values = rng.uniform(0.5, 5.0, size=fires.shape) * fires
    return sp.csc_matrix(values.reshape(N_SEQ * L, 2)), tokens, doc_ids, mask, [f"t{i}" for i in range(V)]


@pytest.fixture(scope="module", autouse=True)
def v1_describers():
    """Start from LBL-v1's built-ins (token, rule, semantic), so the plug-in below is the only other describer (the
    built-in `position` describer of LBL-v2 is unregistered meanwhile; it has its own tests)."""
    with only_describers():
        yield


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def builtin_table(data):
    acts, tokens, doc_ids, mask, vocab = data
    return labelability(acts, tokens, doc_ids, mask, np.arange(2), CFG, seed=1, vocab=vocab)


@pytest.fixture
def position(request):
    """The position describer, registered for one test only (`cheap` from the test's parameter)."""
    d = PositionDescriber(cheap=getattr(request, "param", False))
    register_describer(d)
    try:
        yield d
    finally:
        unregister_describer(d.name)


def test_builtin_describers_cannot_label_a_position_latent(builtin_table):
    assert set(builtin_table.aurocs) == {"token", "rule", "semantic"}
    assert builtin_table.labelability[0] < 0.3 and builtin_table.labelability[1] >= 0.9


def test_registered_describer_gets_its_column_and_wins_where_it_should(data, builtin_table, position):
    acts, tokens, doc_ids, mask, vocab = data
    table = labelability(acts, tokens, doc_ids, mask, np.arange(2), CFG, seed=1, vocab=vocab)
    frame = table.to_frame()
    assert [c for c in frame if c.startswith("auroc_")] == ["auroc_token", "auroc_rule", "auroc_semantic",
                                                            "auroc_position"]  # fmt: skip
    assert frame.loc[0, "best_describer"] == "position" and frame.loc[0, "labelability"] >= 0.8
    assert all(f"position {p}" in frame.loc[0, "readable"] for p in POSITIONS)
    assert frame.loc[1, "best_describer"] == "token"
    # it only adds: every other describer, the samples and the test windows are those of the run without it
    for name in ("token", "rule", "semantic"):
        np.testing.assert_array_equal(table.aurocs[name], builtin_table.aurocs[name])
    for latent in (0, 1):
        assert np.array_equal(
            table.test_windows[latent].flat_idx, builtin_table.test_windows[latent].flat_idx
        )
    # and the bootstrap upper bound takes it into account
    assert table.labelability_hi[0] >= table.labelability[0] > builtin_table.labelability_hi[0]


def test_registered_describer_is_a_declared_column(position):
    cols = {c.name: c for c in lbl_columns()}
    assert cols["auroc_position"].owner == "describer:position" and cols["auroc_position"].dtype == "float64"
    assert "auroc_position" not in {c.name for c in lbl_columns(registered_describers()[:3])}
    assert [c.name for c in lbl_columns()][:3] == ["labelability", "labelability_hi", "best_describer"]


@pytest.mark.parametrize("position", [True], indirect=True)
def test_cheap_describer_prunes_and_runs_in_the_fan_out(data, position):
    acts, tokens, doc_ids, mask, vocab = data
    many = sp.csc_matrix(sp.hstack([acts[:, [0]]] * 16 + [acts[:, [1]]] * 16))  # 32 latents: the fan-out runs
    one = labelability(many, tokens, doc_ids, mask, np.array([0, 16]), CFG, seed=1, vocab=vocab)
    # a cheap describer that separates the train windows prunes the costly ones, like the token describer does
    assert np.isnan(one.aurocs["rule"][0]) and np.isnan(one.aurocs["semantic"][0])
    assert one.best_describer[0] == "position"
    fan = run_lbl(many, tokens, doc_ids, mask, np.arange(32), CFG, 1, vocab, workers=2, progress=False)
    assert list(fan.aurocs) == ["token", "rule", "semantic", "position"]
    assert (fan.best_describer[:16] == "position").all() and (fan.best_describer[16:] == "token").all()
    for name in fan.aurocs:
        np.testing.assert_array_equal(fan.aurocs[name][[0, 16]], one.aurocs[name])
    np.testing.assert_array_equal(fan.labelability_hi[[0, 16]], one.labelability_hi)


def test_viewer_shows_the_registered_describer(data, position, tmp_path: Path):
    acts, tokens, doc_ids, mask, vocab = data
    frame = labelability(acts, tokens, doc_ids, mask, np.arange(2), CFG, seed=1, vocab=vocab).to_frame()
    rows = describer_rows(frame.iloc[0]).set_index("describer")
    assert list(rows.index) == ["token", "rule", "semantic", "position"]
    assert rows.loc["position", "best"] and rows.loc["position", "checks"] == position.summary
    assert rows.loc["position", "AUROC (held out)"] == frame.loc[0, "auroc_position"]
    assert rows.loc["position", "readable form"] == frame.loc[0, "readable"]
    assert "auroc_position" in shown_columns(frame)
    assert describer_choices(frame) == ["token", "rule", "semantic", "position"]
    build_random_store(tmp_path, n_latents=8)
    with FeatureStore.open(tmp_path) as store:
        assert "auroc_position" in store.table
        assert set(store.table["best_describer"]) <= set(describer_names())


def test_viewer_rows_of_a_store_without_the_column(position):
    row = pd.Series({"best_describer": "token", "auroc_token": 0.9, "readable": "'a' 0.90 (9/10)"})
    rows = describer_rows(row).set_index("describer")
    assert np.isnan(rows.loc["position", "AUROC (held out)"]) and not rows.loc["position", "best"]
    assert (
        rows.loc["token", "readable form"] == "'a' 0.90 (9/10)" and rows.loc["rule", "readable form"] == "–"
    )


def test_registry_refuses_bad_describers(position):
    with pytest.raises(ValueError, match="already registered"):
        register_describer(PositionDescriber(cheap=False))
    clash = PositionDescriber(cheap=False)
    clash.name = "none"
    with pytest.raises(ValueError, match="'none'"):
        register_describer(clash)
    with pytest.raises(TypeError, match="Describer protocol"):
        register_describer(object())  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="nope"):
        unregister_describer("nope")
