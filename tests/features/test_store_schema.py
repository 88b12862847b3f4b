"""The store's schema: STORE.md agrees with it, the one writer enforces it, and a format 1.0 store still reads."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from features.columns import Column
from features.store import FeatureStore, schema, write_table
from features.store.writer import conform_datasets
from tests.helpers.common import REPO
from tests.helpers.demo_store import build_random_store

FIXTURE_1_0 = REPO / "tests" / "fixtures" / "store-v1.0"


def test_store_md_tables_are_the_schemas():
    text = schema.STORE_MD.read_text(encoding="utf-8")
    # if this fails: python -c "from features.store.schema import update_store_md; update_store_md()"
    assert schema.render_store_md(text) == text
    for col in schema.table_columns():
        assert f"\n| {col.name} | {col.dtype} |" in text


def test_every_column_and_dataset_is_declared_once():
    cols = [c.name for c in schema.table_columns()]
    assert (
        len(cols) == len(set(cols))
        and cols[0] == "feature"
        and cols[-3:] == ["well_defined", "flag", "token_anchored"]
    )
    names = [d.name for d in schema.datasets()]
    assert len(names) == len(set(names))
    assert schema.declared_dataset("downstream/embedding_shift").name == "downstream/<name>"
    assert schema.declared_dataset("downstream/a/b") is None and schema.declared_dataset("matches/x") is None


def test_demo_store_is_written_through_the_schema(tmp_path: Path):
    build_random_store(tmp_path, 12)
    store = FeatureStore.open(tmp_path)
    assert list(store.table.columns) == [c.name for c in schema.table_columns()]
    for col in schema.table_columns():
        kind = store.table[col.name].dtype
        expected = {"bool": "b", "int64": "i", "float64": "f"}.get(col.dtype)
        assert expected is None or kind.kind == expected, (col.name, kind)
    assert store.summary["format_version"] == schema.FORMAT_VERSION
    with h5py.File(tmp_path / "features" / "examples.h5") as f:
        present = set()
        f.visititems(lambda name, obj: present.add(name) if isinstance(obj, h5py.Dataset) else None)
    required = {d.name for d in schema.datasets() if d.required}
    assert required <= present and all(schema.declared_dataset(n) for n in present)
    ex = store.examples(3)
    assert ex.top.tokens.shape[1] == 15 and len(ex.matches) == 2


def test_writer_refuses_what_the_schema_does_not_declare(tmp_path: Path):
    build_random_store(tmp_path, 4)
    table = FeatureStore.open(tmp_path).table
    with pytest.raises(ValueError, match=r"missing \['flag'\]"):
        write_table(tmp_path / "t.parquet", table.drop(columns=["flag"]))
    with pytest.raises(ValueError, match=r"undeclared \['colour'\]"):
        write_table(tmp_path / "t.parquet", table.assign(colour=1))
    with pytest.raises(ValueError, match="'extra/thing' is not declared"):
        conform_datasets({"extra/thing": np.zeros(3)})
    with pytest.raises(ValueError, match="missing datasets top/offsets"):
        conform_datasets({"vocab": ["a"]})
    assert not (tmp_path / "t.parquet").exists()


def test_writer_stores_declared_dtypes(tmp_path: Path):
    build_random_store(tmp_path, 4)
    table = FeatureStore.open(tmp_path).table
    table["match_cos"] = table["match_cos"].astype(np.float32)  # as format 1.0 stored it
    write_table(tmp_path / "t.parquet", table)
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert back["match_cos"].dtype == np.float64
    np.testing.assert_array_equal(back["match_cos"], table["match_cos"].astype(np.float64))


def test_a_format_1_0_store_still_reads():
    store = FeatureStore.open(FIXTURE_1_0)
    assert store.summary["format_version"] == "1.0" and store.n_latents == 6
    t = store.table
    assert list(t["feature"]) == list(range(6)) and t["flag"].dtype == bool
    assert "duplicate_of" not in t.columns  # a 1.0 store is read as it is, not padded
    ex = store.examples(2)
    assert ex.top.tokens.shape == (3, 7) and ex.deciles.decile is not None
    assert ex.test.tokens.shape[0] == 10 and ex.test.label.sum() == 5
    assert len(store.vocab) == 30 and store.definition().name == "WDF-v1"
    meta = json.loads((FIXTURE_1_0 / "summary.json").read_text())
    assert meta["format"] == schema.STORE_FORMAT


def test_column_dtypes_are_checked():
    with pytest.raises(ValueError, match="is not bool, int64, float64 or str"):
        Column("x", "float32", "x", "score")
