"""`xenofeat explain` on the scored synthetic run: a token latent is named by the keyword-detecting test server, and
the JSON and Neuronpedia exports carry the LLM's explanation and score."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from features.explain import ExplainJob, explain
from features.exporters import export
from features.selection import Selection
from features.store import FeatureStore
from tests.helpers.chat_server import ChatServer


def test_explained_latents_are_exported(scored_run, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(scored_run.run, run)
    table = FeatureStore.open(run).table
    scored = table[table["best_describer"] != "none"]
    token = int(scored.sort_values("auroc_token", ascending=False)["feature"].iloc[0])  # a token latent
    other = int(scored.sort_values("auroc_token")["feature"].iloc[0])  # the one tokens describe worst
    with ChatServer() as srv:
        explain(ExplainJob(run, Selection.from_features([token, other]), srv.url, "fake-llm", progress=False))
    t = FeatureStore.open(run).table
    assert t.loc[token, "auroc_token"] > 0.95
    assert t.loc[token, "auroc_llm"] > 0.9  # its marked tokens name it, as the token describer does
    assert t.loc[other, "auroc_llm"] < t.loc[token, "auroc_llm"]
    doc = json.loads((export(run, Selection.from_features([token]), "json", tmp_path / "j") / "feature_set.json")
                     .read_text())  # fmt: skip
    rec = doc["features"][0]["llm"]
    assert rec["model"] == "fake-llm" and rec["explanation"] == t.loc[token, "llm_explanation"]
    assert rec["auroc"] == pytest.approx(t.loc[token, "auroc_llm"]) and rec["score_kind"] == "auroc"
    out = export(run, Selection.from_features([token]), "neuronpedia", tmp_path / "n")
    (batch,) = list(out.rglob("explanations/batch-0.jsonl.gz"))
    with gzip.open(batch, "rt", encoding="utf-8") as fh:
        expl = [json.loads(line) for line in fh]
    llm = [e for e in expl if e["typeName"] == "xenofeat_llm"]
    assert len(llm) == 1 and llm[0]["explanationModelName"] == "fake-llm"
    assert llm[0]["description"] == t.loc[token, "llm_explanation"]
    assert llm[0]["scoreV1"] == pytest.approx(t.loc[token, "auroc_llm"])
