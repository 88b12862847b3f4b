"""Reading activation caches: `ActivationCache.open(path)` (layout in FORMAT.md).

Small per-token arrays (tokens, document ids, positions, mask) are read on first use and kept; activations stay on
disk and are read lazily through `activations(hook)`. Scoring reads in order through `scan` (read ahead in a thread);
training reads shuffled pools through `sae_training.data.PoolSchedule`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from activations import format as fmt
from activations.errors import UserError, corrupt_rows
from activations.loader import prefetched
from activations.shards import OpenShards, open_shards


@dataclass(frozen=True)
class CacheMeta:
    """The root attributes of a cache file, typed."""

    format_version: str
    model_id: str
    model_fingerprint: str
    hooks: tuple[str, ...]
    d_model: int
    context_size: int
    dtype: str
    corpus: str
    corpus_fingerprint: str
    seqs_written: int
    tokens_written: int
    complete: bool
    xenofeat_version: str
    settings: dict[str, Any]
    source: str

    @property
    def fingerprint(self) -> str:
        """Identifies the cache's content: model, corpus, hooks and settings (not the file name)."""
        return f"{self.model_fingerprint[:16]}-{self.corpus_fingerprint[:16]}-{self.seqs_written}"


@dataclass(frozen=True)
class Context:
    """A window of tokens around one token: `tokens[center]` is the token itself."""

    tokens: list[str]
    token_ids: list[int]
    center: int
    doc_id: int


# TransformerLens-style hook names: dotted identifiers (`blocks.3.hook_resid_post`, `hook_embed`). They become HDF5
# dataset paths under acts/, so anything else ('.', '..', '/', spaces) would name a different object or none.
HOOK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")
HOOK_NAME_MAX = 200
# rows of the tokens dataset read at a time when checking token ids against the vocabulary (bounded memory)
TOKEN_CHECK_ROWS = 8192


def check_hook_name(hook: str, where: str = "--hook") -> str:
    """Return `hook` if it is a TransformerLens-style dotted name; UserError naming `where` otherwise."""
    if not isinstance(hook, str) or len(hook) > HOOK_NAME_MAX or not HOOK_NAME.fullmatch(hook):
        raise UserError(
            f"{where}: {str(hook)[:80]!r} is not a hook name (dotted names such as blocks.3.hook_resid_post: "
            "letters, digits and '_' between dots)"
        )
    return hook


def _attr_int(a: h5py.AttributeManager, name: str, path: Path, *, minimum: int) -> int:
    v = a[name]
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
        raise UserError(f"{path}: attribute '{name}' must be an integer, got {str(v)[:40]!r}")
    if int(v) < minimum:
        raise UserError(f"{path}: attribute '{name}' must be at least {minimum}, got {int(v)}")
    return int(v)


def _attr_str(a: h5py.AttributeManager, name: str, path: Path, default: str | None = None) -> str:
    if default is not None and name not in a:
        return default
    v = a[name]
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if not isinstance(v, str):
        raise UserError(f"{path}: attribute '{name}' must be a string, got {str(v)[:40]!r}")
    return v


def _attr_json(a: h5py.AttributeManager, name: str, path: Path, kind: type) -> Any:
    try:
        v = json.loads(_attr_str(a, name, path))
    except (json.JSONDecodeError, RecursionError) as err:
        raise UserError(f"{path}: attribute '{name}' is not valid JSON ({str(err)[:80]})") from err
    if not isinstance(v, kind):
        raise UserError(f"{path}: attribute '{name}' must be a JSON {kind.__name__}, got {type(v).__name__}")
    return v


def _attr_bool(a: h5py.AttributeManager, name: str, path: Path) -> bool:
    v = a[name]
    if not isinstance(v, bool | np.bool_) and not (isinstance(v, int | np.integer) and int(v) in (0, 1)):
        raise UserError(f"{path}: attribute '{name}' must be true or false, got {str(v)[:40]!r}")
    return bool(v)


def read_meta(f: h5py.File, path: Path) -> CacheMeta:
    """The root attributes, checked for presence, type and range; UserError naming the file and attribute."""
    a = f.attrs
    if a.get(fmt.A_ENCODING_TYPE) != fmt.ENCODING_TYPE:
        raise UserError(f"{path}: not a xenofeat activation cache (no '{fmt.A_ENCODING_TYPE}' attribute)")
    version = str(a.get(fmt.A_FORMAT_VERSION, ""))
    if version not in fmt.READABLE_VERSIONS:
        raise UserError(
            f"{path}: cache format version {version!r} is not readable by this xenofeat "
            f"(reads {', '.join(fmt.READABLE_VERSIONS)}); upgrade xenofeat"
        )
    missing = [k for k in fmt.REQUIRED_ATTRS if k not in a]
    if missing:
        raise UserError(f"{path}: missing attribute(s) {', '.join(missing)}")
    hooks = _attr_json(a, fmt.A_HOOKS, path, list)
    if not hooks:
        raise UserError(f"{path}: attribute '{fmt.A_HOOKS}' lists no hook")
    for hook in hooks:
        check_hook_name(hook, f"{path}: attribute '{fmt.A_HOOKS}'")
    dtype = _attr_str(a, fmt.A_DTYPE, path)
    if dtype not in fmt.DTYPES:
        raise UserError(
            f"{path}: attribute '{fmt.A_DTYPE}' is {dtype[:40]!r}, not one of {', '.join(fmt.DTYPES)}"
        )
    meta = CacheMeta(
        format_version=version,
        model_id=_attr_str(a, fmt.A_MODEL_ID, path),
        model_fingerprint=_attr_str(a, fmt.A_MODEL_FINGERPRINT, path),
        hooks=tuple(hooks),
        d_model=_attr_int(a, fmt.A_D_MODEL, path, minimum=1),
        context_size=_attr_int(a, fmt.A_CONTEXT_SIZE, path, minimum=1),
        dtype=dtype,
        corpus=_attr_str(a, fmt.A_CORPUS, path, default=""),
        corpus_fingerprint=_attr_str(a, fmt.A_CORPUS_FINGERPRINT, path),
        seqs_written=_attr_int(a, fmt.A_SEQS_WRITTEN, path, minimum=0),
        tokens_written=_attr_int(a, fmt.A_TOKENS_WRITTEN, path, minimum=0),
        complete=_attr_bool(a, fmt.A_COMPLETE, path),
        xenofeat_version=_attr_str(a, fmt.A_XENOFEAT_VERSION, path),
        settings=_attr_json(a, fmt.A_SETTINGS, path, dict),
        source=_attr_str(a, fmt.A_SOURCE, path, default="model"),
    )
    if meta.tokens_written > meta.seqs_written * meta.context_size:
        raise UserError(
            f"{path}: attribute '{fmt.A_TOKENS_WRITTEN}' ({meta.tokens_written}) exceeds "
            f"{fmt.A_SEQS_WRITTEN} x {fmt.A_CONTEXT_SIZE} ({meta.seqs_written * meta.context_size})"
        )
    return meta


def layout_problems(f: h5py.File, path: Path, meta: CacheMeta) -> list[str]:
    """Every dataset that is missing or shaped against the attributes (cheap: no data is read)."""
    n, L, d = meta.seqs_written, meta.context_size, meta.d_model
    problems: list[str] = []
    for name in fmt.ROW_DATASETS:
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset):
            problems.append(f"{path}: dataset '{name}' is missing")
        elif ds.ndim != 2 or ds.shape[1] != L or ds.shape[0] < n:
            problems.append(f"{path}: dataset '{name}' has shape {ds.shape}, expected ({n}, {L})")
    for hook in meta.hooks:
        key = fmt.acts_path(hook)
        ds = f.get(key)
        if not isinstance(ds, h5py.Dataset):
            problems.append(f"{path}: dataset '{key}' is missing")
        elif ds.ndim != 3 or ds.shape[1:] != (L, d) or ds.shape[0] < n:
            problems.append(f"{path}: dataset '{key}' has shape {ds.shape}, expected ({n}, {L}, {d})")
        elif str(ds.dtype) != meta.dtype:
            problems.append(f"{path}: dataset '{key}' is {ds.dtype}, the file says {meta.dtype}")
    vocab = f.get(fmt.VOCAB)
    if not isinstance(vocab, h5py.Dataset):
        problems.append(f"{path}: dataset '{fmt.VOCAB}' is missing")
    elif vocab.ndim != 1 or vocab.shape[0] == 0 or vocab.dtype.kind not in "OSU":
        problems.append(
            f"{path}: dataset '{fmt.VOCAB}' must be a non-empty list of strings, got {vocab.dtype} {vocab.shape}"
        )
    return problems


def token_range_problem(f: h5py.File, path: Path, n_seq: int) -> str | None:
    """A problem if any of the first `n_seq` rows of tokens lies outside [0, vocab size); read in bounded chunks."""
    tokens, vocab_size = f[fmt.TOKENS], f[fmt.VOCAB].shape[0]
    lo, hi = 0, -1
    for a in range(0, n_seq, TOKEN_CHECK_ROWS):
        b = min(a + TOKEN_CHECK_ROWS, n_seq)
        try:
            block = tokens[a:b]
        except OSError as err:
            return f"{path}: dataset '{fmt.TOKENS}' rows {a}-{b} are corrupt ({err})"
        if block.dtype.kind not in "iu":
            return f"{path}: dataset '{fmt.TOKENS}' holds {block.dtype}, not integer token ids"
        lo, hi = min(lo, int(block.min())), max(hi, int(block.max()))
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        return f"{path}: dataset '{fmt.TOKENS}' holds token id {bad}, outside the vocabulary of {vocab_size}"
    return None


@dataclass(frozen=True)
class ScanChunk:
    """Consecutive sequences [seq_start, seq_start + n) of a cache, in order."""

    seq_start: int
    acts: np.ndarray  # (n, L, d) float32
    tokens: np.ndarray  # (n, L) int32
    doc_ids: np.ndarray  # (n, L) int32
    mask: np.ndarray  # (n, L) bool, True = excluded


class ActivationCache:
    """A read-only view of one cache file.

    >>> cache = ActivationCache.open("cache.h5")
    >>> cache.tokens.shape            # (n_seq, L) int32
    >>> acts = cache.activations("blocks.3.hook_resid_post")   # lazy h5py dataset (n_seq, L, d)
    >>> for chunk in cache.scan("blocks.3.hook_resid_post"): ...   # ScanChunks in order
    """

    def __init__(
        self, path: Path, handle: h5py.File, meta: CacheMeta, shards: OpenShards | None = None
    ) -> None:
        self.path = path
        self._f = handle
        self.meta = meta
        self.n_seq = meta.seqs_written
        self.shards = shards
        """A sharded cache's shards (manifest, held open), None for a one-file cache."""

    @classmethod
    def open(cls, path: str | Path, *, allow_partial: bool = False) -> ActivationCache:
        """Open a cache for reading. An incomplete (interrupted) cache is refused unless `allow_partial`."""
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: no such cache file")
        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise UserError(f"{path}: not a readable HDF5 file ({err})") from err
        try:
            meta = read_meta(f, path)
            if not meta.complete and not allow_partial:
                raise UserError(
                    f"{path}: the cache is incomplete ({meta.seqs_written} sequences written); "
                    "finish it with `xenofeat cache ... --resume` or accept it with --allow-partial"
                )
            problems = layout_problems(f, path, meta)
            if problems:
                raise UserError(problems[0])
            shards = open_shards(f, path, meta.hooks, meta.complete)
            bad = token_range_problem(f, path, meta.seqs_written)
            if bad is not None:
                raise UserError(bad)
        except BaseException:
            f.close()
            raise
        return cls(path, f, meta, shards)

    # -- small per-token arrays ------------------------------------------------------------------------------------
    def _rows(self, name: str) -> np.ndarray:
        try:
            return self._f[name][: self.n_seq]
        except OSError as err:
            raise UserError(f"{self.path}: dataset '{name}' is corrupt ({err})") from err

    @cached_property
    def tokens(self) -> np.ndarray:
        """(n_seq, L) int32 token ids."""
        return self._rows(fmt.TOKENS)

    @cached_property
    def doc_ids(self) -> np.ndarray:
        """(n_seq, L) int32 document id of every token; -1 on padding."""
        return self._rows(fmt.DOC_IDS)

    @cached_property
    def positions(self) -> np.ndarray:
        """(n_seq, L) int32 position of every token within its document; -1 on padding."""
        return self._rows(fmt.POSITIONS)

    @cached_property
    def mask(self) -> np.ndarray:
        """(n_seq, L) bool; True marks tokens excluded from training and scoring (padding, special tokens)."""
        return self._rows(fmt.MASK).astype(bool)

    @cached_property
    def vocab(self) -> list[str]:
        """The tokenizer's vocabulary as strings, indexed by token id."""
        return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in self._f[fmt.VOCAB][:]]

    @property
    def hooks(self) -> tuple[str, ...]:
        return self.meta.hooks

    @property
    def d_model(self) -> int:
        return self.meta.d_model

    @property
    def context_size(self) -> int:
        return self.meta.context_size

    @cached_property
    def n_tokens(self) -> int:
        """Tokens not excluded by the mask (the ones training and scoring see)."""
        return int((~self.mask).sum())

    def check_hook(self, hook: str | None) -> str:
        """Resolve an optional hook name: None means the only hook; an unknown name is a UserError."""
        if hook is None:
            if len(self.hooks) != 1:
                raise UserError(
                    f"--hook: {self.path} holds several hooks ({', '.join(self.hooks)}); name one"
                )
            return self.hooks[0]
        if hook not in self.hooks:
            raise UserError(f"--hook: {hook!r} is not in {self.path} (it holds {', '.join(self.hooks)})")
        return hook

    def activations(self, hook: str) -> h5py.Dataset:
        """Lazy (n_seq_on_disk, L, d) dataset; only the first `n_seq` rows are vouched for."""
        return self._f[fmt.acts_path(self.check_hook(hook))]

    def read_acts(self, hook: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a hook's activations as float32 (n, L, d); checksum errors become UserError."""
        try:
            return self.activations(hook)[start:stop].astype(np.float32)
        except OSError as err:
            where = self.path if self.shards is None else self.shards.manifest.where(self.path, start, stop)
            raise corrupt_rows(where, hook, start, stop, err) from err

    def context(self, seq: int, pos: int, width: int = 16) -> Context:
        """The tokens around (seq, pos): up to `width` before and after, within the same sequence, unpadded."""
        if not (0 <= seq < self.n_seq and 0 <= pos < self.context_size):
            raise IndexError(
                f"token ({seq}, {pos}) is outside the cache ({self.n_seq} x {self.context_size})"
            )
        lo, hi = max(0, pos - width), min(self.context_size, pos + width + 1)
        ids = self.tokens[seq, lo:hi]
        keep = self.doc_ids[seq, lo:hi] >= 0
        vocab = self.vocab
        tok_ids = [int(t) for t, k in zip(ids, keep, strict=True) if k]
        center = int(keep[: pos - lo].sum())
        return Context(
            tokens=[vocab[t] if 0 <= t < len(vocab) else f"<{t}>" for t in tok_ids],
            token_ids=tok_ids,
            center=center,
            doc_id=int(self.doc_ids[seq, pos]),
        )

    # -- iteration -------------------------------------------------------------------------------------------------
    @property
    def chunk_seqs(self) -> int:
        """Sequences per HDF5 chunk of the activations (the unit of random reads)."""
        if self.shards is not None and self.shards.chunk_seqs:
            return (
                self.shards.chunk_seqs
            )  # virtual datasets have no chunks; their shards' chunks are the unit
        chunks = self._f[fmt.acts_path(self.hooks[0])].chunks
        return int(chunks[0]) if chunks else 16

    def scan(
        self, hook: str | None = None, *, chunk_seqs: int | None = None, prefetch: int = 2
    ) -> Iterator[ScanChunk]:
        """Sequential `ScanChunk`s over the whole cache, in order, `chunk_seqs` sequences at a time (default: the
        file's chunk size x 4), read `prefetch` chunks ahead in a thread."""
        hook = self.check_hook(hook)
        step = chunk_seqs or self.chunk_seqs * 4
        tokens, doc_ids, mask = self.tokens, self.doc_ids, self.mask

        def chunks() -> Iterator[ScanChunk]:
            for a in range(0, self.n_seq, step):
                b = min(a + step, self.n_seq)
                yield ScanChunk(a, self.read_acts(hook, a, b), tokens[a:b], doc_ids[a:b], mask[a:b])

        return prefetched(chunks, prefetch)

    # -- lifetime --------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> ActivationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
