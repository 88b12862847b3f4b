"""The one writer of feature stores: `xenofeat score` and the test and benchmark helpers all write through it.

`write_store(folder, content)` writes the four files of a store (spec in STORE.md) into `folder`; the scorer calls
it on `RUN/features.tmp/` and renames the folder when it returns (`features.score.publish`). The table and the
examples are checked against the schema (`features.store.schema`) first: every declared column present and nothing
undeclared, every column stored in its declared dtype and in the declared order; every required dataset present,
none undeclared, each stored in its declared dtype. So a store cannot drift from its specification, whoever writes it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.store import schema


@dataclass(frozen=True)
class ExamplesAttrs:
    """Root attributes of examples.h5."""

    n_latents: int
    """F."""
    context_size: int
    """L, tokens per sequence of the scored grid."""
    before: int
    """Tokens before the centre in example windows (the centre column is `before`)."""
    after: int
    """Tokens after the centre in example windows."""
    lbl_window: int
    """Tokens before the centre in LBL windows (the centre is last)."""
    hook: str
    """Hook the activations were read at."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["center"] = self.before
        return d


@dataclass(frozen=True)
class StoreContent:
    """Everything a store holds, before it is written."""

    table: pd.DataFrame
    """features.parquet: one row per latent, the schema's columns."""
    definition_toml: str
    """definition.toml: the definition as applied."""
    attrs: ExamplesAttrs
    datasets: dict[str, Any]
    """examples.h5 datasets by path."""
    summary: dict[str, Any]
    """summary.json (the format keys are added on writing)."""


def ragged_offsets(counts: np.ndarray) -> np.ndarray:
    """(F+1,) int64 offsets from per-latent counts (F,): latent i owns rows offsets[i]:offsets[i+1]."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def conform_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table in the schema's column order and dtypes; ValueError naming missing or undeclared columns."""
    cols = schema.table_columns()
    names = [c.name for c in cols]
    missing = [n for n in names if n not in table.columns]
    extra = [n for n in table.columns if n not in names]
    if missing or extra:
        raise ValueError(f"feature table does not match the schema: missing {missing}, undeclared {extra}")
    out = pd.DataFrame(index=range(len(table)))
    for c in cols:
        values = table[c.name].to_numpy()
        out[c.name] = values.astype(str) if c.dtype == "str" else values.astype(c.dtype)
    return out


def conform_datasets(data: dict[str, Any]) -> dict[str, Any]:
    """The datasets in their declared dtypes; ValueError naming missing required or undeclared datasets."""
    out: dict[str, Any] = {}
    for name, arr in data.items():
        decl = schema.declared_dataset(name)
        if decl is None:
            raise ValueError(f"examples.h5: dataset {name!r} is not declared in the schema")
        out[name] = arr if decl.dtype == "utf-8" else np.asarray(arr).astype(decl.dtype, copy=False)
    missing = [d.name for d in schema.datasets() if d.required and d.name not in data]
    if missing:
        raise ValueError(f"examples.h5: missing datasets {', '.join(missing)}")
    return out


def _stamp() -> dict[str, str]:
    return {"format": schema.STORE_FORMAT, "format_version": schema.FORMAT_VERSION}


def write_table(path: Path, table: pd.DataFrame) -> None:
    """Write the per-latent table (conformed to the schema) as Parquet with the format in the schema metadata."""
    t = pa.Table.from_pandas(conform_table(table), preserve_index=False)
    meta = dict(t.schema.metadata or {})
    meta[schema.META_KEY] = json.dumps(_stamp()).encode()
    pq.write_table(t.replace_schema_metadata(meta), path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write summary.json, stamped with the format and version."""
    path.write_text(json.dumps({**_stamp(), **data}, indent=1, default=_json_default), encoding="utf-8")


def write_examples(path: Path, attrs: ExamplesAttrs, data: dict[str, Any]) -> None:
    """Write examples.h5: root attributes and the datasets (conformed to the schema), chunked and compressed."""
    data = conform_datasets(data)
    with h5py.File(path, "w") as f:
        for k, v in {**_stamp(), **attrs.to_dict()}.items():
            f.attrs[k] = v
        for name, arr in data.items():
            if name == "vocab":
                f.create_dataset(name, data=np.array(arr, dtype=object), dtype=h5py.string_dtype("utf-8"))
                continue
            big = arr.ndim >= 1 and arr.shape[0] > 256
            chunks = (min(arr.shape[0], 1024),) + arr.shape[1:] if big else None
            f.create_dataset(name, data=arr, chunks=chunks, compression="gzip" if big else None)


def write_data(folder: Path, content: StoreContent) -> None:
    """definition.toml, features.parquet and examples.h5 (the summary comes last, `write_summary`)."""
    (folder / schema.DEFINITION_FILE).write_text(content.definition_toml, encoding="utf-8")
    write_table(folder / schema.TABLE_FILE, content.table)
    write_examples(folder / schema.EXAMPLES_FILE, content.attrs, content.datasets)


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    """summary.json."""
    write_json(folder / schema.SUMMARY_FILE, summary)


def write_store(folder: Path, content: StoreContent) -> Path:
    """All four files of a store into `folder` (created if needed); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    write_data(folder, content)
    write_summary(folder, content.summary)
    return folder
