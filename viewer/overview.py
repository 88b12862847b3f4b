"""The overview page: counts, stability against labelability (the flag rule's region shaded, points open their latent),
density and labelability histograms, and the SAE-level metrics of the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from features.criteria.registry import criteria, gating
from features.store import FeatureStore
from viewer import nav
from viewer.render import md_text

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


@dataclass(frozen=True)
class FlagRegion:
    """The flag rule as the scatter draws it: x = labelability below max_lbl, y = C2's quantity at or above its
    threshold (both from the store's applied definition; C2's quantity, setting and pass column from the criteria
    registry). Inside it, a well-defined latent is flagged unless LBL's upper bound or its held-out positives fail."""

    y: str  # the column on the y axis (C2's `stability`)
    y_min: float  # C2's threshold (min_stability)
    passes: str | None  # C2's pass column: which side of y_min a point is drawn on
    max_lbl: float
    max_lbl_hi: float
    min_test_pos: int


STABILITY = "stability"
"""The criterion (and definition section) whose rule the y axis shows."""
JITTER = 0.035  # vertical spread of points sharing a stability value (a fraction of seeds)


def flag_region(defn: Any) -> FlagRegion:  # noqa: ANN401 - features.definition.Definition
    """The region of the store's definition: C2's first "≥" verdict row with a setting gives the y axis."""
    crit = next((c for c in criteria() if c.name == STABILITY), None)
    row = next((v for v in crit.verdicts if v.rule == "≥" and v.setting), None) if crit else None
    y, y_min = (
        (row.value, float(getattr(defn.section(crit.name), row.setting))) if row else ("match_cos", 0.0)
    )
    f = defn.flag
    return FlagRegion(
        y, y_min, crit.passes if crit else None, float(f.max_lbl), float(f.max_lbl_hi), int(f.min_test_pos)
    )


def region_box(region: FlagRegion) -> pd.DataFrame:
    """The shaded rectangle: LBL in [0, max_lbl), y in [y_min, 1]."""
    return pd.DataFrame({"x": [0.0], "x2": [region.max_lbl], "y": [region.y_min], "y2": [1.0]})


def plotted_y(values: np.ndarray, passes: np.ndarray, y_min: float, seed: int = 0) -> np.ndarray:
    """y of each point: its value spread by a seeded jitter (values are fractions of seeds, so many coincide), kept
    on its side of y_min: a point passing C2 is drawn in [y_min, 1], a failing one below y_min."""
    v = np.asarray(values, np.float64)
    u = np.random.default_rng(seed).uniform(-JITTER, JITTER, len(v))
    lo = np.where(passes, y_min, 0.0)
    hi = np.where(passes, 1.0, np.nextafter(y_min, 0.0))
    y = v + u
    y = np.where((y < lo) | (y > hi), v - u, y)  # mirror back into the band
    return np.clip(y, lo, np.maximum(lo, hi))


def in_region(frame: pd.DataFrame, box: pd.DataFrame) -> np.ndarray:
    """(n,) bool: the plotted point (labelability, y_plot) lies in the drawn rectangle."""
    b = box.iloc[0]
    x, y = frame["labelability"].to_numpy(), frame["y_plot"].to_numpy()
    return (x >= b["x"]) & (x < b["x2"]) & (y >= b["y"]) & (y <= b["y2"])


def scatter_frame(table: pd.DataFrame, region: FlagRegion) -> pd.DataFrame:
    """Points of the scatter: scored latents, at most MAX_POINTS (all flagged ones kept), with their plotted y and
    status (flagged / well defined, not flagged / not well defined)."""
    cols = ["feature", "labelability", region.y, "match_cos", "flag", "well_defined", "best_describer"]
    cols += [region.passes] if region.passes else []
    df = table.loc[table["labelability"].notna(), [c for c in dict.fromkeys(cols) if c in table]]
    if len(df) > MAX_POINTS:
        keep = df["flag"] | (np.random.default_rng(0).random(len(df)) < MAX_POINTS / len(df))
        df = df[keep]
    passes = df[region.passes] if region.passes in df else df[region.y] >= region.y_min
    status = np.where(df["flag"], "flagged", np.where(df["well_defined"], "well defined", "not well defined"))
    return df.assign(
        y_plot=plotted_y(df[region.y].to_numpy(), passes.to_numpy(bool), region.y_min), status=status
    )


def _scatter(t: pd.DataFrame, defn: Any) -> None:  # noqa: ANN401 - features.definition.Definition
    """Labelability against C2's quantity, the flag region shaded; a clicked point opens its latent."""
    region = flag_region(defn)
    df = scatter_frame(t, region)
    quadrant = (
        alt.Chart(region_box(region))
        .mark_rect(opacity=0.12, color="#d62728")
        .encode(x="x:Q", x2="x2", y="y:Q", y2="y2", tooltip=alt.value("flag region"))
    )
    pick = alt.selection_point(name="pick", fields=["feature"], on="click")
    points = (
        alt.Chart(df)
        .mark_circle(size=28)
        .encode(
            x=alt.X("labelability:Q", scale=alt.Scale(domain=[0, 1]), title="labelability (LBL)"),
            y=alt.Y("y_plot:Q", scale=alt.Scale(domain=[0, 1]), title=f"{region.y} (jittered)"),
            color=alt.Color(
                "status:N",
                scale=alt.Scale(
                    domain=["flagged", "well defined", "not well defined"],
                    range=["#d62728", "#1f77b4", "#b5bdc6"],
                ),
            ),
            tooltip=["feature", "labelability", region.y, "match_cos", "best_describer", "status"],
            opacity=alt.condition(pick, alt.value(0.9), alt.value(0.4)),
        )
        .add_params(pick)
    )
    event = st.altair_chart(quadrant + points, on_select="rerun", key="ov_scatter", width="stretch")
    chosen = (getattr(event, "selection", None) or {}).get("pick") or []
    if chosen and "feature" in chosen[0]:
        nav.open_latent(int(chosen[0]["feature"]))
        st.rerun()
    others = ", ".join(c.label for c in gating() if c.name != STABILITY)
    st.caption(
        md_text(
            f"Shaded: the flag region: LBL < {region.max_lbl} and {region.y} ≥ {region.y_min} (C2). Every flagged "
            f"latent (red) lies in it. A latent there is flagged when it also passes {others or 'nothing else'} "
            f"(grey: it fails one), LBL's bootstrap upper bound is < {region.max_lbl_hi}, its strong firings' LBL "
            f"is < {region.max_lbl} and it has ≥ {region.min_test_pos} held-out positives (blue there: one of these "
            f"fails). {region.y}: fraction of "
            "the other seeds in which the latent is found; points sharing a value are spread vertically within its "
            "side of the threshold. Click a point to open its page."
        )
    )


def render(store: FeatureStore, run: Path) -> None:
    t = store.table
    defn = store.definition()
    st.header("Overview")
    cols = st.columns(5)
    for col, (name, n) in zip(cols, counts(t).items(), strict=True):
        col.metric(name, f"{n:,}")

    st.subheader("Stability against labelability")
    _scatter(t, defn)
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
