"""Store access for the viewer: which run to show, the cached store, and derived look-ups built once per run.

Large things live in `st.cache_resource` (one copy shared by every session, never in session_state) and are keyed
by the store folder plus the modification time of its summary, so a rescored run is picked up on the next rerun.
Per-latent data is read on demand through `FeatureStore.examples`, which touches only that latent's slices.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from activations.errors import UserError
from features.store import FEATURES_DIR, SUMMARY_FILE, FeatureStore, LatentExamples

ENV_RUN = "XENOFEAT_RUN"
APP_FILE = Path(__file__).with_name("app.py").resolve()


def run_dir_from(argv: list[str], env: dict[str, str] | os._Environ) -> Path:
    """The run folder: the script's first argument under `streamlit run viewer/app.py -- RUN`, else $XENOFEAT_RUN.

    argv counts only when argv[0] is this app (AppTest and other hosts run the script with their own argv).
    """
    if len(argv) > 1 and Path(argv[0]).resolve() == APP_FILE:
        return Path(argv[1])
    if env.get(ENV_RUN):
        return Path(env[ENV_RUN])
    raise UserError(f"no run folder: start with `xenofeat view RUN` or set {ENV_RUN}")


def current_run() -> Path:
    """The run folder of this app process."""
    return run_dir_from(sys.argv, os.environ)


def store_key(run: Path) -> tuple[str, float]:
    """(store folder, mtime of its summary): the cache key of everything derived from one scored store."""
    folder = run if run.name == FEATURES_DIR and not (run / FEATURES_DIR).is_dir() else run / FEATURES_DIR
    summary = folder / SUMMARY_FILE
    return str(folder.resolve()), summary.stat().st_mtime if summary.exists() else 0.0


@st.cache_resource(show_spinner=False, max_entries=4)
def _open(folder: str, mtime: float) -> FeatureStore:
    return FeatureStore.open(folder)


def load_store(run: Path) -> FeatureStore:
    """The run's FeatureStore, opened once per (folder, summary mtime) and shared by all sessions.

    Raises UserError for a run without a store, a newer format, a missing file (the viewer shows it as one line).
    """
    if not (run.is_dir()):
        raise UserError(f"{run}: not a folder")
    folder, mtime = store_key(run)
    store = _open(folder, mtime)
    store.h5  # noqa: B018 - open and check examples.h5 now, so a bad file is reported at start, not on a page
    return store


@st.cache_resource(show_spinner=False, max_entries=4)
def _token_index(folder: str, mtime: float, _store: FeatureStore) -> tuple[np.ndarray, np.ndarray]:
    """Latents by firing token: (order, token ids sorted) over the centre token of every top example."""
    f = _store.h5
    centre = int(f.attrs["center"])
    tok = f["top/tokens"][:, centre].astype(np.int64)  # (n_top_total,)
    counts = np.diff(f["top/offsets"][:])
    owner = np.repeat(np.arange(len(counts)), counts)
    order = np.argsort(tok, kind="stable")
    return tok[order], owner[order]


def latents_with_token(store: FeatureStore, run: Path, token_ids: list[int]) -> np.ndarray:
    """Sorted latents whose top examples fire on any of `token_ids` (built once per store, then a binary search)."""
    folder, mtime = store_key(run)
    toks, owners = _token_index(folder, mtime, store)
    hits = [owners[np.searchsorted(toks, t, "left") : np.searchsorted(toks, t, "right")] for t in token_ids]
    return np.unique(np.concatenate(hits)) if hits else np.zeros(0, np.int64)


@st.cache_resource(show_spinner=False, max_entries=4)
def _vocab_lookup(folder: str, mtime: float, _store: FeatureStore) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, s in enumerate(_store.vocab):
        out.setdefault(s, []).append(i)
        out.setdefault(s.strip().lower(), []).append(i)
    return out


def token_ids(store: FeatureStore, run: Path, text: str) -> list[int]:
    """Token ids spelt `text` exactly, or (failing that) case- and space-insensitively."""
    folder, mtime = store_key(run)
    look = _vocab_lookup(folder, mtime, store)
    return sorted(set(look.get(text) or look.get(text.strip().lower()) or []))


def parse_latent(text: str, n_latents: int) -> tuple[int | None, str | None]:
    """(latent, None) for a valid index typed or taken from the URL, else (None, a message to show)."""
    text = str(text).strip()
    if not text:
        return None, None
    try:
        i = int(text)
    except ValueError:
        return None, f"latent {text!r}: not a whole number"
    if not 0 <= i < n_latents:
        return None, f"latent {i}: out of range; this run has latents 0 to {n_latents - 1}"
    return i, None


def parse_indices(text: str, n_latents: int) -> tuple[np.ndarray | None, str | None]:
    """'3, 10-20' -> (sorted latents, None); (None, message) when unreadable or out of range; (None, None) if empty."""
    text = text.strip()
    if not text:
        return None, None
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo_s, _, hi_s = part.partition("-")
        try:
            lo, hi = int(lo_s), int(hi_s) if hi_s else int(lo_s)
        except ValueError:
            return None, f"index search: cannot read {part!r}; write indices like 3, 10-20"
        if not (0 <= lo <= hi < n_latents):
            return None, f"index search: {part} is out of range; this run has latents 0 to {n_latents - 1}"
        out.extend(range(lo, hi + 1))
    return np.unique(np.array(out, np.int64)), None


def numeric_columns(table: pd.DataFrame) -> list[str]:
    """Numeric, non-boolean columns (what range filters and the sort apply to)."""
    return [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]) and table[c].dtype != bool]


@st.cache_resource(show_spinner=False, max_entries=64)
def _examples(folder: str, mtime: float, latent: int, _store: FeatureStore) -> LatentExamples:
    return _store.examples(latent)


def examples(store: FeatureStore, run: Path, latent: int) -> LatentExamples:
    """One latent's examples (only its slices of examples.h5 are read), kept for the latents opened recently."""
    folder, mtime = store_key(run)
    return _examples(folder, mtime, int(latent), store)
