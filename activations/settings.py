"""One way to declare settings: frozen dataclasses whose fields carry their range and whose docstrings are the help.

Every group of settings in xenofeat (the definition's sections, the labelability settings, `TrainConfig`,
`SynthConfig`) is declared the same way, and TOML reading, TOML writing, argparse options and validation all follow
from the declaration:

    @dataclass(frozen=True)
    class SupportConfig(Settings):
        '''C1 support: the latent fires often enough.'''

        min_firing_tokens: int = integer(200, lo=0)
        '''Fewest firing tokens.'''

- `number`, `integer`, `choice`, `switch`, `integers` and `text` make the fields; their metadata holds the kind and
  the range. `Settings.__post_init__` checks every field against it and raises `SettingError` naming the key; a
  subclass adds cross-field checks in `check()`.
- The docstring written under a field is its help (`field_docs`, read once per class from the source with `ast`).
- `from_table(cls, table, where)` builds an instance from a parsed TOML table (unknown keys and bad values become a
  one-line `UserError` naming `where` and the key); `toml_lines(obj)` writes every value back with its help as a
  comment; `add_options(parser, cls)` / `given_options(args, cls)` give argparse options named `--key-name`.
- `describe(cls)` lists (key, type, default, range, help) for documentation tables.

This lives in `activations` (the lowest package) only because every other package declares settings with it.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import json
import math
import textwrap
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, NamedTuple

from activations.errors import UserError

INF = math.inf


class SettingError(ValueError):
    """A setting outside its range or of the wrong type; `key` names it (callers add the file and section)."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(f"{key} = {toml_value(value) if _writable(value) else repr(value)} {expected}")
        self.key, self.value, self.expected = key, value, expected


# ---- field makers ----------------------------------------------------------------------------------------------


def number(
    default: float | None, lo: float = -INF, hi: float = INF, *, lo_open: bool = False, hi_open: bool = False,
    optional: bool = False,
) -> Any:  # fmt: skip
    """A float field in [lo, hi] (open ends with lo_open / hi_open); `optional` also allows None."""
    return field(
        default=default, metadata={"kind": float, "range": (lo, hi, lo_open, hi_open), "optional": optional}
    )


def integer(default: int | None, lo: float = -INF, hi: float = INF, *, optional: bool = False) -> Any:
    """An integer field in [lo, hi]; `optional` also allows None."""
    return field(
        default=default, metadata={"kind": int, "range": (lo, hi, False, False), "optional": optional}
    )


def choice(default: str, *choices: str) -> Any:
    """A string field that must be one of `choices`."""
    return field(default=default, metadata={"kind": str, "choices": choices})


def switch(default: bool) -> Any:
    """A boolean field."""
    return field(default=default, metadata={"kind": bool})


def integers(default: tuple[int, ...], lo: float = -INF, hi: float = INF, *, min_len: int = 0) -> Any:
    """A tuple of integers, each in [lo, hi], at least `min_len` long (a list in TOML, `1,2,3` on the command line)."""
    return field(
        default=default, metadata={"kind": tuple, "range": (lo, hi, False, False), "min_len": min_len}
    )


def text(default: str, *, nonempty: bool = True) -> Any:
    """A free string field (non-empty unless told otherwise)."""
    return field(default=default, metadata={"kind": "text", "nonempty": nonempty})


# ---- validation ------------------------------------------------------------------------------------------------


def _bounds(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    def fmt(v: float) -> str:
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return str(int(v)) if float(v).is_integer() else repr(v)

    return (
        f"{'(' if lo_open or lo == -INF else '['}{fmt(lo)}, {fmt(hi)}{')' if hi_open or hi == INF else ']'}"
    )


def _in_range(value: float, rng: tuple[float, float, bool, bool]) -> bool:
    lo, hi, lo_open, hi_open = rng
    ok = _is_int(value) or math.isfinite(value)  # math.isfinite overflows on huge ints
    ok = ok and (lo < value if lo_open else lo <= value)
    return ok and (value < hi if hi_open else value <= hi)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_field(f: Field, value: Any) -> Any:
    """The value to store for field `f` (ints widened to floats, lists to tuples), or `SettingError`."""
    meta = f.metadata
    kind = meta.get("kind")
    if kind is None or (value is None and meta.get("optional")):
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingError(f.name, value, "must be true or false")
    elif kind is str:
        if value not in meta["choices"]:
            raise SettingError(f.name, value, f"must be one of {', '.join(meta['choices'])}")
    elif kind == "text":
        if not isinstance(value, str) or (meta["nonempty"] and not value.strip()):
            raise SettingError(
                f.name, value, "must be a non-empty string" if meta["nonempty"] else "must be a string"
            )
    elif kind is tuple:
        if not isinstance(value, list | tuple) or not all(_is_int(v) for v in value):
            raise SettingError(f.name, value, "must be a list of integers")
        bad = [v for v in value if not _in_range(v, meta["range"])]
        if bad:
            raise SettingError(f.name, bad[0], f"is out of range {_bounds(*meta['range'])}")
        if len(value) < meta["min_len"]:
            raise SettingError(f.name, value, f"must have at least {meta['min_len']} entries")
        return tuple(value)
    elif kind in (int, float):
        if kind is int and not _is_int(value):
            raise SettingError(f.name, value, "must be an integer")
        if kind is float and not (_is_int(value) or isinstance(value, float)):
            raise SettingError(f.name, value, "must be a number")
        if not _in_range(value, meta["range"]):
            raise SettingError(f.name, value, f"is out of range {_bounds(*meta['range'])}")
        return float(value) if kind is float else value
    return value


@dataclass(frozen=True)
class Settings:
    """Base of every settings dataclass: checks each field against its declaration, then `check()`."""

    def __post_init__(self) -> None:
        for f in fields(self):
            stored = check_field(f, getattr(self, f.name))
            if stored is not getattr(self, f.name):
                object.__setattr__(self, f.name, stored)
        self.check()

    def check(self) -> None:
        """Cross-field rules of a subclass (raise `SettingError`)."""


# ---- help from docstrings --------------------------------------------------------------------------------------


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under the fields of a dataclass and its bases (read from the source), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for prev, node in zip(body, body[1:], strict=False):
            is_doc = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            if is_doc and isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name):
                docs[prev.target.id] = " ".join(str(node.value.value).split())
    return docs


class SettingInfo(NamedTuple):
    """One row of a settings table for documentation."""

    key: str
    kind: str
    default: Any
    allowed: str
    help: str


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def describe(cls: type) -> list[SettingInfo]:
    """(key, kind, default, allowed values, help) for every declared field of a settings class."""
    docs = field_docs(cls)
    rows = []
    for f in fields(cls):
        meta = f.metadata
        kind = meta.get("kind")
        if kind is str:
            allowed, name = " / ".join(meta["choices"]), "choice"
        elif kind in (int, float, tuple):
            allowed = _bounds(*meta["range"]) + (" or none" if meta.get("optional") else "")
            name = {int: "integer", float: "number", tuple: "list of integers"}[kind]
        else:
            allowed, name = "", {bool: "boolean", "text": "string"}.get(kind, "value")
        rows.append(SettingInfo(f.name, name, _default(f), allowed, docs.get(f.name, "")))
    return rows


# ---- TOML ------------------------------------------------------------------------------------------------------


def _writable(value: Any) -> bool:
    return isinstance(value, bool | int | float | str | list | tuple)


def toml_value(value: Any) -> str:
    """A value as TOML (floats in their shortest round-tripping form; None is not writable)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string accepts JSON's escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def toml_lines(obj: Any) -> list[str]:
    """`key = value` lines for every field of a settings object, each under its help as a comment; None is left out
    (commented) since TOML has no null."""
    docs = field_docs(type(obj))
    lines = []
    for f in fields(obj):
        if f.name in docs:
            lines.append(f"# {docs[f.name]}")
        value = getattr(obj, f.name)
        lines.append(f"# {f.name} = (not set)" if value is None else f"{f.name} = {toml_value(value)}")
    return lines


def from_table(cls: type, table: Any, where: str) -> Any:
    """An instance of settings class `cls` from a parsed TOML table; `where` (e.g. "defn.toml: [support]") starts
    every error message. Keys left out take their defaults."""
    if not isinstance(table, dict):
        raise UserError(f"{where} must be a table")
    known = [f.name for f in fields(cls)]
    for key in table:
        if key not in known:
            raise UserError(f"{where} unknown key '{key}' (known: {', '.join(known)})")
    try:
        return cls(**table)
    except SettingError as err:
        raise UserError(f"{where} {err}") from None


# ---- argparse --------------------------------------------------------------------------------------------------


def option_name(key: str) -> str:
    """The command-line option of a settings key: `batch_size` -> `--batch-size`."""
    return "--" + key.replace("_", "-")


def _parse_integers(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a comma-separated list of integers") from None


def _parse_bool(s: str) -> bool:
    if s.lower() in ("true", "1", "yes", "on"):
        return True
    if s.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{s!r} is not true or false")


def add_options(
    parser: argparse.ArgumentParser | Any, cls: type, keys: tuple[str, ...] | None = None
) -> None:
    """Add `--key` options for the fields of `cls` (all, or `keys`), with the docstring as help. Defaults are None so
    that `given_options` can tell what was typed; the dataclass holds the real defaults."""
    docs = field_docs(cls)
    for f in fields(cls):
        if keys is not None and f.name not in keys:
            continue
        kind = f.metadata.get("kind")
        conv: Any = {int: int, float: float, bool: _parse_bool, tuple: _parse_integers}.get(kind, str)
        extra: dict[str, Any] = {"choices": f.metadata["choices"]} if kind is str else {}
        metavar = {tuple: "N,N,...", bool: "true|false"}.get(kind)
        help_text = f"{docs.get(f.name, '')} (default: {_default(f)})".replace("%", "%%")
        parser.add_argument(option_name(f.name), dest=f.name, type=conv, default=None, metavar=metavar,
                            help=help_text, **extra)  # fmt: skip


def given_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of `cls` that were given on the command line (not None), by key."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
