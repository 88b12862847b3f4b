"""Scoring time (`features.score.score`) for 3 seeds x 3,072 latents, and its growth with the tokens scored.

A synthetic cache (d = 384, default planted kinds, 128-token sequences) and three sae-lens TopK SAEs (width 3,072,
k = 32, seeds 0-2; encoder tied to a random unit decoder, so every token fires 32 latents as a trained SAE would)
are scored with `--sae/--others` at several `--max-tokens`. Baseline in the same run: the bare encode+decode of the
same tokens (the least any streaming pass must do). Costs per latent of LBL are capped by its window sample, so the
token-linear part is the pass and the criteria; the fit of time = a + b * tokens extrapolates to 1M tokens.

    PYTHONPATH=. python benchmarks/bench_scoring.py --tokens 62500,125000,250000
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from activations.cache import ActivationCache
from activations.synth import SynthConfig
from activations.synth_write import generate_synthetic
from features.score import ScoreJob, score
from features.streaming import encode_chunk
from sae_training.config import TrainConfig
from sae_training.saes import build_training_sae


def make_sae(folder: Path, seed: int, d: int, width: int, k: int, hook: str) -> Path:
    sae = build_training_sae(TrainConfig(width=width, k=k), d, seed)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(width, d, generator=g)
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
    sae.cfg.metadata.hook_name = hook
    sae.save_inference_model(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="62500,125000,250000")
    ap.add_argument("--width", type=int, default=3072)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(t) for t in args.tokens.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "synth.h5"
        t = time.perf_counter()
        generate_synthetic(
            cache, SynthConfig(d_model=384, n_seq=max(sizes) // 128 + 1, context_size=128, seed=0)
        )
        print(f"cache of {max(sizes):,} tokens generated in {time.perf_counter() - t:.1f} s")
        with ActivationCache.open(cache) as c:
            hook = c.hooks[0]
        saes = [make_sae(root / f"seed-{s}", s, 384, args.width, 32, hook) for s in range(3)]
        print("| tokens | baseline encode+decode (s) | score total (s) | ratio | stages (s) |")
        print("| ---: | ---: | ---: | ---: | --- |")
        for n in sizes:
            from sae_lens import SAE

            ref = SAE.load_from_disk(str(saes[0]))
            with ActivationCache.open(cache) as c:
                t = time.perf_counter()
                done = 0
                for ch in c.scan(hook):
                    x = ch.acts.reshape(-1, 384)[~ch.mask.reshape(-1)]
                    encode_chunk(ref, np.ascontiguousarray(x[: max(0, n - done)]))
                    done += len(x)
                    if done >= n:
                        break
                base = time.perf_counter() - t
            t = time.perf_counter()
            job = ScoreJob(run=root / f"out{n}", sae=saes[0], others=tuple(saes[1:]), cache=cache, max_tokens=n,
                           workers=args.workers, progress=False)  # fmt: skip
            res = score(job)
            total = time.perf_counter() - t
            print(
                f"| {n:,} | {base:.1f} | {total:.1f} | {total / base:.1f}x | {res.summary['timings']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
