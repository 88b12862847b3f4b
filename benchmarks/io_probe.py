"""Runs `xenofeat ARGS` in this process and records the bytes it moved through read/write system calls.

The distributed benchmarks launch this file instead of the `xenofeat` script (under `torchrun` too:
`torchrun --nproc-per-node 2 benchmarks/io_probe.py cache ...`) so that every rank reports its own traffic. At exit
it writes `$XF_IO_DIR/rank-RANK.json` with the growth of `/proc/self/io` since just after the heavy imports:

- `rchar` / `wchar`: bytes through read()/write()-family calls: HDF5 reads and writes, JSON, logs, the model's files,
  the corpus, and gloo's socket traffic between ranks (the all-reduces of data-parallel training); modules imported
  lazily later count too, which is why the heavy ones are imported before the first snapshot;
- `read_bytes` / `write_bytes`: what reached the block device (page-cache misses and write-back: near 0 for reads
  of a file just written, and write-back can land after the process exits).

Memory-mapped reads (safetensors model weights) and child processes are not counted. Linux only.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

FIELDS = ("rchar", "wchar", "read_bytes", "write_bytes")


def io_counters() -> dict[str, int]:
    """This process's cumulative I/O counters (all its threads)."""
    pairs = (line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {key: int(value) for key, value in pairs}


def main() -> None:
    out = Path(os.environ["XF_IO_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    # imported before the snapshot: reading module files is not the stage's traffic
    import h5py  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sae_lens  # noqa: F401
    import scipy.optimize  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import torch  # noqa: F401
    import transformer_lens  # noqa: F401
    import transformers  # noqa: F401

    import activations.cli  # noqa: F401
    import features.scoring  # noqa: F401
    import sae_training.cli  # noqa: F401
    from features.cli import entry

    start = io_counters()

    def dump() -> None:
        end = io_counters()
        rank = os.environ.get("RANK", "0")
        (out / f"rank-{rank}.json").write_text(json.dumps({k: end[k] - start[k] for k in FIELDS}))

    atexit.register(dump)
    sys.argv = ["xenofeat", *sys.argv[1:]]
    entry()


if __name__ == "__main__":
    main()


def launch(
    args: list[str], *, ranks: int, threads: int, io_dir: Path
) -> tuple[float, dict[int, dict[str, int]]]:
    """Wall seconds of `xenofeat ARGS` on `ranks` processes (torchrun when > 1) of `threads` threads each, and each
    rank's I/O counters. A failure stops the benchmark with the command's stderr."""
    import shutil
    import subprocess
    import time

    repo = Path(__file__).resolve().parents[1]
    bin_dir = Path(sys.executable).parent
    probe = [str(Path(__file__).resolve()), *args]
    if ranks > 1:
        command = [str(bin_dir / "torchrun"), "--standalone", f"--nproc-per-node={ranks}", *probe]
    else:
        command = [sys.executable, *probe]
    shutil.rmtree(io_dir, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
    env["XF_IO_DIR"] = str(io_dir)
    t0 = time.perf_counter()
    r = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(command)}\n{r.stderr[-3000:]}")
    per_rank = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in io_dir.glob("rank-*.json")}
    return seconds, per_rank


def mib(n: int) -> str:
    """Bytes as MiB with one decimal."""
    return f"{n / 2**20:.1f}"


def per_rank(traffic: dict[int, dict[str, int]]) -> str:
    """Each rank's MiB read / written, e.g. `r0: 169.1 / 97.6; r1: 168.5 / 94.4`."""
    return "; ".join(f"r{r}: {mib(c['rchar'])} / {mib(c['wchar'])}" for r, c in sorted(traffic.items()))
