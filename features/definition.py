"""The a priori feature definition WDF-v1: a frozen dataclass tree read from (and written back to) TOML.

A definition is declared before any feature is looked at and copied next to the results it produced. Every
threshold of the design's WDF-v1 table, the LBL-v1 settings (`features.labelability.LBLConfig`, by field name) and
the flag rule are values here. `load_definition(None)` is the built-in default (`default_definition.toml`, which is
exactly `definition_to_toml(Definition())`); a user's file may set any subset of keys, the rest take defaults.
Unknown sections or keys and out-of-range values raise `UserError` naming the file, the section and the key.
`definition_to_toml` writes every value (the definition *as applied*), with each field's docstring as a comment, and
`load_definition` of its output gives back an equal `Definition`.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import math
import textwrap
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from activations.errors import UserError

DEFAULT_PATH = Path(__file__).with_name("default_definition.toml")
_INF = math.inf


class RangeError(ValueError):
    """A config value outside its allowed range or of the wrong type (the loader turns it into a `UserError`)."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(f"{key} = {_toml_value(value)} {expected}")
        self.key, self.value, self.expected = key, value, expected


def _num(default: float, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Any:
    return field(default=default, metadata={"kind": float, "range": (lo, hi, lo_open, hi_open)})


def _int(default: int, lo: int, hi: float = _INF) -> Any:
    return field(default=default, metadata={"kind": int, "range": (lo, hi, False, False)})


def _choice(default: str, *choices: str) -> Any:
    return field(default=default, metadata={"kind": str, "choices": choices})


def _flag(default: bool) -> Any:
    return field(default=default, metadata={"kind": bool})


def _bounds(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    fmt = lambda v: "inf" if v == _INF else (str(int(v)) if float(v).is_integer() else repr(v))  # noqa: E731
    return f"{'(' if lo_open else '['}{fmt(lo)}, {fmt(hi)}{')' if hi_open or hi == _INF else ']'}"


class _Validated:
    """Mixin: checks every field against its metadata (kind, range, choices) in `__post_init__`."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value, meta = getattr(self, f.name), f.metadata
            kind = meta.get("kind")
            if kind is bool:
                if not isinstance(value, bool):
                    raise RangeError(f.name, value, "must be true or false")
            elif kind is str:
                if value not in meta["choices"]:
                    raise RangeError(f.name, value, f"must be one of {', '.join(meta['choices'])}")
            elif kind in (int, float):
                if isinstance(value, bool) or not isinstance(value, int if kind is int else int | float):
                    raise RangeError(f.name, value, f"must be {'an integer' if kind is int else 'a number'}")
                lo, hi, lo_open, hi_open = meta["range"]
                ok = math.isfinite(value) and (lo < value if lo_open else lo <= value)
                ok = ok and (value < hi if hi_open else value <= hi)
                if not ok:
                    raise RangeError(f.name, value, f"is out of range {_bounds(lo, hi, lo_open, hi_open)}")


@dataclass(frozen=True)
class SupportConfig(_Validated):
    """C1 support: the latent fires often enough, in enough documents; dense latents go the antipodal route."""

    min_firing_tokens: int = _int(200, 0)
    """Fewest firing tokens (delphi's min_examples)."""
    min_documents: int = _int(20, 0)
    """Fewest distinct documents the latent fires in."""
    max_density: float = _num(0.1, 0.0, 1.0, lo_open=True)
    """Above this firing rate a latent is dense and is paired with its antipodal partner (Sun et al. 2025)."""
    antipodal_score: float = _num(0.8, 0.0, 1.0, lo_open=True)
    """Least cos(enc_i, enc_j) * cos(dec_i, dec_j) (with cos(dec) < 0) for j to be i's antipodal partner."""


@dataclass(frozen=True)
class StabilityConfig(_Validated):
    """C2 stability: the latent is found again in SAEs trained with other seeds."""

    tau: float = _num(0.7, 0.0, 1.0, lo_open=True)
    """Matched similarity min(decoder cos, encoder cos) at which a latent counts as found in another seed."""
    min_stability: float = _num(0.5, 0.0, 1.0, lo_open=True)
    """Least fraction of the other seeds in which the latent must be found."""
    min_seeds: int = _int(2, 2, 1000)
    """Fewest SAEs in the ensemble, the reference included."""
    match_cos: str = _choice("mean", "mean", "min")
    """How the per-seed matched similarities are summarised in the `match_cos` column."""


@dataclass(frozen=True)
class FunctionConfig(_Validated):
    """C3 function: removing the latent raises reconstruction error more than a random direction would."""

    mode: str = _choice("offline", "offline", "model", "both")
    """Which test decides C3. offline: reconstruction error against a random-direction null; model: the latent's
    attribution effect on the model's output against the same kind of null (needs the model the cache came from);
    both: both must pass. The model effect is computed and stored whenever the model can be loaded."""
    model_seqs: int = _int(64, 1, 100_000)
    """Cached sequences used for the model-based effect (one forward and backward pass over them)."""
    n_null: int = _int(32, 2, 10_000)
    """Random unit directions in the null."""
    null_quantile: float = _num(0.95, 0.0, 1.0, lo_open=True, hi_open=True)
    """Quantile of the null the latent's error increase must exceed."""
    require_positive: bool = _flag(True)
    """Also require that removing the latent raises the error at all (delta SSE > 0)."""
    seed: int = _int(0, 0)
    """Seed of the null directions."""


@dataclass(frozen=True)
class MDLConfig(_Validated):
    """C4 description length (SAEBench form): bits saved in reconstruction >= the latent's own code length."""

    num_bins: int = _int(16, 2, 4096)
    """Equal-width bins on [0, max activation] for the entropy of the quantised activation."""


@dataclass(frozen=True)
class AtomicityConfig(_Validated):
    """C5 atomicity (tag): near-duplicate decoder rows, and rows composed of meta-SAE latents."""

    duplicate_cos: float = _num(0.9, 0.0, 1.0, lo_open=True)
    """Decoder cosine to another latent (not the antipodal partner) at which a latent is tagged duplicate."""
    metasae_width_ratio: float = _num(0.25, 0.0, 4.0, lo_open=True)
    """Meta-SAE width as a fraction of the number of latents (SAEBench: 0.25)."""
    metasae_k: int = _int(4, 1, 1024)
    """Active meta-latents per decoder row (BatchTopK k)."""
    metasae_recon_cos: float = _num(0.9, 0.0, 1.0, lo_open=True)
    """Cosine of a row with its meta-SAE reconstruction at which it is tagged composite."""
    metasae_min_latents: int = _int(2, 1, 1024)
    """Fewest active meta-latents in a composite reconstruction."""
    metasae_steps: int = _int(300, 1, 1_000_000)
    """Training steps of the meta-SAE (kept small: it runs on CPU)."""
    metasae_batch: int = _int(512, 1, 1 << 20)
    """Decoder rows per meta-SAE step."""
    metasae_lr: float = _num(1e-3, 0.0, 1.0, lo_open=True)
    """Adam learning rate of the meta-SAE."""
    seed: int = _int(0, 0)
    """Seed of the meta-SAE's initialisation and batches."""


@dataclass(frozen=True)
class GeometryConfig(_Validated):
    """C6 geometry (tag): clusters of decoder rows whose joint activations are irreducibly multi-dimensional."""

    top_k: int = _int(2, 1, 1000)
    """Neighbours per decoder row kept in the cluster graph (Engels et al.: 2)."""
    min_cos: float = _num(0.5, -1.0, 1.0)
    """Least decoder cosine of a kept neighbour."""
    min_size: int = _int(2, 2)
    """Smallest cluster scored."""
    max_size: int = _int(999, 2)
    """Largest cluster scored."""
    n_components: int = _int(5, 2, 64)
    """PCA components of the cluster reconstruction; adjacent pairs are scored."""
    separability_bits: float = _num(0.5, 0.0, 100.0)
    """Separability index S (bits) at which a cluster is tagged multi_d (irreducible)."""
    mixture_index: float = _num(0.4, 0.0, 1.0)
    """Mixture index M_eps at which a cluster is tagged mixture."""
    epsilon: float = _num(0.1, 0.0, 10.0, lo_open=True)
    """Half-width eps of the hyperplane slab of the mixture index, in units of the projection's RMS."""
    bins: int = _int(10, 2, 1000)
    """Histogram bins per axis for the mutual information of S."""
    n_angles: int = _int(100, 1, 100_000)
    """Rotations in [0, 2 pi) searched by S."""
    mixture_directions: int = _int(180, 1, 100_000)
    """Directions in [0, pi) searched by the mixture index."""
    mixture_offsets: int = _int(200, 1, 100_000)
    """Offsets per direction searched by the mixture index (quantiles of the projection)."""
    min_points: int = _int(2000, 10)
    """Fewest tokens on which a cluster fires for it to be scored (the MI estimate is biased below)."""
    max_points: int = _int(4096, 10)
    """Tokens sampled per cluster (cost bound)."""
    seed: int = _int(0, 0)
    """Seed of the token sample."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_size < self.min_size:
            raise RangeError("max_size", self.max_size, f"must be >= min_size ({self.min_size})")
        if self.max_points < self.min_points:
            raise RangeError("max_points", self.max_points, f"must be >= min_points ({self.min_points})")


@dataclass(frozen=True)
class FlagConfig(_Validated):
    """The flag: well defined (C1-C4) and resisting every describer, with enough held-out evidence."""

    max_lbl: float = _num(0.4, 0.0, 1.0, lo_open=True)
    """Labelability must be below this."""
    max_lbl_hi: float = _num(0.5, 0.0, 1.0, lo_open=True)
    """The bootstrap upper bound of labelability must be below this."""
    min_test_pos: int = _int(50, 0)
    """Fewest held-out positive windows behind the labelability score."""


def _default_lbl() -> Any:
    from features.labelability import LBLConfig

    return LBLConfig()


SECTIONS: dict[str, type] = {
    "support": SupportConfig,
    "stability": StabilityConfig,
    "function": FunctionConfig,
    "mdl": MDLConfig,
    "atomicity": AtomicityConfig,
    "geometry": GeometryConfig,
    "flag": FlagConfig,
}


@dataclass(frozen=True)
class Definition:
    """A whole feature definition: WDF-v1 criteria C1-C6, LBL-v1 settings and the flag rule."""

    name: str = "WDF-v1"
    """Name of the definition (reported with every result)."""
    version: int = 1
    """Version of the definition under that name."""
    support: SupportConfig = field(default_factory=SupportConfig)
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    function: FunctionConfig = field(default_factory=FunctionConfig)
    mdl: MDLConfig = field(default_factory=MDLConfig)
    atomicity: AtomicityConfig = field(default_factory=AtomicityConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    labelability: Any = field(default_factory=_default_lbl)
    """`features.labelability.LBLConfig`."""
    flag: FlagConfig = field(default_factory=FlagConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise RangeError("name", self.name, "must be a non-empty string")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise RangeError("version", self.version, "must be an integer >= 1")


SECTION_ORDER = ("support", "stability", "function", "mdl", "atomicity", "geometry", "labelability", "flag")


def _section_class(name: str) -> type:
    if name == "labelability":
        from features.labelability import LBLConfig

        return LBLConfig
    return SECTIONS[name]


def _build_section(src: str, name: str, table: Any) -> Any:
    cls = _section_class(name)
    if not isinstance(table, dict):
        raise UserError(f"{src}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in known:
            raise UserError(f"{src}: [{name}] unknown key '{key}' (known: {', '.join(known)})")
    kwargs = {}
    for key, value in table.items():
        default = known[key].default
        # TOML writes 1 for 1.0; a float field takes an integer value as a float
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except RangeError as err:
        raise UserError(f"{src}: [{name}] {err}") from None
    except ValueError as err:  # LBLConfig's messages start with the field name
        raise UserError(f"{src}: [{name}] {err}") from None


def definition_from_dict(data: dict[str, Any], src: str = "definition") -> Definition:
    """Build and validate a `Definition` from a parsed TOML document; `src` names the file in error messages."""
    top = {}
    sections = {}
    for key, value in data.items():
        if key in ("name", "version"):
            top[key] = value
        elif key in SECTION_ORDER:
            sections[key] = _build_section(src, key, value)
        else:
            raise UserError(f"{src}: unknown key '{key}' (known: name, version, {', '.join(SECTION_ORDER)})")
    try:
        return Definition(**top, **sections)
    except RangeError as err:
        raise UserError(f"{src}: {err}") from None


# The built-in definition is about 10 KB; a file beyond this is not a definition (and /dev/zero never ends).
MAX_DEFINITION_BYTES = 1 << 20


def _read_definition_text(path: Path) -> str:
    """The file's text, refusing anything but a regular UTF-8 file of at most MAX_DEFINITION_BYTES."""
    if not path.exists():
        raise UserError(f"{path}: cannot read the definition (no such file)")
    if not path.is_file():  # a device, FIFO or folder: reading it could block or never end
        raise UserError(f"{path}: the definition must be a regular file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_DEFINITION_BYTES + 1)
    except OSError as err:
        raise UserError(f"{path}: cannot read the definition ({err.strerror or err})") from None
    if len(raw) > MAX_DEFINITION_BYTES:
        raise UserError(f"{path}: the definition is larger than {MAX_DEFINITION_BYTES // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: the definition is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None


def load_definition(path: str | Path | None = None) -> Definition:
    """The definition in a TOML file, or the built-in default when `path` is None."""
    path = DEFAULT_PATH if path is None else Path(path)
    text = _read_definition_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: not valid TOML ({err})") from None
    except RecursionError:
        raise UserError(f"{path}: not a definition (values nested too deeply)") from None
    try:
        return definition_from_dict(data, src=str(path))
    except RecursionError:
        raise UserError(f"{path}: not a definition (values nested too deeply)") from None


# ---- writing ---------------------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)  # shortest repr that round-trips; valid TOML (1e-05, 0.5, 2.0)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string accepts JSON's escapes
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under the fields of a dataclass (read from its source), by field name."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:], strict=False):
        is_doc = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if is_doc and isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name):
            docs[prev.target.id] = " ".join(str(node.value.value).split())
    return docs


def _table_lines(obj: Any) -> list[str]:
    docs = field_docs(type(obj))
    lines = []
    for f in fields(obj):
        if f.name in docs:
            lines.append(f"# {docs[f.name]}")
        lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
    return lines


def definition_to_toml(defn: Definition) -> str:
    """The definition as TOML, every value written and each field's docstring as a comment above it."""
    lines = [
        "# xenofeat feature definition: every threshold that decides what is a feature and what is flagged.",
        f"name = {_toml_value(defn.name)}",
        f"version = {_toml_value(defn.version)}",
    ]
    for name in SECTION_ORDER:
        obj = getattr(defn, name)
        if not is_dataclass(obj):
            raise TypeError(f"[{name}] is not a dataclass")
        doc = " ".join((type(obj).__doc__ or "").split())
        lines += ["", f"[{name}]"] + ([f"# {doc}"] if doc else []) + _table_lines(obj)
    return "\n".join(lines) + "\n"


def write_definition(defn: Definition, path: str | Path) -> Path:
    """Write the definition as applied (`definition_to_toml`) to `path`."""
    path = Path(path)
    path.write_text(definition_to_toml(defn), encoding="utf-8")
    return path
