"""Peak memory of `xenofeat cache` on very long corpus files: one line, many lines, and a line without spaces.

Each measurement is one child process running `xenofeat cache --corpus FILE --max-tokens N` on the embedded model;
the child reports its own peak resident set (ru_maxrss). The baseline, measured in the same run, is the same command
on a small normal corpus (the embedded default, capped at the same N tokens), so the ratio says how much more memory
a long file costs than an ordinary corpus. Inputs are generated in a temporary folder and deleted after each run:

- `words-1line`: lowercase words separated by single spaces, no newline at all;
- `words-lines`: the same words, a newline every ~100 characters;
- `base64-1line`: base64 text, no whitespace (no cut point for the tokenizer pieces: cut at the piece size).

    python benchmarks/bench_corpus_memory.py [--sizes-mb 1,50,500] [--max-tokens 20000]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
_CHILD = (
    "import json, resource, sys, time\n"
    "from features.cli import main\n"
    "t = time.perf_counter()\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'rc': code, 'seconds': time.perf_counter() - t,\n"
    "                  'peak_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
)
BLOCK = 1 << 20  # bytes generated at a time


def _blocks(kind: str, size: int, rng: np.random.Generator) -> Iterator[str]:
    words = np.array(
        [
            "the",
            "of",
            "and",
            "model",
            "feature",
            "token",
            "layer",
            "cache",
            "sparse",
            "latent",
            "label",
            "describe",
        ]
    )
    left = size
    while left > 0:
        n = min(BLOCK, left)
        if kind == "base64-1line":
            text = base64.b64encode(rng.bytes(n))[:n].decode("ascii")
        else:
            picked = rng.choice(words, n // 5 + 1)
            text = " ".join(picked)[:n]
            if kind == "words-lines":
                arr = np.frombuffer(text.encode("ascii"), np.uint8).copy()
                spaces = np.flatnonzero(arr == 32)
                arr[spaces[::16]] = 10  # a newline about every 100 characters
                text = arr.tobytes().decode("ascii")
            text = text if n == left else text[:-1] + " "  # blocks join at a space, never mid-word
        left -= len(text)
        yield text


def write_input(path: Path, kind: str, size: int) -> None:
    rng = np.random.default_rng(0)
    with path.open("w", encoding="ascii") as fh:
        for block in _blocks(kind, size, rng):
            fh.write(block)


def measure(corpus: str, out: Path, max_tokens: int) -> dict:
    args = ["cache", "--corpus", corpus, "--max-tokens", str(max_tokens), "--out", str(out), "--overwrite"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=3600
    )
    if r.returncode != 0 or not r.stdout.strip():
        return {"rc": r.returncode, "error": r.stderr.strip().splitlines()[-1:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mb", default="1,50,500", help="input sizes in MB (default 1,50,500)")
    ap.add_argument("--kinds", default="words-1line,words-lines,base64-1line")
    ap.add_argument("--max-tokens", type=int, default=20_000)
    ap.add_argument(
        "--tmp", default=None, help="folder for the generated inputs (default: the system's temp)"
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes_mb.split(",")]
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp_path = Path(tmp)
        base = measure("default", tmp_path / "c.h5", args.max_tokens)
        print(f"baseline: default corpus, {args.max_tokens} tokens: {base}")
        print(f"{'input':>22s} {'peak MiB':>9s} {'x base':>7s} {'seconds':>8s}")
        for kind in args.kinds.split(","):
            for mb in sizes:
                src = tmp_path / f"{kind}-{mb}MB.txt"
                if shutil.disk_usage(tmp_path).free < mb * 2**20 * 1.2:
                    print(f"{kind + ' ' + str(mb) + ' MB':>22s} skipped: not enough disk")
                    continue
                t = time.perf_counter()
                write_input(src, kind, mb * 10**6)
                gen = time.perf_counter() - t
                res = measure(str(src), tmp_path / "c.h5", args.max_tokens)
                src.unlink()
                if "peak_mib" not in res:
                    print(f"{kind + ' ' + str(mb) + ' MB':>22s} failed: {res}")
                    continue
                ratio = res["peak_mib"] / base["peak_mib"]
                print(
                    f"{kind + ' ' + str(mb) + ' MB':>22s} {res['peak_mib']:9.0f} {ratio:7.2f} "
                    f"{res['seconds']:8.1f}  (generated in {gen:.1f} s)"
                )


if __name__ == "__main__":
    main()
