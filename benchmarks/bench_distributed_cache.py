"""Caching on 2 processes x 1 thread (torchrun, gloo, a sharded cache) against 1 process x 2 threads, as wall-clock
ratios, with the bytes each rank reads and writes.

Each configuration is the real `xenofeat cache` in fresh processes (model load and the index/virtual datasets rank 0
writes included, as a user sees them), on the embedded default model and corpus, run `--repeat` times interleaved;
the best time counts. A ratio above 1 means the configuration is faster than 1 process x 2 threads.

Run: python benchmarks/bench_distributed_cache.py [--max-tokens 150000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from io_probe import launch, mib, per_rank

CONFIGS = {  # name: (ranks, threads per rank)
    "1 process x 2 threads": (1, 2),
    "2 processes x 1 thread": (2, 1),
    "1 process x 1 thread": (1, 1),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=150_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    best: dict[str, float] = {}
    traffic: dict[str, dict[int, dict[str, int]]] = {}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for i, (name, (ranks, threads)) in enumerate(CONFIGS.items()):
                out = Path(tmp) / f"c{i}.h5"
                cmd = ["cache", "--out", str(out), "--max-tokens", str(args.max_tokens), "--overwrite"]
                seconds, io = launch(cmd, ranks=ranks, threads=threads, io_dir=Path(tmp) / "io")
                best[name] = min(best.get(name, seconds), seconds)
                traffic[name] = io
                sizes[name] = sum(p.stat().st_size for p in Path(tmp).glob(f"c{i}.h5*") if p.is_file())
                sizes[name] += sum(p.stat().st_size for p in Path(tmp).glob(f"c{i}.h5.shards/*"))
    base = best["1 process x 2 threads"]
    sys.stdout.write(f"max_tokens {args.max_tokens}, best of {args.repeat}\n\n")
    sys.stdout.write(
        "| configuration | s | ratio | per rank: MiB read (rchar) / written (wchar) | files MiB |\n"
    )
    sys.stdout.write("| --- | ---: | ---: | --- | ---: |\n")
    for name, seconds in best.items():
        io = per_rank(traffic[name])
        sys.stdout.write(f"| {name} | {seconds:.1f} | {base / seconds:.2f}x | {io} | {mib(sizes[name])} |\n")
    sys.stdout.write("\n" + json.dumps({"seconds": best, "io": traffic}) + "\n")


if __name__ == "__main__":
    main()
