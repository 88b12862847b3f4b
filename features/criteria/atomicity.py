"""C5 atomicity (a tag, not a filter): near-duplicate decoder rows, and rows that are composites of meta-latents.

- duplicate: the largest decoder cosine to any other latent, excluding the latent's antipodal partner, is >=
  `duplicate_cos`; `duplicate_of` names that latent.
- composite (Leask et al. 2025, SAEBench `meta_structure` config): a small BatchTopK SAE (width = ratio x F, k active)
  is trained on the unit decoder rows for a few hundred Adam steps of plain torch; a row is composite when its
  reconstruction (per-row top-k at inference, so the count of active meta-latents is well defined) has cosine >=
  `metasae_recon_cos` with the row and uses >= `metasae_min_latents` meta-latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from activations.settings import Settings, integer, number
from features.columns import Column
from features.criteria.registry import Context, Criterion, Outcome, VerdictRow
from sae_training.matching import unit_rows


@dataclass(frozen=True)
class AtomicityConfig(Settings):
    """C5 atomicity (tag): near-duplicate decoder rows, and rows composed of meta-SAE latents."""

    duplicate_cos: float = number(0.9, 0.0, 1.0, lo_open=True)
    """Decoder cosine to another latent (not the antipodal partner) at which a latent is tagged duplicate."""
    metasae_width_ratio: float = number(0.25, 0.0, 4.0, lo_open=True)
    """Meta-SAE width as a fraction of the number of latents (SAEBench: 0.25)."""
    metasae_k: int = integer(4, 1, 1024)
    """Active meta-latents per decoder row (BatchTopK k)."""
    metasae_recon_cos: float = number(0.9, 0.0, 1.0, lo_open=True)
    """Cosine of a row with its meta-SAE reconstruction at which it is tagged composite."""
    metasae_min_latents: int = integer(2, 1, 1024)
    """Fewest active meta-latents in a composite reconstruction."""
    metasae_steps: int = integer(300, 1, 1_000_000)
    """Training steps of the meta-SAE (kept small: it runs on CPU)."""
    metasae_batch: int = integer(512, 1, 1 << 20)
    """Decoder rows per meta-SAE step."""
    metasae_lr: float = number(1e-3, 0.0, 1.0, lo_open=True)
    """Adam learning rate of the meta-SAE."""
    seed: int = integer(0, 0)
    """Seed of the meta-SAE's initialisation and batches."""


class AtomicityResult(NamedTuple):
    """C5 per latent."""

    max_cos_other: np.ndarray  # (F,) float32: largest decoder cosine to another latent (not the partner)
    nearest: np.ndarray  # (F,) int64: that latent
    duplicate: np.ndarray  # (F,) bool
    meta_recon_cos: np.ndarray  # (F,) float32: cosine of the row with its meta-SAE reconstruction
    meta_n_active: np.ndarray  # (F,) int64: meta-latents active in that reconstruction
    composite: np.ndarray  # (F,) bool
    meta_fve: float  # fraction of the decoder rows' variance the meta-SAE explains


def nearest_decoder(
    dec_rows: np.ndarray, partner: np.ndarray | None = None, block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """(F,) largest cosine to another decoder row (not itself, not the antipodal partner) and (F,) its index."""
    ud = unit_rows(dec_rows)
    n = len(ud)
    best = np.full(n, -np.inf, dtype=np.float32)
    arg = np.full(n, -1, dtype=np.int64)
    for s in range(0, n, block):
        c = ud[s : s + block] @ ud.T  # (b, F)
        r = np.arange(len(c))
        c[r, s + r] = -np.inf
        if partner is not None:
            p = partner[s : s + block]
            c[r[p >= 0], p[p >= 0]] = -np.inf
        arg[s : s + block] = c.argmax(axis=1)
        best[s : s + block] = c[r, arg[s : s + block]]
    return best, arg


def train_meta_sae(rows: np.ndarray, cfg: AtomicityConfig) -> dict[str, torch.Tensor]:
    """A BatchTopK SAE on unit rows (F, d): weights W_enc (d, m), b_enc (m,), W_dec (m, d), b_dec (d,)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.from_numpy(unit_rows(rows))  # (F, d)
    n, d = x.shape
    width = max(1, round(cfg.metasae_width_ratio * n))
    w_dec = torch.randn(width, d, generator=gen)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
    params = {
        "W_enc": w_dec.T.clone().requires_grad_(),
        "b_enc": torch.zeros(width, requires_grad=True),
        "W_dec": w_dec.clone().requires_grad_(),
        "b_dec": x.mean(dim=0).clone().requires_grad_(),
    }
    opt = torch.optim.Adam(params.values(), lr=cfg.metasae_lr)
    batch = min(cfg.metasae_batch, n)
    k = min(cfg.metasae_k, width)
    for _ in range(cfg.metasae_steps):
        xb = x[torch.randperm(n, generator=gen)[:batch]]  # (B, d)
        pre = torch.relu((xb - params["b_dec"]) @ params["W_enc"] + params["b_enc"])  # (B, m)
        flat = pre.flatten()
        keep = torch.topk(flat, batch * k).indices  # BatchTopK: k per row on average over the batch
        acts = torch.zeros_like(flat).scatter(0, keep, flat[keep]).view_as(pre)
        loss = ((acts @ params["W_dec"] + params["b_dec"] - xb) ** 2).sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # unit decoder rows, as in sae-lens's TopK family
            params["W_dec"] /= params["W_dec"].norm(dim=1, keepdim=True).clamp_min(1e-8)
    return {name: p.detach() for name, p in params.items()}


def meta_reconstruct(
    rows: np.ndarray, weights: dict[str, torch.Tensor], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(F, d) reconstructions of the unit rows with per-row top-k meta-latents, and (F,) count of active ones."""
    x = torch.from_numpy(unit_rows(rows))
    with torch.no_grad():
        pre = torch.relu((x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"])  # (F, m)
        top = torch.topk(pre, min(k, pre.shape[1]), dim=1)
        acts = torch.zeros_like(pre).scatter(1, top.indices, top.values)
        recon = acts @ weights["W_dec"] + weights["b_dec"]
    return recon.numpy(), (acts > 0).sum(dim=1).numpy().astype(np.int64)


def atomicity(
    dec_rows: np.ndarray, cfg: AtomicityConfig, partner: np.ndarray | None = None
) -> AtomicityResult:
    """C5 tags for every latent from its decoder row (F, d)."""
    best, arg = nearest_decoder(dec_rows, partner)
    weights = train_meta_sae(dec_rows, cfg)
    recon, n_active = meta_reconstruct(dec_rows, weights, cfg.metasae_k)
    x = unit_rows(dec_rows)
    cos = np.einsum("fd,fd->f", x, unit_rows(recon))
    fve = 1.0 - float(((recon - x) ** 2).sum() / max(((x - x.mean(axis=0)) ** 2).sum(), 1e-12))
    return AtomicityResult(
        max_cos_other=best,
        nearest=arg,
        duplicate=best >= cfg.duplicate_cos,
        meta_recon_cos=cos.astype(np.float32),
        meta_n_active=n_active,
        composite=(cos >= cfg.metasae_recon_cos) & (n_active >= cfg.metasae_min_latents),
        meta_fve=fve,
    )


def _compute(ctx: Context, cfg: AtomicityConfig) -> Outcome:
    atom = atomicity(ctx.dec, cfg, ctx.partner)
    columns = {
        "duplicate": atom.duplicate,
        "duplicate_of": np.where(atom.duplicate, atom.nearest, -1),
        "max_cos_other": atom.max_cos_other,
        "composite": atom.composite,
        "meta_recon_cos": atom.meta_recon_cos,
    }
    return Outcome(columns, atom, sae_summary={"meta_sae_fve": atom.meta_fve})


_OWNER = "criterion:atomicity"
CRITERION = Criterion(
    number=5,
    name="atomicity",
    title="atomicity",
    config=AtomicityConfig,
    gates=False,
    columns=(
        Column("duplicate", "bool", "C5 tag: max_cos_other >= `[atomicity] duplicate_cos`", _OWNER),
        Column("duplicate_of", "int64", "C5: the latent it duplicates, -1 if none", _OWNER),
        Column("max_cos_other", "float64", "C5: largest decoder cosine to another latent (not the partner)", _OWNER),
        Column("composite", "bool", "C5 tag: composed of meta-SAE latents", _OWNER),
        Column("meta_recon_cos", "float64", "C5: cosine of the decoder row with its meta-SAE reconstruction", _OWNER),
    ),
    verdicts=(
        VerdictRow("max decoder cos to another", "max_cos_other", "tag duplicate if ≥", setting="duplicate_cos",
                   verdict="duplicate"),
        VerdictRow("meta-SAE reconstruction cos", "meta_recon_cos", "tag composite if ≥",
                   setting="metasae_recon_cos", verdict="composite"),
    ),
    compute=_compute,
)  # fmt: skip
