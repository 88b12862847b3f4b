"""A column of the feature table, declared once by the module that computes it.

Criteria (`features.criteria`), describers (`features.labelability`) and the scorer each declare the columns they
write as `Column`s; the store's schema is the union of those declarations, and STORE.md's column table and the
viewer's labels come from them, so a column's name, dtype and meaning are written in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One column of `features.parquet`."""

    name: str
    """Column name in features.parquet."""
    dtype: str
    """numpy dtype name of the stored values: bool, int64, float64 or str."""
    meaning: str
    """One line for people: what the value is, with its unit."""
    owner: str
    """Who writes it: `criterion:<name>`, `describer:<name>`, `labelability`, `flag` or `score`."""

    def __post_init__(self) -> None:
        if self.dtype not in ("bool", "int64", "float64", "str"):
            raise ValueError(f"column {self.name}: dtype {self.dtype!r} is not bool, int64, float64 or str")


@dataclass(frozen=True)
class Dataset:
    """One dataset of `examples.h5`, declared once by the module that writes it."""

    name: str
    """Path in the HDF5 file (`group/name`); `<name>` stands for any name (a family of optional datasets)."""
    shape: str
    """Shape in STORE.md's symbols: F latents, S seeds, n ragged rows, W window width, B bins, ..."""
    dtype: str
    """numpy dtype name of the stored values (`utf-8` for strings)."""
    meaning: str
    """One line for people."""
    owner: str
    """Who writes it: `criterion:<name>`, `labelability`, `score`."""
    required: bool = True
    """False: MAY be absent (a reader must cope)."""
