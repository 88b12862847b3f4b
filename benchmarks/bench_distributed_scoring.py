"""Distributed scoring against one process on the same cores: 2 processes x 1 thread vs 1 process x 2 threads.

Scores a trained run twice into a scratch folder, each time as a fresh `xenofeat` command, and reports the wall
time of each, their ratio (> 1: the two ranks are faster), the stage times rank 0 records in summary.json, the bytes
each rank reads and writes (`benchmarks/io_probe.py`; the LBL worker processes of `--workers 2` are not counted) and
whether the two stores agree (the same comparison as tests/features/test_distributed_score.py, in brief):

  one process:  OMP_NUM_THREADS=2 xenofeat score RUN --out SCRATCH/one --workers 2
  two ranks:    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 xenofeat score RUN --out SCRATCH/two
                --workers 1

    PYTHONPATH=. python benchmarks/bench_distributed_scoring.py --run RUN [--max-tokens N] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from io_probe import launch, per_rank


def max_float_difference(a: Path, b: Path) -> float:
    """Largest relative difference of the float columns of two stores' tables (after checking the rest is equal)."""
    ta, tb = pd.read_parquet(a / "features.parquet"), pd.read_parquet(b / "features.parquet")
    if list(ta.columns) != list(tb.columns):
        raise SystemExit("the stores have different columns")
    worst = 0.0
    for col in ta.columns:
        x, y = ta[col].to_numpy(), tb[col].to_numpy()
        if x.dtype.kind != "f":
            if x.tolist() != y.tolist():
                raise SystemExit(f"column {col} differs")
            continue
        both = np.isfinite(x) & np.isfinite(y)
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            raise SystemExit(f"column {col}: NaN in different places")
        if both.any():
            worst = max(worst, float(np.max(np.abs(x[both] - y[both]) / np.maximum(np.abs(y[both]), 1e-12))))
    return worst


def common_cmd(common: list[str]) -> list[str]:
    """`xenofeat score` with the shared arguments."""
    return ["score", *common]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a trained run folder")
    ap.add_argument("--max-tokens", type=int, default=1_000_000)
    ap.add_argument(
        "--scratch", type=Path, default=None, help="where the two stores go (default: a temp folder)"
    )
    args = ap.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bench-dscore-"))
    common = [str(args.run.resolve()), "--max-tokens", str(args.max_tokens), "--quiet", "--overwrite"]
    io_dir = scratch / "io"
    one, io_one = launch(
        [*common_cmd(common), "--out", str(scratch / "one"), "--workers", "2"],
        ranks=1,
        threads=2,
        io_dir=io_dir,
    )
    two, io_two = launch(
        [*common_cmd(common), "--out", str(scratch / "two"), "--workers", "1"],
        ranks=2,
        threads=1,
        io_dir=io_dir,
    )
    stages = {
        name: json.loads((scratch / name / "features" / "summary.json").read_text())["timings"]
        for name in ("one", "two")
    }
    diff = max_float_difference(scratch / "two" / "features", scratch / "one" / "features")
    print(f"run {args.run}, max_tokens {args.max_tokens}, cpus {os.cpu_count()}")
    print(f"1 process x 2 threads : {one:8.1f} s")
    print(f"2 processes x 1 thread: {two:8.1f} s")
    print(f"ratio (1x2 / 2x1)     : {one / two:8.2f}  (> 1: the two ranks are faster)")
    print(f"stores: identical columns; largest relative float difference {diff:.1e}")
    for name, io in (("one", io_one), ("two", io_two)):
        print(f"MiB read / written per rank, {name}: {per_rank(io)}")
    for name, timings in stages.items():
        print(f"stage seconds, {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
