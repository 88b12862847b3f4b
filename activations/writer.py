"""Append-only, crash-safe writer of activation caches (layout in FORMAT.md).

Rows (sequences) are appended in order. After each append the file is flushed, and only then does the
`seqs_written` attribute advance and get flushed again, so a process killed at any moment leaves a file whose first
`seqs_written` rows are sound. `CacheWriter.resume` reopens such a file, drops any rows past the counter, checks that
the settings are the ones the file was started with, and carries on.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from activations import format as fmt
from activations.errors import UserError
from activations.faults import fault_point
from activations.overwrite import check_replace_cache
from activations.version import __version__

DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024  # measured: benchmarks/bench_chunks.py, see benchmarks/RESULTS.md
MAX_CHUNK_SEQS = 256

# HDF5 objects of a file whose write failed (a full disk). Closing or finalising them makes h5py crash or spill
# tracebacks, so they are kept alive here for the rest of the process; the CLI then exits without interpreter teardown.
_UNCLOSABLE: list[object] = []


def chunk_seqs_for(
    context_size: int, d_model: int, itemsize: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> int:
    """Sequences per activation chunk so that one chunk holds about `chunk_bytes` bytes (at least 1)."""
    # capped so that even tiny caches have several chunks to shuffle between
    return max(1, min(MAX_CHUNK_SEQS, int(chunk_bytes // (context_size * d_model * itemsize))))


def _disk_error(path: Path, err: Exception) -> UserError:
    # HDF5 messages span lines; keep the operating system's reason only
    m = re.search(r"error message = '([^']*)'", str(err))
    reason = m.group(1) if m else str(err).splitlines()[0]
    return UserError(
        f"{path}: writing failed ({reason}); the rows written so far are kept: free space and rerun with --resume"
    )


def _open_for_resume(path: Path) -> h5py.File:
    """Open an interrupted cache read-write.

    A write that failed part-way (a full disk) can leave the superblock's end-of-file beyond the file's real end;
    HDF5 then refuses the file as truncated. Extending it with zeros to the recorded length makes it readable again;
    the rows past the `seqs_written` counter are dropped by the caller anyway.
    """
    try:
        return h5py.File(path, "r+")
    except OSError as err:
        m = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", str(err))
        if m is None or int(m.group(2)) <= int(m.group(1)):
            raise
        os.truncate(path, int(m.group(2)))
        return h5py.File(path, "r+")


def repair_truncated(path: Path) -> None:
    """Make a cache cut short by a full disk openable again (see `_open_for_resume`); OSError if it is not that."""
    _open_for_resume(path).close()


class CacheWriter:
    """Writes one cache file. Use `create` for a new file and `resume` for an interrupted one."""

    def __init__(self, path: Path, handle: h5py.File) -> None:
        self.path = path
        self._f = handle
        self._abandoned = False
        self.hooks: list[str] = json.loads(handle.attrs[fmt.A_HOOKS])
        self.context_size = int(handle.attrs[fmt.A_CONTEXT_SIZE])
        self.d_model = int(handle.attrs[fmt.A_D_MODEL])

    # -- opening -------------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        hooks: list[str],
        d_model: int,
        context_size: int,
        dtype: str,
        vocab: list[str],
        model_id: str,
        model_fingerprint: str,
        corpus: str,
        corpus_fingerprint: str,
        settings: Mapping[str, Any],
        source: str = "model",
        overwrite: bool = False,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        extra_attrs: Mapping[str, str] | None = None,
    ) -> CacheWriter:
        """Start a new cache file. Refuses an existing path unless `overwrite`. `extra_attrs`: more root
        attributes (a shard's `shard` attribute)."""
        path = Path(path)
        if dtype not in fmt.DTYPES:
            raise UserError(f"--dtype: {dtype!r} is not one of {', '.join(fmt.DTYPES)}")
        for hook in hooks:
            if "/" in hook or not hook:
                raise UserError(f"--hook: {hook!r} is not a valid hook name (empty or contains '/')")
        if path.exists() and not overwrite:
            raise UserError(
                f"{path}: already exists; pass --overwrite to replace it or --resume to continue it"
            )
        if not path.parent.exists():
            raise UserError(f"{path}: the folder {path.parent} does not exist")
        if overwrite and (path.exists() or path.is_symlink()):
            check_replace_cache(path)
        try:
            if path.exists():
                path.unlink()
            f = h5py.File(path, "w")
        except OSError as err:
            raise UserError(f"{path}: cannot create the cache file ({err})") from err
        L = context_size
        itemsize = np.dtype(dtype).itemsize
        c_seq = chunk_seqs_for(L, d_model, itemsize, chunk_bytes)
        row_chunk = max(c_seq, 64)
        for name, dt in ((fmt.TOKENS, "i4"), (fmt.DOC_IDS, "i4"), (fmt.POSITIONS, "i4"), (fmt.MASK, "bool")):
            f.create_dataset(
                name, shape=(0, L), maxshape=(None, L), dtype=dt, chunks=(row_chunk, L), fletcher32=True
            )
        grp = f.create_group(fmt.ACTS_GROUP)
        for hook in hooks:
            grp.create_dataset(
                hook,
                shape=(0, L, d_model),
                maxshape=(None, L, d_model),
                dtype=dtype,
                chunks=(c_seq, L, d_model),
                fletcher32=True,
            )
        f.create_dataset(fmt.VOCAB, data=np.array(vocab, dtype=object), dtype=h5py.string_dtype("utf-8"))
        a = f.attrs
        a[fmt.A_ENCODING_TYPE] = fmt.ENCODING_TYPE
        a[fmt.A_FORMAT_VERSION] = fmt.FORMAT_VERSION
        a[fmt.A_MODEL_ID] = model_id
        a[fmt.A_MODEL_FINGERPRINT] = model_fingerprint
        a[fmt.A_HOOKS] = json.dumps(list(hooks))
        a[fmt.A_D_MODEL] = d_model
        a[fmt.A_CONTEXT_SIZE] = L
        a[fmt.A_DTYPE] = dtype
        a[fmt.A_CORPUS] = corpus
        a[fmt.A_CORPUS_FINGERPRINT] = corpus_fingerprint
        a[fmt.A_SEQS_WRITTEN] = 0
        a[fmt.A_TOKENS_WRITTEN] = 0
        a[fmt.A_COMPLETE] = False
        a[fmt.A_XENOFEAT_VERSION] = __version__
        a[fmt.A_SETTINGS] = json.dumps(dict(settings), sort_keys=True)
        a[fmt.A_SOURCE] = source
        for k, v in (extra_attrs or {}).items():
            a[k] = v
        f.flush()
        return cls(path, f)

    @classmethod
    def resume(cls, path: str | Path, *, settings: Mapping[str, Any]) -> CacheWriter:
        """Reopen an interrupted cache, refusing it if any setting differs from the ones it was started with."""
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: nothing to resume (the file does not exist)")
        try:
            f = _open_for_resume(path)
        except OSError as err:
            raise UserError(
                f"{path}: cannot reopen the cache to resume it ({err}); start again with --overwrite"
            ) from err
        try:
            if f.attrs.get(fmt.A_ENCODING_TYPE) != fmt.ENCODING_TYPE:
                raise UserError(f"{path}: not a xenofeat activation cache")
            if bool(f.attrs[fmt.A_COMPLETE]):
                raise UserError(f"{path}: the cache is already complete; nothing to resume")
            old = json.loads(f.attrs[fmt.A_SETTINGS])
            new = json.loads(json.dumps(dict(settings), sort_keys=True))
            diffs = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            if diffs:
                parts = ", ".join(f"{k}: file has {old.get(k)!r}, now {new.get(k)!r}" for k in diffs)
                raise UserError(f"{path}: cannot resume with different settings ({parts})")
            n = int(f.attrs[fmt.A_SEQS_WRITTEN])
            # rows past the counter may be half-written: drop them
            for name in fmt.ROW_DATASETS:
                f[name].resize(n, axis=0)
            for hook in json.loads(f.attrs[fmt.A_HOOKS]):
                f[fmt.acts_path(hook)].resize(n, axis=0)
            f.flush()
        except BaseException:
            f.close()
            raise
        return cls(path, f)

    # -- writing -------------------------------------------------------------------------------------------------
    @property
    def seqs_written(self) -> int:
        return int(self._f.attrs[fmt.A_SEQS_WRITTEN])

    @property
    def tokens_written(self) -> int:
        return int(self._f.attrs[fmt.A_TOKENS_WRITTEN])

    def append(
        self,
        tokens: np.ndarray,
        doc_ids: np.ndarray,
        positions: np.ndarray,
        mask: np.ndarray,
        acts: Mapping[str, np.ndarray],
    ) -> None:
        """Append n sequences: tokens/doc_ids/positions/mask (n, L) and acts[hook] (n, L, d_model)."""
        n = tokens.shape[0]
        L = self.context_size
        for name, arr in (("tokens", tokens), ("doc_ids", doc_ids), ("positions", positions), ("mask", mask)):
            if arr.shape != (n, L):
                raise ValueError(f"{name} has shape {arr.shape}, expected {(n, L)}")
        if set(acts) != set(self.hooks):
            raise ValueError(f"acts for hooks {sorted(acts)}, expected {sorted(self.hooks)}")
        start = self.seqs_written
        f = self._f
        touched: list[h5py.Dataset] = []
        try:
            for name, arr in (
                (fmt.TOKENS, tokens),
                (fmt.DOC_IDS, doc_ids),
                (fmt.POSITIONS, positions),
                (fmt.MASK, mask),
            ):
                ds = f[name]
                touched.append(ds)
                ds.resize(start + n, axis=0)
                ds[start:] = arr
            for hook in self.hooks:
                a = acts[hook]
                if a.shape != (n, L, self.d_model):
                    raise ValueError(f"acts[{hook}] has shape {a.shape}, expected {(n, L, self.d_model)}")
                ds = f[fmt.acts_path(hook)]
                touched.append(ds)
                ds.resize(start + n, axis=0)
                ds[start:] = a
            f.flush()  # rows on disk first ...
            f.attrs[fmt.A_SEQS_WRITTEN] = start + n  # ... then the counter that vouches for them
            f.attrs[fmt.A_TOKENS_WRITTEN] = self.tokens_written + int((~mask).sum())
            f.flush()
        except (OSError, RuntimeError) as err:  # h5py reports a failed flush as RuntimeError
            self._abandon(touched)
            raise _disk_error(self.path, err) from err
        fault_point("cache.after_chunk")

    def _abandon(self, handles: list[h5py.Dataset] | None = None) -> None:
        """Give up on the file after a failed write, without closing it (closing would flush and fail again).

        The counter on disk still vouches for the rows before the failure; `resume` picks up from there.
        """
        self._abandoned = True
        _UNCLOSABLE.extend([self._f, *(handles or [])])

    def finish(self) -> None:
        """Mark the cache complete and close it."""
        try:
            self._f.attrs[fmt.A_COMPLETE] = True
            self._f.flush()
        except (OSError, RuntimeError) as err:
            self._abandon()
            raise _disk_error(self.path, err) from err
        finally:
            self.close()

    def close(self) -> None:
        if not self._abandoned and self._f.id.valid:
            self._f.close()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
