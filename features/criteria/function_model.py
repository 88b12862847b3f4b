"""C3 with the model at hand: each latent's effect on the model's output, by attribution patching.

One forward and one backward pass over a sample of cached sequences give g_t = d metric / d x_t at the hook for
every token t. Removing latent i at token t moves x_t by -a_ti d_i, so to first order the metric moves by
-a_ti (g_t . d_i) (AtP: Syed et al. 2023; Kramár et al. 2024). A latent's effect is the mean |a_ti g_t . d_i| over the
tokens where it fires; the null puts a random unit direction of the same norm, a_ti ||d_i|| u, at the same tokens.
The latent passes when its effect exceeds the null's quantile.

The metric must have a non-zero gradient at the clean point (a KL to the clean output has none):
- causal LMs: the mean next-token log-likelihood;
- encoders (MiniLM, whose masked-LM head is untrained): the projection of each sequence's mean-pooled final-layer
  embedding on its own clean value, <e(x), e_clean> / ||e_clean||^2 (1 at the clean point, linear in e).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from features.criteria.registry import Context


@dataclass(frozen=True)
class ModelFunctionResult:
    """Per-latent attribution effect on the model's output and its random-direction null."""

    effect: np.ndarray  # (F,) mean |a g.d| over firing tokens in the sample (nan where it never fires there)
    null_q: np.ndarray  # (F,) the null's quantile
    passes: np.ndarray  # (F,) bool
    n_tokens: int  # tokens in the sample
    metric: str  # which output metric


def output_gradients(
    model: Any, hook: str, tokens: np.ndarray, attention: np.ndarray
) -> tuple[np.ndarray, str]:  # noqa: ANN401
    """d metric / d activation at `hook` for every token: tokens, attention (n, L) -> (n, L, d) float32, metric name.

    `model` is an `activations.model.LoadedModel`.
    """
    bridge = model.bridge
    toks = torch.from_numpy(tokens.astype(np.int64))  # (n, L)
    attn = torch.from_numpy(attention.astype(np.int64))  # (n, L)
    held: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, hook=None) -> torch.Tensor:  # noqa: ANN001 - TransformerLens hook signature
        leaf = act.detach().requires_grad_(True)  # a leaf, so its .grad is d metric / d activation
        held["x"] = leaf
        return leaf

    last = f"blocks.{model.n_layers - 1}.hook_resid_post"

    def keep_last(act: torch.Tensor, hook=None) -> torch.Tensor:  # noqa: ANN001
        held["final"] = act
        return act

    with torch.enable_grad():
        logits = bridge.run_with_hooks(toks, attention_mask=attn, fwd_hooks=[(hook, grab), (last, keep_last)])
        if model.is_causal_lm:
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (n, L-1, vocab)
            ll = logp.gather(-1, toks[:, 1:, None]).squeeze(-1)  # (n, L-1)
            pair = (attn[:, 1:] * attn[:, :-1]).float()
            metric, name = (ll * pair).sum() / pair.sum(), "next-token log-likelihood"
        else:
            w = attn.unsqueeze(-1).float()  # (n, L, 1)
            pooled = (held["final"] * w).sum(1) / w.sum(1)  # (n, d)
            clean = pooled.detach()
            metric = ((pooled * clean).sum(-1) / clean.pow(2).sum(-1)).sum()
            name = "pooled-embedding projection"
        metric.backward()
    return held["x"].grad.float().numpy(), name


def model_function(
    acts: sp.csr_matrix,
    grads: np.ndarray,
    W_dec: np.ndarray,
    *,
    n_null: int,
    quantile: float,
    seed: int,
    metric: str,
) -> ModelFunctionResult:
    """Effects from the sample's codes `acts` (T, F), gradients `grads` (T, d) and decoder rows `W_dec` (F, d)."""
    acts = sp.csr_matrix(acts)
    n_latents = W_dec.shape[0]
    rows = np.repeat(np.arange(acts.shape[0]), np.diff(acts.indptr))  # (nnz,) token of each nonzero
    cols, vals = acts.indices, acts.data.astype(np.float64)  # (nnz,)
    count = np.bincount(cols, minlength=n_latents).astype(np.float64)  # (F,)
    dots = np.einsum("nd,nd->n", grads[rows], W_dec[cols])  # (nnz,) g_t . d_i
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = np.bincount(cols, weights=np.abs(vals * dots), minlength=n_latents) / count
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n_null, grads.shape[1]))
    u /= np.linalg.norm(u, axis=1, keepdims=True)  # (K, d) unit directions
    proj = grads @ u.T  # (T, K)
    scale = np.abs(vals) * np.linalg.norm(W_dec, axis=1)[cols]  # (nnz,) a_ti ||d_i||
    null = np.stack(
        [np.bincount(cols, weights=scale * np.abs(proj[rows, k]), minlength=n_latents) for k in range(n_null)]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        null /= count  # (K, F)
    null_q = np.quantile(null, quantile, axis=0)
    passes = (count > 0) & (effect > null_q)
    return ModelFunctionResult(
        effect, null_q, np.nan_to_num(passes, nan=False).astype(bool), acts.shape[0], metric
    )


def model_effect(ctx: Context, model: Any, cfg: Any) -> ModelFunctionResult:  # noqa: ANN401
    """C3 with the loaded `model` on the first `cfg.model_seqs` scored sequences (cfg: `FunctionConfig`)."""
    n = min(cfg.model_seqs, int(ctx.tokens.shape[0]))
    L = ctx.tokens.shape[1]
    attention = ctx.doc_ids.reshape(ctx.tokens.shape)[:n] >= 0
    grads, metric = output_gradients(model, ctx.hook, ctx.tokens[:n], attention)
    return model_function(ctx.acts[: n * L].tocsr(), grads.reshape(n * L, -1), ctx.dec, n_null=cfg.n_null,
                          quantile=cfg.null_quantile, seed=cfg.seed, metric=metric)  # fmt: skip
