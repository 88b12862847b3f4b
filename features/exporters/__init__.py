"""Exports of a selection of latents: `export(run, selection, fmt, out)` and the registry of formats.

The public entry points are `features.export(...)` (Python) and `xenofeat export` (features/cli/export.py); this
subpackage is named `exporters` so that it never shadows the function `features.export`. A new format is one module
here plus its row in FORMATS.

Every format writes into a fresh hidden folder `.OUT.tmp-PID` beside `out`, which holds the export marker
`xenofeat-export.json` from its first moment and is renamed to `out` only when complete, so `out` is either absent,
the previous export (kept until the new one is whole), or a finished export. The selection is resolved and checked
before anything is written. An existing `out` is refused unless `overwrite`, and even then it is replaced only if it
is an earlier export (it holds the marker): never a run, a store, a cache, the current folder or a folder above it,
or anything xenofeat did not write (activations.overwrite); an `out` inside a feature store is always refused. A
killed export leaves only its hidden folder (or, killed while replacing, the previous export moved aside as
`.OUT.old-PID`); the next export to the same `out` removes the first and puts the second back if `out` is missing.

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

import glob
import importlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activations.errors import UserError
from activations.faults import fault_point
from activations.overwrite import (
    EXPORT,
    EXPORT_FORMAT,
    EXPORT_MARKER,
    check_location,
    check_replace_export,
    what_is,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Format:
    """One export format: where its writer lives and what it produces."""

    name: str
    """The --format value."""
    module: str
    """Module holding the writer."""
    function: str
    """Writer: f(ctx: ExportContext, folder: Path) -> None, writing into a folder that holds only the marker."""
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
    """Refuse an existing output without `overwrite`, one that is not an earlier export, a missing parent folder,
    and any output inside a feature store."""
    check_location(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise UserError(
                f"--out: {out} already exists; pass --overwrite to replace it or choose another --out"
            )
        check_replace_export(out)
    if not out.parent.is_dir():
        raise UserError(f"--out: the folder {out.parent} does not exist")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def clean_leftovers(out: Path) -> None:
    """Remove what killed exports to `out` left beside it (hidden folders of dead processes holding the marker);
    a previous export moved aside while being replaced is put back when `out` is missing."""
    for kind in ("tmp", "old"):
        for p in sorted(out.parent.glob(f".{glob.escape(out.name)}.{kind}-*")):
            pid = p.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _pid_alive(int(pid)) or what_is(p) != EXPORT:
                continue  # a live export's folder, or not one of ours: leave it
            if kind == "old" and not (out.exists() or out.is_symlink()):
                log.info("restoring the previous export %s from %s", out, p)
                os.replace(p, out)
            else:
                log.info("removing %s, left by an interrupted export", p)
                shutil.rmtree(p)


def _marker(fmt: str, selected: Any, run: Path) -> dict[str, Any]:  # noqa: ANN401 - features.selection.Selected
    from activations.version import __version__

    return {
        "format": EXPORT_FORMAT,
        "export_format": fmt,
        "selection": selected.selection,
        "n_features": int(len(selected.features)),
        "run": str(run),
        "xenofeat_version": __version__,
    }


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
    clean_leftovers(out)  # first: a previous export put back from a killed replace counts as existing
    check_out(out, overwrite)
    ctx = ExportContext.open(run, options)
    selected = resolve(ctx.store.table, coerce(selection), ctx.run)
    ctx = ctx.with_selection(selected)
    writer = getattr(importlib.import_module(spec.module), spec.function)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    aside = out.parent / f".{out.name}.old-{os.getpid()}"
    for p in (tmp, aside):
        if p.exists() and what_is(p) == EXPORT:  # this process's own, from an earlier call
            shutil.rmtree(p)
    tmp.mkdir()
    try:
        marker = json.dumps(_marker(fmt, selected, ctx.run), indent=1)
        (tmp / EXPORT_MARKER).write_text(marker, encoding="utf-8")
        writer(ctx, tmp)
        fault_point("export.before_rename")
        if out.exists():
            os.replace(out, aside)  # checked by check_out: an earlier export
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        ctx.store.close()
    if aside.exists():
        shutil.rmtree(aside)
    log.info("exported %d latents (%s) as %s to %s", len(selected.features), selected.selection, fmt, out)
    return out
