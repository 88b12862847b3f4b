"""Writing a synthetic cache: `generate_synthetic(path, cfg)` lays the planted truth out as cache rows, writes the
cache file and the truth files beside it (their layout and the config are in synth.py).

The stream of documents (synth_plant.py) is cut into sequences of `context_size - 1` text tokens, each preceded by
[CLS]; the last sequence ends in [PAD]. Activations are computed chunk by chunk from the sparse truth, so memory
stays bounded by the truth matrix, not by the activations.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import save_file
from tqdm import tqdm

from activations.errors import UserError
from activations.overwrite import check_replace_cache
from activations.synth import (
    HOOK,
    KINDS,
    LABELABLE_KINDS,
    TRUTH_FORMAT,
    TRUTH_VERSION,
    SynthConfig,
    SynthTruth,
    load_truth,
    truth_paths,
)
from activations.synth_extra import edit_stream, extra_generator, plant_extra
from activations.synth_plant import CLS_ID, N_SPECIAL, PAD_ID, choose, plant_features, sample_stream
from activations.writer import CacheWriter

CHUNK_SEQS = 512  # sequences computed and appended at a time (also fixes the noise draw order)


@dataclass(frozen=True)
class Built:
    """Everything a synthetic cache and its truth are made of, except the activations themselves."""

    tokens: np.ndarray  # (n_seq, L) int32
    doc_ids: np.ndarray  # (n_seq, L) int32, -1 on padding
    positions: np.ndarray  # (n_seq, L) int32, -1 on [CLS] and padding
    mask: np.ndarray  # (n_seq, L) bool, True on [CLS] and padding
    directions: np.ndarray  # (F, d) float32
    truth: sp.csr_matrix  # (n_seq * L, F) float32
    features: list[dict[str, Any]]  # (F,) per-column facts for the truth file
    planted_l0: float
    cls_vector: np.ndarray  # (d,) float32, the [CLS] activation before noise
    n_documents: int


def pad_count(cfg: SynthConfig) -> int:
    """[PAD] tokens at the end of the last sequence."""
    return max(1, (cfg.context_size - 1) // 4)


def stream_to_rows(stream_idx: np.ndarray, context_size: int) -> np.ndarray:
    """Map stream indices of text tokens to flattened cache rows (seq * L + position)."""
    body = context_size - 1
    return (stream_idx // body) * context_size + 1 + stream_idx % body


def build_arrays(cfg: SynthConfig) -> Built:
    """Sample the stream and the planted features, and lay them out as cache rows."""
    seq_rng, plant_rng, _noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(3)
    )
    n_seq, L = cfg.n_seq, cfg.context_size
    body = L - 1
    n_text = n_seq * body - pad_count(cfg)
    stream = sample_stream(cfg, n_text, seq_rng)
    # the later kinds' tokens avoid the token and circle features' (a copy of their generator tells which)
    extra_rng = extra_generator(cfg.seed)
    free = choose(cfg, stream.token_probs, copy.deepcopy(plant_rng)).available
    stream, chosen = edit_stream(cfg, stream, free, extra_rng)
    planted = plant_features(cfg, stream, plant_rng) + plant_extra(cfg, stream, chosen, extra_rng)
    cls_vector = (seq_rng.standard_normal(cfg.d_model) * cfg.special_norm / np.sqrt(cfg.d_model)).astype(
        np.float32
    )

    def frame(x: np.ndarray, fill: int, first: np.ndarray | int) -> np.ndarray:
        flat = np.full(n_seq * body, fill, dtype=x.dtype)
        flat[:n_text] = x
        out = np.empty((n_seq, L), dtype=x.dtype)
        out[:, 1:] = flat.reshape(n_seq, body)
        out[:, 0] = first
        return out

    tokens = frame(stream.tokens, PAD_ID, CLS_ID)
    doc_ids = frame(stream.doc_ids, -1, 0)
    doc_ids[:, 0] = doc_ids[:, 1]  # [CLS] belongs to the document of its neighbour, as in real caches
    positions = frame(stream.positions, -1, -1)
    mask = frame(np.zeros(n_text, dtype=bool), True, True)
    n_unmasked = int((~mask).sum())

    rows, cols, vals, features = [], [], [], []
    for j, pf in enumerate(planted):
        r = stream_to_rows(pf.firing.rows, L)
        rows.append(r)
        cols.append(np.full(len(r), j, dtype=np.int64))
        vals.append(pf.firing.values)
        n_docs = len(np.unique(stream.doc_ids[pf.firing.rows]))
        features.append(
            {
                "index": j,
                "kind": pf.kind,
                "name": pf.name,
                "labelable": pf.kind in LABELABLE_KINDS,
                "n_firing": len(r),
                "n_docs": n_docs,
                "frequency": len(r) / n_unmasked,
                **pf.meta,
            }
        )
    coo = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_seq * L, len(planted))
    )
    truth = coo.tocsr().astype(np.float32)
    truth.sort_indices()
    directions = np.stack([pf.direction for pf in planted]).astype(np.float32)
    return Built(
        tokens=tokens,
        doc_ids=doc_ids,
        positions=positions,
        mask=mask,
        directions=directions,
        truth=truth,
        features=features,
        planted_l0=float(truth.nnz / n_unmasked),
        cls_vector=cls_vector,
        n_documents=len(stream.doc_lengths),
    )


def vocabulary(vocab_size: int) -> list[str]:
    """Token strings: [CLS], [PAD], then tok2 .. tok{vocab_size-1} (tok2 the most frequent)."""
    return ["[CLS]", "[PAD]"] + [f"tok{i}" for i in range(N_SPECIAL, vocab_size)]


def write_cache(
    path: Path, cfg: SynthConfig, built: Built, *, model_fingerprint: str, before_finish: Callable[[], None]
) -> None:
    """Write the cache rows chunk by chunk; `before_finish` runs after the last row, before the complete flag."""
    noise_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(3)[2])
    h = hashlib.sha256()
    for arr in (built.tokens, built.doc_ids):
        h.update(np.ascontiguousarray(arr).tobytes())
    writer = CacheWriter.create(
        path,
        hooks=[HOOK],
        d_model=cfg.d_model,
        context_size=cfg.context_size,
        dtype=cfg.dtype,
        vocab=vocabulary(cfg.vocab_size),
        model_id="synthetic",
        model_fingerprint=model_fingerprint,
        corpus=f"synthetic (seed {cfg.seed})",
        corpus_fingerprint=h.hexdigest(),
        settings=cfg.to_dict(),
        source="synthetic",
        overwrite=True,  # the caller has already refused an existing file unless asked to overwrite
    )
    L, d = cfg.context_size, cfg.d_model
    with writer:
        for a in tqdm(range(0, cfg.n_seq, CHUNK_SEQS), desc="synthesising", unit="chunk", leave=False):
            b = min(a + CHUNK_SEQS, cfg.n_seq)
            x = built.truth[a * L : b * L] @ built.directions  # (rows, d) float32
            x = np.asarray(x, dtype=np.float32)
            x += noise_rng.standard_normal(x.shape, dtype=np.float32) * np.float32(cfg.noise_std)
            m = built.mask[a:b].reshape(-1)
            cls = built.tokens[a:b].reshape(-1) == CLS_ID
            x[cls] += built.cls_vector
            x[m & ~cls] = 0.0  # padding: zero vectors
            writer.append(
                built.tokens[a:b],
                built.doc_ids[a:b],
                built.positions[a:b],
                built.mask[a:b],
                {HOOK: x.reshape(b - a, L, d).astype(cfg.dtype)},
            )
        before_finish()
        writer.finish()


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def generate_synthetic(path: str | Path, cfg: SynthConfig, *, overwrite: bool = False) -> SynthTruth:
    """Write a synthetic cache at `path` and its planted truth beside it; return the truth."""
    path = Path(path)
    st_path, js_path = truth_paths(path)
    if not overwrite:
        for p in (path, st_path, js_path):
            if p.exists():
                raise UserError(f"{p}: already exists; pass --overwrite to replace it")
    elif path.exists() or path.is_symlink():
        check_replace_cache(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: the folder {path.parent} does not exist")
    built = build_arrays(cfg)
    model_fp = hashlib.sha256(built.directions.tobytes() + json.dumps(cfg.to_dict()).encode()).hexdigest()
    meta = {
        "format": TRUTH_FORMAT,
        "format_version": TRUTH_VERSION,
        "config": cfg.to_dict(),
        "hook": HOOK,
        "n_rows": cfg.n_rows,
        "n_features": len(built.features),
        "planted_l0": built.planted_l0,
        "noise_std": cfg.noise_std,
        "counts": {k: sum(f["kind"] == k for f in built.features) for k in KINDS},
        "features": built.features,
    }
    tensors = {
        "directions": built.directions,
        "act_indptr": built.truth.indptr.astype(np.int64),
        "act_indices": built.truth.indices.astype(np.int32),
        "act_values": built.truth.data.astype(np.float32),
        "cls_vector": built.cls_vector,
    }

    def write_truth() -> None:
        # written before the cache's complete flag: a complete synthetic cache always has its truth beside it
        _atomic_write(st_path, lambda p: save_file(tensors, str(p)))
        _atomic_write(js_path, lambda p: p.write_text(json.dumps(meta, indent=1), encoding="utf-8"))

    write_cache(path, cfg, built, model_fingerprint=model_fp, before_finish=write_truth)
    return load_truth(path)
