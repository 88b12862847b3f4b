"""Our fast TopK step against sae-lens's own `training_forward_pass`: same loss terms and gradients."""

from __future__ import annotations

import pytest
import torch
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput

from sae_training.topk_step import topk_forward

torch.set_num_threads(1)


def _pair(dtype: str, rescale: bool) -> tuple[TopKTrainingSAE, TopKTrainingSAE]:
    torch.manual_seed(0)
    cfg = TopKTrainingSAEConfig(d_in=16, d_sae=64, k=4, dtype=dtype, rescale_acts_by_decoder_norm=rescale)
    a = TopKTrainingSAE(cfg)
    with torch.no_grad():  # move away from the symmetric init so every term is exercised
        for p in a.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b = TopKTrainingSAE(cfg)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("n_dead", [0, 3, 20])
@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 2e-5)])
def test_loss_and_grads_match_sae_lens(n_dead: int, rescale: bool, dtype: str, tol: float) -> None:
    ref, ours = _pair(dtype, rescale)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 16, generator=gen, dtype=ref.W_enc.dtype) + 0.3
    dead = torch.zeros(64, dtype=torch.bool)
    dead[torch.randperm(64, generator=gen)[:n_dead]] = True

    out_ref = ref.training_forward_pass(
        TrainStepInput(
            sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0, is_logging_step=False
        )
    )
    out_ref.loss.backward()
    out = topk_forward(ours, x, dead)
    out.loss.backward()

    assert out.losses["mse_loss"].item() == pytest.approx(out_ref.losses["mse_loss"].item(), rel=tol)
    aux_ref = out_ref.losses["auxiliary_reconstruction_loss"].item()
    assert out.losses["auxiliary_reconstruction_loss"].item() == pytest.approx(aux_ref, rel=tol, abs=tol)
    if n_dead:
        assert aux_ref > 0
    dense = torch.zeros_like(out_ref.feature_acts).scatter(1, out.idx, out.acts)
    torch.testing.assert_close(dense, out_ref.feature_acts.detach(), rtol=tol, atol=tol)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        g_ref, g = getattr(ref, name).grad, getattr(ours, name).grad
        assert g_ref.abs().max() > 0, name
        torch.testing.assert_close(g, g_ref, rtol=tol * 10, atol=tol * 10, msg=name)
