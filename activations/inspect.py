"""`xenofeat cache info` and `xenofeat cache validate`: describe a cache file, and check it end to end.

Validation reads every chunk of every dataset, so HDF5's fletcher32 checksums catch flipped bits; it also checks the
attributes, the shapes against each other, the completeness flag, the token ids against the vocabulary and that the
activations are finite. It returns the list of problems (empty when the file is sound). A sharded cache is checked
shard by shard (each is a cache by itself) and against its index.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from activations import format as fmt
from activations.cache import ActivationCache, CacheMeta, layout_problems, read_meta, token_range_problem
from activations.errors import UserError
from activations.shards import Manifest, read_manifest, shard_problem


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
        ]
        if cache.shards is None:
            lines.append(
                f"chunks          {acts.chunks} ({_human(np.prod(acts.chunks) * acts.dtype.itemsize)} each)"
            )
        else:
            lines += _describe_shards(path, cache.shards.manifest)
    return "\n".join(lines)


def _describe_shards(index: Path, m: Manifest) -> list[str]:
    """One line per shard of a sharded cache: its file, block of sequences, progress and size."""
    lines = [f"shards          {m.world_size} (run {m.run_id[:12]}), virtual datasets in sequence order"]
    for rank, (a, b) in enumerate(m.ranges):
        path = m.path(index, rank)
        with h5py.File(path, "r") as f:
            n, done = int(f.attrs[fmt.A_SEQS_WRITTEN]), bool(f.attrs[fmt.A_COMPLETE])
        state = "complete" if done else f"{n:,} of {b - a:,} written"
        lines.append(
            f"  rank {rank:<5}     {m.files[rank]}: sequences {a:,}-{b:,}, {state}, {_human(path.stat().st_size)}"
        )
    return lines


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
            manifest = read_manifest(f, path)
        except UserError as err:
            return [str(err)]
        if manifest is not None:
            return _validate_sharded(f, path, meta, manifest, allow_partial=allow_partial)
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


def _validate_sharded(
    f: h5py.File, path: Path, meta: CacheMeta, m: Manifest, *, allow_partial: bool
) -> list[str]:
    """A sharded cache: every shard present and of this run, each sound as a cache by itself, the counters adding
    up, and the index's layout. The data is read once, through the shards."""
    problems = [p for r in range(m.world_size) if (p := shard_problem(path, m, r, complete=meta.complete))]
    if problems:
        return problems
    if not meta.complete and not allow_partial:
        problems.append(f"{path}: incomplete (interrupted; resume it with torchrun ... --resume)")
    problems += layout_problems(f, path, meta)
    for rank in range(m.world_size):
        problems += validate(m.path(path, rank), allow_partial=allow_partial or not meta.complete)
    if meta.complete and not problems:
        seqs = tokens = 0
        for rank in range(m.world_size):
            with h5py.File(m.path(path, rank), "r") as shard:
                seqs += int(shard.attrs[fmt.A_SEQS_WRITTEN])
                tokens += int(shard.attrs[fmt.A_TOKENS_WRITTEN])
        if (seqs, tokens) != (meta.seqs_written, meta.tokens_written) or seqs != m.ranges[-1][1]:
            problems.append(
                f"{path}: the shards hold {seqs} sequences and {tokens} tokens, the index says "
                f"{meta.seqs_written} and {meta.tokens_written}"
            )
    return problems
