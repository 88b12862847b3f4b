"""Reading activation caches: `ActivationCache.open(path)` (layout in FORMAT.md).

Small per-token arrays (tokens, document ids, positions, mask) are read on first use and kept; activations stay on
disk and are read lazily through `activations(hook)`. Scoring reads in order through `scan` (read ahead in a thread);
training reads shuffled pools through `sae_training.data.PoolSchedule`.
"""

from __future__ import annotations

import json
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


def read_meta(f: h5py.File, path: Path) -> CacheMeta:
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
    return CacheMeta(
        format_version=version,
        model_id=str(a[fmt.A_MODEL_ID]),
        model_fingerprint=str(a[fmt.A_MODEL_FINGERPRINT]),
        hooks=tuple(json.loads(a[fmt.A_HOOKS])),
        d_model=int(a[fmt.A_D_MODEL]),
        context_size=int(a[fmt.A_CONTEXT_SIZE]),
        dtype=str(a[fmt.A_DTYPE]),
        corpus=str(a.get(fmt.A_CORPUS, "")),
        corpus_fingerprint=str(a[fmt.A_CORPUS_FINGERPRINT]),
        seqs_written=int(a[fmt.A_SEQS_WRITTEN]),
        tokens_written=int(a[fmt.A_TOKENS_WRITTEN]),
        complete=bool(a[fmt.A_COMPLETE]),
        xenofeat_version=str(a[fmt.A_XENOFEAT_VERSION]),
        settings=json.loads(a[fmt.A_SETTINGS]),
        source=str(a.get(fmt.A_SOURCE, "model")),
    )


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

    def __init__(self, path: Path, handle: h5py.File, meta: CacheMeta) -> None:
        self.path = path
        self._f = handle
        self.meta = meta
        self.n_seq = meta.seqs_written

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
            for name in fmt.ROW_DATASETS:
                if name not in f or f[name].shape[0] < meta.seqs_written:
                    raise UserError(
                        f"{path}: dataset '{name}' is missing or shorter than {meta.seqs_written} rows"
                    )
            for hook in meta.hooks:
                key = fmt.acts_path(hook)
                if key not in f or f[key].shape[0] < meta.seqs_written:
                    raise UserError(
                        f"{path}: dataset '{key}' is missing or shorter than {meta.seqs_written} rows"
                    )
        except BaseException:
            f.close()
            raise
        return cls(path, f, meta)

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
            raise corrupt_rows(self.path, hook, start, stop, err) from err

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
