"""Exports of a selection of latents: `export(run, selection, fmt, out)` and the registry of formats.

The public entry points are `features.export(...)` (Python) and `xenofeat export` (features/cli/export.py); this
subpackage is named `exporters` so that it never shadows the function `features.export`. A new format is one module
here plus its row in FORMATS.

Every format writes into a fresh hidden folder beside `out` and renames it to `out` only when complete, so `out`
is either absent, the previous export (kept until the new one is whole), or a finished export. The selection is
resolved and checked before anything is written; an existing `out` is refused unless `overwrite`.

Formats (one module each; `docs/exports.md` has an example command per format):

| name | module | what |
| --- | --- | --- |
| json | json_set | the feature set with scores and labels tried, validated against feature_set.schema.json |
| csv, parquet | table | the selected rows of features.parquet |
| safetensors | directions | encoder/decoder directions, biases, thresholds, with metadata |
| saelens | saelens_sub | a sae-lens folder holding only the selected latents |
| neuronpedia | neuronpedia | Neuronpedia's bulk-import layout |
| delphi | delphi | a delphi latent cache (safetensors split along latents, config.json per hook) |
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activations.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Format:
    """One export format: where its writer lives and what it produces."""

    name: str
    """The --format value."""
    module: str
    """Module holding the writer."""
    function: str
    """Writer: f(ctx: ExportContext, folder: Path) -> None, writing into an empty folder."""
    help: str
    """One line for --help and docs."""


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "json",
            "features.exporters.json_set",
            "write",
            "the feature set as JSON (scores, describer, labels tried)",
        ),
        Format(
            "csv", "features.exporters.table", "write_csv", "the selected rows of the feature table as CSV"
        ),
        Format("parquet", "features.exporters.table", "write_parquet", "the selected rows as Parquet"),
        Format(
            "safetensors",
            "features.exporters.directions",
            "write",
            "encoder/decoder directions, biases, thresholds",
        ),
        Format(
            "saelens",
            "features.exporters.saelens_sub",
            "write",
            "a sae-lens SAE folder of only the selected latents",
        ),
        Format("neuronpedia", "features.exporters.neuronpedia", "write", "Neuronpedia's bulk-import layout"),
        Format(
            "delphi",
            "features.exporters.delphi",
            "write",
            "a delphi latent cache (LLM explanation and scoring)",
        ),
    )
}


def check_format(fmt: str) -> Format:
    """The Format of a name; UserError listing the valid names otherwise."""
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
    return FORMATS[fmt]


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an existing output without `overwrite`, and a missing parent folder."""
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise UserError(
            f"--out: {out} already exists; pass --overwrite to replace it or choose another --out"
        )
    if not out.parent.is_dir():
        raise UserError(f"--out: the folder {out.parent} does not exist")


def export(
    run: Any, selection: Any, fmt: str, out: str | Path, *, overwrite: bool = False, **options: Any
) -> Path:
    """Export the latents `selection` picks from the scored run `run` as `fmt` into the folder `out`.

    `selection`: a features.selection.Selection, a FeatureSet, a list of latent indices, or "flagged".
    `options` go to the format's writer (e.g. `n_splits` for delphi). Returns `out`.
    """
    from features.exporters.context import ExportContext
    from features.selection import coerce, resolve

    spec = check_format(fmt)
    out = Path(out)
    check_out(out, overwrite)
    ctx = ExportContext.open(run, options)
    selected = resolve(ctx.store.table, coerce(selection), ctx.run)
    ctx = ctx.with_selection(selected)
    writer = getattr(importlib.import_module(spec.module), spec.function)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        writer(ctx, tmp)
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        elif out.exists() or out.is_symlink():
            out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        ctx.store.close()
    log.info("exported %d latents (%s) as %s to %s", len(selected.features), selected.selection, fmt, out)
    return out
