"""Named feature sets of a run: the lists of latents a person builds in the viewer or the API and exports.

All sets of a run live in ONE JSON file inside its feature store, `RUN/features/sets.json`:

    {"format": "xenofeat.feature-sets", "format_version": "1.0",
     "sets": {"<name>": {"name", "description", "features": [int, ...], "created", "updated"}}}

Every change is a read-modify-write under the run's store lock (`features.store.publish.store_lock`, an `fcntl.flock` that
publishing a rescore takes too): the file is re-read under the lock, changed, and rewritten atomically (a temporary
file in the same folder, fsync, `os.replace`), so two viewers saving at once lose nothing and a crash leaves either
the old file or the new one. Every field is checked on read: a damaged or hand-edited file is one clear
`UserError` line, never a traceback. A set's name is a label and never part of a path: `validate_set_name` rejects anything that
could be mistaken for one (separators, `..`, leading dots, control characters).
"""

from __future__ import annotations

import json
import operator
import os
import tempfile
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from activations.errors import UserError
from features.store.publish import store_lock

SETS_FILE = "sets.json"
SETS_FORMAT = "xenofeat.feature-sets"
SETS_VERSION = "1.0"
MAX_NAME = 100
STORE_DIR = "features"  # same as features.store.FEATURES_DIR (not imported: keep this module light)


def now_iso() -> str:
    """The current UTC time as an ISO-8601 string with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_timestamp(value: Any, what: str) -> str:  # noqa: ANN401 - anything read from a file
    """`value` if it is an ISO-8601 time as text; ValueError naming `what` otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an ISO-8601 time as text, got {type(value).__name__}")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} {value[:40]!r} is not an ISO-8601 time") from None
    return value


def validate_set_name(name: str) -> str:
    """Return `name` stripped of surrounding spaces if it is a valid set name; ValueError saying why if not."""
    if not isinstance(name, str):
        raise ValueError(f"set name must be text, got {type(name).__name__}")
    name = name.strip()
    if not name:
        raise ValueError("set name is empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"set name is {len(name)} characters long; at most {MAX_NAME} are allowed")
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise ValueError(
            f"set name {name!r} contains control characters ({', '.join(repr(c) for c in bad[:3])})"
        )
    for sep in ("/", "\\"):
        if sep in name:
            raise ValueError(f"set name {name!r} contains {sep!r}; names are labels, not paths")
    if ".." in name:
        raise ValueError(f"set name {name!r} contains '..'; names are labels, not paths")
    if name.startswith("."):
        raise ValueError(f"set name {name!r} starts with a dot")
    return name


@dataclass
class FeatureSet:
    """A named list of latents of the reference SAE of one run."""

    name: str
    """The set's label (see `validate_set_name`); unique within a run."""
    description: str = ""
    """Free text: what the set is for."""
    features: list[int] = field(default_factory=list)
    """Latent indices, unique, in the order they were added."""
    created: str = field(default_factory=now_iso)
    """ISO-8601 UTC time the set was first saved."""
    updated: str = ""
    """ISO-8601 UTC time of the last save (set by `save_set`)."""

    def __post_init__(self) -> None:
        self.name = validate_set_name(self.name)
        if not isinstance(self.description, str):
            raise ValueError("set description must be text")
        if not isinstance(self.features, list | tuple):
            raise ValueError(f"set {self.name!r}: features must be a list of latent indices")
        check_timestamp(self.created, "created")
        if self.updated:
            check_timestamp(self.updated, "updated")
        seen: set[int] = set()
        feats: list[int] = []
        for f in self.features:
            try:
                if isinstance(f, bool):
                    raise TypeError
                i = operator.index(f)  # ints and numpy integers; floats and strings are refused
            except TypeError:
                raise ValueError(f"set {self.name!r}: feature {f!r} is not an integer latent index") from None
            if i < 0:
                raise ValueError(f"set {self.name!r}: feature {i} is negative")
            if i not in seen:
                seen.add(i)
                feats.append(i)
        self.features = feats
        if not self.updated:
            self.updated = self.created

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any) -> FeatureSet:  # noqa: ANN401 - anything read from a file
        """A set from its JSON object; ValueError saying which field is wrong."""
        if not isinstance(d, dict):
            raise ValueError(f"a set must be an object, got {type(d).__name__}")
        if "name" not in d:
            raise ValueError("no name")
        return cls(
            name=d["name"],
            description=d.get("description", ""),
            features=d.get("features", []),
            created=d.get("created") or now_iso(),
            updated=d.get("updated", ""),
        )


def _run_path(run: Any) -> Path:
    """A run folder from a path or any object with a `.path` (sae_training.run.Run, features.api.RunView)."""
    return Path(run.path) if hasattr(run, "path") else Path(run)


def sets_path(run: Any) -> Path:
    """`RUN/features/sets.json` (accepts the run folder or the store folder itself)."""
    p = _run_path(run)
    store = p if p.name == STORE_DIR and not (p / STORE_DIR).is_dir() else p / STORE_DIR
    return store / SETS_FILE


def load_sets(run: Any) -> dict[str, FeatureSet]:
    """All sets of a run by name ({} when none was saved yet)."""
    path = sets_path(run)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable feature-sets file ({err})") from None
    if not isinstance(data, dict) or data.get("format") != SETS_FORMAT:
        raise UserError(f"{path}: not a xenofeat feature-sets file")
    major = str(data.get("format_version", "0")).split(".")[0]
    if major != SETS_VERSION.split(".")[0]:
        raise UserError(
            f"{path}: feature-sets format {data.get('format_version')!r} is not readable by this xenofeat"
        )
    sets = data.get("sets", {})
    if not isinstance(sets, dict):
        raise UserError(f'{path}: "sets" must be an object of sets by name, got {type(sets).__name__}')
    out: dict[str, FeatureSet] = {}
    for name, d in sets.items():
        try:
            fs = FeatureSet.from_json(d)
        except (TypeError, ValueError) as err:
            raise UserError(f"{path}: set {name[:100]!r} is malformed ({err})") from None
        if fs.name != name:
            raise UserError(f"{path}: the set stored as {name[:100]!r} is named {fs.name!r}")
        out[name] = fs
    return out


def _run_of(path: Path) -> Path:
    """The run folder whose lock guards `RUN/features/sets.json`; UserError when there is no store folder."""
    if not path.parent.is_dir():
        raise UserError(f"{path.parent}: no feature store; run `xenofeat score` on the run first")
    return path.parent.parent


def _write_atomic(path: Path, sets: dict[str, FeatureSet]) -> None:
    """Replace the file by one holding `sets` (call under the store lock)."""
    data = {
        "format": SETS_FORMAT,
        "format_version": SETS_VERSION,
        "sets": {n: s.to_json() for n, s in sorted(sets.items())},
    }
    fd, tmp = tempfile.mkstemp(prefix=".sets.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_set(run: Any, fs: FeatureSet, *, n_latents: int | None = None) -> FeatureSet:
    """Create or replace the set named `fs.name`; keeps the first `created` time and stamps `updated`.

    With `n_latents`, indices outside [0, n_latents) are refused (UserError).
    """
    _check_range(fs, n_latents)
    path = sets_path(run)
    with store_lock(_run_of(path)):
        sets = load_sets(run)  # re-read under the lock: another writer may have saved since
        old = sets.get(fs.name)
        saved = FeatureSet(
            name=fs.name,
            description=fs.description,
            features=list(fs.features),
            created=old.created if old else fs.created,
            updated=now_iso(),
        )
        sets[saved.name] = saved
        _write_atomic(path, sets)
    return saved


def add_to_set(
    run: Any,  # noqa: ANN401 - a run folder or an object with .path
    name: str,
    latents: list[int],
    *,
    description: str = "",
    n_latents: int | None = None,
) -> FeatureSet:
    """Add latents to the set `name` (created if new; `description` replaces the old one when given).

    The set is read and written under the store lock, so concurrent additions to one set are all kept.
    """
    name = validate_set_name(name)
    _check_range(FeatureSet(name, description, list(latents)), n_latents)
    path = sets_path(run)
    with store_lock(_run_of(path)):
        sets = load_sets(run)
        old = sets.get(name)
        saved = FeatureSet(
            name=name,
            description=old.description if old and not description else description,
            features=(old.features if old else []) + [int(i) for i in latents],
            created=old.created if old else now_iso(),
            updated=now_iso(),
        )
        sets[name] = saved
        _write_atomic(path, sets)
    return saved


def _check_range(fs: FeatureSet, n_latents: int | None) -> None:
    if n_latents is not None:
        bad = [i for i in fs.features if i >= n_latents]
        if bad:
            raise UserError(
                f"set {fs.name!r}: latent {bad[0]} out of range (the run has {n_latents} latents)"
            )


def delete_set(run: Any, name: str) -> None:
    """Remove a set; UserError if there is no set of that name."""
    name = validate_set_name(name)
    path = sets_path(run)
    with store_lock(_run_of(path)):
        sets = load_sets(run)
        if name not in sets:
            raise UserError(
                f"--set: no feature set named {name!r} (sets: {', '.join(sorted(sets)) or 'none'})"
            )
        del sets[name]
        _write_atomic(path, sets)


def get_set(run: Any, name: str) -> FeatureSet:
    """One set by name; UserError listing the existing sets if there is none."""
    try:
        name = validate_set_name(name)
    except ValueError as err:
        raise UserError(f"--set: {err}") from None
    sets = load_sets(run)
    if name not in sets:
        raise UserError(f"--set: no feature set named {name!r} (sets: {', '.join(sorted(sets)) or 'none'})")
    return sets[name]
