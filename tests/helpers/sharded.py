"""Sharded caches without a model, and `torchrun ... xenofeat` in a subprocess, for the sharded-cache tests.

`write_sharded` lays given arrays out as a sharded cache with the same functions `xenofeat cache` uses under
torchrun (CacheWriter for each shard, shards.write_index, shards.finish_index), one rank after the other in this
process, so that the readers can be tested in milliseconds. `torchrun` runs the real thing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from activations import format as fmt
from activations.shards import finish_index, new_manifest, write_index
from activations.writer import CacheWriter
from tests.helpers.common import REPO

HOOK = "blocks.0.hook_resid_post"
BIN = Path(sys.executable).parent  # torchrun and the xenofeat console script live next to the venv's python


def write_sharded(
    out: Path,
    tokens: np.ndarray,
    acts: np.ndarray,
    *,
    world_size: int,
    batch_size: int,
    vocab: list[str],
    run_id: str = "0" * 32,
    dtype: str = "float16",
    chunk_bytes: int | None = None,
) -> Path:
    """A complete sharded cache of (n, L) `tokens` and (n, L, d) `acts` (one document per sequence, no mask);
    `chunk_bytes`: the shards' activation chunk size in bytes (CacheWriter's default when None)."""
    n, L, d = acts.shape
    manifest = new_manifest(out, run_id, n, batch_size, world_size)
    (out.parent / manifest.files[0]).parent.mkdir()
    doc_ids = np.repeat(np.arange(n, dtype=np.int32)[:, None], L, axis=1)
    positions = np.tile(np.arange(L, dtype=np.int32), (n, 1))
    mask = np.zeros((n, L), dtype=bool)
    settings = {"fixture": True}
    for rank, (a, b) in enumerate(manifest.ranges):
        with CacheWriter.create(
            manifest.path(out, rank),
            hooks=[HOOK],
            d_model=d,
            context_size=L,
            dtype=dtype,
            vocab=vocab,
            model_id="fixture",
            model_fingerprint="0" * 64,
            corpus="fixture",
            corpus_fingerprint="1" * 64,
            settings=settings,
            source="import",
            extra_attrs={fmt.A_SHARD: manifest.shard_attr(rank)},
            **({"chunk_bytes": chunk_bytes} if chunk_bytes else {}),
        ) as w:
            for s in range(a, b, batch_size):
                e = min(s + batch_size, b)
                w.append(
                    tokens[s:e], doc_ids[s:e], positions[s:e], mask[s:e], {HOOK: acts[s:e].astype(dtype)}
                )
            w.finish()
    write_index(out, manifest, manifest.path(out, 0))
    finish_index(out, n, n * L)
    return out


def torchrun(
    *args: str, logs: Path, nproc: int = 2, env: dict[str, str] | None = None, no_python: bool = False
) -> tuple[subprocess.CompletedProcess[str], dict[int, str], dict[int, str]]:
    """`torchrun --standalone --nproc-per-node NPROC xenofeat ARGS` (or, with `no_python`, ARGS as the command),
    each rank pinned to one thread; returns the launcher's result and each rank's stderr and stdout, by rank (the
    ranks' output goes to files under `logs`, so that a test can tell who said what)."""
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    command = [
        str(BIN / "torchrun"),
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--log-dir={logs}",
        "--redirects=3",  # each rank's stdout and stderr to its own file under `logs`
        *(["--no-python"] if no_python else [str(BIN / "xenofeat")]),
        *args,
    ]
    r = subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)
    by_rank = {
        name: {int(p.parent.name): p.read_text() for p in sorted(logs.glob(f"*/attempt_0/*/{name}.log"))}
        for name in ("stderr", "stdout")
    }
    return r, by_rank["stderr"], by_rank["stdout"]
