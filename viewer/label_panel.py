"""The label tester on a feature page: a person's hypothesis (tokens, regex, rule) scored on the latent's held-out
LBL windows with precision, recall and AUROC beside the best describer's (and the LLM's, where `xenofeat explain`
ran); every attempt is saved to `RUN/features/labels.jsonl` (features.store.labels) and listed."""

from __future__ import annotations

import getpass
import math
from pathlib import Path

import pandas as pd
import streamlit as st

from activations.errors import UserError
from features.label_tester import HypothesisScore, parse_hypothesis, score_hypothesis
from features.store import FeatureStore
from features.store.labels import append_attempt, read_attempts
from viewer.render import md_code, md_text

TIMEOUT_S = 2.0  # bound on one regex hypothesis over all held-out windows
HELP = {
    "tokens": 'the current token is one of these: `the, of, "a b"` (quote tokens with spaces or commas)',
    "regex": "a regular expression over the window text (context then the current token, joined by spaces); "
    "it must match into the current token: `$` is the end of the current token",
    "rule": "terms cur=TOKEN, prev=TOKEN, bag=TOKEN joined by AND / OR: `prev=New AND cur=York OR cur=NYC`",
}


def run_hypothesis(store: FeatureStore, latent: int, kind: str, text: str, bag: int) -> HypothesisScore:
    """Parse and score one hypothesis on the latent's held-out windows; ValueError with a message for the person."""
    h = parse_hypothesis(kind, text, vocab=store.vocab)
    test = store.test_windows(latent)
    if len(test.label) == 0:
        raise ValueError(
            f"latent {latent}: no held-out windows (it fails C1 support, so labelability was not scored)"
        )
    return score_hypothesis(h, test.tokens, test.label, store.vocab, bag=bag, timeout_s=TIMEOUT_S)


def _fmt(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def render(store: FeatureStore, run: Path, latent: int) -> None:
    st.subheader("Label tester")
    row = store.table.iloc[latent]
    best = str(row.get("best_describer", "none"))
    best_auroc = row.get(f"auroc_{best}", float("nan")) if best != "none" else float("nan")
    bag = int(store.definition().labelability.rule_bag)
    with st.form(f"label_form_{latent}"):
        kind = st.radio("hypothesis", list(HELP), horizontal=True, key=f"lt_kind_{latent}")
        text = st.text_input(
            "your label", key=f"lt_text_{latent}", help=" · ".join(f"{k}: {v}" for k, v in HELP.items())
        )
        who = st.text_input("your name", value=_default_who(), key=f"lt_who_{latent}")
        submitted = st.form_submit_button("Score it")
    if submitted:
        try:
            sc = run_hypothesis(store, latent, kind, text, bag)
        except ValueError as err:
            st.error(f"label tester: {md_text(err)}")
        else:
            try:
                append_attempt(run, latent, who, kind, text, sc)
            except (UserError, OSError) as err:
                st.error(f"label tester: scored, but not saved: {md_text(err)}")
            st.session_state[f"lt_last_{latent}"] = (kind, text, sc)
    last = st.session_state.get(f"lt_last_{latent}")
    if last:
        kind, text, sc = last
        st.markdown(
            f"**{md_text(kind)}** {md_code(text)} on {sc.n_pos} firing and {sc.n_neg} non-firing held-out windows"
        )
        llm_auroc = row.get("auroc_llm", float("nan")) if str(row.get("llm_model", "") or "") else None
        c = st.columns(5 if llm_auroc is not None else 4)
        c[0].metric("precision", _fmt(sc.precision))
        c[1].metric("recall", _fmt(sc.recall))
        c[2].metric("AUROC (yours)", _fmt(sc.auroc))
        c[3].metric(f"AUROC ({md_text(best)} describer)", _fmt(float(best_auroc)))
        if llm_auroc is not None:
            c[4].metric("AUROC (LLM)", _fmt(float(llm_auroc)), help=str(row.get("llm_explanation", "")))
    try:
        attempts = read_attempts(run, latent)
    except UserError as err:  # a damaged labels.jsonl: say so, keep the page usable
        st.error(md_text(f"label tester: {err}"))
        attempts = []
    if attempts:
        st.markdown(f"**Labels tried on latent {latent}** ({len(attempts)})")
        df = pd.DataFrame([a.__dict__ for a in attempts]).drop(columns=["latent"])
        st.dataframe(df.iloc[::-1], hide_index=True, width="stretch")


def _default_who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container: leave it for the person to type
        return ""
