"""A latent's page: why it is (or is not) flagged (`viewer.why`), every criterion against its threshold, describers,
activation histogram, top and decile examples with token highlighting, matches in other seeds, nearest latents (links),
downstream effects, the label tester, and adding the latent to a feature set."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from features.flags import anchored_verdicts, verdict_table
from features.labelability import registered_describers
from features.store import FeatureStore
from viewer import data, label_panel, nav, sets_panel, why
from viewer.render import md_code, md_text, windows_html


def criteria_rows(row: pd.Series, defn: Any) -> pd.DataFrame:  # noqa: ANN401 - features.definition.Definition
    """Every criterion's declared verdict rows, then the flag's: value, rule, threshold (from the definition),
    verdict (`features.flags.verdict_table`, which reads the criteria registry)."""
    out = [
        (crit, what, _num(v), rule, _num(thr), verdict)
        for crit, what, v, rule, thr, verdict in verdict_table(row, defn)
    ]
    return pd.DataFrame(out, columns=["criterion", "quantity", "value", "rule", "threshold", "verdict"])


def _num(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.0f}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.4g}"


def _picker(store: FeatureStore) -> int | None:
    """The latent input (validated) and prev/next buttons; returns the latent to show."""
    if msg := st.session_state.get(nav.URL_ERROR_KEY):
        st.error(md_text(msg))
    c1, c2, c3 = st.columns([2, 1, 1])
    c1.text_input(
        "latent",
        key="fp_goto",
        placeholder=f"0 to {store.n_latents - 1}, then Enter",
        on_change=_goto_typed,
        args=(store.n_latents,),
    )
    if msg := st.session_state.get("fp_goto_err"):
        st.error(md_text(msg))
    cur = nav.current_latent()
    if cur is not None:
        c2.button("◀ previous", disabled=cur <= 0, key="fp_prev", on_click=nav.open_latent, args=(cur - 1,))
        c3.button(
            "next ▶",
            disabled=cur >= store.n_latents - 1,
            key="fp_next",
            on_click=nav.open_latent,
            args=(cur + 1,),
        )
    return nav.current_latent()


def _goto_typed(n_latents: int) -> None:
    """Callback of the latent input: open a valid latent, else keep a message to show."""
    latent, err = data.parse_latent(st.session_state["fp_goto"], n_latents)
    st.session_state["fp_goto_err"] = err
    if latent is not None:
        nav.open_latent(latent)


def _anchored_section(row: pd.Series, defn: Any) -> None:  # noqa: ANN401 - features.definition.Definition
    """What the token-anchored flag says about the latent: its anchor tokens, how many of their occurrences fire,
    and whether any describer tells which ones (conditional labelability), each against the definition."""
    if "token_anchored" not in row:
        return
    said = "is" if bool(row["token_anchored"]) else "is not"
    st.markdown(
        f"**Token-anchored:** this latent {said} token-anchored. Anchor tokens: {md_code(row['anchor_tokens'])}; "
        f"best describer of which of their occurrences fire: {md_text(row['conditional_describer'])}."
    )
    rows = [
        (q, _num(v), rule, _num(thr), verdict) for q, v, rule, thr, verdict in anchored_verdicts(row, defn)
    ]
    st.dataframe(pd.DataFrame(rows, columns=["quantity", "value", "rule", "threshold", "verdict"]),
                 hide_index=True, width="stretch")  # fmt: skip


def describer_rows(row: pd.Series) -> pd.DataFrame:
    """Every registered describer: what it checks, its held-out AUROC, whether it won, and its readable form (the
    store keeps the winner's only)."""
    best = str(row.get("best_describer", "none"))
    rows = [
        (
            d.name,
            d.summary,
            float(row.get(f"auroc_{d.name}", np.nan)),
            d.name == best,
            str(row.get("readable", "–")) if d.name == best else "–",
        )
        for d in registered_describers()
    ]
    if str(row.get("llm_model", "") or ""):  # explained by `xenofeat explain` (the llm describer, run apart)
        kind = str(row.get("llm_score_kind", "none")).replace("_", " ")
        checks = (
            f"an LLM's explanation ({row['llm_model']}, {kind} on {int(row.get('llm_n_windows', 0))} windows)"
        )
        rows.append(
            (
                "llm",
                checks,
                float(row.get("auroc_llm", np.nan)),
                best == "llm",
                str(row.get("llm_explanation", "")),
            )
        )
    return pd.DataFrame(rows, columns=["describer", "checks", "AUROC (held out)", "best", "readable form"])


ROW_PX = 35  # Streamlit's default dataframe row height

VERDICT_COLUMNS = {
    "criterion": st.column_config.TextColumn("criterion", width="medium"),
    "verdict": st.column_config.TextColumn("verdict", width="small"),
    "quantity": st.column_config.TextColumn("quantity", width="medium"),
    "value": st.column_config.TextColumn("value", width="small"),
    "rule": st.column_config.TextColumn("rule", width="small"),
    "threshold": st.column_config.TextColumn("thr.", width="small"),
}
"""The verdict table's columns, verdict second: the whole table fits the page width, no horizontal scrolling."""

DESCRIBER_COLUMNS = {
    "describer": st.column_config.TextColumn("describer", width="small"),
    "AUROC (held out)": st.column_config.NumberColumn("AUROC", width="small", format="%.3f"),
    "best": st.column_config.CheckboxColumn("best", width="small"),
    "checks": st.column_config.TextColumn("checks", width=260),  # last, wrapped: fits beside the histogram
}
"""The describer table's columns in order; the readable form is shown in full below it (it is long)."""


def _definition_table(row: pd.Series, defn: Any) -> None:  # noqa: ANN401 - features.definition.Definition
    """Every criterion against its threshold, full page width, verdict second."""
    st.subheader("Definition (WDF) and flag")
    rows = criteria_rows(row, defn)
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        height=ROW_PX * (len(rows) + 1) + 3,  # every row shown: no scrolling inside the table
        column_order=list(VERDICT_COLUMNS),
        column_config=VERDICT_COLUMNS,
    )


def _describers_and_histogram(row: pd.Series, ex: Any) -> None:  # noqa: ANN401 - LatentExamples
    """The describer table (text wrapped to the column width) beside the activation histogram."""
    c1, c2 = st.columns([3, 2])
    with c1:
        st.subheader("Describers")
        st.dataframe(
            describer_rows(row),
            hide_index=True,
            width="stretch",
            column_order=list(DESCRIBER_COLUMNS),
            column_config=DESCRIBER_COLUMNS,
            row_height=66,  # above 4rem Streamlit wraps text
        )
        st.markdown(f"**Best describer's readable form:** {md_code(row.get('readable', '–'))}")
        if str(row.get("llm_model", "") or ""):
            st.markdown(
                f"**LLM's explanation** ({md_text(row['llm_model'])}): {md_text(row['llm_explanation'])}"
            )
    with c2:
        st.subheader("Activation histogram")
        e = ex.hist_edges
        hist = pd.DataFrame({"lo": e[:-1], "hi": e[1:], "tokens": ex.hist_counts})
        st.altair_chart(
            alt.Chart(hist)
            .mark_bar()
            .encode(x=alt.X("lo:Q", title="activation"), x2="hi", y="tokens:Q", y2=alt.datum(0))
            .properties(height=200),
            width="stretch",
        )


def render(store: FeatureStore, run: Path) -> None:
    latent = _picker(store)
    if latent is None:
        st.info("Choose a latent: type its index, or open one from the overview or the table.")
        return
    row = store.table.iloc[latent]
    ex = data.examples(store, run, latent)
    defn = store.definition()
    verdict = "FLAGGED" if row["flag"] else ("well defined" if row["well_defined"] else "not well defined")
    if bool(row.get("token_anchored", False)):
        verdict = "TOKEN-ANCHORED"
    st.header(f"Latent {latent} · {verdict}")
    st.caption(
        f"density {row['density']:.3e} · {int(row['firing_count']):,} firing tokens in {int(row['n_docs']):,} "
        f"documents · best describer: {md_text(row['best_describer'])} · LBL {row['labelability']:.3f}"
        if not math.isnan(row["labelability"])
        else f"density {row['density']:.3e} · not scored by LBL"
    )
    why.render(store, run, row, ex, defn)
    _definition_table(row, defn)
    _anchored_section(row, defn)
    _describers_and_histogram(row, ex)
    vocab, scale = store.vocab, float(ex.hist_edges[-1]) or 1.0
    st.subheader("Top activations")
    st.html(windows_html(ex.top.tokens, ex.top.acts, vocab, scale, ex.top.center, ex.top.value))
    with st.expander("Samples per activation decile"):
        d = ex.deciles
        for q in range(9, -1, -1):
            sel = d.decile == q if d.decile is not None else np.zeros(len(d.tokens), bool)
            if sel.any():
                st.markdown(f"decile {q + 1}")
                st.html(windows_html(d.tokens[sel], d.acts[sel], vocab, scale, d.center, d.value[sel]))
    c1, c2, c3 = st.columns(3)
    with c1:
        st.subheader("Matches in other seeds")
        m = pd.DataFrame(ex.matches, columns=["seed", "latent", "cosine"])
        m["found"] = m["cosine"] >= defn.stability.tau
        st.dataframe(m, hide_index=True, width="stretch")
    with c2:
        st.subheader("Nearest latents")
        for j, c in zip(ex.nearest.tolist(), ex.nearest_cos.tolist(), strict=True):
            st.button(f"latent {j} · cos {c:.2f}", key=f"fp_near_{j}", on_click=nav.open_latent, args=(j,))
    with c3:
        st.subheader("Downstream effects")
        if ex.downstream:
            st.dataframe(pd.DataFrame(ex.downstream.items(), columns=["effect", "value"]), hide_index=True)
        else:
            st.caption("not recorded for this run (scored offline)")
    label_panel.render(store, run, latent)
    st.subheader("Feature sets")
    sets_panel.add_to_set_widget(run, [latent], store.n_latents, key="fp")
