"""From the streaming pass to the store's content: the criteria registry, LBL, the table, the summary, the examples.

`run_criteria` runs every criterion of the registry in order on one `Context` and gathers their columns, typed
results and SAE-level values (`CriteriaResults`); `run_labelability` scores LBL where C1 holds and the shuffled-label
control (`LBLResults`); `feature_table` joins them per latent; `build_summary` and `store_content` make summary.json
and the rest of the store. Nothing here reads or writes files (the scorer, `features.score`, does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from activations.faults import fault_point
from activations.version import __version__
from features import examples as ex
from features.criteria.registry import Context, Outcome, criteria
from features.definition import Definition, definition_to_toml
from features.flags import summarize
from features.labelability import LBLConfig, LBLTable, run_lbl, shuffled_control
from features.labelability.llm import add_blank_columns
from features.store.writer import ExamplesAttrs, StoreContent

NOT_SCORED = {
    "best_describer": "none",
    "readable": "not scored (fails C1 support)",
    "n_test_pos": 0,
    "lbl_target": "none",
    "conditional_describer": "none",
    "anchor_tokens": "–",
    "n_cond_test_pos": 0,
}
"""LBL values of latents LBL did not score."""


class Timer:
    """Seconds per stage, in order (recorded in summary.json's `timings`)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._t0, 3)
        self._t0 = now
        fault_point(f"score.stage:{name}")  # XENOFEAT_FAULT=score.stage:NAME kills the scorer here (tests)


@dataclass(frozen=True)
class CriteriaResults:
    """Every criterion's outcome, by name, in registry order."""

    outcomes: dict[str, Outcome]

    def column(self, name: str) -> np.ndarray:
        """One column, from whichever criterion declared it."""
        for out in self.outcomes.values():
            if name in out.columns:
                return np.asarray(out.columns[name])
        raise KeyError(name)

    def merged(self, part: str) -> dict[str, Any]:
        """The criteria's `summary`, `sae_summary` or `datasets`, merged in order."""
        merged: dict[str, Any] = {}
        for out in self.outcomes.values():
            merged.update(getattr(out, part))
        return merged


@dataclass(frozen=True)
class LBLResults:
    """LBL-v1 on the latents where C1 holds, and the shuffled-label control."""

    table: LBLTable
    frame: pd.DataFrame
    """(F rows) the LBL columns for every latent, `NOT_SCORED` values where LBL did not score."""
    control: float
    """Mean LBL of the shuffled-label control (NaN when not run)."""


def run_criteria(ctx: Context, defn: Definition, timer: Timer) -> CriteriaResults:
    """Every criterion of the registry, in order; each one's columns are checked against its declaration."""
    outcomes: dict[str, Outcome] = {}
    for c in criteria():
        out = c.compute(ctx, defn.section(c.name))
        declared = [col.name for col in c.columns]
        if sorted(out.columns) != sorted(declared):
            raise ValueError(
                f"criterion {c.name} returned columns {sorted(out.columns)}, declared {declared}"
            )
        if out.partner is not None:
            ctx.partner = out.partner
        ctx.results[c.name] = out.result
        outcomes[c.name] = out
        timer.lap(c.name)
    return CriteriaResults(outcomes)


def run_labelability(res: Any, crit: CriteriaResults, defn: Definition, settings: Any, run: Callable[..., LBLTable],
                     vocab: list[str], timer: Timer) -> LBLResults:  # fmt: skip  # noqa: ANN401
    """LBL where C1 holds (below it there is too little support to estimate labelability, and the flag needs C1
    anyway; on real SAEs this skips the long tail of rare latents, LBL's largest cost), then the control.

    `res` is the streaming pass's `PassResult`, `settings` the job's `ScoreSettings`, `run(acts, tokens, doc_ids,
    mask, latents, cfg, seed, vocab)` the LBL fan-out.
    """
    lcfg: LBLConfig = defn.labelability
    acts = res.acts_csc
    scored = np.flatnonzero(crit.column("support_pass") & (crit.column("firing_count") >= lcfg.min_test_pos))
    dense = crit.column("dense") if any("dense" in o.columns for o in crit.outcomes.values()) else None
    lbl = run(acts, res.tokens, res.doc_ids, res.mask, scored, lcfg, settings.seed, vocab, dense)
    timer.lap("labelability")
    control = np.nan
    if settings.control_latents and len(scored):
        rng = np.random.default_rng(settings.seed)
        pick = np.sort(rng.choice(scored, size=min(settings.control_latents, len(scored)), replace=False))
        ctl = shuffled_control(
            acts, res.tokens, res.doc_ids, res.mask, pick, lcfg, settings.seed, vocab=vocab, dense=dense
        )
        control = float(np.nanmean(ctl.labelability)) if np.isfinite(ctl.labelability).any() else np.nan
        timer.lap("control")
    lf = lbl.to_frame().drop(columns=["decile_auroc"]).set_index("feature")
    lf = lf.reindex(np.arange(acts.shape[1]))
    lf["best_describer"] = lf["best_describer"].fillna(NOT_SCORED["best_describer"])
    lf["readable"] = lf["readable"].fillna(NOT_SCORED["readable"])
    lf["n_test_pos"] = lf["n_test_pos"].fillna(NOT_SCORED["n_test_pos"]).astype(np.int64)
    lf["lbl_target"] = lf["lbl_target"].fillna(NOT_SCORED["lbl_target"])
    for name in ("conditional_describer", "anchor_tokens"):
        lf[name] = lf[name].fillna(NOT_SCORED[name])
    lf["n_cond_test_pos"] = lf["n_cond_test_pos"].fillna(NOT_SCORED["n_cond_test_pos"]).astype(np.int64)
    return LBLResults(lbl, lf.reset_index(drop=True), control)


def lbl_runner(workers: int, progress: bool) -> Callable[..., LBLTable]:
    """The LBL fan-out over `workers` processes (LBL results do not depend on the chunking)."""

    def run(acts, tokens, doc_ids, mask, latents, cfg, seed, vocab, dense=None) -> LBLTable:  # noqa: ANN001
        return run_lbl(acts, tokens, doc_ids, mask, latents, cfg, seed, vocab, workers, progress, dense)

    return run


def feature_table(crit: CriteriaResults, lbl: LBLResults) -> pd.DataFrame:
    """The per-latent table before the flag (column order is the writer's business); the llm describer's columns
    are blank (it runs only in `xenofeat explain`, never while scoring)."""
    n = len(lbl.frame)
    table = pd.DataFrame({"feature": np.arange(n, dtype=np.int64)})
    for out in crit.outcomes.values():
        for name, values in out.columns.items():
            table[name] = np.asarray(values)
    for name in lbl.frame.columns:
        table[name] = lbl.frame[name].to_numpy()
    return add_blank_columns(table)


def build_summary(table: pd.DataFrame, crit: CriteriaResults, lbl: LBLResults, inputs: Any, res: Any,
                  defn: Definition, job: Any) -> dict[str, Any]:  # fmt: skip  # noqa: ANN401
    """summary.json's content (timings are added once the store is written); `inputs` is the job's resolved
    `features.sae_inputs.Inputs`, `job` the `ScoreJob`."""
    fs = summarize(table, defn.flag)
    scored = table["best_describer"] != NOT_SCORED["best_describer"]
    return {
        "xenofeat_version": __version__,
        "n_latents": fs.n_latents,
        "alive": fs.alive,
        "well_defined": fs.well_defined,
        "flagged": fs.flagged,
        "passes": fs.passes,
        "flagged_by_describer": fs.flagged_by_describer,
        "token_anchored": fs.token_anchored,
        "flagged_without_learned": fs.flagged_without_learned,
        "best_describer": {
            str(k): int(v) for k, v in table.loc[scored, "best_describer"].value_counts().items()
        },
        "lbl_scored": int(scored.sum()),
        "lbl_mean": float(table.loc[scored, "labelability"].mean()) if scored.any() else None,
        "shuffled_control_lbl": lbl.control,
        **crit.merged("summary"),
        "sae": {
            "path": str(inputs.ref_path),
            "d_in": int(res.function.W_dec.shape[1]),
            "d_sae": fs.n_latents,
            "explained_variance": res.explained_variance,
            "l0": res.l0,
            **crit.merged("sae_summary"),
            "training_metrics": inputs.metrics,
        },
        "seeds": inputs.seeds,
        "others": [str(p) for p in inputs.other_paths],
        "cache": {
            "path": str(inputs.cache_path),
            "hook": inputs.hook,
            "fingerprint": inputs.cache_fingerprint,
        },
        "tokens_scored": res.n_tokens,
        "seqs_scored": res.n_seq,
        "max_tokens": job.max_tokens,
        "lbl_seed": job.seed,
        "score_settings": asdict(job.settings),
        "definition": {"name": defn.name, "version": defn.version},
    }


def store_content(table: pd.DataFrame, summary: dict[str, Any], crit: CriteriaResults, lbl: LBLResults, res: Any,
                  defn: Definition, settings: Any, vocab: list[str]) -> StoreContent:  # fmt: skip  # noqa: ANN401
    """Everything the store holds: the table, the definition, examples.h5's datasets and attributes, the summary."""
    acts = res.acts_csc
    n = acts.shape[1]
    s = settings
    data: dict[str, Any] = {}
    data.update(ex.example_windows(acts, res.tokens, res.mask, res.doc_ids, n_top=s.n_top, per_decile=s.per_decile,
                                   before=s.before, after=s.after, seed=s.seed))  # fmt: skip
    data.update(ex.histograms(acts, s.hist_bins))
    data.update(ex.nearest_latents(res.function.W_dec, s.n_nearest))
    dec_auroc = np.full((n, lbl.table.decile_auroc.shape[1]), np.nan, np.float32)
    dec_auroc[lbl.table.latents] = lbl.table.decile_auroc
    data["decile_auroc"] = dec_auroc
    data.update(ex.lbl_test_sets(lbl.table.test_windows, n))
    data.update(crit.merged("datasets"))
    data["grid/tokens"] = res.tokens.astype(np.int32)
    data["grid/mask"] = res.mask.astype(bool)
    data["grid/doc_ids"] = res.doc_ids.astype(np.int32)
    data["vocab"] = vocab
    attrs = ExamplesAttrs(
        n_latents=n,
        context_size=int(res.tokens.shape[1]),
        before=s.before,
        after=s.after,
        lbl_window=defn.labelability.window,
        hook=summary["cache"]["hook"],
    )
    return StoreContent(table, definition_to_toml(defn), attrs, data, summary)
