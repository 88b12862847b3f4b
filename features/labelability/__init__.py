"""LBL-v1 labelability: does a short, human-checkable description predict when a latent fires?

Per latent, positive and negative token windows are sampled and split by document; every registered *describer* is
fit on the train windows and scored by AUROC on the test windows; `LBL = clip(2 * max AUROC - 1, 0, 1)`, with a
bootstrap upper bound. Entry points: `run_lbl` (the scorer's, fanned out over processes), `labelability` (one
process), `shuffled_control` (the null) and `lbl_columns` (the columns LBL writes to features.parquet).

Modules, one concern each:
- `config`: `LBLConfig`, the `[labelability]` section of the definition (every constant that shapes the numbers).
- `windows`: the document split, the per-token firing table, positive/negative sampling, window matrices.
- `registry`: the `Describer` protocol, what a describer sees and returns, `register_describer`.
- `token`, `rule`, `semantic`, `position`, `properties`, `document`, `compose`: the built-in describers, one module
  each, each ending in `DESCRIBER = ...`; the registry finds every module of this package that defines `DESCRIBER`
  (no list to edit). `embedding` holds the semantic describer's sentence-embedding backends; `compose` combines the
  `window_features` of every describer that offers them into one sparse rule.
- `run`: one LBL pass in one process (sampling, describers, pruning, bootstrap); `parallel`: the forked fan-out.
- `conditional`: the anchor tokens, conditional labelability (which of their occurrences fire) and its columns.
- `table`: `LBLTable` (results keyed by describer name), `lbl_columns`; `metrics`: the AUROC everything uses.

Adding a describer is one new module plus its tests:
1. `features/labelability/<name>.py`: a class with `name`, `tie_order`, `summary`, `cheap` and the methods
   `prepare(data)`, `describe(sample, data, state) -> Description` (fit on `sample.train` windows, score the test
   windows, give a readable form; in the shuffled control fit on the windows only) and `columns()` (at least
   `auroc_column(self)`). Settings it needs that a user should be able to change go in `config.LBLConfig`.
   The module ends with `DESCRIBER = <Class>()`: that is how the registry finds it (a plug-in outside the package
   calls `register_describer` itself).
2. `tests/features/test_<name>_describer.py`: a planted latent it labels and one it must not.
Its `auroc_<name>` column, its part in LBL (max, bootstrap, pruning, best_describer), the store schema's LBL columns
and the viewer's describer section, table column and filter all follow from the registry.
"""

from __future__ import annotations

from features.labelability.config import LBLConfig
from features.labelability.metrics import auroc
from features.labelability.parallel import run_lbl
from features.labelability.registry import (
    Describer,
    Description,
    LatentSample,
    PassData,
    auroc_column,
    describer_names,
    get_describer,
    register_describer,
    registered_describers,
    unregister_describer,
)
from features.labelability.run import labelability, shuffled_control
from features.labelability.table import LBLTable, TestWindows, lbl_columns

__all__ = [
    "Describer",
    "Description",
    "LBLConfig",
    "LBLTable",
    "LatentSample",
    "PassData",
    "TestWindows",
    "auroc",
    "auroc_column",
    "describer_names",
    "get_describer",
    "labelability",
    "lbl_columns",
    "register_describer",
    "registered_describers",
    "run_lbl",
    "shuffled_control",
    "unregister_describer",
]
