"""The token describer: P(fire | current token), smoothed towards the latent's base rate.

In the main pass the look-up table comes from the pass-wide firing table over every train-document token
(`windows.token_tables`, one sparse matmul for all latents), a better estimate than the sampled windows alone; in the
shuffled control it is fit on the sampled train windows (the pass-wide table carries the real labels). For a dense
latent labelled by its activation value the table counts its top-quantile firings instead. It is the
cheap describer: its train AUROC decides whether the costly ones run (`[labelability] prune`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from features.columns import Column
from features.labelability.registry import Description, LatentSample, PassData, auroc_column


def token_scores(
    fire: np.ndarray, count: np.ndarray, base_rate: float, tok: np.ndarray, alpha: float
) -> np.ndarray:
    """Smoothed P(fire | token) for token ids `tok` (n,): (k + alpha * base) / (n_tok + alpha); -1 gets the base."""
    safe = np.maximum(tok, 0)
    p = (fire[safe] + alpha * base_rate) / (count[safe] + alpha)
    return np.where(tok >= 0, p, base_rate)


def fit_token_from_windows(
    tok: np.ndarray, label: np.ndarray, vocab_size: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """(fire, count, base_rate) of a look-up table fit on sampled windows only (used by the shuffled control)."""
    keep = tok >= 0
    count = np.bincount(tok[keep], minlength=vocab_size)
    fire = np.bincount(tok[keep & label], minlength=vocab_size)
    return fire, count, float(label.mean()) if len(label) else 0.0


def token_readable(fire: np.ndarray, count: np.ndarray, vocab: list[str], top: int = 5) -> str:
    """The tokens with the highest empirical P(fire | token) among those it fires on, e.g. `'the' 0.93 (14/15)`."""
    cand = np.flatnonzero(fire > 0)
    if len(cand) == 0:
        return "no firing token in train documents"
    p = fire[cand] / count[cand]
    order = np.lexsort((-fire[cand], -p))[:top]  # by P, then by support
    return ", ".join(
        f"{vocab[t]!r} {p[i]:.2f} ({fire[t]}/{count[t]})" for i, t in zip(order, cand[order], strict=True)
    )


class TokenDescriber:
    """P(fire | current token): the simplest description, first in a tie."""

    name = "token"
    tie_order = 0
    summary = "P(fire | current token)"
    cheap = True

    def prepare(self, data: PassData) -> None:
        return None

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        cur, tr, y = sample.windows[:, -1], sample.train, sample.label
        if sample.shuffled:
            fire, count, base = fit_token_from_windows(cur[tr], y[tr], len(data.vocab))
        else:  # the positives' rate over train tokens: the firing rate, or the top quantiles' (activation target)
            fire, count = sample.token_fire, data.tables.count
            base = float(fire.sum() / max(count.sum(), 1))
        scores = token_scores(fire, count, base, cur, data.cfg.token_smoothing)
        return Description(
            test_scores=scores[~tr], readable=token_readable(fire, count, data.vocab), train_scores=scores[tr]
        )

    def columns(self) -> list[Column]:
        return [auroc_column(self)]


DESCRIBER = TokenDescriber()
