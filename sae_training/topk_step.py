"""A fast TopK training forward pass with the mathematics of sae-lens's `TopKTrainingSAE.training_forward_pass`.

sae-lens decodes TopK activations with a dense (batch, d_sae) @ (d_sae, d_in) matmul, and autograd then runs two
more dense matmuls of that size through the encoder. Only k of d_sae activations per token are non-zero, so here:

- the encoder's pre-activations are computed once, densely, without autograd (the only dense matmul);
- the selected pre-activations re-enter autograd through `_SelectedPreacts`, whose backward is sparse: the input
  gradient is an `embedding_bag` over the selected encoder columns, the weight gradient an `index_add` of k rows per
  token;
- the decode is an `embedding_bag` over the selected decoder rows (the same for the AuxK loss over dead latents).

On a GPU (any device but the CPU) the backward is dense instead: the selected gradients are scattered into a
(batch, d_sae) matrix and the weight, bias and input gradients are matmuls and a column sum. Dense GEMMs are cheap
there, and every kernel involved is deterministic (cuBLAS with a fixed workspace, see activations/devices.py),
whereas CUDA's sparse-dense `sparse.mm` (cuSPARSE) promises no bit-reproducibility; `index_add_` would need
deterministic mode's sorting kernel. Both backwards compute the same sums in different orders (tested on the CPU).

Losses are sae-lens's: MSE summed over d_in, averaged over tokens, plus the AuxK loss (Gao et al. 2024, App. B.1:
k_aux = d_in // 2 dead latents reconstruct the residual, scaled by min(n_dead / k_aux, 1)). tests/sae_training/test_training_step.py
checks loss and gradients against sae-lens on the same weights and batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sae_lens.saes.topk_sae import TopKTrainingSAE


class _SelectedPreacts(torch.autograd.Function):
    """values[b, j] = x[b] @ W_enc[:, idx[b, j]] + b_enc[idx[b, j]], given precomputed; sparse backward."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, idx, values, dense):  # noqa: ANN001, ANN205 - autograd signature
        ctx.save_for_backward(x, W_enc, idx)
        ctx.d_sae = b_enc.shape[0]
        ctx.dense = dense
        return values.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205 - autograd signature
        x, W_enc, idx = ctx.saved_tensors  # x (B, d_in), W_enc (d_in, d_sae), idx (B, k)
        if ctx.dense:
            return (*_dense_backward(ctx, x, W_enc, idx, grad), None, None, None)
        flat = idx.reshape(-1)  # (B*k,)
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            # sum_j grad[b, j] * W_enc[:, idx[b, j]]; embedding_bag is ~30x slower on a transposed (strided) weight
            grad_x = F.embedding_bag(
                idx, W_enc.t().contiguous(), per_sample_weights=grad, mode="sum"
            )  # (B, d_in)
        if ctx.needs_input_grad[1]:
            # column idx[b, j] of W_enc gets grad[b, j] * x[b]: a (d_sae, B) sparse matrix times x
            batch = torch.arange(idx.shape[0], device=idx.device).repeat_interleave(idx.shape[1])  # (B*k,)
            g_sparse = torch.sparse_coo_tensor(
                torch.stack([flat, batch]),
                grad.reshape(-1),
                (ctx.d_sae, idx.shape[0]),
                check_invariants=False,
            )
            grad_W = torch.sparse.mm(g_sparse, x).t()  # (d_in, d_sae)
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(ctx.d_sae, dtype=grad.dtype, device=grad.device).index_add_(
                0, flat, grad.reshape(-1)
            )
        return grad_x, grad_W, grad_b, None, None, None


def _dense_backward(ctx, x, W_enc, idx, grad):  # noqa: ANN001, ANN202 - see _SelectedPreacts.backward
    """The gradients of x, W_enc and b_enc through a dense (B, d_sae) matrix; the GPU path (module docstring)."""
    # the k indices of a row are distinct (topk), so the scatter writes each entry once
    g = torch.zeros(idx.shape[0], ctx.d_sae, dtype=grad.dtype, device=grad.device).scatter_(1, idx, grad)
    grad_x = g @ W_enc.t() if ctx.needs_input_grad[0] else None  # (B, d_in)
    grad_W = x.t() @ g if ctx.needs_input_grad[1] else None  # (d_in, d_sae)
    grad_b = g.sum(0) if ctx.needs_input_grad[2] else None  # (d_sae,)
    return grad_x, grad_W, grad_b


@dataclass
class TopKStepOutput:
    """What one fast TopK forward pass returns."""

    loss: torch.Tensor  # scalar, with the autograd graph
    losses: dict[str, torch.Tensor]  # "mse_loss", "auxiliary_reconstruction_loss" (detached scalars)
    sae_out: torch.Tensor  # (B, d_in) reconstruction, detached
    idx: torch.Tensor  # (B, k) int64 selected latents
    acts: torch.Tensor  # (B, k) their activations (>= 0), detached


def topk_forward(
    sae: TopKTrainingSAE,
    x: torch.Tensor,
    dead_mask: torch.Tensor | None,
    *,
    dense_backward: bool | None = None,
) -> TopKStepOutput:
    """Loss of `sae` on a normalised batch x (B, d_in), as sae-lens computes it, with sparse decode and backward.

    `dense_backward`: the GPU backward (default: on any device but the CPU; see the module docstring)."""
    cfg = sae.cfg
    if dense_backward is None:
        dense_backward = sae.W_enc.device.type != "cpu"
    W_enc, b_enc, W_dec, b_dec = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec
    x = x.to(W_enc.dtype)
    x_c = x - b_dec * cfg.apply_b_dec_to_input  # (B, d_in), in the graph through b_dec
    norms = W_dec.norm(dim=-1) if cfg.rescale_acts_by_decoder_norm else None  # (d_sae,)
    with torch.no_grad():
        pre = torch.addmm(b_enc, x_c, W_enc)  # (B, d_sae): the one dense matmul
        hidden = pre * norms if norms is not None else pre
        idx = hidden.topk(cfg.k, dim=-1, sorted=False).indices  # (B, k)
    pre_sel = _SelectedPreacts.apply(x_c, W_enc, b_enc, idx, pre.gather(1, idx), dense_backward)  # (B, k)
    hid_sel = pre_sel * norms[idx] if norms is not None else pre_sel
    acts = hid_sel.relu()  # (B, k)
    weights = acts / norms[idx] if norms is not None else acts
    sae_out = F.embedding_bag(idx, W_dec, per_sample_weights=weights, mode="sum") + b_dec  # (B, d_in)
    mse = (sae_out - x).pow(2).sum(-1).mean()
    losses = {"mse_loss": mse}
    aux = _aux_loss(sae, x, sae_out, pre, hidden, x_c, norms, dead_mask, dense_backward)
    loss = mse + aux if aux is not None else mse
    losses["auxiliary_reconstruction_loss"] = aux if aux is not None else mse.new_tensor(0.0)
    return TopKStepOutput(
        loss=loss,
        losses={k: v.detach() for k, v in losses.items()},
        sae_out=sae_out.detach(),
        idx=idx,
        acts=acts.detach(),
    )


def _aux_loss(
    sae: TopKTrainingSAE,
    x: torch.Tensor,
    sae_out: torch.Tensor,
    pre: torch.Tensor,
    hidden: torch.Tensor,
    x_c: torch.Tensor,
    norms: torch.Tensor | None,
    dead_mask: torch.Tensor | None,
    dense_backward: bool = False,
) -> torch.Tensor | None:
    """sae-lens's AuxK loss: the top k_aux dead latents (values not rectified) reconstruct the live residual."""
    if dead_mask is None:
        return None
    dead = dead_mask.nonzero().squeeze(1)  # (n_dead,)
    n_dead = int(dead.numel())
    if n_dead == 0:
        return None
    k_aux = x.shape[-1] // 2
    scale = min(n_dead / k_aux, 1.0)
    k_aux = min(k_aux, n_dead)
    with torch.no_grad():
        local = hidden[:, dead].topk(k_aux, dim=-1, sorted=False).indices  # (B, k_aux)
        idx = dead[local]  # (B, k_aux) latent ids
    pre_sel = _SelectedPreacts.apply(x_c, sae.W_enc, sae.b_enc, idx, pre.gather(1, idx), dense_backward)
    vals = pre_sel * norms[idx] if norms is not None else pre_sel
    weights = vals / norms[idx] if norms is not None else vals
    recons = F.embedding_bag(idx, sae.W_dec, per_sample_weights=weights, mode="sum")  # (B, d_in), no bias
    residual = (x - sae_out).detach()
    return sae.cfg.aux_loss_coefficient * scale * (recons - residual).pow(2).sum(-1).mean()
