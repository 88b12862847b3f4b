"""The per-latent example data of the feature store (examples.h5), built from the (T, F) csc activation matrix.

Pure functions: each returns arrays ready for `features.store.write_examples`. Ragged groups (top examples,
decile samples, LBL test windows) are concatenated over latents in latent order with (F+1,) offsets.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from features.store import ragged_offsets
from sae_training.matching import unit_rows

N_DECILES = 10


def _window_grid(centres: np.ndarray, L: int, before: int, after: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, W) flat indices of the windows around `centres` and (n, W) bool: inside the centre's sequence."""
    off = np.arange(-before, after + 1, dtype=np.int64)  # (W,)
    pos = centres % L
    inside = (pos[:, None] + off[None, :] >= 0) & (pos[:, None] + off[None, :] < L)
    return centres[:, None] + off[None, :], inside


def _column(acts: sp.csc_matrix, j: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = acts.indptr[j], acts.indptr[j + 1]
    return acts.indices[lo:hi].astype(np.int64), acts.data[lo:hi]


def _windows(
    acts: sp.csc_matrix, j: int, centres: np.ndarray, flat_tokens: np.ndarray, L: int, before: int, after: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (n, W) (-1 outside the sequence or masked) and latent j's activation (n, W) around `centres`."""
    idx, inside = _window_grid(centres, L, before, after)
    safe = np.where(inside, idx, 0)
    tok = np.where(inside, flat_tokens[safe], -1).astype(np.int32)
    rows, vals = _column(acts, j)
    at = np.searchsorted(rows, safe)
    at_c = np.minimum(at, max(len(rows) - 1, 0))
    hit = inside & (len(rows) > 0) & (rows[at_c] == safe) if len(rows) else np.zeros_like(inside)
    val = np.where(hit, vals[at_c] if len(rows) else 0.0, 0.0).astype(np.float16)
    return tok, val


def example_windows(
    acts: sp.csc_matrix,
    tokens: np.ndarray,
    mask: np.ndarray,
    doc_ids: np.ndarray,
    *,
    n_top: int,
    per_decile: int,
    before: int,
    after: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """The `top/*` and `deciles/*` datasets: top activations and `per_decile` samples of each activation decile."""
    n_seq, L = tokens.shape
    flat_tokens = np.where(mask.reshape(-1), -1, tokens.reshape(-1)).astype(np.int32)
    flat_docs = doc_ids.reshape(-1)
    out: dict[str, list] = {k: [] for k in ("tt", "ta", "tf", "dt", "da", "df", "dd")}
    n_t, n_d = np.zeros(acts.shape[1], np.int64), np.zeros(acts.shape[1], np.int64)
    for j in range(acts.shape[1]):
        rows, vals = _column(acts, j)
        if len(rows) == 0:
            continue
        top = rows[np.argsort(-vals, kind="stable")[:n_top]]
        rng = np.random.default_rng([seed, j])
        edges = np.quantile(vals, np.linspace(0, 1, N_DECILES + 1)[1:-1])
        dec = np.searchsorted(edges, vals, side="right")  # (m,) 0..9
        picks, pick_dec = [], []
        for q in range(N_DECILES):
            members = np.flatnonzero(dec == q)
            sel = rng.choice(members, size=min(per_decile, len(members)), replace=False)
            picks.append(rows[np.sort(sel)])
            pick_dec.append(np.full(len(sel), q, np.int8))
        samp = np.concatenate(picks)
        for key, centres in (("t", top), ("d", samp)):
            tok, val = _windows(acts, j, centres, flat_tokens, L, before, after)
            out[key + "t"].append(tok)
            out[key + "a"].append(val)
            out[key + "f"].append(centres)
        out["dd"].append(np.concatenate(pick_dec))
        n_t[j], n_d[j] = len(top), len(samp)
    W = before + after + 1

    def cat(parts: list, shape: tuple, dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    res = {}
    for g, key, counts in (("top", "t", n_t), ("deciles", "d", n_d)):
        flat = cat(out[key + "f"], (0,), np.int64)
        res[f"{g}/offsets"] = ragged_offsets(counts)
        res[f"{g}/tokens"] = cat(out[key + "t"], (0, W), np.int32)
        res[f"{g}/acts"] = cat(out[key + "a"], (0, W), np.float16)
        res[f"{g}/flat_idx"] = flat
        res[f"{g}/doc"] = flat_docs[flat].astype(np.int32)
    res["deciles/decile"] = cat(out["dd"], (0,), np.int8)
    return res


def histograms(acts: sp.csc_matrix, bins: int) -> dict[str, np.ndarray]:
    """`hist/edges` (F, bins+1) equal-width on [0, max] and `hist/counts` (F, bins) of each latent's firings."""
    n = acts.shape[1]
    cols = np.repeat(np.arange(n), np.diff(acts.indptr))
    vals = acts.data.astype(np.float64)
    top = np.zeros(n)
    np.maximum.at(top, cols, vals)
    safe = np.where(top > 0, top, 1.0)
    b = np.minimum((vals / safe[cols] * bins).astype(np.int64), bins - 1)
    counts = np.bincount(cols * bins + b, minlength=n * bins).reshape(n, bins)
    edges = (np.linspace(0, 1, bins + 1)[None, :] * top[:, None]).astype(np.float32)
    return {"hist/edges": edges, "hist/counts": counts.astype(np.int64)}


def nearest_latents(dec_rows: np.ndarray, k: int, block: int = 2048) -> dict[str, np.ndarray]:
    """`nearest/index` (F, k) and `nearest/cos` (F, k): the latents with the largest decoder cosine, itself excluded."""
    ud = unit_rows(dec_rows)
    n = len(ud)
    k = max(0, min(k, n - 1))
    idx = np.zeros((n, k), np.int32)
    cos = np.zeros((n, k), np.float32)
    for s in range(0, n, block):
        c = ud[s : s + block] @ ud.T  # (b, F)
        r = np.arange(len(c))
        c[r, s + r] = -np.inf
        part = np.argpartition(-c, k - 1, axis=1)[:, :k] if k else np.zeros((len(c), 0), np.int64)
        order = np.argsort(-c[r[:, None], part], axis=1)
        best = part[r[:, None], order]
        idx[s : s + block] = best
        cos[s : s + block] = c[r[:, None], best]
    return {"nearest/index": idx, "nearest/cos": cos}


def lbl_test_sets(test_windows: dict, n_latents: int) -> dict[str, np.ndarray]:
    """`lbl_test/*`: each latent's held-out LBL windows (centre flat index, label, decile), latents not scored empty."""
    counts = np.zeros(n_latents, np.int64)
    flat, label, dec = [], [], []
    for j in range(n_latents):
        tw = test_windows.get(j)
        if tw is None:
            continue
        counts[j] = len(tw.flat_idx)
        flat.append(tw.flat_idx)
        label.append(tw.label)
        dec.append(tw.decile)
    return {
        "lbl_test/offsets": ragged_offsets(counts),
        "lbl_test/flat_idx": np.concatenate(flat).astype(np.int64) if flat else np.zeros(0, np.int64),
        "lbl_test/label": np.concatenate(label).astype(bool) if label else np.zeros(0, bool),
        "lbl_test/decile": np.concatenate(dec).astype(np.int8) if dec else np.zeros(0, np.int8),
    }
