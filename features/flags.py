"""The flag rule: well defined by the definition's gating criteria yet resisting every human-style description.

`well_defined` = the conjunction of the pass columns of every criterion that gates (C1-C4, read from the registry
`features.criteria.registry`); `flag = well_defined & (labelability < max_lbl) & (labelability_hi < max_lbl_hi)
& (n_test_pos >= min_test_pos)`. A latent whose labelability was not measured (NaN) is never flagged: every
comparison with NaN is false. Vectorised over a table (a pandas DataFrame or a mapping of equal-length arrays).
This module also owns the `[flag]` section, the `well_defined` / `flag` columns and the flag's rows of the viewer's
verdict table (`verdict_table`, which reads every criterion's declared rows first).

A flag of its own kind, `token_anchored` (conditional labelability, `features.labelability.conditional`): well
defined, labelled as a whole (`labelability >= max_lbl`: its tokens describe it), most of its firings on its anchor
tokens (`anchor_coverage >= anchor_min_coverage`) yet on a minority of their occurrences (`anchor_fraction <
anchor_max_fraction`), and which occurrences fire resists every describer with the flag's held-out and bootstrap
rules (`lbl_conditional < max_lbl_conditional`, `lbl_conditional_hi < max_lbl_conditional_hi`, `n_cond_test_pos >=
min_test_pos`). It excludes `flag` by construction (LBL on either side of `max_lbl`). A table without any of the
conditional columns (scored before they existed) has no token-anchored latent: not measured, like NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from activations.settings import Settings, integer, number
from features.columns import Column
from features.criteria.registry import VerdictRow, criteria, pass_columns


@dataclass(frozen=True)
class FlagConfig(Settings):
    """The flag: well defined (C1-C4) and resisting every describer, with enough held-out evidence."""

    max_lbl: float = number(0.4, 0.0, 1.0, lo_open=True)
    """Labelability must be below this."""
    max_lbl_hi: float = number(0.5, 0.0, 1.0, lo_open=True)
    """The bootstrap upper bound of labelability must be below this."""
    min_test_pos: int = integer(50, 0)
    """Fewest held-out positive windows behind the labelability score (and, for `token_anchored`, behind the
    conditional one: held-out positives centred on an anchor token)."""
    anchor_max_fraction: float = number(0.5, 0.0, 1.0, lo_open=True)
    """token_anchored: the latent fires on less than this share of its anchor tokens' occurrences."""
    anchor_min_coverage: float = number(0.5, 0.0, 1.0)
    """token_anchored: at least this share of its firings fall on its anchor tokens (it is anchored on them)."""
    max_lbl_conditional: float = number(0.4, 0.0, 1.0, lo_open=True)
    """token_anchored: conditional labelability (which occurrences fire) must be below this."""
    max_lbl_conditional_hi: float = number(0.5, 0.0, 1.0, lo_open=True)
    """token_anchored: the bootstrap upper bound of conditional labelability must be below this."""


LBL_COLUMNS = ("labelability", "labelability_hi", "n_test_pos")
"""The labelability columns the flag reads."""

ANCHORED_COLUMNS = (
    "lbl_conditional",
    "lbl_conditional_hi",
    "n_cond_test_pos",
    "anchor_fraction",
    "anchor_coverage",
)
"""The conditional-labelability columns `token_anchored` reads."""

COLUMNS = (
    Column("well_defined", "bool", "passes every gating criterion (C1 & C2 & C3 & C4)", "flag"),
    Column("flag", "bool", "well defined and resisting labels (the flag rule of the definition)", "flag"),
    Column("token_anchored", "bool", "well defined, labelled by its anchor tokens, firing on a minority of their "
           "occurrences, and which occurrences fire resists every describer (the [flag] section's anchored rule)",
           "flag"),
)  # fmt: skip

VERDICTS = (
    VerdictRow("labelability (LBL)", "labelability", "<", setting="max_lbl"),
    VerdictRow("LBL bootstrap upper bound", "labelability_hi", "<", setting="max_lbl_hi"),
    VerdictRow("held-out positives", "n_test_pos", "≥", setting="min_test_pos"),
)

ANCHORED_VERDICTS = (
    VerdictRow("labelability (LBL)", "labelability", "≥", setting="max_lbl"),
    VerdictRow(
        "share of firings on the anchor tokens", "anchor_coverage", "≥", setting="anchor_min_coverage"
    ),
    VerdictRow("share of anchor occurrences firing", "anchor_fraction", "<", setting="anchor_max_fraction"),
    VerdictRow("conditional LBL", "lbl_conditional", "<", setting="max_lbl_conditional"),
    VerdictRow(
        "conditional LBL bootstrap upper bound", "lbl_conditional_hi", "<", setting="max_lbl_conditional_hi"
    ),
    VerdictRow("held-out positives on anchor tokens", "n_cond_test_pos", "≥", setting="min_test_pos"),
)
"""The token-anchored flag's rows (`anchored_verdicts`; well defined is the flag's first condition too)."""


def well_defined(table: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
    """(F,) bool: passes every gating criterion of the registry."""
    cols = pass_columns()
    out = np.asarray(table[cols[0]], bool).copy()
    for c in cols[1:]:
        out &= np.asarray(table[c], bool)
    return out


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


def token_anchored(
    is_well_defined: np.ndarray, table: pd.DataFrame | Mapping[str, np.ndarray], cfg: FlagConfig
) -> np.ndarray:
    """(F,) bool: the token-anchored flag (module docstring) from LBL and the ANCHORED_COLUMNS of `table`."""

    def col(name: str) -> np.ndarray:
        return np.asarray(table[name], dtype=np.float64)

    with np.errstate(invalid="ignore"):
        return (
            np.asarray(is_well_defined, bool)
            & (col("labelability") >= cfg.max_lbl)
            & (col("anchor_coverage") >= cfg.anchor_min_coverage)
            & (col("anchor_fraction") < cfg.anchor_max_fraction)
            & (col("lbl_conditional") < cfg.max_lbl_conditional)
            & (col("lbl_conditional_hi") < cfg.max_lbl_conditional_hi)
            & (col("n_cond_test_pos") >= cfg.min_test_pos)
        )


def apply_flags(table: pd.DataFrame | Mapping[str, np.ndarray], cfg: FlagConfig) -> pd.DataFrame:
    """The table with `well_defined`, `flag` and `token_anchored` columns added (from the gating criteria,
    LBL_COLUMNS and ANCHORED_COLUMNS; a table with none of the latter has no token-anchored latent)."""
    df = pd.DataFrame(table).copy()
    missing = [c for c in pass_columns() + LBL_COLUMNS if c not in df.columns]
    anchored = [c for c in ANCHORED_COLUMNS if c in df.columns]
    if anchored:
        missing += [c for c in ANCHORED_COLUMNS if c not in df.columns]
    if missing:
        raise KeyError(f"the flag needs columns {', '.join(missing)}")
    df["well_defined"] = well_defined(df)
    df["flag"] = flag(
        df["well_defined"].to_numpy(),
        df["labelability"].to_numpy(),
        df["labelability_hi"].to_numpy(),
        df["n_test_pos"].to_numpy(),
        cfg,
    )
    df["token_anchored"] = (
        token_anchored(df["well_defined"], df, cfg) if anchored else np.zeros(len(df), bool)
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
    token_anchored: int = 0  # latents with the token-anchored flag (0 when the column does not exist)
    flagged_without_learned: int | None = (
        None  # the flag with C7 left out of well_defined (None: C7 not gating)
    )


def without_learned(table: pd.DataFrame, cfg: FlagConfig) -> np.ndarray | None:
    """(F,) bool: the flag as it would be if C7 did not gate (every other gating criterion and the LBL rules), or
    None when C7 does not gate here (no `learned_pass` column, or it passes everything). The random-init control reads
    against it: how many latents the cheap describers leave unexplained before asking whether the model learned them."""
    if "learned_pass" not in table or bool(np.asarray(table["learned_pass"], bool).all()):
        return None
    wd = np.ones(len(table), bool)
    for c in pass_columns():
        if c != "learned_pass":
            wd &= np.asarray(table[c], bool)
    return flag(wd, table["labelability"], table["labelability_hi"], table["n_test_pos"], cfg)


def summarize(table: pd.DataFrame, cfg: FlagConfig | None = None) -> FlagSummary:
    """Counts of alive, well-defined and flagged latents, passes per criterion, flagged by best describer (and, with
    the flag's settings, the flag without C7's gate: `without_learned`)."""
    alive = int((table["firing_count"] > 0).sum()) if "firing_count" in table else len(table)
    by_describer: dict[str, int] = {}
    if "best_describer" in table:
        counts = table.loc[table["flag"], "best_describer"].value_counts()
        by_describer = {str(k): int(v) for k, v in counts.items()}
    unlearned = None if cfg is None else without_learned(table, cfg)
    return FlagSummary(
        n_latents=len(table),
        alive=alive,
        well_defined=int(table["well_defined"].sum()),
        flagged=int(table["flag"].sum()),
        passes={c: int(table[c].sum()) for c in pass_columns() if c in table},
        flagged_by_describer=by_describer,
        token_anchored=int(table["token_anchored"].sum()) if "token_anchored" in table else 0,
        flagged_without_learned=None if unlearned is None else int(unlearned.sum()),
    )


# ---- the viewer's verdict table --------------------------------------------------------------------------------


def _verdict(rule: VerdictRow, row: Mapping[str, Any], cfg: Any) -> tuple[str, float, str, float, str]:  # noqa: ANN401
    def g(c: str) -> float:
        v = row.get(c)
        return float(v) if v is not None else float("nan")

    names = {f.name for f in fields(cfg)}
    thr = float(getattr(cfg, rule.setting)) if rule.setting in names else g(rule.column or "")
    value, col = g(rule.value), rule.verdict
    if col is not None and col in row and rule.rule.startswith("tag"):
        verdict = "tagged" if bool(row[col]) else "–"
    elif col is not None and col in row:
        verdict = "pass" if bool(row[col]) else "fail"
    elif math.isnan(value) or math.isnan(thr):
        verdict = "–"
    else:
        ok = {"<": value < thr, "≥": value >= thr, ">": value > thr}.get(rule.rule)
        verdict = ("pass" if ok else "fail") if ok is not None else ("tagged" if value >= thr else "–")
    return rule.quantity, value, rule.rule, thr, verdict


def verdict_table(row: Mapping[str, Any], defn: Any) -> list[tuple[str, str, float, str, float, str]]:  # noqa: ANN401
    """(criterion, quantity, value, rule, threshold, verdict) for every row every criterion declares, then the flag's;
    `defn` is the `features.definition.Definition` the store was scored with (the thresholds)."""
    out = []
    for c in criteria():
        cfg = defn.section(c.name)
        out += [(v.label or c.label, *_verdict(v, row, cfg)) for v in c.verdicts]
    return out + [("flag", *_verdict(v, row, defn.flag)) for v in VERDICTS]


def anchored_verdicts(row: Mapping[str, Any], defn: Any) -> list[tuple[str, float, str, float, str]]:  # noqa: ANN401
    """(quantity, value, rule, threshold, verdict) of each condition of the token-anchored flag, for the viewer."""
    return [_verdict(v, row, defn.flag) for v in ANCHORED_VERDICTS]
