"""Building sae-lens training SAEs from a `TrainConfig`, through sae-lens's architecture registry.

The mathematics of every architecture is sae-lens's own (`TrainingSAE.training_forward_pass`); only TopK has a faster
step of ours (topk_step.py), tested against it. Also: the up-front memory estimate, and the inference-equivalent
encode used for the final metrics (batchtopk and matryoshka are saved as JumpReLU SAEs, so they are measured so).
"""

from __future__ import annotations

import os

import torch
from sae_lens.registry import get_sae_training_class
from sae_lens.saes.sae import TrainingSAE

from sae_training.config import ARCHS, TrainConfig


def build_training_sae(cfg: TrainConfig, d_in: int, seed: int, *, dtype: str = "float32") -> TrainingSAE:
    """A freshly initialised training SAE of cfg.arch; the initialisation depends only on `seed`."""
    d_sae = cfg.resolve(d_in)
    sae_cls, cfg_cls = get_sae_training_class(ARCHS[cfg.arch])
    kwargs: dict = {"d_in": d_in, "d_sae": d_sae, "dtype": dtype, "device": "cpu"}
    if cfg.arch in ("topk", "batchtopk", "matryoshka"):
        kwargs |= {"k": cfg.k, "aux_loss_coefficient": cfg.aux_coefficient}
    if cfg.arch == "matryoshka":
        widths = list(cfg.matryoshka_widths) or [max(1, d_sae // 8), max(2, d_sae // 4), max(3, d_sae // 2)]
        kwargs["matryoshka_widths"] = [w for w in widths if w < d_sae] + [d_sae]
    if cfg.arch in ("standard", "gated"):
        kwargs |= {"l1_coefficient": cfg.l1, "l1_warm_up_steps": cfg.warmup_steps_sparsity}
    if cfg.arch == "jumprelu":
        kwargs |= {"l0_coefficient": cfg.l0_coefficient, "l0_warm_up_steps": cfg.warmup_steps_sparsity}
        if cfg.target_l0 is not None:
            kwargs |= {"jumprelu_sparsity_loss_mode": "quadratic", "target_l0": cfg.target_l0}
    kwargs |= cfg.extra
    # sae-lens initialises from torch's global generator; a forked RNG keeps the caller's state untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return sae_cls(cfg_cls(**kwargs))


def coefficient_values(sae: TrainingSAE, step: int) -> dict[str, float]:
    """The sparsity coefficients at a step, as sae-lens's CoefficientScheduler would give them (linear warm-up)."""
    out = {}
    for name, c in sae.get_coefficients().items():
        value, warm = (c.value, c.warm_up_steps) if hasattr(c, "warm_up_steps") else (float(c), 0)
        out[name] = float(value) if warm <= 0 else float(value) * min(step, warm) / warm
    return out


def bytes_needed(cfg: TrainConfig, d_in: int) -> int:
    """Estimated peak memory of training all members: weights, grads, Adam moments, the batch working set, a pool."""
    d_sae = cfg.d_sae(d_in)
    weights = (2 * d_sae * d_in + 3 * d_sae + d_in) * 4
    per_member = 4 * weights  # weights + grads + two Adam moments
    # dense (batch, d_sae) tensors alive at once: ours keeps ~3 for TopK; autograd through sae-lens keeps ~8
    dense = 3 if cfg.arch == "topk" else 8
    working = dense * cfg.batch_size * d_sae * 4
    pool = cfg.pool_batches * cfg.batch_size * d_in * 4
    return len(cfg.seeds) * per_member + working + 2 * pool


def available_bytes() -> int:
    """Memory available to this process now (MemAvailable), or physical memory where /proc is missing."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@torch.no_grad()
def inference_encode(sae: TrainingSAE, arch: str, x: torch.Tensor) -> torch.Tensor:
    """Feature activations (n, d_sae) as the saved (inference) SAE computes them, on normalised input x (n, d_in)."""
    if arch in ("batchtopk", "matryoshka"):
        _, hidden_pre = sae.encode_with_hidden_pre(x)
        threshold = sae.topk_threshold.to(hidden_pre.dtype)
        # sae-lens saves these as JumpReLU with the learnt global threshold
        return hidden_pre.relu() * (hidden_pre > threshold)
    return sae.encode(x)
