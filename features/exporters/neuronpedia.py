"""The `neuronpedia` export: Neuronpedia's bulk-import layout for the selected latents.

    OUT/{modelId}/{sourceId}/release.jsonl model.jsonl sourceset.jsonl source.jsonl
    OUT/{modelId}/{sourceId}/features/batch-N.jsonl.gz      one Feature row per line
    OUT/{modelId}/{sourceId}/activations/batch-N.jsonl.gz   one Activation row per line (top + decile examples)
    OUT/{modelId}/{sourceId}/explanations/batch-N.jsonl.gz  one Explanation row per line

Field names are Neuronpedia's (camelCase, `index` a string, `layer` = the source id), as in SAEDashboard's
exporter and Neuronpedia's Prisma schema. Explanations: the winning LBL describer's readable form
(`typeName` "xenofeat_<describer>", `scoreV1` its test AUROC, `scoreV2` the labelability), the LLM's explanation
where `xenofeat explain` ran (`typeName` "xenofeat_llm", `explanationModelName` the model, `scoreV1` its detection
AUROC on the held-out windows) and every label a person tried in the viewer (`typeName` "xenofeat_label_tester": the hypothesis as typed, `scoreV1` its AUROC on the
held-out windows, null when it could not be computed). Fields we cannot compute without the model's unembedding
(logit tables and histograms) are written empty, as SAEDashboard does for fields it lacks.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from features.exporters.context import ExportContext

BATCH = 128
CREATOR = "xenofeat"


def slug(text: str) -> str:
    """A Neuronpedia-style id: lowercase letters, digits and dashes."""
    s = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return s or "model"


def layer_of(hook: str) -> int:
    m = re.search(r"blocks\.(\d+)\.", hook)
    return int(m.group(1)) if m else 0


def cuid(*parts: Any) -> str:  # noqa: ANN401
    """A deterministic 25-character cuid-like id."""
    return "c" + hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:24]


def _f(v: Any) -> float | None:  # noqa: ANN401
    v = float(v)
    return v if math.isfinite(v) else None


def _score(v: float | None) -> float | None:
    """A label attempt's score (None when it was not computed; 0.0 stays 0.0)."""
    return None if v is None else _f(v)


def _dump(path: Path, rows: list[dict[str, Any]], gz: bool) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    path.write_bytes(gzip.compress(data, compresslevel=5) if gz else data)


def _activation_rows(
    ctx: ExportContext, latent: int, ids: dict[str, str], now: str
) -> tuple[list[dict[str, Any]], float]:  # noqa: ANN401
    ex = ctx.store.examples(latent)
    vocab = ctx.store.vocab
    rows, max_act = [], 0.0
    groups = [(ex.top, None)] + [
        (ex.deciles, int(d)) for d in (np.unique(ex.deciles.decile) if ex.deciles.decile is not None else [])
    ]
    for win, dec in groups:
        keep = np.arange(len(win.tokens)) if dec is None else np.flatnonzero(win.decile == dec)
        if len(keep) == 0:
            continue
        centre_vals = win.value[keep]
        for j in keep:
            tok = win.tokens[j]
            ok = tok >= 0
            tokens = [vocab[t] if t < len(vocab) else f"<{t}>" for t in tok[ok]]
            vals = [float(v) for v in win.acts[j][ok]]
            qual = int(ok[: win.center].sum())
            mx = max(vals) if vals else 0.0
            max_act = max(max_act, mx)
            rows.append({
                "id": cuid(ids["modelId"], ids["layer"], latent, "act", dec, int(win.flat_idx[j])),
                "tokens": tokens, "values": vals, "index": str(latent), "layer": ids["layer"],
                "modelId": ids["modelId"], "maxValue": mx, "maxValueTokenIndex": int(np.argmax(vals)) if vals else 0,
                "minValue": min(vals) if vals else 0.0, "creatorId": CREATOR,
                "dataSource": ids["dataset"], "dataIndex": str(int(win.flat_idx[j])),
                "dfaValues": [], "dfaTargetIndex": None, "dfaMaxValue": None, "createdAt": now, "lossValues": [],
                "logitContributions": None,
                "binMin": -1 if dec is None else float(centre_vals.min()),
                "binMax": float(centre_vals.max()),
                "binContains": -1 if dec is None else 0.1,
                "qualifyingTokenIndex": qual,
            })  # fmt: skip
    return rows, max_act


def write(ctx: ExportContext, folder: Path) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    model_id = slug(ctx.model_name())
    set_name = f"xenofeat-{slug(ctx.selected.name)}"
    layer = layer_of(ctx.hook)
    source_id = f"{layer}-{set_name}"
    out = folder / model_id / source_id
    for sub in ("features", "activations", "explanations"):
        (out / sub).mkdir(parents=True)
    dataset = str(ctx.cache_path.name)
    ids = {"modelId": model_id, "layer": source_id, "dataset": dataset}
    store, sae_dec = ctx.store, None
    d_in = ctx.summary["sae"].get("d_in")
    common = {"creatorId": CREATOR, "createdAt": now}
    _dump(out / "release.jsonl", [{"name": set_name, "description": ctx.selected.description,
          "descriptionShort": ctx.selected.name, "creatorName": CREATOR, "creatorNameShort": CREATOR,
          "visibility": "PUBLIC", "isNewUi": False, "featured": False, "urls": [], "creatorEmail": None,
          "defaultSourceSetName": set_name, "defaultSourceId": source_id, "defaultUmapSourceIds": [], **common}], False)  # fmt: skip
    _dump(out / "model.jsonl", [{"id": model_id, "instruct": False, "displayNameShort": model_id,
          "displayName": ctx.model_name(), "tlensId": None, "dimension": d_in, "visibility": "PUBLIC",
          "defaultSourceSetName": set_name, "defaultSourceId": source_id, "inferenceEnabled": False,
          "layers": layer + 1, "neuronsPerLayer": 0, "owner": CREATOR, "updatedAt": now, "website": None, **common}], False)  # fmt: skip
    _dump(out / "sourceset.jsonl", [{"modelId": model_id, "name": set_name, "hasDashboards": True,
          "visibility": "PUBLIC", "description": ctx.selected.description, "type": "xenofeat", "creatorName": CREATOR,
          "urls": [], "creatorEmail": None, "releaseName": set_name, "defaultOfModelId": None, "defaultRange": 1,
          "defaultShowBreaks": True, "showDfa": False, "showCorrelated": False, "showHeadAttribution": False,
          "showUmap": False, **common}], False)  # fmt: skip
    _dump(out / "source.jsonl", [{"id": source_id, "modelId": model_id, "setName": set_name, "hasDashboards": True,
          "inferenceEnabled": False, "inferenceHosts": [], "saelensConfig": json.dumps(ctx.sae_cfg()),
          "saelensRelease": None, "saelensSaeId": None, "hfRepoId": None, "hfFolderId": None, "visibility": "PUBLIC",
          "defaultOfModelId": None, "hasUmap": False, "hasUmapLogSparsity": False, "hasUmapClusters": False,
          "num_prompts": int(ctx.scored_seqs()), "num_tokens_in_prompt": int(store.context_size), "dataset": dataset,
          "notes": f"xenofeat export {ctx.selected.selection}", **common}], False)  # fmt: skip
    sae_dec = ctx.load_sae().W_dec.detach().float().numpy()  # (F, d)
    rows = ctx.rows.to_dict(orient="records")
    for b in range(0, len(rows), BATCH):
        feats, acts, expl = [], [], []
        for rec in rows[b : b + BATCH]:
            i = int(rec["feature"])
            ex = store.examples(i)
            a_rows, max_act = _activation_rows(ctx, i, ids, now)
            acts += a_rows
            dec = sae_dec[i]
            top3 = np.argsort(-np.abs(dec))[:3]
            l1 = np.abs(dec).sum() or 1.0
            feats.append({"modelId": model_id, "layer": source_id, "index": str(i), "maxActApprox": max_act,
                "hasVector": False, "vector": [], "vectorLabel": None, "vectorDefaultSteerStrength": 10,
                "hookName": ctx.hook, "topkCosSimIndices": [int(v) for v in ex.nearest],
                "topkCosSimValues": [float(v) for v in ex.nearest_cos],
                "neuron_alignment_indices": [int(v) for v in top3], "neuron_alignment_values": [float(dec[v]) for v in top3],
                "neuron_alignment_l1": [float(abs(dec[v]) / l1) for v in top3],
                "correlated_neurons_indices": [], "correlated_neurons_pearson": [], "correlated_neurons_l1": [],
                "correlated_features_indices": [], "correlated_features_pearson": [], "correlated_features_l1": [],
                "neg_str": [], "neg_values": [], "pos_str": [], "pos_values": [], "frac_nonzero": float(rec["density"]),
                "freq_hist_data_bar_heights": [int(v) for v in ex.hist_counts],
                "freq_hist_data_bar_values": [float(v) for v in (ex.hist_edges[:-1] + ex.hist_edges[1:]) / 2],
                "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [], "decoder_weights_dist": [],
                "sourceSetName": set_name, **common})  # fmt: skip
            best = str(rec.get("best_describer", "none"))
            auroc = rec.get(f"auroc_{best}", float("nan"))
            notes = {
                k: rec[k]
                for k in ("labelability", "labelability_hi", "well_defined", "flag", "stability", "density")
            }
            expl.append({"id": cuid(model_id, source_id, i, "lbl"), "modelId": model_id, "layer": source_id,
                "index": str(i), "description": str(rec.get("readable", "")), "authorId": CREATOR,
                "typeName": f"xenofeat_{best}", "explanationModelName": "xenofeat-lbl-v1",
                "notes": json.dumps(notes, default=lambda o: o.item() if hasattr(o, "item") else str(o)),
                "scoreV1": _f(auroc), "scoreV2": _f(rec.get("labelability", float("nan"))), **common})  # fmt: skip
            if str(rec.get("llm_model", "") or ""):  # the llm describer (`xenofeat explain`)
                expl.append({"id": cuid(model_id, source_id, i, "llm"), "modelId": model_id, "layer": source_id,
                    "index": str(i), "description": str(rec["llm_explanation"]), "authorId": CREATOR,
                    "typeName": "xenofeat_llm", "explanationModelName": str(rec["llm_model"]),
                    "notes": json.dumps({"score_kind": rec.get("llm_score_kind"), "n_windows": int(rec.get(
                        "llm_n_windows", 0)), "prompt_version": rec.get("llm_prompt_version")}),
                    "scoreV1": _f(rec.get("auroc_llm", float("nan"))), "scoreV2": None, **common})  # fmt: skip
            for k, att in enumerate(ctx.labels_tried(i)):
                expl.append({"id": cuid(model_id, source_id, i, "tried", k), "modelId": model_id, "layer": source_id,
                    "index": str(i), "description": att["text"],
                    "authorId": CREATOR, "typeName": "xenofeat_label_tester", "explanationModelName": "human",
                    "notes": json.dumps(att, default=str), "scoreV1": _score(att["auroc"]),
                    "scoreV2": None, **common})  # fmt: skip
        n = b // BATCH
        _dump(out / "features" / f"batch-{n}.jsonl.gz", feats, True)
        _dump(out / "activations" / f"batch-{n}.jsonl.gz", acts, True)
        _dump(out / "explanations" / f"batch-{n}.jsonl.gz", expl, True)
