"""`xenofeat cache import`: build a cache from activations a user already has.

Inputs are `.npy` files (read with `allow_pickle=False`, memory-mapped) or `.safetensors` files (a single tensor, or
the tensor named `tokens` / `acts` / the hook name): token ids (n_seq, L) and activations (n_seq, L, d), optionally
document ids (n_seq, L) or (n_seq,), a mask (n_seq, L; True = excluded) and a vocabulary (JSON: a list of strings or
a {token: id} object). Everything is validated (shapes, integer ids, finite activations) before the file is written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from activations.cache import check_hook_name
from activations.errors import UserError
from activations.writer import CacheWriter

# Without --vocab every token id gets a placeholder name `<id>` stored in the file; beyond the largest tokenizer
# vocabularies in use (Gemma's 262,144) an id is a mistake, and a 2**40 id would make a list the size of memory.
MAX_PLACEHOLDER_VOCAB = 262_144
# a {token: id} vocabulary is laid out as a list indexed by id, so its ids are bounded the same way as a list's size
MAX_VOCAB = 1 << 24


def load_array(path: str | Path, option: str, key: str | None = None) -> np.ndarray:
    """Read an array from .npy or .safetensors without unpickling anything."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{option}: {path} does not exist")
    if path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise UserError(f"{option}: {path} is not a plain numeric .npy file ({err})") from err
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as fh:
                keys = list(fh.keys())
                name = key if key in keys else (keys[0] if len(keys) == 1 else None)
                if name is None:
                    raise UserError(
                        f"{option}: {path} holds several tensors ({', '.join(keys)}); expected one"
                    )
                return fh.get_tensor(name)
        except SafetensorError as err:
            raise UserError(f"{option}: {path} is not a readable safetensors file ({err})") from err
    raise UserError(f"{option}: {path} must be a .npy or .safetensors file")


def _check_sizes(tokens: str | Path, acts: str | Path, tok: np.ndarray, act: np.ndarray) -> None:
    """Refuse empty inputs: a cache needs at least one sequence of one token with one activation dimension."""
    n_seq, L = tok.shape
    if n_seq == 0:
        raise UserError(f"--tokens: {tokens} holds no sequences (shape {tok.shape})")
    if L == 0:
        raise UserError(f"--tokens: {tokens} has sequences of length 0 (shape {tok.shape})")
    if act.shape[2] == 0:
        raise UserError(f"--acts: {acts} has activations of width 0 (shape {act.shape})")


def load_vocab(path: str | Path, size: int) -> list[str]:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"--vocab: {path} is not a readable JSON file ({err})") from err
    if isinstance(obj, list) and all(isinstance(t, str) for t in obj):
        vocab = list(obj)
    elif isinstance(obj, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in obj.values()):
        ids = obj.values()
        if ids and not (min(ids) >= 0 and max(ids) < MAX_VOCAB):
            raise UserError(f"--vocab: {path} has token ids outside 0..{MAX_VOCAB - 1}")
        vocab = [f"<{i}>" for i in range(max(ids, default=-1) + 1)]
        for tok, i in obj.items():
            vocab[i] = tok
    else:
        raise UserError(f"--vocab: {path} must hold a list of strings or a {{token: id}} object")
    if len(vocab) < size:
        raise UserError(f"--vocab: {path} has {len(vocab)} entries but token ids go up to {size - 1}")
    return vocab


def import_cache(
    *,
    tokens: str | Path,
    acts: str | Path,
    hook: str,
    out: str | Path,
    doc_ids: str | Path | None = None,
    vocab: str | Path | None = None,
    mask: str | Path | None = None,
    model_id: str = "imported",
    dtype: str = "float16",
    overwrite: bool = False,
    batch_seqs: int = 256,
) -> Path:
    """Validate the arrays and write them as a complete cache; returns the output path."""
    check_hook_name(hook)
    tok = load_array(tokens, "--tokens", "tokens")
    act = load_array(acts, "--acts", hook if Path(acts).suffix == ".safetensors" else "acts")
    if tok.ndim != 2 or tok.dtype.kind not in "iu":
        raise UserError(
            f"--tokens: {tokens} must be an integer array (n_seq, L), got {tok.dtype} {tok.shape}"
        )
    n_seq, L = tok.shape
    if act.ndim != 3 or act.shape[:2] != (n_seq, L) or act.dtype.kind != "f":
        raise UserError(
            f"--acts: {acts} must be a float array ({n_seq}, {L}, d) to match --tokens, got {act.dtype} {act.shape}"
        )
    _check_sizes(tokens, acts, tok, act)
    d = act.shape[2]
    if tok.min() < 0:
        raise UserError(f"--tokens: {tokens} has negative token ids")
    n_vocab = int(tok.max()) + 1
    if vocab is None and n_vocab > MAX_PLACEHOLDER_VOCAB:
        raise UserError(
            f"--tokens: {tokens} has token id {n_vocab - 1}, beyond the {MAX_PLACEHOLDER_VOCAB:,} placeholder "
            "names made without a vocabulary; pass --vocab with the model's vocabulary"
        )
    if doc_ids is not None:
        docs = np.asarray(load_array(doc_ids, "--doc-ids"))
        if docs.shape == (n_seq,):
            docs = np.repeat(docs[:, None], L, axis=1)
        if docs.shape != (n_seq, L) or docs.dtype.kind not in "iu":
            raise UserError(f"--doc-ids: {doc_ids} must be integers shaped ({n_seq},) or ({n_seq}, {L})")
        # stored as int32 with -1 meaning padding: anything else would wrap around silently or read as padding
        if docs.min() < -1 or docs.max() > np.iinfo(np.int32).max:
            raise UserError(f"--doc-ids: {doc_ids} has document ids outside -1..{np.iinfo(np.int32).max}")
    else:
        docs = np.repeat(np.arange(n_seq, dtype=np.int32)[:, None], L, axis=1)
    if mask is not None:
        m = np.asarray(load_array(mask, "--mask"))
        if m.shape != (n_seq, L):
            raise UserError(f"--mask: {mask} must be shaped ({n_seq}, {L}), got {m.shape}")
        m = m.astype(bool)
    else:
        m = np.zeros((n_seq, L), bool)
    words = load_vocab(vocab, n_vocab) if vocab is not None else [f"<{i}>" for i in range(n_vocab)]
    # validate every activation before anything is written
    h = hashlib.sha256()
    for a in range(0, n_seq, batch_seqs):
        block = np.asarray(act[a : a + batch_seqs])
        if not np.isfinite(block).all():
            bad = np.argwhere(~np.isfinite(block))[0]
            raise UserError(
                f"--acts: {acts} has a non-finite value at {tuple(int(i) + (a if j == 0 else 0) for j, i in enumerate(bad))}"
            )
        if dtype == "float16" and block.size and np.abs(block).max() > np.finfo(np.float16).max:
            raise UserError(f"--acts: {acts} has values beyond the float16 range; pass --dtype float32")
        h.update(block.tobytes())
    h.update(np.ascontiguousarray(tok).tobytes())
    positions = np.repeat(np.arange(L, dtype=np.int32)[None, :], n_seq, axis=0)
    settings = {"source": "import", "tokens": str(tokens), "acts": str(acts), "hook": hook, "dtype": dtype}
    writer = CacheWriter.create(
        out,
        hooks=[hook],
        d_model=d,
        context_size=L,
        dtype=dtype,
        vocab=words,
        model_id=model_id,
        model_fingerprint="unknown",
        corpus=str(tokens),
        corpus_fingerprint=h.hexdigest(),
        settings=settings,
        source="import",
        overwrite=overwrite,
    )
    with writer:
        for a in range(0, n_seq, batch_seqs):
            b = min(a + batch_seqs, n_seq)
            writer.append(
                np.asarray(tok[a:b], np.int32),
                np.asarray(docs[a:b], np.int32),
                positions[a:b],
                m[a:b],
                {hook: np.asarray(act[a:b]).astype(dtype)},
            )
        writer.finish()
    return Path(out)
