"""Sharded caches (FORMAT.md, "Sharded caches"): which rank caches which sequences, the shard files, the index.

A cache written by W processes is W shard files, `OUT.shards/rank-RRRRR-of-WWWWW.h5`, each a complete cache of its
own block of sequences, and the index `OUT`, whose datasets are HDF5 virtual datasets over the shards in global
sequence order, so that every reader sees one cache. This module holds the layout (names, the assignment of
sequences to ranks), writes the index, and checks the shards an index names; `sharded_build` runs the job.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from activations import format as fmt
from activations.errors import UserError
from activations.overwrite import CACHE, what_is

SHARD_NAME = re.compile(r"rank-(\d{5})-of-(\d{5})\.h5")
# what a virtual dataset reads where its shard is missing: values no sound cache holds (FORMAT.md)
FILL = {fmt.TOKENS: -1, fmt.DOC_IDS: -2, fmt.POSITIONS: -2, fmt.MASK: True}


def shards_dir(out: Path) -> Path:
    """The folder of the shards of the sharded cache `out`: `OUT.shards` beside it."""
    return out.with_name(out.name + ".shards")


def shard_name(rank: int, world_size: int) -> str:
    return f"rank-{rank:05d}-of-{world_size:05d}.h5"


def assign(n_seq: int, batch_size: int, world_size: int) -> list[tuple[int, int]]:
    """The sequences [start, stop) each rank caches: contiguous blocks of whole batches, in rank order.

    The batches of a one-process run ([0, B), [B, 2B), ...) are dealt out in W contiguous runs: rank r takes
    batches [floor(n_batches * r / W), floor(n_batches * (r + 1) / W)). So every rank feeds the model exactly the
    batches a one-process run does (bit-equal activations), each shard is one block of the virtual datasets, and
    the assignment depends only on the sequence index, the batch size and the world size.
    """
    n_batches = -(-n_seq // batch_size)
    bounds = [n_batches * r // world_size for r in range(world_size + 1)]
    return [
        (min(n_seq, bounds[r] * batch_size), min(n_seq, bounds[r + 1] * batch_size))
        for r in range(world_size)
    ]


@dataclass(frozen=True)
class Manifest:
    """The `shards` attribute of an index: who wrote which block, and where."""

    run_id: str
    world_size: int
    files: tuple[str, ...]  # relative to the index's folder
    ranges: tuple[tuple[int, int], ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "world_size": self.world_size,
                "files": list(self.files),
                "ranges": [list(r) for r in self.ranges],
            },
            sort_keys=True,
        )

    def shard_attr(self, rank: int) -> str:
        """The `shard` attribute of rank `rank`'s file."""
        a, b = self.ranges[rank]
        return json.dumps(
            {
                "run_id": self.run_id,
                "rank": rank,
                "world_size": self.world_size,
                "seq_start": a,
                "seq_stop": b,
            },
            sort_keys=True,
        )

    def path(self, index: Path, rank: int) -> Path:
        return index.parent / self.files[rank]

    def where(self, index: Path, start: int, stop: int) -> str:
        """The shard files that hold any of the sequences [start, stop), for messages."""
        return ", ".join(
            str(self.path(index, r)) for r, (a, b) in enumerate(self.ranges) if a < stop and start < b
        )


def new_manifest(out: Path, run_id: str, n_seq: int, batch_size: int, world_size: int) -> Manifest:
    folder = shards_dir(out).name
    return Manifest(
        run_id=run_id,
        world_size=world_size,
        files=tuple(f"{folder}/{shard_name(r, world_size)}" for r in range(world_size)),
        ranges=tuple(assign(n_seq, batch_size, world_size)),
    )


def read_manifest(f: h5py.File, path: Path) -> Manifest | None:
    """The manifest of an index, None for a one-file cache; UserError naming the file when it is malformed."""
    raw = f.attrs.get(fmt.A_SHARDS)
    if raw is None:
        return None
    try:
        d = json.loads(raw)
        files = tuple(str(x) for x in d["files"])
        ranges = tuple((int(a), int(b)) for a, b in d["ranges"])
        m = Manifest(str(d["run_id"]), int(d["world_size"]), files, ranges)
    except (TypeError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: attribute '{fmt.A_SHARDS}' is malformed ({str(err)[:80]})") from err
    contiguous = all(m.ranges[r][1] == m.ranges[r + 1][0] for r in range(len(m.ranges) - 1))
    if len(files) != m.world_size or len(ranges) != m.world_size or not contiguous:
        raise UserError(
            f"{path}: attribute '{fmt.A_SHARDS}' does not describe {m.world_size} contiguous shards"
        )
    folders = {Path(p).parent.name for p in files}
    if folders != {shards_dir(path).name} or not all(SHARD_NAME.fullmatch(Path(p).name) for p in files):
        raise UserError(
            f"{path}: its shards are in {', '.join(sorted(folders))}, not {shards_dir(path).name}: a sharded "
            "cache keeps the name it was written with (rename it back, or move it together with its folder)"
        )
    return m


def shard_problem(index: Path, m: Manifest, rank: int, *, complete: bool) -> str | None:
    """Why rank `rank`'s shard cannot serve the index (missing, unreadable, from another run, short), or None."""
    path = m.path(index, rank)
    if not path.is_file():
        return f"{path}: shard {rank} of {m.world_size} of {index} is missing"
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(fmt.A_SHARD)
            own = json.loads(raw) if isinstance(raw, str) else {}
            n = int(f.attrs.get(fmt.A_SEQS_WRITTEN, -1))
            done = bool(f.attrs.get(fmt.A_COMPLETE, False))
    except (OSError, ValueError) as err:
        return f"{path}: shard {rank} of {index} is not a readable cache ({str(err).splitlines()[0][:120]})"
    if own.get("run_id") != m.run_id or own.get("rank") != rank or own.get("world_size") != m.world_size:
        return f"{path}: this shard belongs to another run or world size than {index}"
    a, b = m.ranges[rank]
    if complete and (not done or n != b - a):
        return f"{path}: shard {rank} holds {n} of its {b - a} sequences, but {index} says it is complete"
    return None


def check_folder(out: Path, world_size: int) -> str | None:
    """A problem if the shard folder holds shard files of another world size (a folder from another job)."""
    folder = shards_dir(out)
    if not folder.is_dir():
        return None
    for p in sorted(folder.iterdir()):
        m = SHARD_NAME.fullmatch(p.name)
        if m and int(m.group(2)) != world_size:
            return f"{p}: this shard folder was written by {int(m.group(2))} ranks, this job has {world_size}"
    return None


def check_replace_shards(out: Path) -> None:
    """May --overwrite delete the shard folder of `out`? UserError naming anything in it xenofeat did not write."""
    folder = shards_dir(out)
    if not (folder.exists() or folder.is_symlink()):
        return
    if folder.is_symlink() or not folder.is_dir():
        raise UserError(
            f"{folder}: --overwrite would replace this, which is not a shard folder; nothing was changed"
        )
    for p in sorted(folder.iterdir()):
        if not SHARD_NAME.fullmatch(p.name) or what_is(p) != CACHE:
            raise UserError(
                f"{p}: --overwrite replaces only shards xenofeat wrote, and this is not one; nothing was changed"
            )


def remove_shards(out: Path) -> None:
    """Delete the shard folder of `out` (for --overwrite), after `check_replace_shards`."""
    check_replace_shards(out)
    folder = shards_dir(out)
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            p.unlink()
        folder.rmdir()


def write_index(out: Path, m: Manifest, first_shard: Path) -> None:
    """Write the (incomplete) index `out`: the root attributes and vocabulary of a shard, virtual datasets over all
    shards. Written beside `out` under a hidden name and renamed, so a crash never leaves half an index."""
    tmp = out.with_name(f".{out.name}.partial")
    with h5py.File(first_shard, "r") as src, h5py.File(tmp, "w") as f:
        for k, v in src.attrs.items():
            if k != fmt.A_SHARD:
                f.attrs[k] = v
        f.attrs[fmt.A_SEQS_WRITTEN] = 0
        f.attrs[fmt.A_TOKENS_WRITTEN] = 0
        f.attrs[fmt.A_COMPLETE] = False
        f.attrs[fmt.A_SHARDS] = m.to_json()
        src.copy(fmt.VOCAB, f)
        hooks = json.loads(src.attrs[fmt.A_HOOKS])
        n = m.ranges[-1][1]
        names = [*fmt.ROW_DATASETS, *(fmt.acts_path(h) for h in hooks)]
        for name in names:
            ds = src[name]
            layout = h5py.VirtualLayout(shape=(n, *ds.shape[1:]), dtype=ds.dtype)
            for r, (a, b) in enumerate(m.ranges):
                if b > a:  # an empty block (more ranks than batches) maps nothing
                    layout[a:b] = h5py.VirtualSource(
                        m.files[r], name, shape=(b - a, *ds.shape[1:]), dtype=ds.dtype
                    )
            fill = FILL.get(name, np.nan)
            f.create_virtual_dataset(name, layout, fillvalue=np.array(fill, dtype=ds.dtype))
    os.replace(tmp, out)


def finish_index(out: Path, seqs: int, tokens: int) -> None:
    """Mark the index complete once every shard is: counters first, then the flag (FORMAT.md's protocol)."""
    with h5py.File(out, "r+") as f:
        f.attrs[fmt.A_SEQS_WRITTEN] = seqs
        f.attrs[fmt.A_TOKENS_WRITTEN] = tokens
        f.flush()
        f.attrs[fmt.A_COMPLETE] = True
        f.flush()


@dataclass(frozen=True)
class OpenShards:
    """What a reader keeps of a sharded cache's shards while it is open."""

    manifest: Manifest
    held: tuple[h5py.Dataset, ...]  # open virtual datasets: HDF5 keeps their shard files open while they live
    chunk_seqs: int | None  # sequences per activation chunk of the shards (the virtual datasets have none)


def open_shards(f: h5py.File, path: Path, hooks: tuple[str, ...], complete: bool) -> OpenShards | None:
    """Check every shard an index names (UserError naming the first bad one) and hold them open; None for a
    one-file cache.

    A virtual dataset whose shard file is gone reads its fill value instead of failing. So the reader checks every
    shard at open and reads one row of each through every virtual dataset: HDF5 then keeps the shard files open
    until the reader closes, and a shard deleted behind its back (unlinked) stays readable to it.
    """
    m = read_manifest(f, path)
    if m is None:
        return None
    for rank in range(m.world_size):
        problem = shard_problem(path, m, rank, complete=complete)
        if problem is not None:
            raise UserError(problem)
    held = tuple(f[name] for name in (*fmt.ROW_DATASETS, *(fmt.acts_path(h) for h in hooks)))
    chunk_seqs = None
    if complete:
        for rank, (a, b) in enumerate(m.ranges):
            if b > a:
                try:
                    for ds in held:
                        ds[a]  # opens the shard file behind this block, for as long as `ds` lives
                except OSError as err:
                    raise UserError(
                        f"{m.path(path, rank)}: shard {rank} of {path} is corrupt ({str(err).splitlines()[0][:120]})"
                    ) from err
                if chunk_seqs is None:
                    with h5py.File(m.path(path, rank), "r") as shard:
                        chunks = shard[fmt.acts_path(hooks[0])].chunks
                    chunk_seqs = int(chunks[0]) if chunks else None
    return OpenShards(m, held, chunk_seqs)
