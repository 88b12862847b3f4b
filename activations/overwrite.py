"""The one rule behind every `--overwrite`: xenofeat replaces only what it wrote itself, as the same kind of output.

Each kind of output carries a marker that says what it is:

| kind | marker |
| --- | --- |
| activation cache | an HDF5 file whose root attribute `encoding_type` is `xenofeat.activation-cache` |
| training run | a folder holding `run.json` with `"kind": "xenofeat.sae-ensemble"` |
| feature store | a folder holding `summary.json` with `"format": "xenofeat.feature-store"` |
| export | a folder holding `xenofeat-export.json` with `"format": "xenofeat.export"` |

`check_replace_<kind>(path)` is called before anything is written when `--overwrite` would replace `path`; it
refuses (one UserError line naming the path and what it is) anything else: another kind of xenofeat output (a run is
never replaced by an export), a file or folder xenofeat did not write, the current folder or any folder above it, a
symbolic link. `check_location(path)` refuses any output inside a feature store folder, overwrite or not, since the
store is replaced as a whole by the next score. The markers are declared here, at the bottom of the import chain, so
every package can use the guard; each owner module (activations.format, sae_training.run, features.store,
features.exporters) uses the same values, and a test checks that they agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from activations import format as fmt
from activations.errors import UserError

RUN_FILE = "run.json"
RUN_KIND = "xenofeat.sae-ensemble"
STORE_SUMMARY = "summary.json"
STORE_FORMAT = "xenofeat.feature-store"
EXPORT_MARKER = "xenofeat-export.json"
EXPORT_FORMAT = "xenofeat.export"

CACHE, RUN, STORE, EXPORT = "an activation cache", "a training run", "a feature store", "an export"


def _json_field(path: Path, key: str) -> Any:  # noqa: ANN401 - whatever the file holds
    """`key` of the JSON object in `path`; None when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def _is_cache(path: Path) -> bool:
    if not path.is_file():
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get(fmt.A_ENCODING_TYPE) == fmt.ENCODING_TYPE
    except (OSError, ValueError):
        return False


def is_store(path: Path) -> bool:
    """A folder holding a xenofeat feature store's summary.json."""
    return path.is_dir() and _json_field(path / STORE_SUMMARY, "format") == STORE_FORMAT


def what_is(path: Path) -> str | None:
    """The kind of xenofeat output at `path` (CACHE, RUN, STORE, EXPORT), or None for anything else."""
    if path.is_symlink():
        return None
    if _is_cache(path):
        return CACHE
    if not path.is_dir():
        return None
    if _json_field(path / RUN_FILE, "kind") == RUN_KIND:
        return RUN
    if is_store(path):
        return STORE
    if _json_field(path / EXPORT_MARKER, "format") == EXPORT_FORMAT:
        return EXPORT
    return None


def _check_replace(path: Path, kind: str) -> None:
    """UserError unless `path` is a xenofeat output of `kind` that may be deleted and written anew."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(
            f"{path}: --overwrite does not replace a symbolic link; remove it or choose another --out"
        )
    here, target = Path.cwd().resolve(), path.resolve()
    if here == target or target in here.parents:
        raise UserError(
            f"{path}: --overwrite would replace the current folder or a folder above it; choose another --out"
        )
    if target == Path.home().resolve():
        raise UserError(f"{path}: --overwrite would replace the home folder; choose another --out")
    found = what_is(path)
    if found == kind:
        return
    what = f"{found}, not {kind}" if found else f"not {kind} written by xenofeat"
    raise UserError(
        f"{path}: --overwrite replaces only {kind} that xenofeat wrote, and this is {what}; "
        "nothing was changed (remove it yourself or choose another --out)"
    )


def check_replace_cache(path: Path) -> None:
    """May `--overwrite` replace the file at `path` with a new activation cache?"""
    _check_replace(path, CACHE)


def check_replace_run(path: Path) -> None:
    """May `--overwrite` replace the folder at `path` with a new training run?"""
    _check_replace(path, RUN)


def check_replace_store(path: Path) -> None:
    """May `--overwrite` replace the folder at `path` (RUN/features) with a new feature store?"""
    _check_replace(path, STORE)


def check_replace_export(path: Path) -> None:
    """May `--overwrite` replace the folder at `path` with a new export?"""
    _check_replace(path, EXPORT)


def check_location(path: Path, option: str = "--out") -> None:
    """Refuse an output inside a feature store folder (the next score replaces that folder as a whole)."""
    target = Path(path).resolve()
    for parent in target.parents:
        if is_store(parent):
            raise UserError(
                f"{option}: {path} is inside the feature store {parent}, which the next score replaces; "
                "choose a folder outside it"
            )
