"""The describer registry: what a describer is (`Describer`), what it sees (`PassData`, `LatentSample`), what it
returns (`Description`), and the ordered set of registered describers LBL runs.

Like sae-lens's `register_sae_class` (and `features.exporters`'s FORMATS), a describer is registered by name; LBL, the
`auroc_<name>` columns, the store schema's LBL columns and the viewer's describer section all iterate this registry,
so none of them names a describer. `features.labelability` registers the built-in ones (token, rule, semantic).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from features.columns import Column
from features.labelability.config import LBLConfig
from features.labelability.windows import CacheIndex, TokenTables


@dataclass(frozen=True)
class PassData:
    """What every latent of one LBL pass shares (built once per pass, before any describer runs)."""

    index: CacheIndex
    """Per-position look-ups over the cache: tokens (-1 masked), position, document, train/test split."""
    tables: TokenTables
    """Firing counts per (token, latent) over train documents, for the latents of this pass."""
    vocab: list[str]
    """Readable name of each token id."""
    cfg: LBLConfig


@dataclass(frozen=True)
class LatentSample:
    """The sampled windows of one latent, as a describer sees them (positives and negatives, train and test)."""

    j: int
    """Column of the latent in the pass's tables (`PassData.tables`)."""
    centre: np.ndarray
    """(n,) int64 flat index of each window's centre into the cache (seq * L + pos)."""
    windows: np.ndarray
    """(n, window + 1) token ids before and at the centre (last column); -1 outside the sequence or masked."""
    label: np.ndarray
    """(n,) bool: the latent fires at the centre (permuted in the shuffled control)."""
    train: np.ndarray
    """(n,) bool: the centre's document is a train document (the rest are test windows)."""
    token_fire: np.ndarray
    """(V,) int64 counts of the latent's positives per token over all train documents (not only the sampled
    windows): its firings, or under the activation target its firings in the top quantiles."""
    shuffled: bool
    """True in the shuffled control: labels are permuted, so nothing fit on real labels may be used (the pass-wide
    `token_fire` and `tables` carry the real labels; fit on the train windows instead)."""
    target: str = "firing"
    """What `label` marks (the `lbl_target` column): "firing" (the latent fires at the centre) or "activation" (a
    dense latent: the centre is among its top activation quantiles; negatives are its bottom quantiles and
    non-firing windows). `token_fire` follows the target; `PassData.tables` counts firings whatever the target,
    so a describer that reads its `fire` column must not use it under "activation"."""


@dataclass(frozen=True)
class Description:
    """A describer's fit for one latent: its scores on the test windows (higher = "fires here") and what it says."""

    test_scores: np.ndarray
    """(n_test,) scores of the test windows, in the sample's order."""
    readable: str
    """The description in a form a person can check by hand (top tokens, a rule's terms, ...)."""
    train_scores: np.ndarray | None = None
    """(n_train,) scores of the train windows; required from cheap describers (pruning reads their train AUROC)."""


@runtime_checkable
class Describer(Protocol):
    """One way of describing when a latent fires; LBL = clip(2 * max over describers of test AUROC - 1, 0, 1)."""

    name: str
    """Short identifier: the `best_describer` value and the `auroc_<name>` column."""
    tie_order: int
    """Lower wins a tie of AUROCs (the simplest description first: token 0, rule 1, semantic 2)."""
    summary: str
    """One line for people: what the describer checks (shown by the viewer next to its AUROC)."""
    cheap: bool
    """Runs for every latent, and its train AUROC can prune (skip) the costly describers (`[labelability] prune`)."""

    def prepare(self, data: PassData) -> Any:  # noqa: ANN401 - whatever the describer keeps per pass
        """Pass-wide state computed once before any latent (e.g. embeddings of every window); None if none."""
        ...

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        """Fit on the sample's train windows, score its test windows. Must not draw random numbers from a shared
        generator: each latent's results must not depend on which describers ran before."""
        ...

    def columns(self) -> list[Column]:
        """The columns of features.parquet it owns (at least `auroc_column(self)`)."""
        ...

    # OPTIONAL, not part of the protocol (so `isinstance` does not require it): a describer may also define
    #     window_features(self, sample: LatentSample, data: PassData, state) -> tuple[scipy.sparse.csr_matrix, list[str]]
    # returning, for every window of the sample (train and test, in the sample's order), binary or real features
    # (n_windows, m) and a readable name per column ("seq_pos <= 3", "cur is capitalised", "doc like {pip, ...}"),
    # computed without the labels of test windows (anything fit is fit on the train windows only). A composing
    # describer runs a sparse rule over the `window_features` of every registered describer that has the method.


def auroc_column(d: Describer) -> Column:
    """The `auroc_<name>` column every describer owns."""
    return Column(
        f"auroc_{d.name}",
        "float64",
        f"held-out AUROC of the {d.name} describer ({d.summary}); NaN when pruned or not scored",
        f"describer:{d.name}",
    )


_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_REGISTRY: dict[str, Describer] = {}
"""Registered describers by name: the package's own (found by `_discover`) and any added by `register_describer`."""
_DISCOVERED: list[bool] = []
"""Non-empty once the package's describer modules have been read (discovery runs once per process, on first use)."""


def _discover() -> None:
    """Register every module of `features.labelability` that defines a module-level `DESCRIBER` (once): a new
    describer is one new module, with no list to edit."""
    if _DISCOVERED:
        return
    _DISCOVERED.append(True)
    pkg = importlib.import_module("features.labelability")
    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        describer = getattr(module, "DESCRIBER", None)
        if describer is not None and describer.name not in _REGISTRY:
            register_describer(describer)


def register_describer(describer: Describer, *, replace: bool = False) -> None:
    """Add a describer to the set LBL runs. Names are lower-case identifiers, unique, and not "none" (the
    `best_describer` of a latent that was not scored)."""
    _discover()
    if not isinstance(describer, Describer):
        raise TypeError(f"{describer!r} does not implement the Describer protocol")
    name = describer.name
    if not _NAME.match(name) or name == "none":
        raise ValueError(f"describer name {name!r} must be a lower-case identifier other than 'none'")
    if name in _REGISTRY and not replace:
        raise ValueError(f"describer {name!r} is already registered")
    _REGISTRY[name] = describer


def unregister_describer(name: str) -> Describer:
    """Remove a registered describer (tests, plug-ins that replace a built-in); returns it."""
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"no describer named {name!r} (registered: {', '.join(describer_names())})")
    return _REGISTRY.pop(name)


def registered_describers() -> tuple[Describer, ...]:
    """The registered describers in tie order (the order of their `auroc_<name>` columns)."""
    _discover()
    return tuple(sorted(_REGISTRY.values(), key=lambda d: (d.tie_order, d.name)))


def describer_names() -> tuple[str, ...]:
    """Names of the registered describers, in tie order."""
    return tuple(d.name for d in registered_describers())


def get_describer(name: str) -> Describer:
    """The registered describer called `name`."""
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"no describer named {name!r} (registered: {', '.join(describer_names())})")
    return _REGISTRY[name]
