"""The flag rule: well defined by WDF-v1 (C1-C4) yet resisting every human-style description (LBL-v1).

`well_defined = C1 & C2 & C3 & C4`; `flag = well_defined & (labelability < max_lbl) & (labelability_hi < max_lbl_hi)
& (n_test_pos >= min_test_pos)`. A latent whose labelability was not measured (NaN) is never flagged: every
comparison with NaN is false. Vectorised over a table (a pandas DataFrame or a mapping of equal-length arrays).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd

from features.definition import FlagConfig

CRITERIA_COLUMNS = ("support_pass", "stability_pass", "function_pass", "mdl_pass")
"""Boolean columns C1-C4 the flag needs, in order."""
LBL_COLUMNS = ("labelability", "labelability_hi", "n_test_pos")


def well_defined(c1: np.ndarray, c2: np.ndarray, c3: np.ndarray, c4: np.ndarray) -> np.ndarray:
    """(F,) bool: passes C1-C4."""
    return np.asarray(c1, bool) & np.asarray(c2, bool) & np.asarray(c3, bool) & np.asarray(c4, bool)


def flag(
    is_well_defined: np.ndarray,
    labelability: np.ndarray,
    labelability_hi: np.ndarray,
    n_test_pos: np.ndarray,
    cfg: FlagConfig,
) -> np.ndarray:
    """(F,) bool: well defined, LBL and its bootstrap upper bound below their thresholds, enough test positives."""
    lbl = np.asarray(labelability, dtype=np.float64)
    hi = np.asarray(labelability_hi, dtype=np.float64)
    n_pos = np.asarray(n_test_pos, dtype=np.float64)
    return (
        np.asarray(is_well_defined, bool)
        & (lbl < cfg.max_lbl)
        & (hi < cfg.max_lbl_hi)
        & (n_pos >= cfg.min_test_pos)
    )


def apply_flags(table: pd.DataFrame | Mapping[str, np.ndarray], cfg: FlagConfig) -> pd.DataFrame:
    """The table with `well_defined` and `flag` columns added (from CRITERIA_COLUMNS and LBL_COLUMNS)."""
    df = pd.DataFrame(table).copy()
    missing = [c for c in CRITERIA_COLUMNS + LBL_COLUMNS if c not in df.columns]
    if missing:
        raise KeyError(f"the flag needs columns {', '.join(missing)}")
    df["well_defined"] = well_defined(*(df[c].to_numpy() for c in CRITERIA_COLUMNS))
    df["flag"] = flag(
        df["well_defined"].to_numpy(),
        df["labelability"].to_numpy(),
        df["labelability_hi"].to_numpy(),
        df["n_test_pos"].to_numpy(),
        cfg,
    )
    return df


class FlagSummary(NamedTuple):
    """Counts for the `score` summary."""

    n_latents: int
    alive: int  # latents that fire at least once
    well_defined: int
    flagged: int
    passes: dict[str, int]  # per criterion column: latents passing it
    flagged_by_describer: dict[str, int]  # best describer of the flagged latents (when the column exists)


def summarize(table: pd.DataFrame) -> FlagSummary:
    """Counts of alive, well-defined and flagged latents, passes per criterion, flagged by best describer."""
    alive = int((table["firing_count"] > 0).sum()) if "firing_count" in table else len(table)
    by_describer: dict[str, int] = {}
    if "best_describer" in table:
        counts = table.loc[table["flag"], "best_describer"].value_counts()
        by_describer = {str(k): int(v) for k, v in counts.items()}
    return FlagSummary(
        n_latents=len(table),
        alive=alive,
        well_defined=int(table["well_defined"].sum()),
        flagged=int(table["flag"].sum()),
        passes={c: int(table[c].sum()) for c in CRITERIA_COLUMNS if c in table},
        flagged_by_describer=by_describer,
    )
