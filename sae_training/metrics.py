"""Reconstruction metrics of an SAE, as pure functions and a streaming accumulator (float64 sums).

Explained variance is the conventional one (sae-lens >= 6.x, PR #665): 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2,
with the mean over all tokens seen, so a batch-wise and a streamed computation agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def batch_metrics(x: torch.Tensor, x_hat: torch.Tensor, l0_per_token: torch.Tensor) -> dict[str, float]:
    """Explained variance, MSE (summed over d, mean over tokens) and L0 of one batch x, x_hat (n, d)."""
    x, x_hat = x.double(), x_hat.double()
    sse = (x - x_hat).pow(2).sum()
    tot = (x - x.mean(0)).pow(2).sum()
    return {
        "explained_variance": float(1 - sse / tot),
        "mse": float(sse / len(x)),
        "l0": float(l0_per_token.double().mean()),
    }


@dataclass
class ReconstructionStats:
    """Streams (x, x_hat, feature activations) batches; `result()` gives metrics over all of them."""

    d_sae: int
    n: int = 0
    sse: float = 0.0
    sum_x: torch.Tensor | None = None  # (d,) float64
    sum_sq: float = 0.0
    l0_sum: float = 0.0
    fired: torch.Tensor = field(default=None)  # type: ignore[assignment]  # (d_sae,) float64 firing counts

    def __post_init__(self) -> None:
        if self.fired is None:
            self.fired = torch.zeros(self.d_sae, dtype=torch.float64)

    def add(self, x: torch.Tensor, x_hat: torch.Tensor, acts: torch.Tensor) -> None:
        """x, x_hat (n, d); acts (n, d_sae) feature activations, on any device (the sums are kept on the CPU)."""
        x, x_hat = x.double(), x_hat.double()
        self.n += len(x)
        self.sse += float((x - x_hat).pow(2).sum())
        s = x.sum(0).cpu()
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.sum_sq += float(x.pow(2).sum())
        on = acts != 0
        self.l0_sum += float(on.sum())
        self.fired += on.sum(0).double().cpu()

    def result(self) -> dict[str, float]:
        """explained_variance, mse (per token, summed over d), l0, heldout_dead_fraction, eval_tokens."""
        if self.n == 0 or self.sum_x is None:
            raise ValueError("no tokens were added")
        tot = self.sum_sq - float(self.sum_x.pow(2).sum()) / self.n  # sum ||x - mean||^2
        return {
            "explained_variance": 1.0 - self.sse / tot,
            "mse": self.sse / self.n,
            "l0": self.l0_sum / self.n,
            "heldout_dead_fraction": float((self.fired == 0).double().mean()),
            "eval_tokens": self.n,
        }

    def log10_density(self) -> torch.Tensor:
        """(d_sae,) float32 log10 of each latent's firing fraction + 1e-10 (sae-lens's sparsity.safetensors)."""
        return torch.log10(self.fired / max(self.n, 1) + 1e-10).float()
