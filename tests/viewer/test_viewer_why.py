"""What the viewer says about the flag: the overview's shaded region is the flag rule of the store's definition (every
flagged latent inside it, on the scored synthetic run and under other thresholds), and a latent's page leads with why
it is flagged (each criterion's verdict, every registered describer's AUROC, strong against weak firings, P(fire) by
position), on the scored synthetic run and on the random demo store with a describer registered only for the test."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from features.columns import Column
from features.criteria.registry import criteria
from features.criteria.stability import StabilityConfig
from features.definition import Definition
from features.flags import FlagConfig, apply_flags
from features.labelability import (
    Description,
    LatentSample,
    PassData,
    auroc_column,
    register_describer,
    registered_describers,
    unregister_describer,
)
from features.store import FeatureStore
from tests.helpers.common import REPO
from tests.helpers.demo_store import build_random_store
from viewer.data import doc_positions, fire_profile
from viewer.overview import flag_region, in_region, plotted_y, region_box, scatter_frame
from viewer.why import decile_reading, describer_aurocs

APP = str(REPO / "viewer" / "app.py")


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def app(run: Path, monkeypatch: pytest.MonkeyPatch, feature: int) -> AppTest:
    monkeypatch.setenv("XENOFEAT_RUN", str(run))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["feature"] = str(feature)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_titles(at: AppTest) -> list[str]:
    """Titles of the page's Vega-Lite charts (AppTest has no typed element for them)."""
    return [str(json.loads(c.proto.spec).get("title", "")) for c in at.get("vega_lite_chart")]


# ---- the overview's flag region --------------------------------------------------------------------------------


def _check_region(table: pd.DataFrame, defn: Definition) -> np.ndarray:
    region = flag_region(defn)
    assert (region.y, region.y_min, region.max_lbl) == (
        "stability", defn.stability.min_stability, defn.flag.max_lbl,
    )  # fmt: skip
    frame = scatter_frame(table, region)
    inside = in_region(frame, region_box(region))
    flagged, wd = frame["flag"].to_numpy(), frame["well_defined"].to_numpy()
    assert flagged.sum() == table["flag"].sum() > 0, "every flagged latent is drawn"
    assert inside[flagged].all()
    assert not (inside & wd & ~flagged & (frame["labelability"] >= defn.flag.max_lbl)).any()
    # a well-defined latent inside but not flagged fails one of the flag's other conditions (from the table): the
    # bootstrap upper bound, the held-out positives, or the strong firings' LBL
    rest = table.set_index("feature").loc[frame.loc[inside & wd & ~flagged, "feature"]]
    assert (
        (rest["labelability_hi"] >= defn.flag.max_lbl_hi)
        | (rest["n_test_pos"] < defn.flag.min_test_pos)
        | (rest["labelability_strong"] >= defn.flag.max_lbl)
    ).all()
    # each point is drawn on the side of C2's threshold its pass column says
    assert ((frame["y_plot"] >= region.y_min) == frame["stability_pass"]).all()
    return inside


def test_every_flagged_latent_lies_in_the_drawn_region(scored_run):
    store = FeatureStore.open(scored_run.run)
    table, defn = store.table, store.definition()
    inside = _check_region(table, defn)
    # the old axis (mean matched cosine against tau) left flagged latents outside its rectangle; this one cannot
    assert inside.sum() >= table["flag"].sum()


def test_the_region_follows_other_thresholds(scored_run):
    """Stricter thresholds in the definition: the table is reflagged by the flag rule, the region follows."""
    table = FeatureStore.open(scored_run.run).table
    stab = StabilityConfig(min_stability=1.0)
    flag = FlagConfig(max_lbl=0.15, max_lbl_hi=0.3)
    defn = Definition(stability=stab, flag=flag)
    t = table.assign(stability_pass=table["stability"] >= stab.min_stability)
    t = apply_flags(t.drop(columns=["well_defined", "flag"]), flag)
    assert 0 < t["flag"].sum() < table["flag"].sum()
    _check_region(t, defn)


@pytest.mark.parametrize("y_min", [0.5, 1.0 / 3.0, 1.0])
def test_jitter_keeps_points_on_their_side(y_min):
    values = np.repeat(np.linspace(0, 1, 7), 50)
    passes = values >= y_min
    y = plotted_y(values, passes, y_min)
    assert ((y >= y_min) == passes).all() and (y >= 0).all() and (y <= 1).all()
    assert np.abs(y - values).max() <= 0.035 + 1e-12 and len(np.unique(y)) > 7


# ---- position profiles -----------------------------------------------------------------------------------------


def test_document_positions_count_unmasked_tokens_of_each_document():
    doc = np.array([[0, 0, 0, 1], [1, 1, 2, 2]])
    mask = np.array([[True, False, False, False], [True, False, False, False]])
    assert doc_positions(doc, mask).tolist() == [-1, 0, 1, 0, -1, 1, 0, 1]


def test_fire_profile_is_bayes_on_the_sample():
    every = np.repeat(np.arange(8), [40, 10, 10, 10, 10, 10, 5, 5])  # 100 tokens
    fired = np.array([0, 0, 0, 0, 1, 6])  # a sample of the firings
    density = 0.12  # 12 firings in all
    prof = fire_profile(fired, every, np.array([0, 1, 2, 4, 8]), density)
    assert prof["bucket"].tolist() == ["0", "1", "2-3", "4-7"]
    assert prof["tokens"].tolist() == [40, 10, 20, 30] and prof["firings"].tolist() == [4, 1, 0, 1]
    expect = [
        density * (4 / 6) / (40 / 100),
        density * (1 / 6) / (10 / 100),
        0.0,
        density * (1 / 6) / (30 / 100),
    ]
    np.testing.assert_allclose(prof["p_fire"], expect)
    # averaged over every token it gives back the density
    assert np.isclose((prof["p_fire"] * prof["tokens"]).sum() / len(every), density)


def test_decile_reading_names_strong_and_weak():
    text = decile_reading(np.array([0.5, 0.5, 0.5, 0.6, 0.7, 0.7, 0.8, 0.9, 0.9, 0.9]))
    assert "top 3 of 10" in text and "AUROC 0.9;" in text and "at 0.5." in text
    assert decile_reading(np.full(10, np.nan)) is None


# ---- the why block on a page -----------------------------------------------------------------------------------


def _verdicts_shown(at: AppTest) -> dict[str, str]:
    """Criterion label -> verdict word of the why block's conditions."""
    lines = [m.value for m in at.markdown]
    found = [re.match(r":\w+\[(?:\*\*)?([^*\]]+)(?:\*\*)?\] \*\*(.+?)\*\*", x) for x in lines]
    return {f[2].replace("\\", ""): f[1] for f in found if f}


def test_flagged_page_leads_with_why(scored_run, monkeypatch):
    store = FeatureStore.open(scored_run.run)
    table = store.table
    latent = int(table.loc[table["flag"], "feature"].iloc[0])
    row = table.iloc[latent]
    at = app(scored_run.run, monkeypatch, latent)
    subheads = [s.value for s in at.subheader]
    assert subheads[0] == "Why it is flagged"
    assert any(m.value.startswith("**Flagged**") for m in at.markdown)
    shown = _verdicts_shown(at)
    for c in criteria():  # every criterion of the registry, gating ones with their pass column's verdict
        if c.verdicts:
            expect = ("pass" if row[c.passes] else "fail") if c.gates else shown[c.label]
            assert shown[c.label] == expect, c.label
    assert [shown[k] for k in shown if k.startswith("flag:")] == ["pass"] * 4
    line = next(m.value for m in at.markdown if m.value.startswith("Held-out AUROC"))
    for d in registered_describers():
        assert f"{d.name} {row[f'auroc_{d.name}']:.3g}" in line
    dec = store.examples(latent).decile_auroc.astype(float)
    reading = next(m.value for m in at.markdown if m.value.startswith("Strong firings"))
    assert f"AUROC {np.mean(dec[-3:]):.3g}" in reading and f"at {np.mean(dec[:3]):.3g}" in reading
    titles = chart_titles(at)
    assert "P(fire) by position in the sequence" in titles and "P(fire) by position in the document" in titles


class ToyDescriber:
    """A describer registered only for a test: its column and AUROC must reach the page without code naming it."""

    name = "toydesc"
    tie_order = 9
    summary = "a describer registered by a test"
    cheap = True

    def prepare(self, data: PassData) -> None:
        return None

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        raise AssertionError("the viewer never runs a describer")

    def columns(self) -> list[Column]:
        return [auroc_column(self)]


@pytest.fixture
def toy():
    d = ToyDescriber()
    register_describer(d)
    try:
        yield d
    finally:
        unregister_describer(d.name)


def _flagged(run: Path) -> tuple[int, pd.Series]:
    table = FeatureStore.open(run).table
    latent = int(table.loc[table["flag"], "feature"].iloc[0])
    return latent, table.iloc[latent]


def test_a_registered_describer_reaches_the_why_block(tmp_path, monkeypatch, toy):
    build_random_store(tmp_path, 48)  # written with the toy registered: it has auroc_toydesc
    latent, row = _flagged(tmp_path)
    at = app(tmp_path, monkeypatch, latent)
    line = next(m.value for m in at.markdown if m.value.startswith("Held-out AUROC"))
    assert f"toydesc {row['auroc_toydesc']:.3g}" in line
    assert [s.value for s in at.subheader][0] == "Why it is flagged"
    assert len([t for t in chart_titles(at) if t.startswith("P(fire) by position")]) == 2


def test_describers_missing_from_the_store_or_the_registry(tmp_path, monkeypatch):
    build_random_store(tmp_path, 48)  # no toy column
    latent, row = _flagged(tmp_path)
    toy = ToyDescriber()
    register_describer(toy)
    try:
        at = app(tmp_path, monkeypatch, latent)  # registered now, but the store has no column for it
        line = next(m.value for m in at.markdown if m.value.startswith("Held-out AUROC"))
        assert "toydesc not scored" in line
    finally:
        unregister_describer(toy.name)
    # a column of a describer no longer registered is still shown
    extra = describer_aurocs(replace_row(row, auroc_gone=0.75)).set_index("describer")
    assert extra.loc["gone", "AUROC"] == 0.75
    assert list(extra.index[: len(registered_describers())]) == [d.name for d in registered_describers()]


def replace_row(row: pd.Series, **cols: float) -> pd.Series:
    return pd.concat([row, pd.Series(cols)])


def test_unflagged_page_says_what_fails(tmp_path, monkeypatch):
    build_random_store(tmp_path, 48)
    table = FeatureStore.open(tmp_path).table
    latent = int(table.loc[~table["well_defined"], "feature"].iloc[0])
    at = app(tmp_path, monkeypatch, latent)
    assert [s.value for s in at.subheader][0] == "Why it is not flagged"
    shown = _verdicts_shown(at)
    failing = [c.label for c in criteria() if c.gates and not table.at[latent, c.passes]]
    assert failing and all(shown[f] == "fail" for f in failing)
    summary = next(m.value for m in at.markdown if m.value.startswith("**Not flagged**")).replace("\\", "")
    assert all(f in summary for f in failing)


def test_flag_definition_is_read_from_the_store(tmp_path, monkeypatch):
    """The caption of the AUROC chart and the flag rows use the store's applied max_lbl, not the default."""
    folder = build_random_store(tmp_path, 24)
    store = FeatureStore.open(tmp_path)
    defn = store.definition()
    text = store.definition_toml.replace(f"max_lbl = {defn.flag.max_lbl}", "max_lbl = 0.3")
    assert text != store.definition_toml
    (folder / "definition.toml").write_text(text, encoding="utf-8")
    at = app(tmp_path, monkeypatch, 0)
    assert any("reaches max_lbl 0.3" in c.value for c in at.caption)
    lbl = next(
        m.value.replace("\\", "")
        for m in at.markdown
        if m.value.startswith(":") and "flag\\: labelability" in m.value
    )
    assert lbl.endswith("< 0.3")
