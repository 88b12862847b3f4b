"""The feature table: every latent, filtered (flag, tags, criteria, describer, a numeric range, index, token), sorted
over the whole table and shown one page at a time, so a 16k+ latent store sends only a page-sized frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from features.labelability import describer_names
from features.store import FeatureStore
from viewer import data, nav, sets_panel
from viewer.render import md_text

PAGE_SIZE = 50
TAGS = ("dense", "duplicate", "composite", "multi_d", "mixture")
CRITERIA = ("support_pass", "stability_pass", "function_pass", "mdl_pass", "well_defined")
SHOWN = (
    "feature", "flag", "token_anchored", "well_defined", "labelability", "labelability_hi", "best_describer", "readable",
    "density", "firing_count", "n_docs", "stability", "match_cos", "support_pass", "stability_pass",
    "function_pass", "mdl_pass", "auroc_*", "n_test_pos", "lbl_conditional", "anchor_tokens", "anchor_fraction",
    *TAGS,
)  # fmt: skip
"""Columns the table shows, in order; `auroc_*` stands for every registered describer's AUROC column."""
FLAG_CHOICES = ("all", "flagged", "token-anchored", "well defined", "not flagged")


@dataclass
class TableFilter:
    """What the table shows; every field narrows the rows (an empty field does not filter)."""

    flag: str = "all"
    """One of FLAG_CHOICES."""
    tags: list[str] = field(default_factory=list)
    """Tag columns that must be true."""
    must_pass: list[str] = field(default_factory=list)
    """Criterion pass columns that must be true."""
    must_fail: list[str] = field(default_factory=list)
    """Criterion pass columns that must be false."""
    describers: list[str] = field(default_factory=list)
    """Allowed best describers."""
    range_col: str | None = None
    """A numeric column bounded by range_lo and range_hi (NaN rows drop out)."""
    range_lo: float | None = None
    range_hi: float | None = None
    latents: np.ndarray | None = None
    """Only these latents (from the index or token search)."""


def shown_columns(t: pd.DataFrame) -> list[str]:
    """The columns of `SHOWN` that the table has, `auroc_*` expanded over the registered describers (tie order)."""
    out: list[str] = []
    for c in SHOWN:
        out += [f"auroc_{n}" for n in describer_names()] if c == "auroc_*" else [c]
    return [c for c in out if c in t]


def describer_choices(t: pd.DataFrame) -> list[str]:
    """Options of the best-describer filter: the registered describers, then any other value in the table (a
    describer of the run that is not registered here, "none" for latents not scored)."""
    present = [str(v) for v in t["best_describer"].unique()] if "best_describer" in t else []
    return list(describer_names()) + sorted(set(present) - set(describer_names()))


def filter_table(t: pd.DataFrame, f: TableFilter) -> pd.DataFrame:
    """The rows of the table that pass every part of the filter (in the table's order)."""
    keep = np.ones(len(t), bool)
    if f.flag == "flagged":
        keep &= t["flag"].to_numpy(bool)
    elif f.flag == "token-anchored":  # a store scored before the column existed has none
        keep &= t["token_anchored"].to_numpy(bool) if "token_anchored" in t else np.zeros(len(t), bool)
    elif f.flag == "well defined":
        keep &= t["well_defined"].to_numpy(bool)
    elif f.flag == "not flagged":
        keep &= ~t["flag"].to_numpy(bool)
    for c in f.tags + f.must_pass:
        keep &= t[c].to_numpy(bool)
    for c in f.must_fail:
        keep &= ~t[c].to_numpy(bool)
    if f.describers:
        keep &= t["best_describer"].isin(f.describers).to_numpy()
    if f.range_col:
        v = t[f.range_col].to_numpy(np.float64)
        with np.errstate(invalid="ignore"):
            keep &= np.isfinite(v)
            if f.range_lo is not None:
                keep &= v >= f.range_lo
            if f.range_hi is not None:
                keep &= v <= f.range_hi
    if f.latents is not None:
        keep &= np.isin(t["feature"].to_numpy(), f.latents)
    return t[keep]


def sort_rows(t: pd.DataFrame, col: str, descending: bool) -> pd.DataFrame:
    """Sorted by one column over all rows (NaN last), ties by latent index."""
    return t.sort_values(
        [col, "feature"], ascending=[not descending, True], na_position="last", kind="stable"
    )


def render(store: FeatureStore, run: Path) -> None:
    t = store.table
    st.header("Features")
    present_tags = [c for c in TAGS if c in t]
    present_crit = [c for c in CRITERIA if c in t]
    c1, c2, c3, c4 = st.columns(4)
    flt = TableFilter(
        flag=c1.selectbox("show", FLAG_CHOICES, key="tb_flag"),
        tags=c2.multiselect("tags (all of)", present_tags, key="tb_tags"),
        must_pass=c3.multiselect("passes", present_crit, key="tb_pass"),
        must_fail=c4.multiselect("fails", present_crit, key="tb_fail"),
    )
    c1, c2, c3, c4 = st.columns(4)
    flt.describers = c1.multiselect("best describer", describer_choices(t), key="tb_desc")
    num_cols = data.numeric_columns(t)
    flt.range_col = c2.selectbox(
        "range on", num_cols, index=None, key="tb_rcol", placeholder="no range filter"
    )
    if flt.range_col:
        flt.range_lo = c3.number_input("min", value=None, key="tb_rlo", format="%g")
        flt.range_hi = c4.number_input("max", value=None, key="tb_rhi", format="%g")
    c1, c2, c3, c4 = st.columns(4)
    idx_text = c1.text_input("latent index", key="tb_idx", placeholder="e.g. 3, 10-20")
    tok_text = c2.text_input(
        "firing token", key="tb_tok", help="latents whose top examples fire on this token"
    )
    sort_col = c3.selectbox("sort by", num_cols, index=_default_sort(num_cols), key="tb_sort")
    desc = c4.toggle("descending", value=False, key="tb_desc_order")

    sel, err = data.parse_indices(idx_text, store.n_latents)
    if err:
        st.error(md_text(err))
    if tok_text.strip():
        ids = data.token_ids(store, run, tok_text)
        if not ids:
            st.warning(f"token {md_text(repr(tok_text))}: not in the vocabulary")
        hits = data.latents_with_token(store, run, ids)
        sel = hits if sel is None else np.intersect1d(sel, hits)
    flt.latents = sel
    rows = sort_rows(filter_table(t, flt), sort_col, desc)
    n_pages = max(1, -(-len(rows) // PAGE_SIZE))
    c1, c2 = st.columns([1, 3])
    page = c1.number_input(f"page (of {n_pages})", 1, n_pages, 1, key="tb_page")
    c2.markdown(f"**{len(rows):,}** of {len(t):,} latents match")
    shown = rows.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    view = shown[shown_columns(shown)]
    event = st.dataframe(
        view,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="multi-row",
        key="tb_grid",
        column_config={
            "labelability": st.column_config.ProgressColumn(
                "LBL", min_value=0.0, max_value=1.0, format="%.2f"
            ),
            "density": st.column_config.NumberColumn(format="%.2e"),
        },
    )
    picked = [int(view.iloc[i]["feature"]) for i in (event.selection.rows if event else [])]
    c1, c2 = st.columns(2)
    if c1.button("Open the selected latent", disabled=not picked, key="tb_open"):
        nav.open_latent(picked[0])
        st.rerun()
    with c2:
        sets_panel.add_to_set_widget(run, picked, store.n_latents, key="tb")


def _default_sort(cols: list[str]) -> int:
    return cols.index("feature") if "feature" in cols else 0
