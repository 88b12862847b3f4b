"""Navigation state: which page is shown and which latent is open, kept in session_state and mirrored in the URL.

Widget-backed keys can only be changed before their widget is drawn, so navigation happens in callbacks
(`on_click=open_latent, args=(i,)`) or is followed by `st.rerun()`.
"""

from __future__ import annotations

import streamlit as st

from viewer.data import parse_latent

PAGES = ("Overview", "Features", "Feature", "Sets")
PAGE_KEY = "page"
LATENT_KEY = "latent"
URL_ERROR_KEY = "url_error"
_URL_PAGES = {"overview": "Overview", "table": "Features", "features": "Features", "sets": "Sets"}


def init_from_url(n_latents: int) -> None:
    """On a session's first run, take the page and latent from `?feature=N` / `?page=...` (validated)."""
    if PAGE_KEY in st.session_state:
        return
    st.session_state[PAGE_KEY] = _URL_PAGES.get(str(st.query_params.get("page", "")).lower(), "Overview")
    raw = st.query_params.get("feature")
    if raw is None:
        return
    latent, err = parse_latent(raw, n_latents)
    st.session_state[PAGE_KEY] = "Feature"
    if err:
        st.session_state[URL_ERROR_KEY] = f"URL ?feature={raw}: {err}"
    else:
        st.session_state[LATENT_KEY] = latent


def open_latent(latent: int) -> None:
    """Show latent's page (use as a widget callback, or call before any widget and then st.rerun())."""
    st.session_state[LATENT_KEY] = int(latent)
    st.session_state[PAGE_KEY] = "Feature"
    st.session_state.pop(URL_ERROR_KEY, None)
    st.query_params["feature"] = str(int(latent))


def current_latent() -> int | None:
    return st.session_state.get(LATENT_KEY)
