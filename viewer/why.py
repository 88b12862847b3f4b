"""The block that leads a latent's page: why it is (or is not) flagged.

It states the flag rule of the store's definition with this latent's values (each criterion's verdict rows from the
criteria registry, grouped per criterion; the flag's own rows: LBL, its bootstrap upper bound, held-out positives),
every describer's held-out AUROC (the describer registry plus any other `auroc_<name>` column of the table), how
well its strong and its weak firings are labelled (the per-decile AUROC), and where it fires: P(fire) by position in
the packed sequence and in the document, so a person sees at a glance whether position explains it. Nothing here
names a criterion or a describer; the few optional columns other parts of xenofeat may add are shown when present.
Every string that reaches Markdown goes through `viewer.render.md_text`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from features.criteria.registry import criteria
from features.flags import VERDICTS as FLAG_VERDICTS
from features.flags import verdict_table
from features.labelability import registered_describers
from features.store import FeatureStore, LatentExamples
from viewer import data
from viewer.render import md_text

MARK = {
    "pass": ":green[**pass**]",
    "fail": ":red[**fail**]",
    "tagged": ":orange[**tagged**]",
    "–": ":gray[–]",
}
"""Streamlit colour directives (not emoji: a browser without an emoji font draws those as boxes)."""
OPTIONAL = (
    (
        "token_anchored",
        "token-anchored (fires on some occurrences of its tokens; which ones resists describers)",
    ),
    ("lbl_conditional", "conditional labelability (which occurrences of its firing tokens fire)"),
    ("learned", "learned (not already carried by a random-init copy of the model)"),
)
"""Columns some stores have (added by other parts of xenofeat): shown when the table has them and no criterion's
verdict rows already show them."""


@dataclass(frozen=True)
class Condition:
    """One line of the block: a criterion (or a condition of the flag) with its verdict and values."""

    name: str
    verdict: str  # pass / fail / tagged / –
    gates: bool  # the flag needs it to pass
    detail: str  # "quantity value rule threshold", joined with " · "


def _num(v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    v = float(v)  # type: ignore[arg-type]
    return f"{v:,.0f}" if v.is_integer() and abs(v) >= 1 else f"{v:.3g}"


def _detail(quantity: str, value: float, rule: str, thr: float, verdict: str) -> str:
    """ "firing tokens 1,854 ≥ 200" where it holds, "firing tokens 150, needs ≥ 200" where it fails."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{quantity} not recorded"
    if rule.startswith("tag"):
        return f"{quantity} {_num(value)} ({rule} {_num(thr)})"
    sep = ", needs" if verdict == "fail" else ""
    return f"{quantity} {_num(value)}{sep} {rule} {_num(thr)}"


def conditions(row: Mapping[str, Any], defn: Any) -> list[Condition]:  # noqa: ANN401 - Definition
    """Every criterion's verdict, from its rows of `features.flags.verdict_table` (gating criteria: their pass column
    decides), then the flag's own conditions, then the OPTIONAL columns present in the row."""
    rows = verdict_table(row, defn)
    out: list[Condition] = []
    at = 0
    for c in criteria():
        mine, at = rows[at : at + len(c.verdicts)], at + len(c.verdicts)
        if not mine:
            continue
        verdicts = {r[5] for r in mine}
        if c.gates and c.passes is not None and c.passes in row:
            verdict = "pass" if bool(row[c.passes]) else "fail"
        elif c.gates:
            verdict = "fail" if "fail" in verdicts else ("pass" if verdicts == {"pass"} else "–")
        else:
            verdict = "tagged" if "tagged" in verdicts else "–"
        detail = " · ".join(_detail(q, v, rule, thr, ok) for _, q, v, rule, thr, ok in mine)
        out.append(Condition(c.label, verdict, c.gates, detail))
    out += [
        Condition(f"flag: {q}", v, True, _detail(q, val, rule, thr, v))
        for _, q, val, rule, thr, v in rows[at:]
    ]
    shown = {v.value for c in criteria() for v in c.verdicts} | {v.value for v in FLAG_VERDICTS}
    for col, what in OPTIONAL:
        if col in row and col not in shown:
            value = row[col]
            verdict = ("tagged" if bool(value) else "–") if isinstance(value, bool | np.bool_) else "–"
            out.append(Condition(what, verdict, False, f"{col} = {_num(value)}"))
    return out


def describer_aurocs(row: Mapping[str, Any]) -> pd.DataFrame:
    """Every registered describer's held-out AUROC (NaN where not scored), then any other `auroc_<name>` column of
    the row (a describer the store was scored with that is not registered now); marks the best."""
    names = [d.name for d in registered_describers()]
    keys = [str(c) for c in row.keys()]  # noqa: SIM118 - a Series iterates its values, not its keys
    names += [c[6:] for c in keys if c.startswith("auroc_") and c[6:] not in names]
    best = str(row.get("best_describer", "none"))
    auc = [float(row[f"auroc_{n}"]) if f"auroc_{n}" in row else float("nan") for n in names]
    return pd.DataFrame({"describer": names, "AUROC": auc, "best": [n == best for n in names]})


def decile_reading(decile_auroc: np.ndarray) -> str | None:
    """One line: how well the strongest and the weakest firings are labelled (None when not scored)."""
    dec = np.asarray(decile_auroc, np.float64)
    if len(dec) == 0 or np.isnan(dec).all():
        return None
    k = max(1, round(0.3 * len(dec)))
    strong, weak = np.nanmean(dec[-k:]), np.nanmean(dec[:k])
    return (
        f"Strong firings (top {k} of {len(dec)} activation deciles) labelled at AUROC {_num(strong)}; "
        f"weak (bottom {k}) at {_num(weak)}. LBL's AUROC is the mean over deciles (each holds an equal share of "
        "the held-out positives), so a latent whose strong firings are labelled and whose weak ones are not gets an "
        "LBL in between; the flag also needs the strong firings' own LBL (every describer, top quantiles only: the "
        "row 'LBL of the strong firings') below max_lbl, so such a latent is not flagged: a person names it from "
        "its top examples."
    )


def verdict_line(row: Mapping[str, Any], conds: list[Condition], max_lbl: float) -> str:
    """The block's first sentence: flagged or not, and the conditions that decide it (Markdown, escaped)."""
    best = f"best: {row.get('best_describer', '–')}, LBL {_num(row.get('labelability'))}"
    if bool(row.get("flag", False)):
        gating = ", ".join(c.name for c in conds if c.gates and not c.name.startswith("flag:"))
        return f"**Flagged**: well defined (passes {md_text(gating)}) and no describer labels it ({md_text(best)})."
    failing = [c.name.removeprefix("flag: ") for c in conds if c.gates and c.verdict == "fail"]
    lbl = float(row.get("labelability", float("nan")))
    if math.isnan(lbl):
        failing.append("LBL not measured")
    why = f"; a describer labels it ({best})" if lbl >= max_lbl else ""
    return f"**Not flagged**: fails {md_text(', '.join(failing) or 'nothing listed')}{md_text(why)}."


def condition_markdown(c: Condition) -> str:
    """One condition as one Markdown paragraph (no list markup: the viewer's only markup is bold and colour)."""
    gate = "" if c.gates else " (not part of the flag)"
    return f"{MARK.get(c.verdict, MARK['–'])} **{md_text(c.name)}**{md_text(gate)}: {md_text(c.detail)}"


def _auroc_chart(frame: pd.DataFrame, threshold: float) -> alt.Chart:
    bars = (
        alt.Chart(frame.fillna({"AUROC": 0.0}))
        .mark_bar()
        .encode(
            y=alt.Y("describer:N", sort=None, title=None),
            x=alt.X("AUROC:Q", scale=alt.Scale(domain=[0, 1]), title="held-out AUROC"),
            color=alt.condition("datum.best", alt.value("#d62728"), alt.value("#4c78a8")),
            tooltip=["describer", "AUROC", "best"],
        )
    )
    rule = alt.Chart(pd.DataFrame({"x": [threshold]})).mark_rule(strokeDash=[4, 3]).encode(x="x:Q")
    # the height includes the title and the axis: 34 px per describer for the bars themselves
    return (bars + rule).properties(height=34 * len(frame) + 100, title="every describer's held-out AUROC")


def _decile_chart(dec: np.ndarray) -> alt.Chart:
    frame = pd.DataFrame({"decile": np.arange(1, len(dec) + 1), "AUROC": dec.astype(float)})
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(x="decile:O", y=alt.Y("AUROC:Q", scale=alt.Scale(domain=[0, 1])))
        .properties(height=200, title="AUROC per activation decile (1 = weakest)")
    )


def _position_chart(frame: pd.DataFrame, density: float, title: str) -> alt.Chart:
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("bucket:N", sort=None, title=title, axis=alt.Axis(labelAngle=-45)),
            y=alt.Y("p_fire:Q", title="P(fire)"),
            tooltip=["bucket", "p_fire", "tokens", "firings"],
        )
    )
    line = alt.Chart(pd.DataFrame({"y": [density]})).mark_rule(color="#d62728").encode(y="y:Q")
    return (bars + line).properties(height=260, title=f"P(fire) by {title}")


def position_reading(frame: pd.DataFrame, density: float) -> str:
    """Where P(fire) is highest, as a multiple of the density (1× everywhere: position does not explain it)."""
    p = frame["p_fire"].to_numpy(np.float64)
    if not np.isfinite(p).any() or density <= 0:
        return "no firing sampled"
    i = int(np.nanargmax(p))
    return f"highest at {frame['bucket'].iloc[i]}: {p[i] / density:.1f}× its density"


def render(store: FeatureStore, run: Path, row: pd.Series, ex: LatentExamples, defn: Any) -> None:  # noqa: ANN401
    """The why block (see the module docstring)."""
    conds = conditions(row, defn)
    st.subheader("Why it is flagged" if bool(row["flag"]) else "Why it is not flagged")
    st.markdown(verdict_line(row, conds, float(defn.flag.max_lbl)))
    left, right = st.columns([3, 2])
    with left:
        for c in conds:
            st.markdown(condition_markdown(c))
        if reading := decile_reading(ex.decile_auroc):
            st.markdown(md_text(reading))
    with right:
        aurocs = describer_aurocs(row)
        threshold = (1 + float(defn.flag.max_lbl)) / 2
        st.markdown(
            "Held-out AUROC: "
            + " · ".join(
                f"{md_text(d)} {_num(a) if not math.isnan(a) else 'not scored'}{' (best)' if b else ''}"
                for d, a, b in aurocs.itertuples(index=False)
            )
        )
        st.altair_chart(_auroc_chart(aurocs, threshold), width="stretch")
        st.caption(
            f"dashed: AUROC {threshold:.2f}, where LBL = 2·AUROC − 1 reaches max_lbl {defn.flag.max_lbl}"
        )
        st.altair_chart(_decile_chart(np.asarray(ex.decile_auroc)), width="stretch")
    density = float(row["density"])
    profiles = data.position_profiles(store, run, ex, density)
    cols = st.columns(len(profiles))
    for col, (where, frame) in zip(cols, profiles.items(), strict=True):
        with col:
            st.altair_chart(_position_chart(frame, density, f"position in the {where}"), width="stretch")
            st.caption(md_text(f"in the {where}: {position_reading(frame, density)}"))
    n = len(data.firing_sample(ex))
    st.caption(
        f"Estimated from {n:,} sampled firing tokens (held-out positives and decile samples): P(fire | bucket) = "
        "density × share of the sampled firings in the bucket / share of all tokens there. The red line is the "
        "latent's density: bars level with it mean position does not explain where it fires."
    )
