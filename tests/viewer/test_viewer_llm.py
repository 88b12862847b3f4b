"""The feature page shows the LLM's explanation and score (`xenofeat explain`) beside the describers."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from features.explain import ExplainJob, explain
from features.selection import Selection
from features.store import FeatureStore
from tests.helpers.chat_server import ChatServer
from tests.helpers.common import REPO
from tests.helpers.demo_store import build_random_store


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()


def test_the_feature_page_shows_the_llm_beside_the_describers(tmp_path: Path, monkeypatch) -> None:
    build_random_store(tmp_path, 16)
    with ChatServer() as srv:
        explain(ExplainJob(tmp_path, Selection.from_features([2]), srv.url, "fake-llm", progress=False))
    row = FeatureStore.open(tmp_path).table.iloc[2]
    monkeypatch.setenv("XENOFEAT_RUN", str(tmp_path))
    at = AppTest.from_file(str(REPO / "viewer" / "app.py"), default_timeout=60)
    at.query_params["feature"] = "2"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    tables = [d.value for d in at.dataframe if "describer" in getattr(d.value, "columns", [])]
    llm_rows = tables[0][tables[0]["describer"] == "llm"]
    assert len(llm_rows) == 1 and llm_rows["AUROC (held out)"].iloc[0] == pytest.approx(row["auroc_llm"])
    assert "fake-llm" in llm_rows["checks"].iloc[0]
    text = " ".join(m.value for m in at.markdown)
    assert "LLM's explanation" in text and "tokens" in text
    at = AppTest.from_file(str(REPO / "viewer" / "app.py"), default_timeout=60)
    at.query_params["feature"] = "3"  # not explained: no llm row
    at.run()
    tables = [d.value for d in at.dataframe if "describer" in getattr(d.value, "columns", [])]
    assert "llm" not in tables[0]["describer"].tolist()
