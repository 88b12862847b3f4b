"""Feature sets in the viewer: add latents to named sets (from the table or a feature page), describe a set, see its
rows, remove latents, delete it, and download it as JSON. Sets are stored by `features.store.sets` in the run folder;
names go through its validation, so a typed name is a label and never a path."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from activations.errors import UserError
from features.store import FeatureStore
from features.store import sets as fsets
from viewer import data, nav
from viewer.render import md_text

NEW = "➕ new set…"
SET_COLUMNS = ("feature", "flag", "well_defined", "labelability", "best_describer", "readable", "density")


def add_latents(
    run: Path, name: str, latents: list[int], n_latents: int, description: str = ""
) -> fsets.FeatureSet:
    """Add latents to the set `name` (created if new) and save it; ValueError/UserError with a message on bad input."""
    # read, change and write under the store lock: two tabs adding to one set both keep their latents
    return fsets.add_to_set(
        run, name, [int(i) for i in latents], description=description, n_latents=n_latents
    )


def set_json_bytes(run: Path, fs: fsets.FeatureSet) -> bytes:
    """The set's `json` export (the same document `xenofeat export --set NAME --format json` writes)."""
    from features.exporters.json_set import set_json

    return json.dumps(set_json(run, fs.name), indent=1, ensure_ascii=False).encode("utf-8")


def add_to_set_widget(run: Path, latents: list[int], n_latents: int, key: str) -> None:
    """A set picker (or a new name) and an 'Add' button for `latents`; messages shown in place."""
    try:
        names = sorted(fsets.load_sets(run))
    except UserError as err:
        st.error(md_text(err))
        return
    c1, c2 = st.columns(2)
    choice = c1.selectbox("feature set", [*names, NEW], key=f"{key}_set_pick")
    new_name = c2.text_input("new set name", key=f"{key}_set_new") if choice == NEW else choice
    label = f"Add {len(latents)} latent{'s' if len(latents) != 1 else ''} to the set"
    if st.button(label, disabled=not latents, key=f"{key}_set_add"):
        try:
            fs = add_latents(run, new_name or "", latents, n_latents)
        except (ValueError, UserError) as err:
            st.error(f"feature set: {md_text(err)}")
            return
        st.success(f"set {md_text(repr(fs.name))} now has {len(fs.features)} latents")


def render(store: FeatureStore, run: Path) -> None:
    st.header("Feature sets")
    try:
        sets = fsets.load_sets(run)
    except UserError as err:
        st.error(md_text(err))
        return
    with st.form("new_set", clear_on_submit=True):
        st.markdown("**New set**")
        name = st.text_input("name", key="ns_name")
        desc = st.text_area("description", key="ns_desc", height=68)
        ids = st.text_input("latents", key="ns_ids", placeholder="e.g. 3, 10-20 (optional)")
        if st.form_submit_button("Create"):
            _create(run, store, name, desc, ids)
            sets = fsets.load_sets(run)
    if not sets:
        st.info("No feature sets yet: create one here, or add latents from the table or a feature page.")
        return
    name = st.selectbox("set", sorted(sets), key="sp_pick")
    fs = sets[name]
    st.caption(f"created {md_text(fs.created)} · updated {md_text(fs.updated)} · {len(fs.features)} latents")
    new_desc = st.text_area("description", value=fs.description, key=f"sp_desc_{name}")
    if new_desc != fs.description and st.button("Save description", key="sp_save_desc"):
        fs = fsets.save_set(run, fsets.FeatureSet(fs.name, new_desc, fs.features, fs.created))
        st.success("description saved")
    rows = store.table.set_index("feature").reindex(fs.features).reset_index()
    st.dataframe(rows[[c for c in SET_COLUMNS if c in rows]], hide_index=True, width="stretch")
    c1, c2, c3 = st.columns(3)
    if fs.features:
        c1.selectbox(
            "open a latent of the set",
            fs.features,
            index=None,
            key="sp_open",
            on_change=lambda: nav.open_latent(st.session_state["sp_open"]),
        )
        drop = c2.multiselect("remove latents", fs.features, key=f"sp_drop_{name}")
        if drop and c2.button("Remove", key="sp_remove"):
            keep = [i for i in fs.features if i not in set(drop)]
            fsets.save_set(run, fsets.FeatureSet(fs.name, fs.description, keep, fs.created))
            st.rerun()
    c3.download_button(
        "Export JSON",
        data=set_json_bytes(run, fs),
        file_name="feature-set.json",  # a fixed name: the set's name never becomes a path
        mime="application/json",
        key="sp_export",
    )
    if c3.button("Delete this set", key="sp_delete"):
        fsets.delete_set(run, fs.name)
        st.rerun()


def _create(run: Path, store: FeatureStore, name: str, desc: str, ids: str) -> None:
    latents, err = data.parse_indices(ids, store.n_latents)
    if err:
        st.error(md_text(err))
        return
    try:
        if name.strip() and fsets.validate_set_name(name) in fsets.load_sets(run):
            raise ValueError(f"a set named {name.strip()!r} exists; add latents to it instead")
        fs = add_latents(run, name, [] if latents is None else latents.tolist(), store.n_latents, desc)
    except (ValueError, UserError) as err:
        st.error(f"feature set: {md_text(err)}")
        return
    st.success(f"set {md_text(repr(fs.name))} created with {len(fs.features)} latents")
