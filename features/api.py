"""The Python API for notebooks: `features.load_run(RUN)` and `features.export(...)` (same as `xenofeat export`).

>>> import features
>>> run = features.load_run("xenofeat-run")
>>> run.table.query("flag")                      # the feature table (pandas)
>>> run.examples(12).top.tokens                  # examples of one latent
>>> run.save_set("odd ones", [3, 17], "hard to label")
>>> features.export(run, run.sets["odd ones"], "saelens", "odd-sae")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features.store import FeatureStore, LatentExamples
from features.store.sets import FeatureSet, delete_set, load_sets, save_set


@dataclass
class RunView:
    """A scored run opened for analysis: its feature table, examples, summary and feature sets."""

    path: Path
    store: FeatureStore = field(repr=False)

    @property
    def table(self) -> pd.DataFrame:
        """One row per latent of the reference SAE (criteria, labelability, flag, tags)."""
        return self.store.table

    @property
    def summary(self) -> dict[str, Any]:
        return self.store.summary

    @property
    def flagged(self) -> pd.DataFrame:
        """The flagged rows."""
        return self.table[self.table["flag"]]

    def examples(self, latent: int) -> LatentExamples:
        """Top and decile examples, histogram, nearest latents and matches of one latent."""
        return self.store.examples(latent)

    @property
    def sets(self) -> dict[str, FeatureSet]:
        """The feature sets saved in this run (read fresh each time)."""
        return load_sets(self.path)

    def save_set(self, name: str, features: list[int], description: str = "") -> FeatureSet:
        return save_set(
            self.path, FeatureSet(name, description, list(features)), n_latents=self.store.n_latents
        )

    def delete_set(self, name: str) -> None:
        delete_set(self.path, name)

    def select(self, selection: Any) -> list[int]:  # noqa: ANN401
        """The latents a selection picks (a Selection, FeatureSet, list of ints or "flagged")."""
        from features.selection import coerce, resolve

        return [int(i) for i in resolve(self.table, coerce(selection), self.path).features]

    def import_set(self, path: str | Path, *, name: str | None = None, overwrite: bool = False) -> FeatureSet:
        """Save the latents of a `json` export as a set of this run."""
        from features.exporters.json_set import import_set

        return import_set(self.path, path, name=name, overwrite=overwrite)

    def close(self) -> None:
        self.store.close()


def load_run(run: str | Path) -> RunView:
    """Open a scored run folder (UserError if it has no feature store)."""
    path = Path(run)
    store = FeatureStore.open(path)
    return RunView(store.folder.parent, store)


def export(
    run: Any, selection: Any, fmt: str, out: str | Path, *, overwrite: bool = False, **options: Any
) -> Path:  # noqa: ANN401
    """Export a selection of a run's latents; see features.exporters.export."""
    from features.exporters import export as _export

    return _export(run, selection, fmt, out, overwrite=overwrite, **options)
