"""Downstream effect of splicing each member's reconstruction into the model at the hook, on held-out sequences.

- encoders (MiniLM: its masked-LM head is untrained): cosine of the final layer's mean-pooled embedding with vs
  without the splice (1.0 = no effect);
- causal LMs: next-token cross-entropy with the splice, clean and with the hook zero-ablated; CE recovered =
  (CE_ablated - CE_sae) / (CE_ablated - CE_clean), and KL(clean || spliced) per token.

Only tokens the cache trains on (mask False) are spliced; special tokens keep their activations. Where the model cannot
be loaded (synthetic or imported caches, no weights) the result is null with the reason.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from activations.cache import ActivationCache
from sae_training import checkpoint as ck
from sae_training.config import TrainConfig
from sae_training.saes import inference_encode

log = logging.getLogger(__name__)


def _skipped(reason: str) -> dict[str, Any]:
    log.info("downstream effect skipped: %s", reason)
    return {"_skipped": {"value": None, "reason": reason}}


def downstream_effect(
    cfg: TrainConfig,
    cache: ActivationCache,
    hook: str,
    members: list[ck.MemberState],
    scale: float,
    eval_seqs: list[int],
) -> dict[Any, Any]:
    """{seed: metrics dict} or {"_skipped": {"value": None, "reason": ...}}."""
    if cfg.downstream_seqs == 0:
        return _skipped("turned off (downstream_seqs = 0)")
    if cache.meta.source != "model":
        return _skipped(f"the cache was not made from a model (source: {cache.meta.source})")
    try:
        from activations.model import load_model

        lm = load_model(cache.meta.model_id)
    except Exception as err:  # noqa: BLE001 - any failure to load is reported in run.json, not fatal
        return _skipped(
            f"the model {cache.meta.model_id!r} could not be loaded ({type(err).__name__}: {err})"
        )
    a = eval_seqs[0]
    b = min(eval_seqs[1], a + cfg.downstream_seqs)
    tokens = torch.from_numpy(cache.tokens[a:b]).long()  # (n, L)
    attn = torch.from_numpy(cache.doc_ids[a:b] >= 0).long()  # (n, L) 1 on real tokens
    splice_at = torch.from_numpy(~cache.mask[a:b])  # (n, L) tokens the SAE was trained on
    return {m.seed: _effect(lm, hook, m, cfg.arch, scale, tokens, attn, splice_at) for m in members}


@torch.no_grad()
def _effect(lm, hook, m, arch, scale, tokens, attn, splice_at) -> dict[str, float]:  # noqa: ANN001
    bridge = lm.bridge
    m.sae.eval()

    def splice(act: torch.Tensor, hook=None) -> torch.Tensor:  # noqa: ANN001 - TransformerLens hook signature
        x = act.float() * scale  # (n, L, d) normalised
        flat = x.reshape(-1, x.shape[-1])
        recon = (m.sae.decode(inference_encode(m.sae, arch, flat)) / scale).reshape(act.shape).to(act.dtype)
        return torch.where(splice_at.unsqueeze(-1), recon, act)

    def ablate(act: torch.Tensor, hook=None) -> torch.Tensor:  # noqa: ANN001
        return torch.where(splice_at.unsqueeze(-1), torch.zeros_like(act), act)

    if not lm.is_causal_lm:
        final = f"blocks.{bridge.cfg.n_layers - 1}.hook_resid_post"
        got: dict[str, torch.Tensor] = {}

        def grab(key: str):  # noqa: ANN202
            def fn(act: torch.Tensor, hook=None) -> torch.Tensor:  # noqa: ANN001
                got[key] = act.detach().float()
                return act

            return fn

        bridge.run_with_hooks(tokens, attention_mask=attn, fwd_hooks=[(final, grab("clean"))])
        bridge.run_with_hooks(tokens, attention_mask=attn, fwd_hooks=[(hook, splice), (final, grab("sae"))])
        w = attn.unsqueeze(-1).float()
        pooled = {k: (v * w).sum(1) / w.sum(1).clamp(min=1) for k, v in got.items()}  # (n, d)
        cos = torch.nn.functional.cosine_similarity(pooled["clean"], pooled["sae"], dim=-1)
        return {"embedding_cosine": float(cos.mean()), "n_seqs": int(len(tokens))}

    def ce_and_logp(fwd_hooks: list) -> tuple[float, torch.Tensor]:
        logits = bridge.run_with_hooks(tokens, attention_mask=attn, fwd_hooks=fwd_hooks).float()  # (n, L, V)
        logp = logits.log_softmax(-1)[:, :-1]
        valid = (attn[:, :-1] * attn[:, 1:]).bool()
        nll = -logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
        return float(nll[valid].mean()), logp[valid]

    ce_clean, lp_clean = ce_and_logp([])
    ce_sae, lp_sae = ce_and_logp([(hook, splice)])
    ce_abl, _ = ce_and_logp([(hook, ablate)])
    kl = float((lp_clean.exp() * (lp_clean - lp_sae)).sum(-1).mean())
    denom = ce_abl - ce_clean
    return {
        "ce_clean": ce_clean,
        "ce_sae": ce_sae,
        "ce_ablated": ce_abl,
        "ce_recovered": (ce_abl - ce_sae) / denom if denom else float("nan"),
        "kl_div": kl,
        "n_seqs": int(len(tokens)),
    }
