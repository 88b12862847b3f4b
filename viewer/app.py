"""The xenofeat viewer (Streamlit): overview, feature table, feature pages with the label tester, feature sets.

Run it with `xenofeat view RUN`, or `streamlit run viewer/app.py -- RUN`, or with `XENOFEAT_RUN=RUN` set (what
`AppTest.from_file("viewer/app.py")` uses). `?feature=N` in the URL opens latent N's page; `?page=table|sets|overview`
opens another page. Problems with the run (no store, a newer format, a missing file) are shown as one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

if __package__ in (None, ""):  # run as a script by streamlit: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activations.errors import UserError  # noqa: E402
from viewer import data, feature_page, nav, overview, sets_panel, table  # noqa: E402
from viewer.render import md_code, md_text  # noqa: E402

st.set_page_config(page_title="xenofeat viewer", layout="wide")


def main() -> None:
    try:
        run = data.current_run()
        store = data.load_store(run)
    except UserError as err:
        st.error(f"xenofeat: {md_text(err)}")
        st.stop()
    nav.init_from_url(store.n_latents)
    with st.sidebar:
        st.markdown(f"**xenofeat** · {md_code(run)}")
        st.radio("Page", nav.PAGES, key=nav.PAGE_KEY)
        st.caption(f"{store.n_latents} latents · {int(store.table['flag'].sum())} flagged")
    page = st.session_state[nav.PAGE_KEY]
    if page == "Overview":
        overview.render(store, run)
    elif page == "Features":
        table.render(store, run)
    elif page == "Feature":
        feature_page.render(store, run)
    else:
        sets_panel.render(store, run)


main()
