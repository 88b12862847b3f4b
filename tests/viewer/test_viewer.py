"""The Streamlit viewer under streamlit.testing.v1.AppTest: every page on a real scored run, opening a flagged latent,
the label tester against a hand computation, feature sets, and each kind of bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from features.store import FeatureStore
from features.store.labels import read_attempts
from features.store.sets import load_sets
from tests.helpers.common import REPO
from tests.helpers.demo_store import build_random_store

APP = str(REPO / "viewer" / "app.py")


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture
def random_run(tmp_path: Path) -> Path:
    build_random_store(tmp_path, 48)
    return tmp_path


def app(run: Path, monkeypatch: pytest.MonkeyPatch, feature: str | None = None) -> AppTest:
    monkeypatch.setenv("XENOFEAT_RUN", str(run))
    at = AppTest.from_file(APP, default_timeout=60)
    if feature is not None:
        at.query_params["feature"] = feature
    return at.run()


def goto(at: AppTest, page: str) -> AppTest:
    at.sidebar.radio(key="page").set_value(page)
    return at.run()


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def headers(at: AppTest) -> list[str]:
    return [h.value for h in at.header]


def test_every_page_renders_and_a_flagged_latent_opens(scored_run, monkeypatch):  # noqa: F811
    run = scored_run.run
    table = FeatureStore.open(run).table
    flagged = table.loc[table["flag"], "feature"].tolist()
    assert flagged, "the scored synthetic run should flag its planted unlabelable features"
    at = app(run, monkeypatch)
    ok(at)
    assert headers(at) == ["Overview"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["flagged"] == f"{len(flagged):,}"
    assert metrics["well defined"] == f"{int(table['well_defined'].sum()):,}"
    for page, header in (("Features", "Features"), ("Sets", "Feature sets"), ("Overview", "Overview")):
        ok(goto(at, page))
        assert headers(at) == [header]
    pick = at.selectbox(key="ov_flagged")
    assert pick.options and len(pick.options) == len(flagged)
    pick.select_index(0).run()
    ok(at)
    assert headers(at) == [f"Latent {flagged[0]} · FLAGGED"]
    assert at.query_params["feature"] == str(flagged[0])
    crit = at.dataframe[0].value
    assert set(crit["criterion"]) >= {"C1 support", "C2 stability", "C3 function", "C4 description length"}
    decisive = crit["criterion"].str.startswith(("C1", "C2", "C3", "C4")) & ~crit["criterion"].str.contains(
        "model"
    )
    assert (crit.loc[decisive, "verdict"] == "pass").all()
    # the synthetic cache has no model, so C3's model-based effect is not recorded
    assert (crit.loc[crit["criterion"] == "C3 function (model)", "verdict"] == "–").all()
    assert at.html, "top examples are rendered as highlighted HTML"


def test_table_filters_and_finds_by_token(scored_run, monkeypatch):  # noqa: F811
    run = scored_run.run
    store = FeatureStore.open(run)
    at = goto(app(run, monkeypatch), "Features")
    at.selectbox(key="tb_flag").set_value("flagged").run()
    ok(at)
    shown = at.dataframe[0].value
    assert shown["flag"].all() and len(shown) == min(50, int(store.table["flag"].sum()))
    # search by token: the firing token of latent 0's best top example must find latent 0
    ex = store.examples(0)
    tok = store.vocab[int(ex.top.tokens[0, ex.top.center])]
    at.selectbox(key="tb_flag").set_value("all")
    at.text_input(key="tb_tok").input(tok).run()
    ok(at)
    assert 0 in at.dataframe[0].value["feature"].tolist()
    at.text_input(key="tb_tok").input("")
    at.text_input(key="tb_idx").input("99999").run()
    assert any("out of range" in e.value for e in at.error)


def test_a_token_anchored_latent_is_filterable_and_says_why(scored_run, monkeypatch):  # noqa: F811
    run = scored_run.run
    table = FeatureStore.open(run).table
    anchored = table.loc[table["token_anchored"], "feature"].tolist()
    assert anchored, "the scored synthetic run plants a token-anchored feature"
    at = goto(app(run, monkeypatch), "Features")
    at.selectbox(key="tb_flag").set_value("token-anchored").run()
    ok(at)
    shown = at.dataframe[0].value
    assert shown["feature"].tolist() == anchored and {"lbl_conditional", "anchor_tokens"} <= set(
        shown.columns
    )
    at = app(run, monkeypatch, feature=str(anchored[0]))
    ok(at)
    assert headers(at) == [f"Latent {anchored[0]} · TOKEN-ANCHORED"]
    assert any("is token-anchored" in m.value for m in at.markdown)
    conditions = at.dataframe[1].value  # after the definition's verdict table
    assert "conditional LBL" in conditions["quantity"].tolist() and (conditions["verdict"] == "pass").all()


def test_label_tester_scores_tokens_as_by_hand(scored_run, monkeypatch):  # noqa: F811
    run = scored_run.run
    store = FeatureStore.open(run)
    latent = int(store.table.loc[store.table["flag"], "feature"].iloc[0])
    # the hand computation: the held-out windows' centre tokens straight from the stored grid and offsets
    with h5py.File(run / "features" / "examples.h5", "r") as f:
        lo, hi = f["lbl_test/offsets"][latent : latent + 2]
        flat = f["lbl_test/flat_idx"][lo:hi]
        label = f["lbl_test/label"][lo:hi].astype(bool)
        centre = f["grid/tokens"][:].reshape(-1)[flat]
    top2 = np.bincount(centre[label]).argsort()[::-1][:2]
    words = [store.vocab[t] for t in top2]
    pred = np.isin(centre, top2)
    tp, fp = int((pred & label).sum()), int((pred & ~label).sum())
    precision, recall = tp / (tp + fp), tp / label.sum()
    auroc = (tp / label.sum() + 1 - fp / (~label).sum()) / 2

    at = app(run, monkeypatch, feature=str(latent))
    at.radio(key=f"lt_kind_{latent}").set_value("tokens")
    at.text_input(key=f"lt_text_{latent}").input(", ".join(words))
    at.text_input(key=f"lt_who_{latent}").input("tester")
    next(b for b in at.button if b.label == "Score it").click().run()
    ok(at)
    shown = {m.label: m.value for m in at.metric}
    assert shown["precision"] == f"{precision:.3f}"
    assert shown["recall"] == f"{recall:.3f}"
    assert shown["AUROC (yours)"] == f"{auroc:.3f}"
    saved = read_attempts(run, latent)[-1]
    assert (saved.who, saved.kind, saved.text) == ("tester", "tokens", ", ".join(words))
    assert math.isclose(saved.precision, precision) and math.isclose(saved.recall, recall)
    assert math.isclose(saved.auroc, auroc) and saved.n_pos == label.sum()
    assert any("Labels tried" in m.value for m in at.markdown)


def test_label_tester_bad_regexes_get_messages(random_run, monkeypatch):
    at = app(random_run, monkeypatch, feature="2")
    for pattern, message in (("(unclosed", "invalid pattern"), (r"(.|..)*\d{9}", "longer than")):
        at.radio(key="lt_kind_2").set_value("regex")
        at.text_input(key="lt_text_2").input(pattern)
        next(b for b in at.button if b.label == "Score it").click().run()
        ok(at)
        assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert read_attempts(random_run, 2) == []  # nothing saved for a hypothesis that could not be scored


def test_feature_set_round_trip(random_run, monkeypatch):
    at = app(random_run, monkeypatch, feature="5")
    assert at.selectbox(key="fp_set_pick").value == "➕ new set…"
    at.text_input(key="fp_set_new").input("odd ones")
    at.button(key="fp_set_add").click().run()
    ok(at)
    at.button(key="fp_next").click().run()  # latent 6, added to the now existing set
    at.selectbox(key="fp_set_pick").set_value("odd ones")
    at.button(key="fp_set_add").click().run()
    ok(at)
    assert load_sets(random_run)["odd ones"].features == [5, 6]
    goto(at, "Sets")
    ok(at)
    assert at.selectbox(key="sp_pick").value == "odd ones"
    assert at.dataframe[0].value["feature"].tolist() == [5, 6]
    assert at.get("download_button"), "the set has an export button"
    from viewer.sets_panel import set_json_bytes

    doc = json.loads(set_json_bytes(random_run, load_sets(random_run)["odd ones"]))
    from features.exporters.json_set import validate

    validate(doc)  # the shipped JSON Schema of the `json` export
    assert doc["name"] == "odd ones" and [f["index"] for f in doc["features"]] == [5, 6]


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "c:\\x"])
def test_set_names_with_path_characters_are_refused(random_run, monkeypatch, name):
    before = sorted(p.relative_to(random_run.parent) for p in random_run.parent.rglob("*"))
    at = app(random_run, monkeypatch, feature="1")
    at.text_input(key="fp_set_new").input(name)
    at.button(key="fp_set_add").click().run()
    ok(at)
    assert any("set name" in e.value for e in at.error), [e.value for e in at.error]
    assert sorted(p.relative_to(random_run.parent) for p in random_run.parent.rglob("*")) == before


@pytest.mark.parametrize("value", ["48", "-1", "seven"])
def test_bad_latent_in_url_and_input(random_run, monkeypatch, value):
    at = app(random_run, monkeypatch, feature=value)
    ok(at)
    assert any(f"?feature={value}" in e.value for e in at.error)
    at.text_input(key="fp_goto").input(value).run()
    ok(at)
    assert any(e.value.startswith("latent") for e in at.error)
    at.text_input(key="fp_goto").input("47").run()
    assert headers(at)[0].startswith("Latent 47")


def _breaks(run: Path, how: str) -> None:
    folder = run / "features"
    if how == "no store":
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    elif how == "newer format":
        s = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps({**s, "format_version": "2.0"}))
    elif how == "no examples":
        (folder / "examples.h5").unlink()


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("no store", "no feature store"),
        ("newer format", "newer xenofeat"),
        ("no examples", "examples.h5: missing"),
    ],
)
def test_broken_runs_are_one_clear_message(random_run, monkeypatch, how, message):
    _breaks(random_run, how)
    at = app(random_run, monkeypatch)
    ok(at)
    # the message is Markdown with its text escaped (viewer.render.md_text): compare the text it shows
    shown = at.error[0].value.replace("\\", "")
    assert len(at.error) == 1 and message in shown, [e.value for e in at.error]
