"""What every export writer reads: the scored run, its store, the selection, the reference SAE and the cache."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from activations.errors import UserError
from features.selection import Selected
from features.store import FeatureStore
from features.store.labels import read_attempts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportContext:
    """A scored run opened for export; `selected` is set once the selection is resolved."""

    run: Path
    store: FeatureStore
    options: dict[str, Any] = field(default_factory=dict)
    selected: Selected | None = None

    @classmethod
    def open(cls, run: Any, options: dict[str, Any] | None = None) -> ExportContext:  # noqa: ANN401
        path = Path(run.path) if hasattr(run, "path") else Path(run)
        if path.name == "features" and (path / "features.parquet").exists():
            path = path.parent
        return cls(path, FeatureStore.open(path), dict(options or {}))

    def with_selection(self, selected: Selected) -> ExportContext:
        return replace(self, selected=selected)

    # -- selection -------------------------------------------------------------------------------------------------
    @property
    def features(self) -> np.ndarray:
        """(n,) int64 selected latents, sorted."""
        assert self.selected is not None
        return self.selected.features

    @property
    def rows(self) -> pd.DataFrame:
        """The selected rows of the feature table, in latent order."""
        t = self.store.table
        return t.set_index("feature", drop=False).loc[self.features].reset_index(drop=True)

    def option(self, name: str, default: Any) -> Any:  # noqa: ANN401
        return self.options.get(name, default)

    # -- provenance ------------------------------------------------------------------------------------------------
    @property
    def summary(self) -> dict[str, Any]:
        return self.store.summary

    def _path(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() or q.exists() else self.run / q

    @property
    def sae_path(self) -> Path:
        """The reference SAE folder the store was scored from."""
        return self._path(self.summary["sae"]["path"])

    @property
    def cache_path(self) -> Path:
        return self._path(self.summary["cache"]["path"])

    @property
    def hook(self) -> str:
        return str(self.summary["cache"]["hook"])

    @property
    def definition(self) -> dict[str, Any]:
        return dict(self.summary.get("definition") or {})

    def sae_cfg(self) -> dict[str, Any]:
        """The reference SAE's cfg.json."""
        f = self.sae_path / "cfg.json"
        if not f.exists():
            raise UserError(f"{f}: the reference SAE of this store is missing (was the run folder moved?)")
        return json.loads(f.read_text(encoding="utf-8"))

    def load_sae(self) -> Any:  # noqa: ANN401 - sae_lens.SAE
        from features.sae_inputs import load_sae_folder

        sae = load_sae_folder(self.sae_path, "the store's reference SAE")
        if int(sae.cfg.d_sae) != self.store.n_latents:
            raise UserError(
                f"{self.sae_path}: the SAE has {sae.cfg.d_sae} latents but the store has {self.store.n_latents}"
            )
        return sae

    def run_info(self) -> dict[str, Any]:
        """Where the run came from (recorded in exports)."""
        s = self.summary
        return {
            "path": str(self.run),
            "sae": str(self.sae_path),
            "hook": self.hook,
            "cache": {"path": str(self.cache_path), "fingerprint": s["cache"].get("fingerprint")},
            "d_in": s["sae"].get("d_in"),
            "d_sae": s["sae"].get("d_sae", self.store.n_latents),
            "seeds": s.get("seeds", []),
            "tokens_scored": s.get("tokens_scored"),
            "xenofeat_version": s.get("xenofeat_version"),
        }

    def model_name(self) -> str:
        meta = self.sae_cfg().get("metadata") or {}
        return str(meta.get("model_name") or "unknown-model")

    # -- labels tried (features.store.labels, written by the viewer) ------------------------------------------------------
    def labels_tried(self, latent: int) -> list[dict[str, Any]]:
        """The label attempts saved for a latent ([] when none were saved)."""
        return [_as_dict(a) for a in read_attempts(self.run, latent)]

    # -- the SAE on cache rows ---------------------------------------------------------------------------------------
    def scored_seqs(self) -> int:
        return int(self.summary.get("seqs_scored") or self.store.grid_tokens.shape[0])

    def iter_codes(self, sae: Any, latents: np.ndarray, *, n_seq: int | None = None, chunk: int = 64):  # noqa: ANN401
        """Yield (seq_start, codes (s, L, n) float32, mask (s, L) bool) of the full SAE on the scored cache rows."""
        import torch

        from activations.cache import ActivationCache

        n_seq = self.scored_seqs() if n_seq is None else n_seq
        idx = torch.as_tensor(latents, dtype=torch.long)
        with ActivationCache.open(self.cache_path) as cache, torch.no_grad():
            n_seq = min(n_seq, cache.n_seq)
            for s in range(0, n_seq, chunk):
                e = min(n_seq, s + chunk)
                x = torch.from_numpy(cache.read_acts(self.hook, s, e))  # (s, L, d)
                sh = x.shape
                codes = sae.encode(x.reshape(-1, sh[-1]).to(sae.W_enc.dtype))[:, idx]  # (s*L, n)
                yield s, codes.float().numpy().reshape(sh[0], sh[1], -1), cache.mask[s:e]


def _as_dict(a: Any) -> dict[str, Any]:  # noqa: ANN401
    import dataclasses

    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return dataclasses.asdict(a)
    if isinstance(a, dict):
        return dict(a)
    raise TypeError(f"cannot export a label attempt of type {type(a).__name__}")
