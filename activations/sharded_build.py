"""`torchrun ... xenofeat cache`: several processes cache one corpus into a sharded cache (FORMAT.md).

Each rank caches its block of sequences (shards.assign) into its own shard; rank 0 writes the index. Every step that
can fail on one rank ends in an agreement (distributed.collected): if any rank failed, every rank stops there with
its shard sound (the writer is crash-safe), rank 0 reports the failure in one line, and `--resume` continues every
shard. The steps, in order:

1. the ranks compare their arguments, before anything is loaded or written;
2. each rank checks the output: exists, --overwrite, or for --resume the index, its world size, its run, the shard;
3. each rank loads the model and packs the corpus, and the ranks compare the settings (the same weights and the
   same corpus on every node);
4. new cache: rank 0 clears what --overwrite replaces, makes the shard folder and draws a run id; every rank
   creates its shard; rank 0 writes the index (incomplete). --resume: every rank reopens its shard;
5. the ranks cache their blocks in lockstep, agreeing after every batch, so a rank that fails (a full disk) stops
   the others after their current batch;
6. every rank marks its shard complete; rank 0 adds up the counters and marks the index complete.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any

import h5py
from tqdm import tqdm

from activations import format as fmt
from activations.build import CacheJob, encode, new_writer, prepare, refuse_sharded, sharded_manifest
from activations.distributed import SharedError, World, collected
from activations.errors import UserError
from activations.overwrite import check_location, check_replace_cache
from activations.shards import (
    Manifest,
    check_folder,
    check_replace_shards,
    finish_index,
    new_manifest,
    remove_shards,
    shard_problem,
    shards_dir,
    write_index,
)
from activations.writer import CacheWriter, repair_truncated

OPTION = {"hooks": "--hook", "out": "--out"}  # CacheJob field -> its command-line option, where they differ


def _first_difference(values: list[dict[str, Any]], what: str) -> str | None:
    """A sentence naming the first rank whose `values` differ from rank 0's, and how; None when all agree."""
    first = values[0]
    for rank, other in enumerate(values[1:], start=1):
        keys = [k for k in sorted(set(first) | set(other)) if first.get(k) != other.get(k)]
        if keys:
            parts = ", ".join(
                f"{OPTION.get(k, '--' + k.replace('_', '-')) if what == 'arguments' else k}: "
                f"rank 0 has {first.get(k)!r}, rank {rank} has {other.get(k)!r}"
                for k in keys
            )
            return f"the ranks were started with different {what} ({parts}); start every rank with the same command"
    return None


def _agree_on(world: World, values: dict[str, Any], what: str) -> None:
    problem = _first_difference(world.all_gather(values), what)
    if problem is not None:
        raise SharedError(problem)


def _check_output(out: Path, world: World, *, resume: bool, overwrite: bool) -> None:
    """This rank's view of the output: UserError for anything that stops the job before it writes."""
    if out.exists() and not (resume or overwrite):
        raise UserError(f"{out}: already exists; pass --overwrite to replace it or --resume to continue it")
    check_location(out)
    folder = shards_dir(out)
    if resume:
        _check_resumable(out, world)
    elif overwrite:
        if out.exists() or out.is_symlink():
            check_replace_cache(out)
        check_replace_shards(out)
    elif folder.exists() or folder.is_symlink():
        raise UserError(
            f"{folder}: already exists (shards of an earlier job); pass --overwrite to replace it"
        )


def _check_resumable(out: Path, world: World) -> None:
    if not out.exists():
        raise UserError(f"{out}: nothing to resume (the file does not exist); start again with --overwrite")
    manifest = sharded_manifest(out)
    if manifest is None:
        raise UserError(
            f"{out}: this cache was written by one process; resume it without torchrun, or start again with "
            "--overwrite"
        )
    refuse_sharded(out, world.world_size)
    with h5py.File(out, "r") as f:
        if bool(f.attrs.get(fmt.A_COMPLETE, False)):
            raise UserError(f"{out}: the cache is already complete; nothing to resume")
    problem = check_folder(out, world.world_size)
    own = manifest.path(out, world.rank)
    if problem is None:
        if own.is_file():
            with contextlib.suppress(OSError):  # an unreadable shard is named by shard_problem below
                repair_truncated(own)  # its write failed on a full disk: extend it to its recorded length
        problem = shard_problem(out, manifest, world.rank, complete=False)
    if problem is not None:
        raise UserError(f"{problem}; start again with --overwrite")


def _open_shards(
    out: Path, world: World, job: CacheJob, model: Any, packed: Any, settings: dict[str, Any], *, resume: bool
) -> tuple[Manifest, CacheWriter | None]:
    """Step 4: this rank's shard writer (None when its shard is already complete) and the manifest."""
    if resume:
        manifest = sharded_manifest(out)
        assert manifest is not None  # checked in step 2
        path = manifest.path(out, world.rank)
        with collected(world):
            with h5py.File(path, "r") as f:
                done = bool(f.attrs[fmt.A_COMPLETE])
            writer = None if done else CacheWriter.resume(path, settings=settings)
        return manifest, writer
    with collected(world):
        if world.is_main:
            remove_shards(out)
            if out.exists() or out.is_symlink():
                out.unlink()  # check_replace_cache allowed it in step 2
            shards_dir(out).mkdir()
    run_id = world.all_gather(uuid.uuid4().hex if world.is_main else None)[0]
    manifest = new_manifest(out, run_id, packed.tokens.shape[0], job.batch_size, world.world_size)
    with collected(world):
        writer = new_writer(
            manifest.path(out, world.rank),
            job,
            model,
            packed,
            settings,
            extra_attrs={fmt.A_SHARD: manifest.shard_attr(world.rank)},
        )
    with collected(world):
        if world.is_main:
            write_index(out, manifest, manifest.path(out, 0))
    return manifest, writer


def _fill_shard(
    writer: CacheWriter | None,
    world: World,
    manifest: Manifest,
    model: Any,
    packed: Any,
    job: CacheJob,
    *,
    progress: bool = True,
) -> None:
    """Step 5: cache this rank's block, agreeing with the other ranks after every batch."""
    lo, hi = manifest.ranges[world.rank]
    start = lo + (writer.seqs_written if writer is not None else hi - lo)
    mine = -(-(hi - start) // job.batch_size)
    steps = max(world.all_gather(mine))
    L = job.context_size
    with tqdm(
        total=steps * job.batch_size * L,
        desc="caching (rank 0)",
        unit="tok",
        disable=not (progress and world.is_main),
    ) as bar:
        for i in range(steps):
            with collected(world):
                a = start + i * job.batch_size
                if writer is not None and a < hi:
                    b = min(a + job.batch_size, hi)
                    arrays = encode(model, packed, a, b, job)
                    writer.append(
                        packed.tokens[a:b],
                        packed.doc_ids[a:b],
                        packed.positions[a:b],
                        packed.mask[a:b],
                        arrays,
                    )
            bar.update(job.batch_size * L)


def _job_arguments(job: CacheJob, *, resume: bool, overwrite: bool) -> dict[str, Any]:
    """What every rank must have been given alike (the device differs by rank, so it is left out)."""
    args = {f.name: getattr(job, f.name) for f in fields(job) if f.name != "device"}
    args["out"] = os.path.abspath(job.out)
    args["hooks"] = list(job.hooks)
    return {**args, "resume": resume, "overwrite": overwrite}


def build_sharded(
    job: CacheJob, world: World, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> Path:
    """Write (or resume) the sharded cache `job.out` as one rank of `world`; every rank returns the index's path
    (`progress`: rank 0 draws progress bars)."""
    out = Path(job.out)
    _agree_on(world, _job_arguments(job, resume=resume, overwrite=overwrite), "arguments")
    with collected(world):
        _check_output(out, world, resume=resume, overwrite=overwrite)
    with collected(world):
        model, packed, settings = prepare(job, progress=progress and world.is_main)
    _agree_on(world, settings, "inputs")
    manifest, writer = _open_shards(out, world, job, model, packed, settings, resume=resume)
    try:
        _fill_shard(writer, world, manifest, model, packed, job, progress=progress)
        with collected(world):
            if writer is not None:
                writer.finish()
    finally:
        if writer is not None:
            writer.close()
    with collected(world), h5py.File(manifest.path(out, world.rank), "r") as f:
        counts = (int(f.attrs[fmt.A_SEQS_WRITTEN]), int(f.attrs[fmt.A_TOKENS_WRITTEN]))
    totals = world.all_gather(counts)
    with collected(world):
        if world.is_main:
            finish_index(out, sum(s for s, _ in totals), sum(t for _, t in totals))
    return out
