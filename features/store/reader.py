"""The one reader of feature stores: `FeatureStore.open(run_dir)` (spec in STORE.md, schema in `schema.py`).

`FeatureStore.open` reads the table and summary at once and everything else lazily: `examples(latent)` reads only
that latent's slices, so opening a store of 16k+ latents costs one parquet read. Stores of any 1.x format version are
read as they are (a 1.0 store keeps its float32 columns); a newer major version is refused in one line. Before
reading, an interrupted publish is completed or rolled back (`publish.recover`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from activations.errors import UserError
from features.store.publish import recover
from features.store.schema import (
    DEFINITION_FILE,
    EXAMPLES_FILE,
    FEATURES_DIR,
    META_KEY,
    READABLE_MAJOR,
    STORE_FORMAT,
    SUMMARY_FILE,
    TABLE_FILE,
    TMP_DIR,
)


def check_version(version: Any, where: Path) -> None:
    """Refuse a store written by a newer (or unknown) format version with a one-line UserError."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise UserError(f"{where}: unknown feature-store format version {version!r}") from None
    if major > READABLE_MAJOR:
        raise UserError(
            f"{where}: written by a newer xenofeat (feature-store format {version}; this one reads "
            f"{READABLE_MAJOR}.x); upgrade xenofeat or rerun `xenofeat score`"
        )
    if major < 1:
        raise UserError(f"{where}: unknown feature-store format version {version!r}")


@dataclass(frozen=True)
class Windows:
    """Token windows around firing (or sampled) tokens of one latent: row j is centred on flat_idx[j]."""

    tokens: np.ndarray  # (n, W) int32 token ids, -1 outside the sequence or on padding
    acts: np.ndarray  # (n, W) float32 the latent's activation on each window token
    flat_idx: np.ndarray  # (n,) int64 flat cache index of the centre token (seq * L + pos)
    doc: np.ndarray  # (n,) int32 document of the centre token
    center: int  # column of the centre token in every row
    decile: np.ndarray | None = None  # (n,) int8 activation decile (decile samples only)

    @property
    def value(self) -> np.ndarray:
        """(n,) the activation at the centre token."""
        return self.acts[:, self.center]


@dataclass(frozen=True)
class TestSet:
    """The held-out LBL windows of one latent (what the label tester scores against)."""

    flat_idx: np.ndarray  # (n,) int64 centre of each window
    label: np.ndarray  # (n,) bool: the latent fires at the centre
    decile: np.ndarray  # (n,) int8 activation decile of positives, -1 for negatives
    tokens: (
        np.ndarray
    )  # (n, window + 1) int32 the window (centre last), -1 before the sequence start / padding


@dataclass(frozen=True)
class LatentExamples:
    """Everything examples.h5 holds about one latent."""

    latent: int
    top: Windows
    deciles: Windows
    hist_edges: np.ndarray  # (B+1,) float32 equal-width bins on [0, max activation]
    hist_counts: np.ndarray  # (B,) int64 firing tokens per bin
    nearest: np.ndarray  # (K,) int64 latents with the largest decoder cosine (itself excluded)
    nearest_cos: np.ndarray  # (K,) float32
    matches: list[tuple[int, int, float]]  # (seed, partner latent, min(dec, enc) cosine) in each other seed
    decile_auroc: np.ndarray  # (10,) float32 AUROC of the best describer per activation decile (NaN unscored)
    test: TestSet
    downstream: dict[str, float] | None  # downstream effects where recorded (None offline)


class FeatureStore:
    """A read-only view of `RUN/features/`.

    >>> store = FeatureStore.open("xenofeat-run")
    >>> store.table.query("flag")           # the flagged latents
    >>> ex = store.examples(12)             # reads only latent 12's slices of examples.h5
    """

    def __init__(self, folder: Path, table: pd.DataFrame, summary: dict[str, Any]) -> None:
        self.folder = folder
        self.table = table
        self.summary = summary
        self._h5: h5py.File | None = None

    @classmethod
    def open(cls, run_dir: str | Path) -> FeatureStore:
        """Open the store of a run folder (or the `features/` folder itself)."""
        run_dir = Path(run_dir)
        folder = (
            run_dir
            if (run_dir / TABLE_FILE).exists() or run_dir.name == FEATURES_DIR
            else run_dir / FEATURES_DIR
        )
        recover(folder.parent)  # a publish cut short by a kill is completed or rolled back before reading
        if not folder.is_dir():
            tmp = folder.with_name(TMP_DIR)
            if tmp.exists():
                raise UserError(
                    f"{run_dir}: the score of this run was interrupted ({tmp} is unfinished); "
                    f"rerun `xenofeat score {run_dir}`"
                )
            raise UserError(
                f"{run_dir}: no feature store (no {FEATURES_DIR}/); run `xenofeat score {run_dir}` first"
            )
        for name in (SUMMARY_FILE, TABLE_FILE, EXAMPLES_FILE, DEFINITION_FILE):
            if not (folder / name).exists():
                raise UserError(
                    f"{folder / name}: missing; the store is incomplete, rerun `xenofeat score --overwrite`"
                )
        try:
            summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{folder / SUMMARY_FILE}: unreadable ({err})") from None
        if summary.get("format") != STORE_FORMAT:
            raise UserError(f"{folder / SUMMARY_FILE}: not a xenofeat feature store")
        check_version(summary.get("format_version"), folder / SUMMARY_FILE)
        try:
            pf = pq.read_table(folder / TABLE_FILE)
        except (OSError, pa.ArrowException) as err:
            raise UserError(f"{folder / TABLE_FILE}: unreadable ({err})") from None
        meta = json.loads((pf.schema.metadata or {}).get(META_KEY, b"{}"))
        if meta.get("format") != STORE_FORMAT:
            raise UserError(f"{folder / TABLE_FILE}: not a xenofeat feature table")
        check_version(meta.get("format_version"), folder / TABLE_FILE)
        return cls(folder, pf.to_pandas(), summary)

    # -- small things ----------------------------------------------------------------------------------------------
    @cached_property
    def definition_toml(self) -> str:
        """The definition exactly as applied (TOML text)."""
        return (self.folder / DEFINITION_FILE).read_text(encoding="utf-8")

    def definition(self):  # noqa: ANN201 - features.definition.Definition (parsed on demand)
        """The definition as applied, parsed."""
        from features.definition import load_definition

        return load_definition(self.folder / DEFINITION_FILE)

    @property
    def h5(self) -> h5py.File:
        """examples.h5, opened on first use (and checked)."""
        if self._h5 is None:
            path = self.folder / EXAMPLES_FILE
            try:
                f = h5py.File(path, "r")
            except OSError as err:
                raise UserError(f"{path}: not a readable HDF5 file ({err})") from None
            if f.attrs.get("format") != STORE_FORMAT:
                f.close()
                raise UserError(f"{path}: not a xenofeat examples file")
            try:
                check_version(f.attrs.get("format_version"), path)
            except UserError:
                f.close()
                raise
            self._h5 = f
        return self._h5

    @cached_property
    def vocab(self) -> list[str]:
        """The tokenizer's vocabulary, indexed by token id."""
        return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in self.h5["vocab"][:]]

    @property
    def n_latents(self) -> int:
        return len(self.table)

    @cached_property
    def grid_tokens(self) -> np.ndarray:
        """(n_seq, L) int32 token ids of the scored part of the cache (flat index = seq * L + pos)."""
        return self.h5["grid/tokens"][:]

    @cached_property
    def grid_mask(self) -> np.ndarray:
        """(n_seq, L) bool mask of the scored part of the cache (True = excluded)."""
        return self.h5["grid/mask"][:].astype(bool)

    @property
    def context_size(self) -> int:
        return int(self.h5.attrs["context_size"])

    # -- per latent ------------------------------------------------------------------------------------------------
    def _slice(self, group: str, latent: int) -> slice:
        off = self.h5[f"{group}/offsets"]
        lo, hi = (int(v) for v in off[latent : latent + 2])
        return slice(lo, hi)

    def _windows(self, group: str, latent: int) -> Windows:
        g, s = self.h5[group], self._slice(group, latent)
        return Windows(
            tokens=g["tokens"][s],
            acts=g["acts"][s].astype(np.float32),
            flat_idx=g["flat_idx"][s],
            doc=g["doc"][s],
            center=int(self.h5.attrs["center"]),
            decile=g["decile"][s] if "decile" in g else None,
        )

    def test_windows(self, latent: int) -> TestSet:
        """The held-out LBL windows of a latent, with their tokens built from the stored grid."""
        from features.labelability.windows import context_tokens, window_matrix

        g, s = self.h5["lbl_test"], self._slice("lbl_test", latent)
        flat = g["flat_idx"][s]
        tok, pos = context_tokens(self.grid_tokens, self.grid_mask)
        width = int(self.h5.attrs["lbl_window"])
        win = window_matrix(flat, tok, pos, width) if len(flat) else np.empty((0, width + 1), np.int32)
        return TestSet(flat, g["label"][s].astype(bool), g["decile"][s], np.asarray(win, np.int32))

    def examples(self, latent: int) -> LatentExamples:
        """Everything examples.h5 holds about one latent, read from that latent's slices only."""
        latent = int(latent)
        if not 0 <= latent < self.n_latents:
            raise UserError(f"latent {latent}: out of range (the store has {self.n_latents} latents)")
        f = self.h5
        seeds = list(f["matches/seeds"][:]) if "matches/seeds" in f else []
        matches = [
            (int(sd), int(f["matches/partner"][k, latent]), float(f["matches/cos"][k, latent]))
            for k, sd in enumerate(seeds)
        ]
        down = None
        if "downstream" in f:
            down = {k: float(f["downstream"][k][latent]) for k in f["downstream"]}
        return LatentExamples(
            latent=latent,
            top=self._windows("top", latent),
            deciles=self._windows("deciles", latent),
            hist_edges=f["hist/edges"][latent],
            hist_counts=f["hist/counts"][latent],
            nearest=f["nearest/index"][latent].astype(np.int64),
            nearest_cos=f["nearest/cos"][latent],
            matches=matches,
            decile_auroc=f["decile_auroc"][latent],
            test=self.test_windows(latent),
            downstream=down,
        )

    # -- lifetime --------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._h5 is not None and self._h5.id.valid:
            self._h5.close()
        self._h5 = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
