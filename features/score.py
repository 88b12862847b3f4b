"""The scoring job behind `xenofeat score`: WDF-v1 criteria, LBL-v1 and the flag for every latent, into a store.

`score(job)` resolves the SAEs and the cache (a run folder's ensemble, or `--sae DIR --others DIR... --cache F`),
streams the cache once with the reference SAE (`features.streaming`), computes C1-C6 on the (T, F) codes and the
SAE weights, LBL on the latents that fire (split over `workers` processes by latent: LBL results do not depend on
the chunking), applies the flag, and writes the store atomically: everything goes into `RUN/features.tmp/`, which
`features.publish` makes `RUN/features/` only at the end. A rerun after an interruption discards the unfinished
folder and starts again; an existing store is replaced only with `overwrite`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from activations.cache import ActivationCache
from activations.errors import UserError
from activations.faults import fault_point
from activations.version import __version__
from features import store as st
from features.criteria.atomicity import atomicity
from features.criteria.geometry import geometry
from features.criteria.mdl import mdl
from features.criteria.stability import stability
from features.criteria.support import antipodal_pairs, support, with_pairs
from features.definition import Definition, definition_to_toml, load_definition
from features.flags import apply_flags, summarize
from features.labelability import LBLConfig, shuffled_control
from features.lbl_parallel import run_lbl
from features.publish import prepare, publish
from features.sae_inputs import Inputs, resolve_inputs
from features.streaming import finish_function, stream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreJob:
    """What to score and how (the `xenofeat score` options)."""

    run: Path
    """Run folder: its ensemble is scored (unless `sae` is set) and the store goes to RUN/features/."""
    out: Path | None = None
    """Folder that receives the store (OUT/features/); default: `run`."""
    definition: Path | None = None
    """Definition TOML file; None: the built-in WDF-v1."""
    max_tokens: int | None = 1_000_000
    """Cap on the cache tokens scored (whole sequences from the start of the cache); None: all."""
    sae: Path | None = None
    """A sae-lens SAE folder to score instead of the run's seed-0 member."""
    others: tuple[Path, ...] = ()
    """sae-lens folders of the other seeds for C2 (with `sae`)."""
    cache: Path | None = None
    """Activation cache (required with `sae`; default: the run's cache)."""
    overwrite: bool = False
    """Replace an existing store."""
    workers: int = 2
    """Processes for LBL (by latent)."""
    seed: int = 0
    """Seed of LBL's document split and window samples (recorded in the summary)."""
    control_latents: int = 32
    """Latents (a seeded sample of the scored ones) for the shuffled-label control; 0: none."""
    n_top: int = 20
    """Top examples per latent in examples.h5."""
    per_decile: int = 5
    """Sampled examples per activation decile."""
    before: int = 16
    """Tokens before the centre in example windows."""
    after: int = 4
    """Tokens after the centre in example windows."""
    hist_bins: int = 32
    """Bins of the activation histograms."""
    n_nearest: int = 10
    """Nearest latents (decoder cosine) per latent."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UserError(f"--max-tokens: must be positive, got {self.max_tokens}")
        if self.workers < 1:
            raise UserError(f"--workers: must be positive, got {self.workers}")
        if self.sae is None and self.others:
            raise UserError("--others: only with --sae (a run folder scores its own ensemble)")
        if self.sae is not None and self.cache is None:
            raise UserError("--cache: required with --sae (the cache to score the SAE on)")


@dataclass
class ScoreResult:
    """Where the store went and its summary."""

    folder: Path
    summary: dict[str, Any]
    table: pd.DataFrame = field(repr=False)


def score(job: ScoreJob) -> ScoreResult:
    """Run the whole scoring job; returns the published store's folder and summary."""
    defn = load_definition(job.definition)
    inputs = resolve_inputs(job.run, sae=job.sae, others=job.others, cache=job.cache, defn=defn)
    dest = job.out if job.out is not None else job.run
    tmp = prepare(dest, job.overwrite)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        timings[name] = round(now - t0, 3)
        t0 = now
        fault_point(f"score.stage:{name}")

    with ActivationCache.open(inputs.cache_path) as cache:
        vocab = cache.vocab
        res = stream(
            cache,
            inputs.hook,
            inputs.ref,
            max_tokens=job.max_tokens,
            n_null=defn.function.n_null,
            null_seed=defn.function.seed,
            progress=job.progress,
        )
    lap("stream")
    table, extra, lbl = criteria_and_lbl(res, inputs, defn, job, vocab, lap)
    table = apply_flags(table, defn.flag)
    summary = build_summary(table, extra, inputs, res, defn, job, timings)
    write_store(tmp, table, summary, defn, res, lbl, extra, vocab, job)
    lap("write")
    summary["timings"] = timings
    st.write_json(tmp / st.SUMMARY_FILE, summary)
    folder = publish(tmp, dest)
    return ScoreResult(folder, summary, table)


def model_effect(res, inputs: Inputs, defn: Definition):  # noqa: ANN001, ANN201
    """C3 with the model (criteria/function_model.py) on the first `model_seqs` scored sequences, or None when the
    cache was not made from a model that loads here (required only when the definition's C3 mode uses it)."""
    from activations.model import load_model
    from features.criteria.function_model import model_function, output_gradients

    fcfg = defn.function
    with ActivationCache.open(inputs.cache_path) as cache:
        source, model_id = cache.meta.source, cache.meta.model_id
    why = None
    if source != "model":
        why = f"the cache was not made from a model (source: {source})"
    else:
        try:
            model = load_model(model_id)
        except UserError as err:
            why = str(err)
    if why is not None:
        if fcfg.mode != "offline":
            raise UserError(f"[function] mode = {fcfg.mode!r} needs the model, but {why}")
        log.info("C3 with the model skipped: %s", why)
        return None
    n = min(fcfg.model_seqs, res.n_seq)
    L = res.tokens.shape[1]
    grads, metric = output_gradients(model, inputs.hook, res.tokens[:n], res.doc_ids[:n] >= 0)
    dec = inputs.ref.W_dec.detach().float().numpy()
    return model_function(res.acts_csc[: n * L].tocsr(), grads.reshape(n * L, -1), dec, n_null=fcfg.n_null,
                          quantile=fcfg.null_quantile, seed=fcfg.seed, metric=metric)  # fmt: skip


def combine_function(offline: np.ndarray, mfun, defn: Definition) -> np.ndarray:  # noqa: ANN001
    """C3's verdict under the definition's mode (offline / model / both)."""
    mode = defn.function.mode
    if mode == "offline":
        return offline
    return mfun.passes if mode == "model" else offline & mfun.passes


def criteria_and_lbl(res, inputs: Inputs, defn: Definition, job: ScoreJob, vocab: list[str], lap):  # noqa: ANN001, ANN201
    """C1-C6 and LBL on the pass's codes: the per-latent table (before the flag), SAE-level extras, the LBL table."""
    acts = res.acts_csc
    enc = inputs.ref.W_enc.detach().float().numpy().T  # (F, d)
    dec = inputs.ref.W_dec.detach().float().numpy()  # (F, d)
    n_latents = dec.shape[0]
    flat_docs = res.doc_ids.reshape(-1)
    sup = support(acts, flat_docs, defn.support)
    density = sup.firing_count / max(res.n_tokens, 1)  # over unmasked tokens
    pairs = antipodal_pairs(enc, dec, density, defn.support)
    partner = pairs.partner
    sup = with_pairs(sup, acts, flat_docs, partner, defn.support)
    lap("support")
    finish_function(res.function, acts, partner)
    fres = res.function.result(defn.function)
    mfun = model_effect(res, inputs, defn)
    function_pass = combine_function(fres.passes, mfun, defn)
    md = mdl(acts, fres.delta_sse, fres.sse_total, res.function.W_dec.shape[1], defn.mdl, partner)
    lap("function_mdl")
    others = [
        (o.W_enc.detach().float().numpy().T, o.W_dec.detach().float().numpy()) for _, o in inputs.others
    ]
    stab = stability(enc, dec, others, defn.stability, partner)
    lap("stability")
    atom = atomicity(dec, defn.atomicity, partner)
    lap("atomicity")
    geo = geometry(acts, dec, defn.geometry)
    lap("geometry")
    lcfg: LBLConfig = defn.labelability
    # LBL only where C1 holds: below it there is too little support to estimate labelability, and the flag needs C1
    # anyway. On real SAEs this skips the long tail of rare latents, LBL's largest cost.
    scored = np.flatnonzero(sup.passes & (sup.firing_count >= lcfg.min_test_pos))
    lbl = run_lbl(
        acts, res.tokens, res.doc_ids, res.mask, scored, lcfg, job.seed, vocab, job.workers, job.progress
    )
    lap("labelability")
    control = np.nan
    if job.control_latents and len(scored):
        rng = np.random.default_rng(job.seed)
        pick = np.sort(rng.choice(scored, size=min(job.control_latents, len(scored)), replace=False))
        ctl = shuffled_control(acts, res.tokens, res.doc_ids, res.mask, pick, lcfg, job.seed, vocab=vocab)
        control = float(np.nanmean(ctl.labelability)) if np.isfinite(ctl.labelability).any() else np.nan
        lap("control")
    lf = lbl.to_frame().drop(columns=["decile_auroc"]).set_index("feature")
    lf = lf.reindex(np.arange(n_latents))
    lf["best_describer"] = lf["best_describer"].fillna("none")
    lf["readable"] = lf["readable"].fillna("not scored (fails C1 support)")
    lf["n_test_pos"] = lf["n_test_pos"].fillna(0).astype(np.int64)
    table = pd.DataFrame(
        {
            "feature": np.arange(n_latents, dtype=np.int64),
            "firing_count": sup.firing_count,
            "n_docs": sup.n_docs,
            "density": density,
            "dense": density > defn.support.max_density,
            "antipodal_partner": partner,
            "support_pass": sup.passes,
            "stability": stab.stability,
            "match_cos": stab.match_cos,
            "stability_pass": stab.passes,
            "delta_sse": fres.delta_sse,
            "null_q95": fres.null_q,
            "function_model": mfun.effect if mfun else np.full(n_latents, np.nan),
            "function_model_null_q": mfun.null_q if mfun else np.full(n_latents, np.nan),
            "function_pass": function_pass,
            "dl_bits": md.description_bits,
            "bits_saved": md.bits_saved,
            "mdl_pass": md.passes,
        }
    )
    for col in lf.columns:
        table[col] = lf[col].to_numpy()
    table["duplicate"] = atom.duplicate
    table["duplicate_of"] = np.where(atom.duplicate, atom.nearest, -1)
    table["max_cos_other"] = atom.max_cos_other
    table["composite"] = atom.composite
    table["meta_recon_cos"] = atom.meta_recon_cos
    table["cluster"] = geo.cluster
    table["separability"] = geo.separability
    table["mixture_index"] = geo.mixture
    table["multi_d"] = geo.multi_d
    table["mixture"] = geo.is_mixture
    extra = {"stability": stab, "partner": partner, "control": control, "meta_fve": atom.meta_fve, "lbl": lbl}
    return table, extra, lbl


def build_summary(
    table, extra, inputs: Inputs, res, defn: Definition, job: ScoreJob, timings
) -> dict[str, Any]:  # noqa: ANN001
    """The summary.json content (timings are added once the store is written)."""
    fs = summarize(table)
    stab = extra["stability"]
    scored = table["best_describer"] != "none"
    return {
        "xenofeat_version": __version__,
        "n_latents": fs.n_latents,
        "alive": fs.alive,
        "well_defined": fs.well_defined,
        "flagged": fs.flagged,
        "passes": fs.passes,
        "flagged_by_describer": fs.flagged_by_describer,
        "best_describer": {
            str(k): int(v) for k, v in table.loc[scored, "best_describer"].value_counts().items()
        },
        "lbl_scored": int(scored.sum()),
        "lbl_mean": float(table.loc[scored, "labelability"].mean()) if scored.any() else None,
        "shuffled_control_lbl": extra["control"],
        "function_model_pass": int((table["function_model"] > table["function_model_null_q"]).sum()),
        "antipodal_pairs": int((extra["partner"] >= 0).sum() // 2),
        "pw_mcc": stab.pw_mcc,
        "pw_mcc_std": stab.pw_mcc_std,
        "shared_fraction": stab.shared_fraction,
        "shared_fraction_dec": stab.shared_fraction_dec,
        "tau": defn.stability.tau,
        "sae": {
            "path": str(inputs.ref_path),
            "d_in": int(res.function.W_dec.shape[1]),
            "d_sae": fs.n_latents,
            "explained_variance": res.explained_variance,
            "l0": res.l0,
            "meta_sae_fve": extra["meta_fve"],
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
        "definition": {"name": defn.name, "version": defn.version},
        "timings": timings,
    }


def write_store(tmp: Path, table, summary, defn: Definition, res, lbl, extra, vocab, job: ScoreJob) -> None:  # noqa: ANN001
    """Write features.parquet, examples.h5 and definition.toml into the unfinished folder."""
    from features import examples as ex

    (tmp / st.DEFINITION_FILE).write_text(definition_to_toml(defn), encoding="utf-8")
    st.write_table(tmp / st.TABLE_FILE, table)
    acts = res.acts_csc
    n = acts.shape[1]
    data: dict[str, np.ndarray] = {}
    data.update(
        ex.example_windows(
            acts, res.tokens, res.mask, res.doc_ids,
            n_top=job.n_top, per_decile=job.per_decile, before=job.before, after=job.after, seed=job.seed,
        )
    )  # fmt: skip
    data.update(ex.histograms(acts, job.hist_bins))
    data.update(ex.nearest_latents(res.function.W_dec, job.n_nearest))
    dec_auroc = np.full((n, 10), np.nan, np.float32)
    dec_auroc[lbl.latents] = lbl.decile_auroc
    data["decile_auroc"] = dec_auroc
    data.update(ex.lbl_test_sets(lbl.test_windows, n))
    stab = extra["stability"]
    data["matches/seeds"] = np.asarray(summary["seeds"][1:], np.int64)
    data["matches/partner"] = stab.partner.astype(np.int64)
    data["matches/cos"] = stab.similarity.astype(np.float32)
    data["matches/dec_cos"] = stab.dec_cos.astype(np.float32)
    data["grid/tokens"] = res.tokens.astype(np.int32)
    data["grid/mask"] = res.mask.astype(bool)
    data["grid/doc_ids"] = res.doc_ids.astype(np.int32)
    data["vocab"] = vocab
    attrs = {
        "n_latents": n,
        "context_size": int(res.tokens.shape[1]),
        "center": job.before,
        "before": job.before,
        "after": job.after,
        "lbl_window": defn.labelability.window,
        "hook": summary["cache"]["hook"],
    }
    st.write_examples(tmp / st.EXAMPLES_FILE, attrs, data)
