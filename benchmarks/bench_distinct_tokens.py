"""C2's SAE-level stability against the number of distinct tokens the ensemble trains on (issue 11).

One cache of `default+packages` (the embedded default, then installed packages' docstrings) is cut into prefixes of
N tokens (whole sequences; the first 0.43M tokens are the embedded default itself). On each prefix, the ensemble of
`xenofeat run` (its `[train]` defaults: TopK, 3,072 latents, k 32, 3 seeds, 1.5M training tokens per seed, the
`small-corpus` preset) is trained, and C2's PW-MCC and shared fractions (`features.criteria.stability.stability`, the
definition's defaults) are computed beside their values for random dictionaries of the same shape. The training
budget is the same for every N, so a small N is seen for several epochs and a large one for less than one: that is
the trade `xenofeat run` has to make within its time budget.

    xenofeat cache --corpus default+packages --max-tokens 4000000 --hook blocks.3.hook_resid_post --out big.h5
    PYTHONPATH=. python benchmarks/bench_distinct_tokens.py big.h5 --tokens 430000 1000000 2000000 4000000 \
        --work /tmp/distinct
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import h5py
import numpy as np

from activations import format as fmt
from features.cli.pipeline import DEFAULT_HOOK, DEFAULT_TRAIN
from features.criteria.stability import StabilityConfig, stability, stability_null
from sae_training.config import TrainConfig
from sae_training.run import load_member
from sae_training.trainer import train


def prefix_cache(src: Path, dst: Path, n_tokens: int) -> int:
    """Copy the leading sequences of `src` holding about `n_tokens` unmasked tokens to `dst`; returns the tokens."""
    with h5py.File(src, "r") as f:
        mask = f["mask"][: int(f.attrs[fmt.A_SEQS_WRITTEN])]
        per_seq = (~mask).sum(axis=1)
        n_seq = int(np.searchsorted(np.cumsum(per_seq), n_tokens) + 1)
        n_seq = min(n_seq, len(mask))
        if dst.exists():
            return int(per_seq[:n_seq].sum())
        tmp = dst.with_suffix(".tmp")
        with h5py.File(tmp, "w") as g:
            for key, value in f.attrs.items():
                g.attrs[key] = value
            h = hashlib.sha256()
            for name in ("tokens", "doc_ids", "positions", "mask"):
                data = f[name][:n_seq]
                g.create_dataset(name, data=data, chunks=(min(64, n_seq),) + data.shape[1:], fletcher32=True)
                if name in ("tokens", "doc_ids"):
                    h.update(np.ascontiguousarray(data).tobytes())
            for hook in f["acts"]:
                data = f["acts"][hook][:n_seq]
                g.create_dataset(f"acts/{hook}", data=data, chunks=(64,) + data.shape[1:], fletcher32=True)
            g.create_dataset("vocab", data=f["vocab"][:])
            g.attrs[fmt.A_SEQS_WRITTEN] = n_seq
            g.attrs[fmt.A_TOKENS_WRITTEN] = int(per_seq[:n_seq].sum())
            g.attrs[fmt.A_CORPUS_FINGERPRINT] = h.hexdigest()
        tmp.rename(dst)
        return int(per_seq[:n_seq].sum())


def measure(cache: Path, run_dir: Path, hook: str) -> dict[str, float]:
    """Train `xenofeat run`'s ensemble on `cache` (resumed if cut short) and compute C2's SAE-level values."""
    cfg = TrainConfig.from_dict(DEFAULT_TRAIN, source="xenofeat run defaults")
    t = time.perf_counter()
    run_json = run_dir / "run.json"
    done = run_json.exists() and json.loads(run_json.read_text()).get("status") == "complete"
    if not done:
        train(cfg, cache, run_dir, hook=hook, resume=run_dir.exists(), progress=False)
    train_s = time.perf_counter() - t
    members = [load_member(run_dir, s) for s in cfg.seeds]
    enc = [m.W_enc.detach().float().numpy().T for m in members]
    dec = [m.W_dec.detach().float().numpy() for m in members]
    scfg = StabilityConfig()
    res = stability(enc[0], dec[0], list(zip(enc[1:], dec[1:], strict=True)), scfg)
    null = stability_null([d.shape for d in dec], scfg)
    return {
        "train_s": round(train_s, 1),
        "pw_mcc": res.pw_mcc,
        "pw_mcc_null": null.pw_mcc,
        "shared": res.shared_fraction,
        "shared_null": null.shared_fraction,
        "passes_c2": float(res.passes.mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache", type=Path, help="a default+packages cache with at least max(--tokens) tokens")
    ap.add_argument("--tokens", type=int, nargs="+", default=[430_000, 1_000_000, 2_000_000, 4_000_000])
    ap.add_argument("--hook", default=DEFAULT_HOOK)
    ap.add_argument("--work", type=Path, required=True, help="folder for the prefix caches and runs")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.tokens:
        cache = args.work / f"prefix-{n}.h5"
        tokens = prefix_cache(args.cache, cache, n)
        row = {"tokens": tokens, **measure(cache, args.work / f"run-{n}", args.hook)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| distinct tokens | PW-MCC (null) | shared at tau (null) | C2 passes | train s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['tokens']:,} | {r['pw_mcc']:.3f} ({r['pw_mcc_null']:.3f}) | {r['shared']:.3f} "
            f"({r['shared_null']:.3f}) | {r['passes_c2']:.3f} | {r['train_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
