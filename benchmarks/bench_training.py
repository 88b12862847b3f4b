"""Training throughput of our trainer vs sae-lens's own `SAETrainer`, same data and config, same script.

1. TopK (d_in 384, width 3072, k 32, batch 4096) and standard L1: tokens/s of our step (`sae_training.trainer._step`,
   the one `xenofeat train` runs) vs `SAETrainer.fit` on the same batches, and explained variance at equal tokens
   (both on the same held-out batch, both from the same initial weights).
2. Ensemble cost: `train()` with 3 seeds in one call vs 3 calls with one seed each, on one cache.

Run: python benchmarks/bench_training.py [--steps 20] [--threads 2]   (a few minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import copy
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sae_lens import LoggingConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer

from sae_training.config import TrainConfig
from sae_training.saes import inference_encode
from sae_training.trainer import _new_member, _step, train

D_IN, WIDTH, K, BATCH = 384, 3072, 32, 4096


def planted_batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    """n batches (BATCH, D_IN) of sparse sums of 4096 planted directions, scaled to unit mean squared norm."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(4096, D_IN, generator=g), dim=-1)
    out = []
    for _ in range(n):
        idx = torch.randint(0, 4096, (BATCH, 24), generator=g)
        mags = torch.rand(BATCH, 24, generator=g)
        x = torch.nn.functional.embedding_bag(
            idx, dirs, per_sample_weights=mags.flatten().view(BATCH, 24), mode="sum"
        )
        out.append(x / x.pow(2).sum(-1).mean().sqrt())
    return out


def ev(sae, arch: str, x: torch.Tensor) -> float:  # noqa: ANN001
    with torch.no_grad():
        x_hat = sae.decode(inference_encode(sae, arch, x))
    return float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def compare(arch: str, steps: int, batches: list[torch.Tensor], held: torch.Tensor) -> dict[str, float]:
    extra = {"k": K} if arch == "topk" else {"l1": 0.05}
    cfg = TrainConfig(
        arch=arch,
        width=WIDTH,
        tokens=steps * BATCH,
        batch_size=BATCH,
        lr=3e-4,
        lr_decay_fraction=0.0,
        dead_after_tokens=1000 * BATCH,
        **extra,
    )
    ours = _new_member(cfg, D_IN, 0)
    ref_sae = copy.deepcopy(ours.sae)
    _step(cfg, ours, batches[0], 0, 1000)  # warm-up (allocations), not timed, then reset
    ours = _new_member(cfg, D_IN, 0)
    t = time.perf_counter()
    for i in range(steps):
        _step(cfg, ours, batches[i], i, 1000)
    t_ours = time.perf_counter() - t

    tcfg = SAETrainerConfig(
        total_training_samples=steps * BATCH,
        train_batch_size_samples=BATCH,
        lr=3e-4,
        lr_end=3e-4,
        device="cpu",
        dead_feature_window=1000,
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=tcfg, sae=ref_sae, data_provider=iter(batches))
    t = time.perf_counter()
    trainer.fit()
    t_ref = time.perf_counter() - t
    tokens = steps * BATCH
    return {
        "ours_tok_s": tokens / t_ours,
        "saelens_tok_s": tokens / t_ref,
        "speedup": t_ref / t_ours,
        "ev_ours": ev(ours.sae, arch, held),
        "ev_saelens": ev(ref_sae, arch, held),
    }


def ensemble_cost(tokens: int) -> dict[str, float]:
    from activations.writer import CacheWriter

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.h5"
        n_seq, L = 400, 128
        x = (
            torch.cat(planted_batches(n_seq * L // BATCH + 1, seed=1))[: n_seq * L]
            .numpy()
            .reshape(n_seq, L, D_IN)
        )
        w = CacheWriter.create(
            path,
            hooks=["h"],
            d_model=D_IN,
            context_size=L,
            dtype="float16",
            vocab=["a"],
            model_id="bench",
            model_fingerprint="0" * 32,
            corpus="bench",
            corpus_fingerprint="0" * 32,
            settings={},
            source="synthetic",
        )
        z = np.zeros((n_seq, L), np.int32)
        w.append(z, z, z, np.zeros((n_seq, L), bool), {"h": x.astype(np.float16)})
        w.finish()
        cfg = dict(width=WIDTH, k=K, tokens=tokens, batch_size=BATCH, checkpoint_every=0, eval_tokens=8192)
        t = time.perf_counter()
        train(TrainConfig(seeds=(0, 1, 2), **cfg), path, Path(d) / "ens", progress=False)
        t_one = time.perf_counter() - t
        t = time.perf_counter()
        for s in (0, 1, 2):
            train(TrainConfig(seeds=(s,), **cfg), path, Path(d) / f"single{s}", progress=False)
        t_three = time.perf_counter() - t
    return {"one_command_s": t_one, "three_commands_s": t_three, "ratio": t_three / t_one}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ensemble-tokens", type=int, default=20 * BATCH)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    batches = planted_batches(args.steps + 1)
    held = batches.pop()
    # both trainers under the same torch mode: deterministic (our default, bit-reproducible) and not
    for deterministic in (True, False):
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        for arch in ("topk", "standard"):
            r = compare(arch, args.steps, batches, held)
            print(
                f"deterministic={deterministic!s:5s} {arch:9s} ours {r['ours_tok_s']:9.0f} tok/s  "  # noqa: T201
                f"sae-lens {r['saelens_tok_s']:9.0f} tok/s  speedup {r['speedup']:.2f}x  "
                f"EV ours {r['ev_ours']:.4f} sae-lens {r['ev_saelens']:.4f}"
            )
    torch.use_deterministic_algorithms(False)
    e = ensemble_cost(args.ensemble_tokens)
    print(
        f"ensemble 3 seeds: one command {e['one_command_s']:.1f} s, three commands {e['three_commands_s']:.1f} s, "  # noqa: T201
        f"ratio {e['ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
