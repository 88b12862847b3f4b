"""The criteria registry: what a criterion declares, what it is given, what it returns, and the ordered list of them.

A criterion is one module of `features.criteria` that defines `CRITERION = Criterion(...)`: its number and name
(C3 "function"), the TOML section of its settings (a `Settings` subclass), whether it gates `well_defined` or is a
tag, the `Column`s it writes to features.parquet and the `Dataset`s it writes to examples.h5, how each row of the
viewer's verdict table reads (`VerdictRow`), and a compute function from the streaming pass's inputs (`Context`)
to its columns (`Outcome`). `criteria()` finds every such module of the package (no list to edit) plus those added
with `register` (tests, plugins), ordered by number. Everything else follows from the declarations: the definition
file's sections, `xenofeat definition show`, the store's schema and STORE.md, `score`'s loop, the flag's
`well_defined`, and the viewer's "every criterion against its threshold" table.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from features.columns import Column, Dataset


@dataclass(frozen=True)
class VerdictRow:
    """One row of the viewer's verdict table: a value against a threshold, and its verdict.

    The threshold is a setting of the criterion's section (`setting`) or another column of the row (`column`). The
    verdict is read from the boolean column `verdict` when given (pass / fail, or tagged / – for a tag rule, one
    whose `rule` starts with "tag"); otherwise it is the comparison `rule` of value and threshold.
    """

    quantity: str
    value: str
    rule: str
    setting: str | None = None
    column: str | None = None
    verdict: str | None = None
    label: str | None = None
    """Criterion label shown instead of the criterion's own (e.g. "C3 function (model)")."""


@dataclass
class Context:
    """What the streaming pass leaves for the criteria (read-only for them, except `results` and `partner`, which
    the scorer fills in as criteria finish)."""

    acts: sp.csc_matrix
    """(T, F) float32 codes of the reference SAE, T = n_seq * L flat positions, masked rows empty."""
    doc_ids: np.ndarray
    """(T,) document id of every flat position."""
    tokens: np.ndarray
    """(n_seq, L) token ids of the scored sequences."""
    mask: np.ndarray
    """(n_seq, L) bool, True = excluded."""
    n_tokens: int
    """Unmasked tokens scored."""
    enc: np.ndarray
    """(F, d) encoder rows of the reference SAE (W_enc.T)."""
    dec: np.ndarray
    """(F, d) decoder rows of the reference SAE."""
    others: list[tuple[np.ndarray, np.ndarray]]
    """(encoder rows, decoder rows) of every other seed's SAE."""
    seeds: list[int]
    """Seeds of the ensemble, the reference first."""
    function: Any
    """`features.criteria.function.FunctionAccumulator` of the pass (C3's streamed sums)."""
    hook: str
    """Hook the cache was read at."""
    load_model: Callable[[], tuple[Any, str | None]]
    """(model, None) with the model the cache came from loaded, or (None, why it cannot be)."""
    partner: np.ndarray | None = None
    """(F,) antipodal partner of each latent or -1 (from C1; None before it ran)."""
    results: dict[str, Any] = field(default_factory=dict)
    """Typed results of the criteria that already ran, by name."""
    cache_path: Path | None = None
    """The cache scored, for criteria that need more of it than the pass's arrays (its metadata: C7's random network
    of the model it came from); None when the scorer has no file (tests on arrays)."""

    @property
    def n_latents(self) -> int:
        return int(self.dec.shape[0])


@dataclass(frozen=True)
class Outcome:
    """What a criterion's compute returns."""

    columns: Mapping[str, np.ndarray]
    """(F,) arrays by column name: exactly the criterion's declared columns."""
    result: Any
    """The criterion's typed result (e.g. `StabilityResult`), kept for later criteria as `Context.results`."""
    summary: Mapping[str, Any] = field(default_factory=dict)
    """SAE-level values for summary.json (top level)."""
    sae_summary: Mapping[str, Any] = field(default_factory=dict)
    """SAE-level values for summary.json's `sae` table."""
    datasets: Mapping[str, np.ndarray] = field(default_factory=dict)
    """examples.h5 datasets by path: exactly the criterion's declared datasets."""
    partner: np.ndarray | None = None
    """The antipodal pairing (C1 only): later criteria judge a pair as one signed feature."""


@dataclass(frozen=True)
class Criterion:
    """One criterion of the definition (see the module docstring)."""

    number: int
    """Its place: C1 runs first; the order of sections, columns and verdict rows."""
    name: str
    """Short name, also the TOML section of its settings and the `criterion:<name>` column owner."""
    title: str
    """Display title, e.g. "description length"."""
    config: type
    """The `activations.settings.Settings` subclass of its section."""
    gates: bool
    """True: `well_defined` needs its pass column; False: a tag."""
    columns: tuple[Column, ...]
    compute: Callable[[Context, Any], Outcome]
    verdicts: tuple[VerdictRow, ...] = ()
    datasets: tuple[Dataset, ...] = ()
    passes: str | None = None
    """The boolean column `well_defined` reads (gating criteria)."""
    needs: tuple[str, ...] = ()
    """Criteria whose results (`Context.results`) it reads; they must come earlier."""

    @property
    def label(self) -> str:
        return f"C{self.number} {self.title}" + ("" if self.gates else " (tag)")

    def __post_init__(self) -> None:
        if self.gates and self.passes not in {c.name for c in self.columns}:
            raise ValueError(f"criterion {self.name}: gates well_defined but declares no pass column")


_ADDED: dict[str, Criterion] = {}


def register(criterion: Criterion) -> Criterion:
    """Add a criterion defined outside this package (a test, a plugin); `unregister` removes it."""
    if criterion.name in {c.name for c in criteria()}:
        raise ValueError(f"criterion {criterion.name!r} is already registered")
    _ADDED[criterion.name] = criterion
    return criterion


def unregister(name: str) -> None:
    """Remove a criterion added with `register`."""
    _ADDED.pop(name, None)


def _package_criteria() -> list[Criterion]:
    """The `CRITERION` of every module of this package."""
    import features.criteria as pkg

    found = []
    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        crit = getattr(module, "CRITERION", None)
        if isinstance(crit, Criterion):
            found.append(crit)
    return found


def criteria() -> tuple[Criterion, ...]:
    """Every criterion, in order of number (checked: unique names and numbers, `needs` satisfied earlier)."""
    found = sorted(_package_criteria() + list(_ADDED.values()), key=lambda c: c.number)
    seen: set[str] = set()
    numbers: set[int] = set()
    for c in found:
        if c.name in seen or c.number in numbers:
            raise ValueError(f"criterion {c.name!r} (C{c.number}) clashes with another's name or number")
        missing = [n for n in c.needs if n not in seen]
        if missing:
            raise ValueError(f"criterion {c.name!r} needs {', '.join(missing)} to run before it")
        seen.add(c.name)
        numbers.add(c.number)
    return tuple(found)


def gating() -> tuple[Criterion, ...]:
    """The criteria `well_defined` needs, in order."""
    return tuple(c for c in criteria() if c.gates)


def pass_columns() -> tuple[str, ...]:
    """The boolean columns `well_defined` is the conjunction of (C1-C4 by default)."""
    return tuple(c.passes for c in gating() if c.passes is not None)
