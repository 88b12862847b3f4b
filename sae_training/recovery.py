"""Recovery of planted ground truth: how well an SAE's decoder rows find the planted feature directions.

- MCC: mean cosine of the Hungarian matching of planted directions to decoder rows (each planted feature gets its
  own latent), the yardstick of recovery (we aim for >= 0.9 at the planted L0);
- matched fraction: the share of planted features whose matched latent has cosine >= `threshold` (0.9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sae_training.matching import match_rows


@dataclass(frozen=True)
class Recovery:
    """Recovery of one SAE against planted directions."""

    mcc: float  # mean matched cosine over planted features
    matched_fraction: float  # planted features matched at cosine >= threshold
    similarity: np.ndarray  # (n_planted,) matched cosine of each planted feature
    partner: np.ndarray  # (n_planted,) matched latent of each planted feature


def recovery(decoder: np.ndarray, planted: np.ndarray, *, threshold: float = 0.9) -> Recovery:
    """decoder (d_sae, d) rows vs planted (n_features, d) directions (signed cosine; planted rows need d_sae >= n)."""
    m = match_rows(np.asarray(planted, np.float32), np.asarray(decoder, np.float32))
    sim = np.nan_to_num(m.similarity, nan=0.0)
    return Recovery(float(sim.mean()), float((sim >= threshold).mean()), sim, m.partner)
