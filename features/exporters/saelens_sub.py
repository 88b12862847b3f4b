"""The `saelens` export: a sae-lens folder holding only the selected latents (a sub-SAE), and its calibration.

Form. The sub-SAE is always a sae-lens **JumpReLU** SAE over the same input (raw activations, `b_dec` kept):
`act_j(x) = relu(pre_j(x)) * (pre_j(x) > threshold_j)`, `pre_j = (x - b_dec) @ W_enc[:, j] + b_enc[j]`.

- standard (ReLU) SAEs: threshold 0, so the sub-SAE equals the full SAE on the selected latents everywhere;
- JumpReLU SAEs: their own thresholds, likewise exact;
- TopK, BatchTopK and Matryoshka SAEs fire a latent only when it is among the k largest, a decision that depends on
  every latent, so no per-latent SAE reproduces it. We keep the pre-activations (folding
  `rescale_acts_by_decoder_norm` into the encoder and decoder) and calibrate each threshold on the cache rows the
  store scored: just below the smallest value at which the full SAE fires that latent there. On those rows the
  sub-SAE therefore fires a latent wherever the full SAE does, with the same value (recall 1); it also fires where
  the latent was pre-active but outside the top k (precision < 1). The measured precision, recall and max abs
  value difference are written into cfg.json's metadata (`xenofeat_export.agreement`), with the original latent
  index of every sub-SAE latent (`xenofeat_export.latents`).

A latent that never fires on the calibration rows gets threshold +inf (it never fires in the sub-SAE either).
Gated SAEs are refused (their gate and magnitude paths would need their own sub-architecture).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from activations.errors import UserError
from features.exporters.context import ExportContext

log = logging.getLogger(__name__)

TOPK_LIKE = ("topk", "batchtopk", "matryoshka_batchtopk", "jumprelu_topk")
MARGIN = 1e-4  # relative margin below the smallest firing value: the sub-SAE's matmul may round differently


@dataclass(frozen=True)
class SubWeights:
    """Per-latent weights of the selected latents in JumpReLU form (float32 numpy)."""

    latents: np.ndarray  # (n,) int64 original latent indices
    W_enc: np.ndarray  # (d, n)
    b_enc: np.ndarray  # (n,)
    W_dec: np.ndarray  # (n, d)
    b_dec: np.ndarray  # (d,)
    threshold: np.ndarray  # (n,)
    source_architecture: str
    threshold_source: str  # "zero (ReLU)", "native (JumpReLU)" or "calibrated on cache rows (TopK)"
    cfg: dict[str, Any]  # the full SAE's cfg.json
    calibration: dict[str, Any]


def sub_weights(ctx: ExportContext, sae: Any = None) -> SubWeights:  # noqa: ANN401 - sae_lens.SAE
    """The selected latents of the store's reference SAE in JumpReLU form (calibrating thresholds for TopK)."""
    cfg = ctx.sae_cfg()
    arch = str(cfg.get("architecture", ""))
    sae = ctx.load_sae() if sae is None else sae
    sel = ctx.features
    idx = torch.as_tensor(sel, dtype=torch.long)
    with torch.no_grad():
        W_enc = sae.W_enc.detach().float()[:, idx].clone()  # (d, n)
        b_enc = sae.b_enc.detach().float()[idx].clone()  # (n,)
        W_dec = sae.W_dec.detach().float()[idx].clone()  # (n, d)
        b_dec = sae.b_dec.detach().float().clone()  # (d,)
        if arch in TOPK_LIKE and bool(cfg.get("rescale_acts_by_decoder_norm", False)):
            # pre * |W_dec_i| with decode acts / |W_dec_i| @ W_dec == pre' with W_enc, b_enc scaled and W_dec unit rows
            norms = sae.W_dec.detach().float()[idx].norm(dim=-1)  # (n,)
            W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
    calibration: dict[str, Any] = {}
    if arch == "standard":
        thr, source = np.zeros(len(sel), np.float32), "zero (ReLU)"
    elif arch == "jumprelu":
        thr, source = sae.threshold.detach().float()[idx].numpy().copy(), "native (JumpReLU)"
    elif arch in TOPK_LIKE:
        thr, calibration = calibrate(ctx, sae, sel)
        source = "calibrated on cache rows (TopK)"
    else:
        raise UserError(f"--format saelens: the {arch!r} architecture has no per-latent sub-SAE form (supported: "
                        f"standard, jumprelu, {', '.join(TOPK_LIKE)})")  # fmt: skip
    return SubWeights(sel.astype(np.int64), W_enc.numpy(), b_enc.numpy(), W_dec.numpy(), b_dec.numpy(),
                      np.asarray(thr, np.float32), arch, source, cfg, calibration)  # fmt: skip


def calibrate(ctx: ExportContext, sae: Any, sel: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:  # noqa: ANN401
    """Per-latent thresholds just below the smallest firing value of the full SAE on the scored cache rows."""
    lo = np.full(len(sel), np.inf, np.float64)
    n_rows = 0
    for _, codes, mask in ctx.iter_codes(sae, sel):
        c = codes[~mask]  # (r, n) unmasked rows
        n_rows += len(c)
        fired = np.where(c > 0, c, np.inf)
        lo = np.minimum(lo, fired.min(axis=0) if len(c) else lo)
    thr = np.where(np.isfinite(lo), lo - MARGIN * np.abs(lo), np.inf).astype(np.float32)
    return thr, {
        "rows": n_rows,
        "seqs": ctx.scored_seqs(),
        "margin": MARGIN,
        "never_fired": int((~np.isfinite(lo)).sum()),
    }


def build_sub_sae(w: SubWeights, metadata: dict[str, Any]) -> Any:  # noqa: ANN401 - sae_lens.JumpReLUSAE
    """A sae-lens JumpReLUSAE holding `w`."""
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    c = w.cfg
    cfg = JumpReLUSAEConfig(
        d_in=int(c["d_in"]),
        d_sae=len(w.latents),
        dtype="float32",
        device="cpu",
        apply_b_dec_to_input=bool(c.get("apply_b_dec_to_input", True)),
        normalize_activations=c.get("normalize_activations", "none"),
        reshape_activations=c.get("reshape_activations", "none"),
        metadata=SAEMetadata(**metadata),
    )
    sub = JumpReLUSAE(cfg)
    state = {"W_enc": w.W_enc, "b_enc": w.b_enc, "W_dec": w.W_dec, "b_dec": w.b_dec, "threshold": w.threshold}
    sub.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return sub


def agreement(ctx: ExportContext, sae: Any, sub: Any, sel: np.ndarray) -> dict[str, Any]:  # noqa: ANN401
    """Firing precision/recall of the sub-SAE against the full SAE on the scored rows, and the max abs difference."""
    tp = fp = fn = 0
    max_diff = 0.0
    from activations.cache import ActivationCache

    with ActivationCache.open(ctx.cache_path) as cache, torch.no_grad():
        for s, full, mask in ctx.iter_codes(sae, sel):
            x = torch.from_numpy(cache.read_acts(ctx.hook, s, s + full.shape[0]))  # (s, L, d)
            part = sub.encode(x.reshape(-1, x.shape[-1])).numpy().reshape(full.shape)
            f, p = full[~mask], part[~mask]  # (r, n)
            a, b = f > 0, p > 0
            tp += int((a & b).sum())
            fp += int((~a & b).sum())
            fn += int((a & ~b).sum())
            both = a & b
            if both.any():
                max_diff = max(max_diff, float(np.abs(f[both] - p[both]).max()))
    return {
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "max_abs_diff_where_both_fire": max_diff,
        "full_fires": tp + fn,
        "sub_fires": tp + fp,
    }


def write(ctx: ExportContext, folder: Path) -> None:
    sae = ctx.load_sae()
    w = sub_weights(ctx, sae)
    meta = dict(w.cfg.get("metadata") or {})
    info = {
        "form": "jumprelu",
        "source_architecture": w.source_architecture,
        "threshold_source": w.threshold_source,
        "latents": [int(i) for i in w.latents],
        "set": ctx.selected.name,
        "selection": ctx.selected.selection,
        "source_sae": str(ctx.sae_path),
        "calibration": w.calibration,
    }
    meta["xenofeat_export"] = info
    sub = build_sub_sae(w, meta)
    info["agreement"] = agreement(ctx, sae, sub, w.latents)
    sub.cfg.metadata.xenofeat_export = info
    sub.save_model(folder)
    log.info("sub-SAE agreement with the full SAE on %s rows: %s", w.calibration.get("rows", "all"),
             json.dumps(info["agreement"]))  # fmt: skip
