"""The strong firings' LBL: a latent whose top activation quantiles a describer labels is not flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.flags import FlagConfig, apply_flags
from features.labelability import LBLConfig
from features.labelability.run import strong_lbl


def test_strong_lbl_reads_the_top_quantiles_only_and_takes_the_best_describer():
    cfg = LBLConfig(n_deciles=10, strong_deciles=3)
    rng = np.random.default_rng(0)
    n_pos, n_neg = 400, 400
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    decile = np.r_[np.repeat(np.arange(10), n_pos // 10), np.full(n_neg, -1)].astype(np.int8)
    strong = (decile >= 7) & y
    # describer a separates the strong positives perfectly and nothing else; b is noise everywhere
    a = np.where(strong, 1.0, 0.0) + 0.01 * rng.standard_normal(len(y))
    b = rng.standard_normal(len(y))
    assert strong_lbl({"a": a, "b": b}, y, decile, cfg) > 0.95
    assert strong_lbl({"b": b}, y, decile, cfg) < 0.2
    # a describer that labels only the weak firings says nothing about the strong ones
    weak = np.where((decile >= 0) & (decile < 3), 1.0, 0.0)
    assert strong_lbl({"weak": weak}, y, decile, cfg) < 0.05
    # no held-out positive among the strong quantiles: not measured
    assert np.isnan(strong_lbl({"a": a}, y & (decile < 7), np.where(decile >= 7, 0, decile), cfg))


def test_the_flag_needs_the_strong_firings_unlabelled_too():
    gates = {"support_pass": True, "stability_pass": True, "function_pass": True, "mdl_pass": True,
             "learned_pass": True, "labelability_hi": 0.35, "n_test_pos": 60, "firing_count": 9,
             "best_describer": "token"}  # fmt: skip
    table = pd.DataFrame([
        {**gates, "labelability": 0.3, "labelability_strong": 0.2},  # resists labels, strong firings too: flagged
        {**gates, "labelability": 0.3, "labelability_strong": 0.7},  # strong firings labelled: not flagged
        {**gates, "labelability": 0.3, "labelability_strong": np.nan},  # not measured: LBL as a whole decides
    ])  # fmt: skip
    assert apply_flags(table, FlagConfig(max_lbl=0.4)).flag.tolist() == [True, False, True]
    # a store scored before the column existed keeps its flag
    assert apply_flags(table.drop(columns="labelability_strong"), FlagConfig()).flag.tolist() == [True] * 3
