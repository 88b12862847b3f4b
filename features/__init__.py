"""The a priori definition, labelability, flags, the feature store, feature sets and exports.

Notebook API (imported lazily, so `import features` stays cheap): `features.load_run(RUN)` returns a RunView
(feature table, examples, sets); `features.export(run, selection, fmt, out)` mirrors `xenofeat export`;
`features.Selection` builds selections (`Selection.flagged()`, `.from_set(name)`, `.from_features([...])`,
`.where("flag and density > 0.01")`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FeatureSet", "Selection", "export", "load_run"]

_LAZY = {
    "load_run": ("features.api", "load_run"),
    "export": ("features.api", "export"),
    "Selection": ("features.selection", "Selection"),
    "FeatureSet": ("features.store.sets", "FeatureSet"),
}


def __getattr__(name: str) -> Any:  # noqa: ANN401
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'features' has no attribute {name!r}")
