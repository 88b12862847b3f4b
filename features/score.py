"""The scoring job behind `xenofeat score`: WDF-v1 criteria, LBL-v1 and the flag for every latent, into a store.

`score(job)` resolves the SAEs and the cache (a run folder's ensemble, or `--sae DIR --others DIR... --cache F`, or
a pretrained `--sae sae-lens:RELEASE/SAE_ID`; C2's other seeds as `--stability` says, see `features.pretrained`),
streams the cache once with the reference SAE (`features.streaming`), computes C1-C6 on the (T, F) codes and the
SAE weights, LBL on the latents that fire (split over `workers` processes by latent: LBL results do not depend on
the chunking), applies the flag, and writes the store atomically: everything goes into `RUN/features.tmp/`, which
`features.store.publish` makes `RUN/features/` only at the end. A rerun after an interruption discards the unfinished
folder and starts again; an existing store is replaced only with `overwrite`.

Under torchrun (`world` distributed; `features.distributed_score` runs the command) every rank resolves the same
inputs and streams its chunks of the cache (`features.streaming`: the codes are gathered to every rank, the sums
reduced), rank 0 alone runs the criteria, every rank scores LBL on its share of the latents
(`features.labelability.parallel.RankLBL`), and rank 0 alone applies the flag and writes and publishes the store;
the other ranks write nothing and return None.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from activations.cache import ActivationCache
from activations.devices import check_device, resolve_device
from activations.distributed import World, collected
from activations.errors import UserError
from activations.settings import SettingError, Settings, integer, option_name
from features import store as st
from features.criteria.registry import Context
from features.definition import load_definition
from features.flags import apply_flags
from features.labelability.parallel import RankLBL, follow_lbl
from features.pretrained import STABILITY_MODES, train_companions
from features.sae_inputs import Inputs, resolve_inputs
from features.scoring import (
    Timer,
    build_summary,
    feature_table,
    run_criteria,
    run_labelability,
    store_content,
)
from features.store.publish import prepare, publish
from features.streaming import stream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreSettings(Settings):
    """Settings of `xenofeat score` that shape its results besides the definition (recorded in summary.json)."""

    seed: int = integer(0, 0)
    """Seed of LBL's document split and window samples, the control's sample and the decile examples."""
    control_latents: int = integer(32, 0, 1_000_000)
    """Latents (a seeded sample of those LBL scores) for the shuffled-label control; 0: none."""
    n_top: int = integer(20, 1, 10_000)
    """Top examples per latent in examples.h5."""
    per_decile: int = integer(5, 0, 10_000)
    """Sampled examples per activation decile."""
    before: int = integer(16, 0, 4096)
    """Tokens before the centre in example windows."""
    after: int = integer(4, 0, 4096)
    """Tokens after the centre in example windows."""
    hist_bins: int = integer(32, 1, 100_000)
    """Bins of the activation histograms."""
    n_nearest: int = integer(10, 1, 10_000)
    """Nearest latents (decoder cosine) per latent."""


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
    sae: Path | str | None = None
    """A sae-lens SAE folder, or a pretrained `sae-lens:RELEASE/SAE_ID`, to score instead of the run's seed 0."""
    others: tuple[Path | str, ...] = ()
    """sae-lens folders or pretrained SAEs of the other seeds for C2 (with `sae`)."""
    stability: str | None = None
    """What C2 matches against (`features.pretrained.STABILITY_MODES`); None: `none` for one pretrained SAE without
    `others`, else `seeds`."""
    companion_tokens: int = 2_000_000
    """Training tokens of each seed companion (`stability="companions"`)."""
    cache: Path | None = None
    """Activation cache (required with `sae`; default: the run's cache)."""
    overwrite: bool = False
    """Replace an existing store."""
    workers: int = 2
    """Processes for LBL (by latent)."""
    # what shapes the results besides the definition: declared, with ranges and help, in `ScoreSettings`
    seed: int = 0
    control_latents: int = 32
    n_top: int = 20
    per_decile: int = 5
    before: int = 16
    after: int = 4
    hist_bins: int = 32
    n_nearest: int = 10
    progress: bool = True
    """Show progress bars."""
    device: str = "cpu"
    """Torch device of the streaming encode pass (cpu, cuda, cuda:N or auto); the codes come back to the CPU per
    chunk, so everything after the pass is the same."""

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UserError(f"--max-tokens: must be positive, got {self.max_tokens}")
        if self.workers < 1:
            raise UserError(f"--workers: must be positive, got {self.workers}")
        if self.sae is None and self.others:
            raise UserError("--others: only with --sae (a run folder scores its own ensemble)")
        if self.stability is not None and self.stability not in STABILITY_MODES:
            raise UserError(f"--stability: one of {', '.join(STABILITY_MODES)}, got {self.stability!r}")
        if self.companion_tokens < 1:
            raise UserError(f"--companion-tokens: must be positive, got {self.companion_tokens}")
        if self.sae is not None and self.cache is None:
            raise UserError("--cache: required with --sae (the cache to score the SAE on)")
        try:
            self.settings  # noqa: B018 - validates the result-shaping settings
        except SettingError as err:
            raise UserError(f"{option_name(err.key)}: {err}") from None

    @property
    def settings(self) -> ScoreSettings:
        """The settings among the job's that shape results (declared, validated, recorded in the summary)."""
        return ScoreSettings(
            seed=self.seed,
            control_latents=self.control_latents,
            n_top=self.n_top,
            per_decile=self.per_decile,
            before=self.before,
            after=self.after,
            hist_bins=self.hist_bins,
            n_nearest=self.n_nearest,
        )


@dataclass
class ScoreResult:
    """Where the store went and its summary."""

    folder: Path
    summary: dict[str, Any]
    table: pd.DataFrame = field(repr=False)


def score(job: ScoreJob, world: World | None = None) -> ScoreResult | None:
    """Run the whole scoring job; returns the published store's folder and summary (None on ranks other than 0)."""
    world = World() if world is None else world
    with collected(world) if world.distributed else nullcontext():  # a bad input stops every rank before work
        defn = load_definition(job.definition)
        inputs = resolve_inputs(
            job.run, sae=job.sae, others=job.others, cache=job.cache, defn=defn, stability=job.stability
        )
        device = resolve_device(job.device, world)
        dest = job.out if job.out is not None else job.run
        tmp = prepare(dest, job.overwrite) if world.is_main else None
    # companions (C2 for one pretrained SAE) are trained by rank 0 alone: the other ranks stream the reference SAE
    # and score LBL, neither of which reads the other seeds
    companions = (
        add_companions(inputs, dest, job, max(2, defn.stability.min_seeds - 1)) if world.is_main else None
    )
    timer = Timer()
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
            world=world,
            device=device,
        )
    timer.lap("stream")
    if not world.is_main:
        follow_lbl(world, res.acts_csc, res.tokens, res.doc_ids, res.mask, vocab, job.workers)
        return None
    settings = job.settings
    lbl_run = RankLBL(world, job.workers, job.progress)
    with lbl_run.guard():  # the other ranks wait for their LBL share; an error here stops them
        crit = run_criteria(criteria_context(res, inputs), defn, timer)
        lbl = run_labelability(res, crit, defn, settings, lbl_run, vocab, timer)
    table = apply_flags(feature_table(crit, lbl), defn.flag)
    summary = build_summary(table, crit, lbl, inputs, res, defn, job)
    summary["stability"] = {
        **summary.get("stability", {}),
        "mode": inputs.stability,
        "companions": companions,
    }
    content = store_content(table, summary, crit, lbl, res, defn, settings, vocab)
    st.write_data(tmp, content)
    timer.lap("write")
    summary["timings"] = timer.timings
    st.write_summary(tmp, summary)
    folder = publish(tmp, dest)
    return ScoreResult(folder, summary, table)


def add_companions(inputs: Inputs, dest: Path, job: ScoreJob, n: int) -> str | None:
    """With `--stability companions`: train `n` seed companions into DEST/companions (or reuse them) and make them
    C2's other seeds; returns their run folder (None in other modes)."""
    if inputs.stability != "companions":
        return None
    folder, seeds, saes = train_companions(
        inputs.ref, inputs.cache_path, inputs.hook, dest, fingerprint=inputs.cache_fingerprint,
        tokens=job.companion_tokens, n=n, overwrite=job.overwrite, progress=job.progress,
    )  # fmt: skip
    inputs.others = list(zip(seeds, saes, strict=True))
    inputs.other_paths = [folder / f"seed-{s}" for s in seeds]
    inputs.seeds = [inputs.seeds[0], *seeds]
    return str(folder)


def model_loader(cache_path: Path) -> Any:  # noqa: ANN401 - a Context.load_model callable
    """Loads the model the cache came from, on demand: (model, None), or (None, why it cannot be loaded)."""

    def load() -> tuple[Any, str | None]:
        from activations.model import load_model

        with ActivationCache.open(cache_path) as cache:
            source, model_id = cache.meta.source, cache.meta.model_id
        if source != "model":
            return None, f"the cache was not made from a model (source: {source})"
        try:
            return load_model(model_id), None
        except UserError as err:
            return None, str(err)

    return load


def criteria_context(res: Any, inputs: Inputs) -> Context:  # noqa: ANN401 - res: features.streaming.PassResult
    """The criteria's inputs from the streaming pass and the resolved SAEs."""

    def rows(sae: Any) -> tuple[Any, Any]:  # noqa: ANN401
        return sae.W_enc.detach().float().numpy().T, sae.W_dec.detach().float().numpy()

    enc, dec = rows(inputs.ref)
    return Context(
        acts=res.acts_csc,
        doc_ids=res.doc_ids.reshape(-1),
        tokens=res.tokens,
        mask=res.mask,
        n_tokens=res.n_tokens,
        enc=enc,
        dec=dec,
        others=[rows(o) for _, o in inputs.others],
        seeds=list(inputs.seeds),
        function=res.function,
        hook=inputs.hook,
        load_model=model_loader(inputs.cache_path),
        cache_path=inputs.cache_path,
    )
