"""The overview page: counts, stability against labelability (flagged quadrant marked, points open their latent),
density and labelability histograms, and the SAE-level metrics of the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from features.store import FeatureStore
from viewer import nav

MAX_POINTS = 20_000  # above this the scatter shows the flagged latents and a seeded sample of the rest


def counts(table: pd.DataFrame) -> dict[str, int]:
    """Latents, alive (fire at least once), well defined (C1-C4), LBL-scored and flagged."""
    scored = table["best_describer"] != "none" if "best_describer" in table else table["labelability"].notna()
    return {
        "latents": len(table),
        "alive": int((table["firing_count"] > 0).sum()),
        "well defined": int(table["well_defined"].sum()),
        "LBL scored": int(scored.sum()),
        "flagged": int(table["flag"].sum()),
    }


def flat_metrics(summary: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Scalar entries of summary.json (nested dicts flattened with dots), formatted for a two-column table."""
    out: list[tuple[str, str]] = []
    for k, v in summary.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(flat_metrics(v, name + "."))
        elif isinstance(v, bool | str) or v is None:
            out.append((name, str(v)))
        elif isinstance(v, int | float):
            out.append((name, f"{v:.4g}" if isinstance(v, float) else str(v)))
    return out


def stability_line(summary: dict[str, Any]) -> str | None:
    """PW-MCC and the shared fraction beside their values for random dictionaries of the same shape (None for
    stores scored before the nulls were recorded)."""
    if "pw_mcc_null" not in summary:
        return None
    return (
        f"PW-MCC {summary['pw_mcc']:.3f} across seeds against {summary['pw_mcc_null']:.3f} for random dictionaries "
        f"of the same shape; shared fraction at tau {summary['tau']}: {summary['shared_fraction']:.3f} against "
        f"{summary['shared_fraction_null']:.3f}. Stability means something only as far as it exceeds its null."
    )


def scatter_frame(table: pd.DataFrame, y: str) -> pd.DataFrame:
    """Points of the scatter: scored latents, at most MAX_POINTS (all flagged ones kept)."""
    cols = ["feature", "labelability", y, "flag", "best_describer"]
    df = table.loc[table["labelability"].notna(), [c for c in dict.fromkeys(cols) if c in table]]
    if len(df) > MAX_POINTS:
        keep = df["flag"] | (np.random.default_rng(0).random(len(df)) < MAX_POINTS / len(df))
        df = df[keep]
    return df.assign(status=np.where(df["flag"], "flagged", "not flagged"))


def render(store: FeatureStore, run: Path) -> None:
    t = store.table
    defn = store.definition()
    st.header("Overview")
    cols = st.columns(5)
    for col, (name, n) in zip(cols, counts(t).items(), strict=True):
        col.metric(name, f"{n:,}")

    st.subheader("Stability against labelability")
    y = st.radio(
        "stability axis",
        ["match_cos", "stability"],
        horizontal=True,
        help="match_cos: mean matched min(decoder, encoder) cosine in the other seeds; "
        "stability: fraction of other seeds where the match reaches tau",
        key="ov_y",
    )
    y_thr = defn.stability.tau if y == "match_cos" else defn.stability.min_stability
    df = scatter_frame(t, y)
    box = pd.DataFrame({"x": [0.0], "x2": [defn.flag.max_lbl], "y": [y_thr], "y2": [1.0]})
    quadrant = (
        alt.Chart(box)
        .mark_rect(opacity=0.12, color="#d62728")
        .encode(
            x="x:Q", x2="x2", y="y:Q", y2="y2", tooltip=alt.value("flag region: stable, LBL below max_lbl")
        )
    )
    pick = alt.selection_point(name="pick", fields=["feature"], on="click")
    points = (
        alt.Chart(df)
        .mark_circle(size=28)
        .encode(
            x=alt.X("labelability:Q", scale=alt.Scale(domain=[0, 1]), title="labelability (LBL)"),
            y=alt.Y(f"{y}:Q", scale=alt.Scale(domain=[0, 1]), title=y),
            color=alt.Color(
                "status:N",
                scale=alt.Scale(domain=["flagged", "not flagged"], range=["#d62728", "#9aa5b1"]),
            ),
            tooltip=["feature", "labelability", y, "best_describer", "status"],
            opacity=alt.condition(pick, alt.value(0.9), alt.value(0.4)),
        )
        .add_params(pick)
    )
    event = st.altair_chart(quadrant + points, on_select="rerun", key="ov_scatter", width="stretch")
    chosen = (getattr(event, "selection", None) or {}).get("pick") or []
    if chosen and "feature" in chosen[0]:
        nav.open_latent(int(chosen[0]["feature"]))
        st.rerun()
    st.caption(
        f"Shaded: the flag region (LBL < {defn.flag.max_lbl}, {y} ≥ {y_thr}); a flagged latent also passes "
        f"C1-C4 and has LBL's upper bound < {defn.flag.max_lbl_hi}. Click a point to open its page."
    )
    flagged = t.loc[t["flag"], ["feature", "labelability"]]
    st.selectbox(
        f"Open a flagged latent ({len(flagged)})",
        flagged["feature"].tolist(),
        index=None,
        format_func=lambda i: f"{i}  (LBL {t.at[i, 'labelability']:.2f})",
        key="ov_flagged",
        on_change=lambda: nav.open_latent(st.session_state["ov_flagged"]),
        placeholder="choose a flagged latent",
    )

    left, right = st.columns(2)
    with left:
        st.subheader("Density")
        dens = t.loc[t["density"] > 0, "density"]
        st.altair_chart(_hist(np.log10(dens.to_numpy()), "log10 density"), width="stretch")
        st.caption(f"{int((t['density'] == 0).sum())} dead latents not shown")
    with right:
        st.subheader("Labelability")
        lbl = t["labelability"].dropna().to_numpy()
        st.altair_chart(_hist(lbl, "LBL", lo=0.0, hi=1.0, rule=defn.flag.max_lbl), width="stretch")
    st.subheader("SAE-level metrics")
    line = stability_line(store.summary)
    if line is not None:
        st.markdown(line)
    st.dataframe(
        pd.DataFrame(flat_metrics(store.summary), columns=["metric", "value"]),
        hide_index=True,
        width="stretch",
    )


def _hist(
    values: np.ndarray, title: str, lo: float | None = None, hi: float | None = None, rule=None
) -> alt.Chart:  # noqa: ANN001
    values = values[np.isfinite(values)]
    if len(values) == 0:
        values = np.zeros(1)
    rng = (lo if lo is not None else values.min(), hi if hi is not None else values.max() + 1e-9)
    counts, edges = np.histogram(values, bins=40, range=rng)
    df = pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "latents": counts})
    chart = (
        alt.Chart(df).mark_bar().encode(x=alt.X("lo:Q", title=title), x2="hi", y="latents:Q", y2=alt.datum(0))
    )
    if rule is not None:
        chart = chart + alt.Chart(pd.DataFrame({"x": [rule]})).mark_rule(color="#d62728").encode(x="x:Q")
    return chart.properties(height=220)
