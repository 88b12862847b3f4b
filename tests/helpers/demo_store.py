"""A feature store of random arrays, for the viewer's tests and benchmark, written through the store's one writer.

`build_random_store(run_dir, n_latents=...)` writes `RUN/features/` with every column and dataset of the schema
(`features.store.schema`), through `features.store.write_store`, which refuses a table or a dataset list that
does not match the schema: so this builder cannot drift from what `xenofeat score` writes. No model, cache or SAE
is needed, so a store of 16k+ latents takes seconds. Values are random but consistent: windows are cut from one
token grid, the pass columns follow the definition's thresholds and the flag its rule, the held-out LBL windows
are centred on grid positions. Nothing here is a real result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from features import store as st
from features.definition import Definition, definition_to_toml
from features.flags import apply_flags
from features.labelability import describer_names
from features.labelability.llm import add_blank_columns
from features.store.schema import table_columns

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "it",
    "at",
    "from",
    "this",
    "be",
    "are",
    "or",
    "an",
    "which",
    "not",
    "have",
    "had",
    "but",
    "were",
    "model",
    "feature",
    "token",
    "layer",
    "sparse",
    "latent",
    "label",
    "stable",
    "seed",
    "window",
    "rule",
    "value",
    "data",
    "run",
    "set",
]


def random_vocab(n: int) -> list[str]:
    """A vocabulary of n strings: common words first, then `tok<i>`; includes one token needing HTML escaping."""
    vocab = list(WORDS[: n - 1]) + [f"tok{i}" for i in range(max(0, n - len(WORDS) - 1))]
    return vocab[: n - 1] + ["<b>&amp;"]


def _ragged(
    rng: np.random.Generator, counts: np.ndarray, flat_tokens: np.ndarray, L: int, before: int, after: int
):
    """Windows around random centres: tokens (n, W), acts (n, W), flat_idx (n,)."""
    total = int(counts.sum())
    W = before + after + 1
    centres = rng.integers(0, len(flat_tokens), total)
    off = np.arange(-before, after + 1)
    idx = centres[:, None] + off[None, :]
    inside = (idx >= 0) & (idx < len(flat_tokens)) & ((centres % L)[:, None] + off[None, :] >= 0)
    inside &= (centres % L)[:, None] + off[None, :] < L
    tok = np.where(inside, flat_tokens[np.clip(idx, 0, len(flat_tokens) - 1)], -1).astype(np.int32)
    acts = (rng.random((total, W)) * (rng.random((total, W)) < 0.3)).astype(np.float16)
    acts[:, before] = rng.random(total).astype(np.float16) + np.float16(0.5)
    return tok, np.where(tok >= 0, acts, 0).astype(np.float16), centres.astype(np.int64)


def _windows(
    rng: np.random.Generator, F: int, n_top: int, per_decile: int, flat_tokens: np.ndarray, doc_ids: np.ndarray,
    L: int, before: int, after: int,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The `top/*` and `deciles/*` datasets."""
    data: dict[str, np.ndarray] = {}
    for g, counts in (
        ("top", np.full(F, n_top, np.int64)),
        ("deciles", np.full(F, per_decile * 10, np.int64)),
    ):
        tok, acts, flat = _ragged(rng, counts, flat_tokens, L, before, after)
        if g == "top":  # top examples in decreasing order of the centre activation, as the scorer writes them
            off = st.ragged_offsets(counts)
            for j in range(F):
                s = slice(off[j], off[j + 1])
                order = np.argsort(-acts[s, before].astype(np.float32), kind="stable")
                tok[s], acts[s], flat[s] = tok[s][order], acts[s][order], flat[s][order]
        data[f"{g}/offsets"] = st.ragged_offsets(counts)
        data[f"{g}/tokens"], data[f"{g}/acts"], data[f"{g}/flat_idx"] = tok, acts, flat
        data[f"{g}/doc"] = doc_ids.reshape(-1)[flat]
    data["deciles/decile"] = np.tile(np.repeat(np.arange(10, dtype=np.int8), per_decile), F)
    return data


def _lbl_test(rng: np.random.Generator, F: int, n_test: int, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The `lbl_test/*` datasets: half positives, centred on unmasked grid positions."""
    valid = np.flatnonzero(~mask.reshape(-1))
    label = np.zeros((F, n_test), bool)
    label[:, : n_test // 2] = True
    return {
        "lbl_test/offsets": st.ragged_offsets(np.full(F, n_test, np.int64)),
        "lbl_test/flat_idx": rng.choice(valid, (F, n_test)).reshape(-1).astype(np.int64),
        "lbl_test/label": label.reshape(-1),
        "lbl_test/decile": np.where(label, np.arange(n_test)[None, :] % 10, -1).astype(np.int8).reshape(-1),
    }


def build_random_store(
    run_dir: str | Path,
    n_latents: int = 64,
    *,
    n_seq: int = 200,
    seq_len: int = 32,
    vocab_size: int = 60,
    n_top: int = 10,
    per_decile: int = 2,
    n_test: int = 120,
    before: int = 10,
    after: int = 4,
    n_nearest: int = 8,
    seeds: tuple[int, ...] = (0, 1, 2),
    seed: int = 0,
    vocab: Sequence[str] | None = None,
) -> Path:
    """Write a random but well-formed feature store into `run_dir/features/`; returns that folder.

    `vocab` replaces the generated vocabulary (its length is the vocabulary size) and then also fills the readable
    forms, as a real describer names tokens: for tests of how the viewer shows strings it does not control.
    """
    named = list(vocab) if vocab is not None else WORDS  # the words readable forms are made of
    vocab = list(vocab) if vocab is not None else random_vocab(vocab_size)
    vocab_size = len(vocab)
    rng = np.random.default_rng(seed)
    defn = Definition()
    folder = Path(run_dir) / st.FEATURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    F, T = n_latents, n_seq * seq_len
    grid = rng.integers(0, vocab_size, (n_seq, seq_len)).astype(np.int32)
    mask = np.zeros((n_seq, seq_len), bool)
    mask[:, 0] = True  # a CLS-like first token, as real caches mask
    flat_tokens = np.where(mask.reshape(-1), -1, grid.reshape(-1))
    doc_ids = (np.arange(n_seq) // 4)[:, None].repeat(seq_len, 1).astype(np.int32)

    table = _random_table(rng, defn, F, T, n_test, named)
    data = _windows(rng, F, n_top, per_decile, flat_tokens, doc_ids, seq_len, before, after)
    data.update(_lbl_test(rng, F, n_test, mask))
    top = rng.random(F).astype(np.float32) + 0.5
    data["hist/edges"] = (np.linspace(0, 1, 21)[None, :] * top[:, None]).astype(np.float32)
    data["hist/counts"] = rng.integers(0, 100, (F, 20)).astype(np.int64)
    near = (np.arange(F)[:, None] + 1 + np.arange(min(n_nearest, F - 1))[None, :]) % F
    data["nearest/index"] = near.astype(np.int32)
    data["nearest/cos"] = np.sort(rng.random(near.shape).astype(np.float32), axis=1)[:, ::-1].copy()
    data["decile_auroc"] = rng.random((F, 10)).astype(np.float32)
    data["matches/seeds"] = np.asarray(seeds[1:], np.int64)
    data["matches/partner"] = rng.integers(0, F, (len(seeds) - 1, F)).astype(np.int64)
    data["matches/cos"] = rng.random((len(seeds) - 1, F)).astype(np.float32)
    data["matches/dec_cos"] = rng.random((len(seeds) - 1, F)).astype(np.float32)
    data["downstream/embedding_shift"] = rng.random(F).astype(np.float32)  # an encoder's recorded effect
    data["grid/tokens"], data["grid/mask"], data["grid/doc_ids"] = grid, mask, doc_ids
    data["vocab"] = vocab
    attrs = st.ExamplesAttrs(
        n_latents=F,
        context_size=seq_len,
        before=before,
        after=after,
        lbl_window=defn.labelability.window,
        hook="random",
    )
    summary = {
        "n_latents": F,
        "alive": int((table["firing_count"] > 0).sum()),
        "well_defined": int(table["well_defined"].sum()),
        "flagged": int(table["flag"].sum()),
        "pw_mcc": 0.5,
        "tau": defn.stability.tau,
        "sae": {"path": "seed-0", "d_in": 16, "d_sae": F, "explained_variance": 0.9},
        "cache": {"path": "cache.h5", "hook": "demo.hook_x", "fingerprint": "demo"},
        "seeds": list(seeds),
        "tokens_scored": T,
        "note": "random store (tests/helpers/demo_store.py): not a result",
    }
    return st.write_store(folder, st.StoreContent(table, definition_to_toml(defn), attrs, data, summary))


def _random_column(rng: np.random.Generator, name: str, dtype: str, n: int) -> np.ndarray:
    if dtype == "bool":
        return rng.random(n) < 0.05
    if dtype == "int64":
        return rng.integers(-1, n, n).astype(np.int64)
    if dtype == "float64":
        return rng.random(n)
    return np.array([f"{name}{i}" for i in range(n)], dtype=object)


def _random_table(
    rng: np.random.Generator, defn: Definition, F: int, T: int, n_test: int, named: list[str]
) -> pd.DataFrame:
    """Every column of the schema: random values by dtype, then the ones the viewer reads made consistent."""
    table = add_blank_columns(
        pd.DataFrame({"feature": np.arange(F, dtype=np.int64)})
    )  # not explained by an LLM
    for col in table_columns():
        if col.name in table or col.name in ("well_defined", "flag"):
            continue
        table[col.name] = _random_column(rng, col.name, col.dtype, F)
    firing = rng.integers(0, 2000, F)
    lbl = rng.random(F)
    table["firing_count"] = firing
    table["n_docs"] = np.minimum(firing, rng.integers(0, 80, F))
    table["density"] = firing / T
    table["dense"] = firing / T > defn.support.max_density
    table["antipodal_partner"] = np.full(F, -1, np.int64)
    table["support_pass"] = firing >= defn.support.min_firing_tokens
    table["stability"] = rng.choice([0.0, 0.5, 1.0], F)
    table["null_q95"] = rng.random(F) * 0.5
    table["dl_bits"] = rng.random(F) * 3
    table["bits_saved"] = rng.random(F) * 4
    table["function_model"] = np.full(F, np.nan)  # an offline run: no model effect
    table["function_model_null_q"] = np.full(F, np.nan)
    table["labelability"] = lbl
    table["labelability_hi"] = np.minimum(1, lbl + 0.05)
    table["best_describer"] = rng.choice(list(describer_names()), F)
    for i, name in enumerate(describer_names()):
        table[f"auroc_{name}"] = (1 + lbl) / 2 - 0.01 * i
    table["n_test_pos"] = np.full(F, n_test // 2, np.int64)
    table["readable"] = [f"cur in {{{named[i % len(named)]}}}" for i in range(F)]
    table["duplicate_of"] = np.where(table["duplicate"], (np.arange(F) + 1) % F, -1)
    table["multi_d"] = rng.random(F) < 0.02
    table["mixture"] = np.zeros(F, bool)
    table["stability_pass"] = table["stability"] >= defn.stability.min_stability
    table["function_pass"] = table["delta_sse"] > table["null_q95"]
    table["mdl_pass"] = table["bits_saved"] >= table["dl_bits"]
    table["learned_r2"] = np.full(F, np.nan)  # an offline store: C7 not applicable, so it does not gate
    table["learned"] = np.zeros(F, bool)
    table["learned_pass"] = np.ones(F, bool)
    return apply_flags(table, defn.flag)
