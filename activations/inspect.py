"""`xenofeat cache info` and `xenofeat cache validate`: describe a cache file, and check it end to end.

Validation reads every chunk of every dataset, so HDF5's fletcher32 checksums catch flipped bits; it also checks the
attributes, the shapes against each other, the completeness flag, the token ids against the vocabulary and that the
activations are finite. It returns the list of problems (empty when the file is sound).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from activations import format as fmt
from activations.cache import ActivationCache, layout_problems, read_meta, token_range_problem
from activations.errors import UserError


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def describe(path: str | Path) -> str:
    """A readable multi-line summary of a cache file (partial caches included)."""
    path = Path(path)
    with ActivationCache.open(path, allow_partial=True) as cache:
        m = cache.meta
        docs = np.unique(cache.doc_ids[cache.doc_ids >= 0]).size
        acts = cache.activations(cache.hooks[0])
        lines = [
            f"file            {path} ({_human(path.stat().st_size)})",
            f"format          {fmt.ENCODING_TYPE} {m.format_version} (xenofeat {m.xenofeat_version})",
            f"complete        {'yes' if m.complete else 'NO (interrupted; resume it or pass --allow-partial)'}",
            f"source          {m.source}",
            f"model           {m.model_id} (weights sha256 {m.model_fingerprint[:12]})",
            f"hooks           {', '.join(m.hooks)}",
            f"d_model         {m.d_model}",
            f"dtype           {m.dtype}",
            f"context size    {m.context_size}",
            f"sequences       {m.seqs_written:,}",
            f"tokens          {cache.n_tokens:,} used, {m.seqs_written * m.context_size - cache.n_tokens:,} masked",
            f"documents       {docs:,}",
            f"corpus          {m.corpus} (sha256 {m.corpus_fingerprint[:12]})",
            f"vocabulary      {len(cache.vocab):,} tokens",
            f"chunks          {acts.chunks} ({_human(np.prod(acts.chunks) * acts.dtype.itemsize)} each)",
        ]
    return "\n".join(lines)


def _read_all(ds: h5py.Dataset, n: int, step: int) -> list[str]:
    """Read rows [0, n) chunk by chunk; return problems (checksum failures) and non-finite values."""
    problems: list[str] = []
    for a in range(0, n, step):
        b = min(a + step, n)
        try:
            block = ds[a:b]
        except OSError as err:
            problems.append(f"'{ds.name}' rows {a}-{b}: unreadable, checksum or I/O failure ({err})")
            continue
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            problems.append(f"'{ds.name}' rows {a}-{b}: non-finite values")
    return problems


def validate(path: str | Path, *, allow_partial: bool = False) -> list[str]:
    """Every problem found in the file; an empty list means the cache is sound.

    The attribute and layout checks are the readers' own (cache.read_meta, cache.layout_problems), so a file this
    accepts opens everywhere and a file the readers refuse is reported here with the same words.
    """
    path = Path(path)
    if not path.exists():
        return [f"{path}: no such file"]
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        return [f"{path}: not a readable HDF5 file ({err})"]
    with f:
        try:
            meta = read_meta(f, path)
        except UserError as err:
            return [str(err)]
        problems: list[str] = []
        if not meta.complete and not allow_partial:
            problems.append(f"{path}: incomplete (interrupted after {meta.seqs_written} sequences)")
        layout = layout_problems(f, path, meta)
        problems += layout
        if layout:
            return problems
        n = meta.seqs_written
        for name in fmt.ROW_DATASETS:
            problems += [f"{path}: {p}" for p in _read_all(f[name], n, 4096)]
        for hook in meta.hooks:
            ds = f[fmt.acts_path(hook)]
            problems += [f"{path}: {p}" for p in _read_all(ds, n, ds.chunks[0] if ds.chunks else 64)]
        if not problems and n:
            bad = token_range_problem(f, path, n)
            if bad is not None:
                problems.append(bad)
            doc_ids = f[fmt.DOC_IDS][:n]
            if doc_ids.min() < -1:
                problems.append(f"{path}: document ids below -1")
    return problems
