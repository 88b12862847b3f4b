"""Training on 2 processes x 1 thread (torchrun, gloo) against 1 process x 2 threads, seed-parallel and
data-parallel, as wall-clock ratios on the same synthetic cache and config.

Four timed commands, each the real `xenofeat train` in fresh processes (startup and finish included, as a user
sees them), with the bytes each rank reads and writes (`benchmarks/io_probe.py`):

- one process, OMP_NUM_THREADS=2, seeds 0,1 (the baseline for both);
- `torchrun --nproc-per-node 2`, OMP_NUM_THREADS=1, seeds 0,1 (seed-parallel: one member per rank);
- `torchrun --nproc-per-node 2 ... --data-parallel`, OMP_NUM_THREADS=1 (each member's batches split over the ranks);
- one process, OMP_NUM_THREADS=1 (to see what the second thread buys in one process).

A ratio above 1 means the two processes are faster than one process with two threads.

Run: python benchmarks/bench_distributed_training.py [--tokens 200000] [--width 2048] [--cache-tokens 256000]
     [--d-model 384] [--batch-size 4096]
     (minutes on 2 cores at the defaults; `--tokens 16384 --width 256 --cache-tokens 32768` is a smoke run)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from io_probe import launch, per_rank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=200_000, help="training tokens per member")
    ap.add_argument("--width", type=int, default=2048, help="latents per member")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument(
        "--d-model", type=int, default=384, help="width of the synthetic activations (MiniLM's 384)"
    )
    ap.add_argument("--cache-tokens", type=int, default=256_000, help="tokens of the synthetic cache")
    args = ap.parse_args()
    seconds: dict[str, float] = {}
    traffic: dict[str, dict[int, dict[str, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        io_dir = Path(tmp) / "io"
        cache = Path(tmp) / "synth.h5"
        synth = ["cache", "synth", "--out", str(cache), "--tokens", str(args.cache_tokens)]
        launch([*synth, "--d-model", str(args.d_model)], ranks=1, threads=2, io_dir=io_dir)
        common = ["train", "--cache", str(cache), "--width", str(args.width), "--k", "32", "--seeds", "0,1"]
        common += ["--tokens", str(args.tokens), "--batch-size", str(args.batch_size), "--no-progress"]
        common += ["--checkpoint-every", "0"]
        runs = {  # name: (extra arguments, ranks, threads per rank)
            "1 process x 2 threads": ([], 1, 2),
            "2 processes x 1 thread, seed-parallel": ([], 2, 1),
            "2 processes x 1 thread, data-parallel": (["--data-parallel"], 2, 1),
            "1 process x 1 thread": ([], 1, 1),
        }
        for i, (name, (extra, ranks, threads)) in enumerate(runs.items()):
            out = ["--out", str(Path(tmp) / f"run{i}")]
            seconds[name], traffic[name] = launch(
                [*common, *extra, *out], ranks=ranks, threads=threads, io_dir=io_dir
            )
    base = seconds["1 process x 2 threads"]
    sys.stdout.write(
        f"settings {vars(args)}\n\n| configuration | s | ratio | per rank: MiB read / written |\n"
    )
    sys.stdout.write("| --- | ---: | ---: | --- |\n")
    for name, s in seconds.items():
        sys.stdout.write(f"| {name} | {s:.1f} | {base / s:.2f}x | {per_rank(traffic[name])} |\n")
    sys.stdout.write("\n" + json.dumps({"seconds": seconds, "io": traffic}) + "\n")


if __name__ == "__main__":
    main()
