"""The LBL table: results per scored latent, keyed by describer name, and the columns it writes to features.parquet.

`LBLTable.aurocs` holds one array per describer that took part (by name); `to_frame` turns them into `auroc_<name>`
columns, so no code here names a describer. `lbl_columns` declares every column `to_frame` writes to the feature
table (the store's schema imports it); `decile_auroc` goes to examples.h5 instead, as an (F, n_deciles) dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from features.columns import Column
from features.labelability import conditional
from features.labelability.config import LBLConfig
from features.labelability.registry import Describer, registered_describers


class TestWindows(NamedTuple):
    """The held-out windows of one latent, as the label tester scores them."""

    flat_idx: np.ndarray
    """(n,) int64 flat centre index into the cache (seq * L + pos)."""
    label: np.ndarray
    """(n,) bool: the latent fires at the centre."""
    decile: np.ndarray
    """(n,) int8 activation decile of positives, -1 for negatives."""


@dataclass
class LBLTable:
    """LBL-v1 results, one entry per scored latent (arrays aligned with `latents`)."""

    latents: np.ndarray
    labelability: np.ndarray
    labelability_hi: np.ndarray
    best_describer: np.ndarray
    aurocs: dict[str, np.ndarray]
    """Held-out AUROC per describer name (NaN where pruned or not scored), in tie order."""
    decile_auroc: np.ndarray
    """(n, n_deciles) AUROC of the best describer per activation decile of test positives vs all test negatives."""
    n_test_pos: np.ndarray
    readable: list[str]
    spearman: np.ndarray
    """Spearman correlation of the winner's score with the activation on test positives (graded add-on)."""
    seed: int
    config: LBLConfig
    test_windows: dict[int, TestWindows] = field(default_factory=dict)
    lbl_target: np.ndarray | None = None
    """What was predicted per latent: "firing" or "activation" (dense latents, `[labelability] dense_target`);
    None: "firing" for every latent."""
    conditional: dict[str, np.ndarray] = field(default_factory=dict)
    """Conditional labelability's columns by name (`conditional.COLUMNS`), aligned with `latents`."""
    labelability_strong: np.ndarray | None = None
    """LBL of the strong firings (`run.strong_lbl`); None: not measured (NaN)."""

    def strong(self) -> np.ndarray:
        """`labelability_strong` as an array (NaN where not measured)."""
        if self.labelability_strong is None:
            return np.full(len(self.latents), np.nan)
        return np.asarray(self.labelability_strong, np.float64)

    def targets(self) -> np.ndarray:
        """`lbl_target` as an array of str ("firing" where not given)."""
        if self.lbl_target is None:
            return np.full(len(self.latents), "firing", dtype=object)
        return np.asarray(self.lbl_target, dtype=object)

    def to_frame(self) -> pd.DataFrame:
        """One row per latent; `decile_auroc` is a list column of n_deciles floats."""
        return pd.DataFrame(
            {
                "feature": self.latents.astype(np.int64),
                "labelability": self.labelability,
                "labelability_hi": self.labelability_hi,
                "best_describer": self.best_describer.astype(str),
                **{f"auroc_{name}": values for name, values in self.aurocs.items()},
                "decile_auroc": [list(map(float, r)) for r in self.decile_auroc],
                "n_test_pos": self.n_test_pos.astype(np.int64),
                "readable": self.readable,
                "spearman": self.spearman,
                "lbl_target": self.targets().astype(str),
                **self.conditional,
                "labelability_strong": self.strong(),
            }
        )


def lbl_columns(describers: Sequence[Describer] | None = None) -> list[Column]:
    """Every column LBL writes to features.parquet, in `to_frame`'s order (without the `feature` key and the
    `decile_auroc` list, which goes to examples.h5): the describers' own columns come from `describers` (default:
    the registered ones)."""
    describers = registered_describers() if describers is None else tuple(describers)
    own = [c for d in describers for c in d.columns()]
    names = ", ".join(d.name for d in describers)
    return [
        Column("labelability", "float64", "LBL-v1: clip(2 * best held-out AUROC - 1, 0, 1); NaN when not scored",
               "labelability"),
        Column("labelability_hi", "float64", "upper end of LBL's two-sided bootstrap interval (bootstrap_level)",
               "labelability"),
        Column("best_describer", "str", f"the describer with the highest held-out AUROC ({names}), or none "
               "(not scored)", "labelability"),
        *own,
        Column("n_test_pos", "int64", "held-out positive windows", "labelability"),
        Column("readable", "str", "the winning describer's readable form (top tokens, the rule's terms)",
               "labelability"),
        Column("spearman", "float64", "rank correlation of the winner's score with the activation on test "
               "positives", "labelability"),
        Column("lbl_target", "str", "what LBL predicts: firing (firing vs not), activation (a dense latent: its "
               "top activation quantiles vs its bottom ones and non-firing windows), or none (not scored)",
               "labelability"),
        *conditional.COLUMNS,
        Column("labelability_strong", "float64", "LBL of the strong firings alone: the best describer's held-out "
               "AUROC on the top `strong_deciles` activation quantiles' positives against all negatives, as "
               "clip(2 * AUROC - 1, 0, 1); the flag needs it below max_lbl too", "labelability"),
    ]  # fmt: skip


def merge_tables(parts: list[LBLTable]) -> LBLTable:
    """One LBLTable from tables over disjoint latent sets (same describers), ordered by latent."""
    lat = np.concatenate([p.latents for p in parts])
    order = np.argsort(lat, kind="stable")

    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(a) for a in arrays])[order]

    readable = [r for p in parts for r in p.readable]
    return LBLTable(
        latents=lat[order],
        labelability=cat([p.labelability for p in parts]),
        labelability_hi=cat([p.labelability_hi for p in parts]),
        best_describer=cat([p.best_describer for p in parts]),
        aurocs={name: cat([p.aurocs[name] for p in parts]) for name in parts[0].aurocs},
        decile_auroc=cat([p.decile_auroc for p in parts]),
        n_test_pos=cat([p.n_test_pos for p in parts]),
        readable=[readable[i] for i in order],
        spearman=cat([p.spearman for p in parts]),
        seed=parts[0].seed,
        config=parts[0].config,
        test_windows={k: v for p in parts for k, v in p.test_windows.items()},
        lbl_target=cat([p.targets() for p in parts]),
        conditional={name: cat([p.conditional[name] for p in parts]) for name in parts[0].conditional},
        labelability_strong=cat([p.strong() for p in parts]),
    )
