"""The composition describer: one sparse L1-logistic rule over the window features of every describer that offers
them, so descriptions that combine kinds ("token `(` within 3 positions of the start": a token feature and a
position feature) are expressible, still with at most `rule_max_terms` readable terms.

A describer offers features by the OPTIONAL method

    window_features(self, sample: LatentSample, data: PassData, state) -> tuple[scipy.sparse.csr_matrix, list[str]]

returning an (n_windows, m) matrix over all of the sample's windows (whatever it learns, it learns from the train
windows only: `sample.train`) and one readable name per column. The rule describer offers its current/previous
token, bigram and bag features. The rule is fit by the rule describer's own code (`rule.fit_sparse_rule`: screening,
then the weakest L1 penalty within the term budget). Terms read `name: feature` (`rule: cur='('`).

Providers' pass-wide states come from their own `prepare`, called by this describer's `prepare` (a describer only
ever sees its own state), so a provider with a costly `prepare` is prepared twice per pass: keep it cheap, or make
the features not need it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from features.columns import Column
from features.labelability.registry import (
    Describer,
    Description,
    LatentSample,
    PassData,
    auroc_column,
    registered_describers,
)
from features.labelability.rule import fit_sparse_rule, rule_readable


def feature_providers(exclude: str) -> tuple[Describer, ...]:
    """The registered describers (other than `exclude`) that offer `window_features`, in tie order."""
    return tuple(
        d
        for d in registered_describers()
        if d.name != exclude and callable(getattr(d, "window_features", None))
    )


def composed_features(
    providers: tuple[Describer, ...], states: dict[str, Any], sample: LatentSample, data: PassData
) -> tuple[sp.csr_matrix, list[str]]:
    """Every provider's window features side by side (n_windows, sum m), names prefixed with the provider's name."""
    blocks, names = [], []
    n = len(sample.centre)
    for d in providers:
        x, cols = d.window_features(sample, data, states.get(d.name))  # type: ignore[attr-defined]
        x = sp.csr_matrix(x, dtype=np.float64)
        if x.shape != (n, len(cols)):
            raise ValueError(
                f"describer {d.name}: window_features returned {x.shape} with {len(cols)} names for {n} windows"
            )
        blocks.append(x)
        names += [f"{d.name}: {c}" for c in cols]
    if not blocks:
        return sp.csr_matrix((n, 0)), []
    return sp.csr_matrix(sp.hstack(blocks, format="csr")), names


class ComposeDescriber:
    """A sparse rule over the window features of all describers together (token, position, properties, ...)."""

    name = "compose"
    tie_order = 9
    summary = "sparse rule over the features of all describers together"
    cheap = False

    def prepare(self, data: PassData) -> dict[str, Any]:
        return {d.name: d.prepare(data) for d in feature_providers(self.name)}

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        cfg, tr = data.cfg, sample.train
        providers = tuple(d for d in feature_providers(self.name) if d.name in state)
        x, names = composed_features(providers, state, sample, data)
        fit = fit_sparse_rule(
            x[tr],
            sample.label[tr],
            x[~tr],
            names,
            max_terms=cfg.rule_max_terms,
            screen=cfg.rule_screen,
            c_steps=cfg.rule_c_steps,
            c_start=cfg.rule_c_start,
            intercept_scaling=cfg.rule_intercept_scaling,
        )
        return Description(test_scores=fit.test_scores, readable=rule_readable(fit.terms))

    def columns(self) -> list[Column]:
        return [auroc_column(self)]


DESCRIBER = ComposeDescriber()
