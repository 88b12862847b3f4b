"""Exports of a scored synthetic run, each read back by its owning library or schema, and the bad-input errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file

import features
from activations.cache import ActivationCache
from activations.errors import UserError
from features.exporters import FORMATS, export
from features.selection import Selection, evaluate_where
from tests.helpers.common import error_line, run_cli
from tests.helpers.scored_run import TRAIN

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exported(scored_run, tmp_path_factory):  # noqa: F811
    """Every format exported once from the flagged latents."""
    out = tmp_path_factory.mktemp("exports")
    paths = {fmt: export(scored_run.run, "flagged", fmt, out / fmt) for fmt in FORMATS}
    return scored_run, paths


def flagged(run) -> np.ndarray:
    t = pd.read_parquet(run / "features" / "features.parquet")
    return t.loc[t["flag"], "feature"].to_numpy()


def test_json_validates_and_reimports(exported):
    import jsonschema

    from features.exporters.json_set import FILE, import_set, schema

    sr, paths = exported
    doc = json.loads((paths["json"] / FILE).read_text())
    jsonschema.validate(doc, schema())  # the shipped schema, read as package data
    assert [f["index"] for f in doc["features"]] == flagged(sr.run).tolist()
    assert all(f["flag"] and f["well_defined"] for f in doc["features"])
    assert doc["definition"]["toml"] == (sr.run / "features" / "definition.toml").read_text()
    fs = import_set(sr.run, paths["json"], name="reimported")
    assert fs.features == flagged(sr.run).tolist()
    assert features.load_run(sr.run).sets["reimported"].features == fs.features
    with pytest.raises(UserError, match="already has a set"):
        import_set(sr.run, paths["json"], name="reimported")
    bad = paths["json"].parent / "bad.json"
    bad.write_text(json.dumps({**doc, "features": []}))
    with pytest.raises(UserError, match="not a xenofeat feature set"):
        import_set(sr.run, bad)


def test_tables(exported):
    sr, paths = exported
    csv = pd.read_csv(paths["csv"] / "features.csv")
    pq = pd.read_parquet(paths["parquet"] / "features.parquet")
    full = pd.read_parquet(sr.run / "features" / "features.parquet")
    assert csv["feature"].tolist() == pq["feature"].tolist() == flagged(sr.run).tolist()
    pd.testing.assert_frame_equal(pq, full[full["flag"]].reset_index(drop=True))


def sae_codes(sae, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return sae.encode(x).numpy()


def test_saelens_sub_sae_agrees_with_full_sae(exported):
    from sae_lens import SAE

    sr, paths = exported
    sel = flagged(sr.run)
    sub = SAE.load_from_disk(str(paths["saelens"]))
    full = SAE.load_from_disk(str(sr.run / "seed-0"))
    assert sub.cfg.d_sae == len(sel)
    meta = json.loads((paths["saelens"] / "cfg.json").read_text())["metadata"]["xenofeat_export"]
    assert meta["latents"] == sel.tolist() and meta["source_architecture"] == "topk"
    with ActivationCache.open(sr.cache) as cache:
        x = torch.from_numpy(cache.read_acts(cache.hooks[0], 0, cache.n_seq)).reshape(-1, cache.d_model)
        keep = torch.from_numpy(~cache.mask.reshape(-1))
    x = x[keep]
    f, s = sae_codes(full, x)[:, sel], sae_codes(sub, x)
    a, b = f > 0, s > 0
    recall = (a & b).sum() / a.sum()
    precision = (a & b).sum() / b.sum()
    diff = np.abs(f[a & b] - s[a & b]).max()
    # the full SAE's firings are all reproduced, with their values (calibrated on these rows)
    assert recall == 1.0 and diff < 1e-4
    assert 0 < precision < 1  # TopK's extra gating is not per-latent: the sub-SAE fires more often
    assert meta["agreement"]["recall"] == 1.0
    assert meta["agreement"]["precision"] == pytest.approx(precision, rel=1e-6)
    print(
        f"sub-SAE vs full TopK on {len(x)} rows: precision {precision:.3f} recall {recall:.3f} max diff {diff:.2e}"
    )


def test_safetensors_directions(exported):
    from sae_lens import SAE

    sr, paths = exported
    sel = flagged(sr.run)
    t = load_file(str(paths["safetensors"] / "directions.safetensors"))
    full = SAE.load_from_disk(str(sr.run / "seed-0"))
    assert t["latents"].tolist() == sel.tolist()
    dec = full.W_dec.detach().numpy()[sel]
    cos = (t["decoder"] * dec).sum(1) / np.linalg.norm(t["decoder"], axis=1) / np.linalg.norm(dec, axis=1)
    assert np.allclose(cos, 1, atol=1e-5)  # same directions (unit rows once the decoder norm is folded)
    sub = SAE.load_from_disk(str(paths["saelens"]))
    assert np.allclose(t["threshold"], sub.threshold.detach().numpy())
    assert t["encoder"].shape == (len(sel), full.cfg.d_in) and t["b_dec"].shape == (full.cfg.d_in,)


def read_jsonl(p: Path) -> list[dict]:
    data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    return [json.loads(line) for line in data.decode().splitlines()]


def test_neuronpedia_layout_fields(exported):
    sr, paths = exported
    (model_dir,) = [p for p in paths["neuronpedia"].iterdir() if p.is_dir()]  # beside the export marker
    (src,) = list(model_dir.iterdir())
    for name in ("release.jsonl", "model.jsonl", "sourceset.jsonl", "source.jsonl"):
        assert len(read_jsonl(src / name)) == 1
    feats = read_jsonl(src / "features" / "batch-0.jsonl.gz")
    acts = read_jsonl(src / "activations" / "batch-0.jsonl.gz")
    expl = read_jsonl(src / "explanations" / "batch-0.jsonl.gz")
    need_f = {"modelId", "layer", "index", "maxActApprox", "hookName", "topkCosSimIndices", "topkCosSimValues",
              "frac_nonzero", "freq_hist_data_bar_heights", "freq_hist_data_bar_values", "neg_str", "pos_str"}  # fmt: skip
    need_a = {"id", "tokens", "values", "index", "layer", "modelId", "maxValue", "maxValueTokenIndex", "minValue",
              "binMin", "binMax", "binContains", "qualifyingTokenIndex", "creatorId", "createdAt"}  # fmt: skip
    need_e = {
        "id",
        "modelId",
        "layer",
        "index",
        "description",
        "authorId",
        "typeName",
        "explanationModelName",
    }
    assert all(need_f <= set(f) for f in feats) and all(need_a <= set(a) for a in acts)
    assert all(need_e <= set(e) for e in expl)
    assert sorted(int(f["index"]) for f in feats) == flagged(sr.run).tolist()
    assert all(isinstance(f["index"], str) and f["layer"] == src.name for f in feats)
    assert all(len(a["tokens"]) == len(a["values"]) and a["maxValue"] == max(a["values"]) for a in acts)
    t = pd.read_parquet(sr.run / "features" / "features.parquet").set_index("feature")
    for e in expl:
        row = t.loc[int(e["index"])]
        assert e["description"] == row["readable"] and e["scoreV2"] == pytest.approx(row["labelability"])


def test_delphi_layout(exported):
    from safetensors import safe_open

    sr, paths = exported
    sel = flagged(sr.run)
    hook_dir = next((paths["delphi"] / "latents").iterdir())
    cfg = json.loads((hook_dir / "config.json").read_text())
    assert {"model_name", "cache_ctx_len", "n_splits", "dataset_repo"} <= set(cfg)
    shards = sorted(hook_dir.glob("*.safetensors"), key=lambda p: int(p.stem.split("_")[0]))
    edges = [tuple(map(int, p.stem.split("_"))) for p in shards]
    assert edges[0][0] == 0 and edges[-1][1] == TRAIN.width - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(edges, edges[1:], strict=False))  # contiguous, end inclusive
    from sae_lens import SAE

    full = SAE.load_from_disk(str(sr.run / "seed-0"))
    with ActivationCache.open(sr.cache) as cache:
        x = torch.from_numpy(cache.read_acts(cache.hooks[0], 0, 4)).reshape(-1, cache.d_model)
        codes = sae_codes(full, x).reshape(4, cache.context_size, -1)
        mask = cache.mask[:4]
    n_entries = 0
    for p, (start, _end) in zip(shards, edges, strict=True):
        with safe_open(str(p), "numpy") as f:
            assert set(f.keys()) == {"locations", "activations", "tokens"}
            raw, act = f.get_tensor("locations"), f.get_tensor("activations")
        assert act.dtype == np.float16 and raw.dtype in (np.uint16, np.uint32)
        loc = raw.astype(np.int64)
        lat = loc[:, 2] + start
        assert set(lat.tolist()) <= set(sel.tolist())
        m = loc[:, 0] < 4
        n_entries += int(m.sum())
        want = codes[loc[m, 0], loc[m, 1], lat[m]]
        assert np.allclose(act[m], want, rtol=1e-2, atol=1e-3)
        assert not mask[loc[m, 0], loc[m, 1]].any()
    expected = sum(int(((codes[..., i] > 1e-5) & ~mask).sum()) for i in sel)
    assert n_entries == expected > 0  # every firing of a selected latent in the first 4 sequences is there


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("delphi") is None,
    reason="eai-delphi not installed (its full install pulls vllm and CUDA torch; `pip install --no-deps eai-delphi`"
    " plus faiss-cpu is enough for this test)",
)
def test_delphi_loader_reads_export(exported):
    pytest.importorskip("faiss")
    from delphi.config import ConstructorConfig, SamplerConfig
    from delphi.latents import LatentDataset
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    sr, paths = exported
    sel = flagged(sr.run)
    vocab = features.load_run(sr.run).store.vocab
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({v: i for i, v in enumerate(vocab)}, vocab[0]))
    )
    hook = next((paths["delphi"] / "latents").iterdir()).name
    want = torch.tensor(sel[:3].tolist())
    ds = LatentDataset(paths["delphi"] / "latents", SamplerConfig(), ConstructorConfig(min_examples=10),
                       tokenizer=tok, modules=[hook], latents={hook: want})  # fmt: skip
    recs = list(ds)
    assert sorted(r.latent.latent_index for r in recs) == sel[:3].tolist()
    assert all(len(r.train) > 0 and len(r.test) > 0 for r in recs)


# ---- selections and bad input -----------------------------------------------------------------------------------


def test_where_whitelist():
    t = pd.DataFrame({"feature": [0, 1, 2], "flag": [True, False, True], "density": [0.1, 0.2, float("nan")],
                      "best_describer": ["token", "rule", "rule"]})  # fmt: skip
    assert evaluate_where(t, "flag and density < 0.15").tolist() == [True, False, False]
    assert evaluate_where(t, "(best_describer in ['rule']) & ~flag").tolist() == [False, True, False]
    assert evaluate_where(t, "not flag or 0.15 < density <= 0.2").tolist() == [False, True, False]
    for evil in ("__import__('os').system('true')", "flag.__class__", "density[0] > 0", "[x for x in flag]",
                 "(lambda: 1)()", "flag if density else flag"):  # fmt: skip
        with pytest.raises(UserError, match="--where"):
            evaluate_where(t, evil)
    with pytest.raises(UserError, match="unknown column 'nope'"):
        evaluate_where(t, "nope > 1")
    with pytest.raises(UserError, match="not a true/false condition"):
        evaluate_where(t, "density")


def test_api_sets_and_selection(scored_run, tmp_path):  # noqa: F811
    run = features.load_run(scored_run.run)
    run.save_set("api set", [5, 2], "from a notebook")
    assert run.select(features.Selection.from_set("api set")) == [2, 5]
    out = features.export(scored_run.run, run.sets["api set"], "csv", tmp_path / "o")
    assert pd.read_csv(out / "features.csv")["feature"].tolist() == [2, 5]
    run.delete_set("api set")
    assert run.select(Selection.where("flag")) == flagged(scored_run.run).tolist()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--where", "flag and not flag"], "selection is empty"),
        (["--features", "3,999"], "latent 999 is out of range"),
        (["--where", "bogus_column > 1"], "unknown column 'bogus_column'"),
        (["--features", "1", "--format", "xml"], "unknown format 'xml' (valid: json, csv, parquet"),
        (["--set", "no such set"], "no feature set named"),
    ],
)
def test_cli_bad_input_one_line_exit_2(scored_run, tmp_path, args, message):  # noqa: F811
    fmt = [] if "--format" in args else ["--format", "json"]
    r = run_cli("export", str(scored_run.run), *args, *fmt, "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_refuses_existing_out_without_overwrite(scored_run, tmp_path):  # noqa: F811
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = run_cli("export", str(scored_run.run), "--features", "1,2", "--format", "csv", "--out", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    r = run_cli(
        "export",
        str(scored_run.run),
        "--features",
        "1,2",
        "--format",
        "csv",
        "--out",
        str(out),
        "--overwrite",
    )
    # a folder xenofeat did not write is never replaced, even with --overwrite
    assert "not an export written by xenofeat" in error_line(r)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    fresh = tmp_path / "fresh"
    args = ["export", str(scored_run.run), "--features", "1,2", "--format", "csv", "--out", str(fresh)]
    assert run_cli(*args).returncode == 0
    r = run_cli(*args[:-3], "parquet", "--out", str(fresh), "--overwrite")  # an earlier export: replaced
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in fresh.iterdir()) == ["features.parquet", "xenofeat-export.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
