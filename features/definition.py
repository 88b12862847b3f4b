"""The a priori feature definition: its sections come from the criteria registry, read from (and written to) TOML.

A definition is declared before any feature is looked at and copied next to the results it produced. It holds a
name and version and one settings section per criterion of the registry (`features.criteria.registry.criteria()`,
each a `Settings` subclass declared by the criterion's module, in the criteria's order), then `[labelability]`
(`features.labelability.LBLConfig`), `[flag]` (`features.flags.FlagConfig`) and `[llm]`
(`features.labelability.llm.LLMConfig`: what `xenofeat explain`'s score does). `load_definition(None)` is the built-in
default (`default_definition.toml`, which is exactly `definition_to_toml(Definition())`); a user's file may
set any subset of keys, the rest take defaults. Unknown sections or keys and out-of-range values raise `UserError`
naming the file, the section and the key. `definition_to_toml` writes every value (the definition *as applied*),
with each field's docstring as a comment, and `load_definition` of its output gives back an equal `Definition`.
A section is read as an attribute (`defn.support`, `defn.flag`) or by name (`defn.section("support")`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

from activations.errors import UserError
from activations.settings import SettingError, from_table, toml_lines, toml_value

DEFAULT_PATH = Path(__file__).with_name("default_definition.toml")
TOP_KEYS = ("name", "version")


def section_classes() -> dict[str, type]:
    """Every section of a definition and its settings class, in file order: the criteria, labelability, flag, llm."""
    from features.criteria.registry import criteria
    from features.flags import FlagConfig
    from features.labelability import LBLConfig
    from features.labelability.llm import LLMConfig

    return {
        **{c.name: c.config for c in criteria()},
        "labelability": LBLConfig,
        "flag": FlagConfig,
        "llm": LLMConfig,
    }


@dataclass(frozen=True, init=False)
class Definition:
    """A whole feature definition: the criteria's sections, LBL-v1 settings and the flag rule.

    `Definition(name=..., version=..., support=SupportConfig(...), ...)`: sections left out take their defaults.
    """

    name: str
    """Name of the definition (reported with every result)."""
    version: int
    """Version of the definition under that name."""
    sections: dict[str, Any]
    """Settings of every section, by section name, in file order."""

    def __init__(self, name: str = "WDF-v1", version: int = 1, **sections: Any) -> None:
        known = section_classes()
        unknown = [k for k in sections if k not in known]
        if unknown:
            raise TypeError(
                f"Definition: unknown section(s) {', '.join(unknown)} (known: {', '.join(known)})"
            )
        full = {k: sections[k] if k in sections else cls() for k, cls in known.items()}
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "sections", full)
        if not isinstance(name, str) or not name.strip():
            raise SettingError("name", name, "must be a non-empty string")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise SettingError("version", version, "must be an integer >= 1")

    def __getattr__(self, item: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if item in sections:
            return sections[item]
        raise AttributeError(f"Definition has no section or attribute {item!r}")

    def section(self, name: str) -> Any:
        """The settings of a section by name."""
        return self.sections[name]

    def replace(self, **changes: Any) -> Definition:
        """A copy with `name`, `version` or whole sections replaced."""
        top = {k: changes.pop(k, getattr(self, k)) for k in TOP_KEYS}
        return Definition(**top, **{**self.sections, **changes})


def _build_section(src: str, name: str, cls: type, table: Any) -> Any:
    return from_table(cls, table, f"{src}: [{name}]")


def definition_from_dict(data: dict[str, Any], src: str = "definition") -> Definition:
    """Build and validate a `Definition` from a parsed TOML document; `src` names the file in error messages."""
    classes = section_classes()
    top, sections = {}, {}
    for key, value in data.items():
        if key in TOP_KEYS:
            top[key] = value
        elif key in classes:
            sections[key] = _build_section(src, key, classes[key], value)
        else:
            raise UserError(f"{src}: unknown key '{key}' (known: {', '.join(TOP_KEYS + tuple(classes))})")
    try:
        return Definition(**top, **sections)
    except SettingError as err:
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


def definition_to_toml(defn: Definition) -> str:
    """The definition as TOML, every value written and each field's docstring as a comment above it."""
    lines = [
        "# xenofeat feature definition: every threshold that decides what is a feature and what is flagged.",
        f"name = {toml_value(defn.name)}",
        f"version = {toml_value(defn.version)}",
    ]
    for name, obj in defn.sections.items():
        if not is_dataclass(obj):
            raise TypeError(f"[{name}] is not a dataclass")
        doc = " ".join((type(obj).__doc__ or "").split())
        lines += ["", f"[{name}]"] + ([f"# {doc}"] if doc else []) + toml_lines(obj)
    return "\n".join(lines) + "\n"


def write_definition(defn: Definition, path: str | Path) -> Path:
    """Write the definition as applied (`definition_to_toml`) to `path`."""
    path = Path(path)
    path.write_text(definition_to_toml(defn), encoding="utf-8")
    return path
