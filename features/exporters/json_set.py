"""The `json` export: a feature set with its scores and labels tried, validated against feature_set.schema.json.

`write` validates the document before it is written (a failure is a bug, not a user error); `import_set` reads such a
file back, validates it, checks its latents against the run, and saves it as a feature set of that run.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from activations.errors import UserError
from features.exporters.context import ExportContext
from features.store.sets import FeatureSet, load_sets, now_iso, save_set, validate_set_name

FILE = "feature_set.json"
FORMAT = "xenofeat.feature-set"
VERSION = "1.0"
TEXT_COLUMNS = (
    "best_describer",
    "readable",
    "llm_explanation",
    "llm_model",
    "llm_prompt_version",
    "llm_score_kind",
)


@cache
def schema() -> dict[str, Any]:
    """The shipped JSON Schema (package data of features.exporters)."""
    return json.loads(
        resources.files("features.exporters").joinpath("feature_set.schema.json").read_text("utf-8")
    )


def validate(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if `doc` is not a valid feature-set document."""
    import jsonschema

    jsonschema.validate(doc, schema(), cls=jsonschema.Draft202012Validator)


def _scalar(v: Any) -> Any:  # noqa: ANN401
    """A JSON value for a table cell (NaN and infinities become null)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    return str(v)


def llm_record(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The `llm` describer's result for a table row (`xenofeat explain`), or None when it was not explained."""
    if not str(rec.get("llm_model", "") or ""):
        return None
    return {
        "explanation": str(rec["llm_explanation"]),
        "auroc": _scalar(rec.get("auroc_llm")),
        "score_kind": str(rec.get("llm_score_kind", "none")),
        "n_windows": _scalar(rec.get("llm_n_windows")),
        "model": str(rec["llm_model"]),
        "prompt_version": str(rec.get("llm_prompt_version", "")),
    }


def build(ctx: ExportContext) -> dict[str, Any]:
    """The feature-set document for the context's selection."""
    sel = ctx.selected
    rows = ctx.rows
    feats = []
    for rec in rows.to_dict(orient="records"):
        i = int(rec["feature"])
        scores = {k: _scalar(v) for k, v in rec.items() if k not in ("feature", *TEXT_COLUMNS)}
        feats.append(
            {
                "index": i,
                "scores": scores,
                "describer": str(rec.get("best_describer", "none")),
                "readable": str(rec.get("readable", "")),
                "flag": bool(rec.get("flag", False)),
                "well_defined": bool(rec.get("well_defined", False)),
                "labels_tried": json.loads(json.dumps(ctx.labels_tried(i), default=_scalar)),
                "llm": llm_record(rec),
            }
        )
    d = ctx.definition
    return {
        "format": FORMAT,
        "format_version": VERSION,
        "name": sel.name,
        "description": sel.description,
        "selection": sel.selection,
        "created": now_iso(),
        "definition": {"name": d.get("name"), "version": d.get("version"), "toml": ctx.store.definition_toml},
        "run": ctx.run_info(),
        "features": feats,
    }


def write(ctx: ExportContext, folder: Path) -> None:  # noqa: ANN401
    doc = build(ctx)
    validate(doc)
    (folder / FILE).write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")


def import_set(run: Any, path: str | Path, *, name: str | None = None, overwrite: bool = False) -> FeatureSet:  # noqa: ANN401
    """Save the latents of a `json` export (a file, or an export folder holding feature_set.json) as a set of `run`.

    The set keeps the file's name and description unless `name` is given; an existing set of that name is refused
    unless `overwrite`. Latents outside the run's range are refused.
    """
    import jsonschema

    from features.store import FeatureStore

    path = Path(path)
    if path.is_dir():
        path = path / FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable JSON file ({err})") from None
    try:
        validate(doc)
    except jsonschema.ValidationError as err:
        where = "/".join(map(str, err.absolute_path)) or "document"
        raise UserError(f"{path}: not a xenofeat feature set ({where}: {err.message})") from None
    try:
        set_name = validate_set_name(name if name is not None else doc["name"])
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
    if set_name in load_sets(run) and not overwrite:
        raise UserError(
            f"{path}: the run already has a set named {set_name!r}; pass overwrite or another name"
        )
    with FeatureStore.open(Path(run.path) if hasattr(run, "path") else Path(run)) as store:
        n = store.n_latents
    fs = FeatureSet(set_name, doc.get("description", ""), [int(f["index"]) for f in doc["features"]])
    return save_set(run, fs, n_latents=n)


def set_json(run: Any, name: str) -> dict[str, Any]:  # noqa: ANN401
    """The `json` export document of the saved feature set `name` of `run`, validated (used by the viewer)."""
    from features.exporters.context import ExportContext
    from features.selection import Selection, resolve

    ctx = ExportContext.open(run)
    ctx = ctx.with_selection(resolve(ctx.store.table, Selection.from_set(name), ctx.run))
    doc = build(ctx)
    validate(doc)
    return doc
