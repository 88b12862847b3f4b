"""Training on 2 processes x 1 thread (torchrun, gloo) against 1 process x 2 threads, seed-parallel and
data-parallel, as wall-clock ratios on the same synthetic cache and config.

Four timed commands, each the real `xenofeat train` in a fresh process (startup and finish included, as a user
sees them):

- one process, OMP_NUM_THREADS=2, seeds 0,1 (the baseline for both);
- `torchrun --nproc-per-node 2`, OMP_NUM_THREADS=1, seeds 0,1 (seed-parallel: one member per rank);
- `torchrun --nproc-per-node 2 ... --data-parallel`, OMP_NUM_THREADS=1 (each member's batches split over the ranks);
- one process, OMP_NUM_THREADS=1 (to see what the second thread buys in one process).

A ratio above 1 means the two processes are faster than one process with two threads.

Run: python benchmarks/bench_distributed_training.py [--tokens 200000] [--width 2048] [--cache-tokens 256000]
     (minutes on 2 cores at the defaults; `--tokens 16384 --width 256 --cache-tokens 32768` is a smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def _run(command: list[str], threads: int) -> float:
    """Seconds one command takes, failing loudly if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    r = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(command)}\n{r.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=200_000, help="training tokens per member")
    ap.add_argument("--width", type=int, default=2048, help="latents per member")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--cache-tokens", type=int, default=256_000, help="tokens of the synthetic cache")
    args = ap.parse_args()
    xenofeat = [str(BIN / "xenofeat")]
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", str(BIN / "xenofeat")]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "synth.h5"
        _run([*xenofeat, "cache", "synth", "--out", str(cache), "--tokens", str(args.cache_tokens)], 2)
        common = ["train", "--cache", str(cache), "--width", str(args.width), "--k", "32", "--seeds", "0,1"]
        common += ["--tokens", str(args.tokens), "--batch-size", str(args.batch_size), "--no-progress"]
        common += ["--checkpoint-every", "0"]
        runs = {
            "1 process x 2 threads": ([*xenofeat, *common], 2),
            "2 processes x 1 thread, seed-parallel": ([*torchrun, *common], 1),
            "2 processes x 1 thread, data-parallel": ([*torchrun, *common, "--data-parallel"], 1),
            "1 process x 1 thread": ([*xenofeat, *common], 1),
        }
        seconds = {}
        for i, (name, (command, threads)) in enumerate(runs.items()):
            seconds[name] = _run([*command, "--out", str(Path(tmp) / f"run{i}")], threads)
    base = seconds["1 process x 2 threads"]
    result = {
        "settings": vars(args),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "speedup_vs_1x2": {k: round(base / v, 3) for k, v in seconds.items()},
    }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
