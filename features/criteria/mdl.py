"""C4 description length (SAEBench MDL form): does a latent pay for its own description?

Cost, in bits per token (SAEBench `evals/mdl`): DL_i = H_b(ρ_i) + ρ_i · H(q(a_i) | a_i > 0), where ρ_i is the firing
rate and q quantises a latent's positive activations into `num_bins` equal bins on [0, max a_i].

Benefit, in bits per token: coding the residual with an i.i.d. Gaussian per dimension at the maximum-likelihood
variance σ² = SSE / (T d) costs (T d / 2) log2(2πe σ²) bits, so removing latent i (SSE -> SSE + ΔSSE_i) costs

    bits_saved_i = (d / 2) · log2((SSE + ΔSSE_i) / SSE)      bits per token,

which is SAEBench's MDL form (T d / 2) log2(SSE_{−i} / SSE), per token. A latent passes when bits_saved_i >= DL_i. A latent
whose removal lowers the error (ΔSSE_i <= 0) saves no bits and fails.

An antipodal pair is one signed feature: its cost is the entropy of the three-way event (i fires, j fires, neither),
treating co-firing as rare, plus each member's ρ·H; its benefit comes from the pair's ΔSSE (`FunctionAccumulator`
with the same `partner`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from activations.settings import Settings, integer
from features.columns import Column
from features.criteria.registry import Context, Criterion, Outcome, VerdictRow


@dataclass(frozen=True)
class MDLConfig(Settings):
    """C4 description length (SAEBench form): bits saved in reconstruction >= the latent's own code length."""

    num_bins: int = integer(16, 2, 4096)
    """Equal-width bins on [0, max activation] for the entropy of the quantised activation."""


class MDLResult(NamedTuple):
    """C4 per latent (pair values on both members of an antipodal pair)."""

    description_bits: np.ndarray  # (F,) DL_i, bits per token
    bits_saved: np.ndarray  # (F,) bits per token
    passes: np.ndarray  # (F,) bool: bits_saved >= description_bits


def _xlog2x(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H_b(p) in bits (0 at p = 0 or 1)."""
    p = np.asarray(p, dtype=np.float64)
    return -(_xlog2x(p) + _xlog2x(1 - p))


def activation_entropy(acts_csc: sp.spmatrix, num_bins: int) -> np.ndarray:
    """(F,) entropy in bits of each latent's positive activations quantised into equal bins on [0, max]."""
    a = sp.csc_matrix(acts_csc)
    n_latents = a.shape[1]
    cols = np.repeat(np.arange(n_latents), np.diff(a.indptr))
    keep = a.data > 0
    cols, vals = cols[keep], a.data[keep].astype(np.float64)
    top = np.zeros(n_latents)
    np.maximum.at(top, cols, vals)
    # the maximum lands in the last bin
    bins = np.minimum((vals / top[cols] * num_bins).astype(np.int64), num_bins - 1)
    hist = np.bincount(cols * num_bins + bins, minlength=n_latents * num_bins).reshape(n_latents, num_bins)
    total = hist.sum(axis=1, keepdims=True)
    p = hist / np.maximum(total, 1)
    return -_xlog2x(p).sum(axis=1)


def mdl(
    acts_csc: sp.spmatrix,
    delta_sse: np.ndarray,
    sse_total: float,
    d_model: int,
    cfg: MDLConfig,
    partner: np.ndarray | None = None,
) -> MDLResult:
    """C4 from the activations (T, F), ΔSSE per latent and the total SSE (`FunctionResult`), and d = d_in."""
    n_tokens = acts_csc.shape[0]
    a = sp.csc_matrix(acts_csc)
    rho = np.bincount(np.repeat(np.arange(a.shape[1]), np.diff(a.indptr))[a.data > 0], minlength=a.shape[1])
    rho = rho / max(n_tokens, 1)
    h_act = activation_entropy(a, cfg.num_bins)
    dl = binary_entropy(rho) + rho * h_act
    if partner is not None:
        i = np.flatnonzero(partner >= 0)
        j = partner[i]
        rest = np.clip(1 - rho[i] - rho[j], 0.0, 1.0)
        dl = dl.copy()
        dl[i] = -(_xlog2x(rho[i]) + _xlog2x(rho[j]) + _xlog2x(rest)) + rho[i] * h_act[i] + rho[j] * h_act[j]
    delta = np.asarray(delta_sse, dtype=np.float64)
    if sse_total <= 0:
        raise ValueError("sse_total must be positive (a perfect reconstruction leaves nothing to code)")
    # removing a latent that lowers the SSE saves nothing
    ratio = np.maximum((sse_total + delta) / sse_total, 1.0)
    saved = d_model / 2 * np.log2(ratio)
    return MDLResult(dl, saved, (saved >= dl) & (delta > 0))


def _compute(ctx: Context, cfg: MDLConfig) -> Outcome:
    """C4 from C3's ΔSSE and total SSE (the pair's for paired latents)."""
    fres = ctx.results["function"].offline
    md = mdl(ctx.acts, fres.delta_sse, fres.sse_total, ctx.dec.shape[1], cfg, ctx.partner)
    return Outcome({"dl_bits": md.description_bits, "bits_saved": md.bits_saved, "mdl_pass": md.passes}, md)


_OWNER = "criterion:mdl"
CRITERION = Criterion(
    number=4,
    name="mdl",
    title="description length",
    config=MDLConfig,
    gates=True,
    passes="mdl_pass",
    needs=("function",),
    columns=(
        Column("dl_bits", "float64", "C4: description length, bits per token", _OWNER),
        Column("bits_saved", "float64", "C4: reconstruction bits saved, bits per token", _OWNER),
        Column("mdl_pass", "bool", "C4", _OWNER),
    ),
    verdicts=(VerdictRow("bits saved", "bits_saved", "≥", column="dl_bits", verdict="mdl_pass"),),
    compute=_compute,
)
