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


# ---- where a latent fires: P(fire) by position ------------------------------------------------------------------


def doc_positions(doc_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T,) int64 index of every flat position among its document's unmasked tokens, -1 where masked.

    Flat order is the packed order of the grid, so a document is a run of equal ids; a document cut by the start of
    the scored grid counts from the first token the grid holds.
    """
    doc = np.asarray(doc_ids).reshape(-1)
    valid = ~np.asarray(mask, bool).reshape(-1)
    before = np.cumsum(valid) - valid  # unmasked tokens before each position
    starts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]]) if len(doc) else np.zeros(0, np.int64)
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(doc)]))
    return np.where(valid, before - before[run_start], -1).astype(np.int64)


def sequence_edges(context_size: int, max_buckets: int = 16) -> np.ndarray:
    """Bucket edges over positions 0 .. context_size - 1 of the packed sequence: equal widths, at most max_buckets."""
    width = max(1, -(-context_size // max_buckets))
    return np.arange(0, context_size + width, width, dtype=np.int64)


def document_edges(max_pos: int) -> np.ndarray:
    """Bucket edges over positions in the document: 0, 1, 2, 4, 8, ... (doubling), up past max_pos."""
    edges = [0, 1]
    while edges[-1] <= max_pos:
        edges.append(edges[-1] * 2)
    return np.asarray(edges, np.int64)


def fire_profile(fired: np.ndarray, every: np.ndarray, edges: np.ndarray, density: float) -> pd.DataFrame:
    """P(fire | position bucket) from a uniform sample of firing positions and the positions of every token.

    Bayes: P(fire | b) = density * P(b | fire) / P(b), with P(b | fire) the share of the sampled firings in bucket b
    and P(b) the share of all unmasked tokens there. Rows: bucket label, lo, hi (exclusive), tokens, sampled firings,
    p_fire (NaN for an empty bucket, clipped to 1).
    """
    n_fired = np.histogram(fired, edges)[0]
    n_all = np.histogram(every, edges)[0]
    share_fired = n_fired / max(int(n_fired.sum()), 1)
    share_all = n_all / max(int(n_all.sum()), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n_all > 0, np.minimum(density * share_fired / share_all, 1.0), np.nan)
    lo, hi = edges[:-1], edges[1:]
    label = [f"{a}" if b - a == 1 else f"{a}-{b - 1}" for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]
    return pd.DataFrame(
        {"bucket": label, "lo": lo, "hi": hi, "tokens": n_all, "firings": n_fired, "p_fire": p}
    )


@st.cache_resource(show_spinner=False, max_entries=4)
def _grid_positions(folder: str, mtime: float, _store: FeatureStore) -> tuple[np.ndarray, np.ndarray | None]:
    """(position in sequence, position in document or None without grid/doc_ids) of every flat grid position,
    -1 where masked."""
    mask = _store.grid_mask
    L = mask.shape[1]
    seq = np.where(mask.reshape(-1), -1, np.arange(mask.size) % L).astype(np.int64)
    f = _store.h5
    doc = doc_positions(f["grid/doc_ids"][:], mask) if "grid/doc_ids" in f else None
    return seq, doc


def firing_sample(ex: LatentExamples) -> np.ndarray:
    """Flat indices of a uniform sample of a latent's firing tokens: its held-out positives and its decile samples
    (both stratified over equal-sized activation deciles; the top examples are left out, being the strongest only)."""
    return np.unique(np.concatenate([ex.test.flat_idx[ex.test.label], ex.deciles.flat_idx]).astype(np.int64))


def position_profiles(
    store: FeatureStore, run: Path, ex: LatentExamples, density: float
) -> dict[str, pd.DataFrame]:
    """P(fire) by position in the packed sequence and (where the store has document ids) in the document."""
    seq, doc = _grid_positions(*store_key(run), store)
    fired = firing_sample(ex)
    fired = fired[(fired >= 0) & (fired < len(seq))]
    out = {"sequence": fire_profile(seq[fired], seq[seq >= 0], sequence_edges(store.context_size), density)}
    if doc is not None:
        every = doc[doc >= 0]
        edges = document_edges(int(every.max()) if len(every) else 0)
        out["document"] = fire_profile(doc[fired], every, edges, density)
    return out
