"""C2 stability: is a latent of the reference SAE found again in SAEs trained with other seeds?

Following Paulo & Belrose (2025), each other seed's latents are matched one-to-one to the reference's on the
similarity min(decoder cosine, encoder cosine), so a partner must agree on both what the latent reads and what it
writes: by exact Hungarian up to `exact_max` latents, above it by the sparse candidate matching of
`sae_training.sparse_matching` (each latent's and each partner's `match_candidates` best rows, then LAPJVsp), which
scales to 65k+ latents. Per latent: its partner and matched similarity in every other seed, `stability` = the
fraction of other seeds where that similarity is >= tau, and `match_cos` = the mean (default) or min of the matched
similarities over seeds. SAE level: PW-MCC (Song et al. 2025: matching on signed decoder cosines, mean over all pairs
of seeds, `sae_training.matching.pw_mcc`) and the shared fraction at tau (fraction of reference latents whose match
reaches tau, averaged over the other seeds; comparable to Paulo & Belrose's "shared" fraction, which they compute on
decoder cosines alone, also reported as `shared_fraction_dec`). Each is reported beside its null (`*_null`): its
value for random dictionaries of the same shape (seeded random unit encoder and decoder rows of each seed's (F, d),
matched by the same code; PW-MCC is about 0.17 at 3,072 x 384 by chance alone).

Antipodal pairs (C1's `partner`) are also matched as subspaces (`subspace_match`, `features.criteria.subspace`):
a pair splits one signed direction or plane between two latents, and may split it differently in every seed. A
paired latent passes C2 when its own row is found in enough seeds or its pair's subspace is (principal-angle cosine
>= `subspace_tau` in at least `min_stability` of the other seeds). Only pairs: C6's clusters are computed after C2.

With no other seeds (one pretrained SAE scored with `--stability none`, `features.pretrained`), C2 is not
applicable: its columns are NaN, `stability_pass` is True so that it does not gate `well_defined`, and the summary's
`stability` table says so (no PW-MCC or shared fraction).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from activations.settings import Settings, choice, integer, number, switch
from features.columns import Column
from features.criteria import subspace as sub
from features.criteria.registry import Context, Criterion, Dataset, Outcome, VerdictRow
from sae_training.matching import (
    NULL_SEED,
    match_min_cosine,
    pw_mcc,
    pw_mcc_null,
    random_unit_rows,
    unit_rows,
)


@dataclass(frozen=True)
class StabilityConfig(Settings):
    """C2 stability: the latent is found again in SAEs trained with other seeds."""

    tau: float = number(0.7, 0.0, 1.0, lo_open=True)
    """Matched similarity min(decoder cos, encoder cos) at which a latent counts as found in another seed."""
    min_stability: float = number(0.5, 0.0, 1.0, lo_open=True)
    """Least fraction of the other seeds in which the latent must be found."""
    min_seeds: int = integer(2, 2, 1000)
    """Fewest SAEs in the ensemble, the reference included."""
    match_cos: str = choice("mean", "mean", "min")
    """How the per-seed matched similarities are summarised in the `match_cos` column."""
    subspace_match: bool = switch(True)
    """Also match C1's antipodal pairs as subspaces (principal angles to the best two-row span in each other seed): a
    paired latent passes when its pair's subspace is found in >= min_stability of the other seeds. Pairs only: C6
    runs after C2."""
    subspace_tau: float = number(0.8, 0.0, 1.0, lo_open=True)
    """Smallest principal-angle cosine at which a pair's subspace counts as found in another seed (above tau: the
    best span of two rows among many reaches a given cosine more easily than one row)."""
    exact_max: int = integer(8192, 0)
    """Largest number of latents matched by exact Hungarian (F³ time, F² memory); above it the sparse candidate
    matching is used (agrees with Hungarian where measured; see benchmarks/RESULTS.md)."""
    match_candidates: int = integer(64, 1, 4096)
    """Best rows kept per latent and per other-seed latent as candidate pairs of the sparse matching."""


class StabilityResult(NamedTuple):
    """Per-latent and SAE-level stability of the reference SAE against the other seeds."""

    partner: np.ndarray  # (S-1, F) int64: matched latent in each other seed (-1 when unmatched)
    similarity: np.ndarray  # (S-1, F) float32: min(dec cos, enc cos) with that partner
    dec_cos: np.ndarray  # (S-1, F) float32: decoder cosine with that partner
    stability: np.ndarray  # (F,) float64: fraction of other seeds with similarity >= tau
    match_cos: np.ndarray  # (F,) float64: mean (or min, per cfg) matched similarity over seeds
    passes: np.ndarray  # (F,) bool: stability >= min_stability, or the pair's subspace_stability is
    pw_mcc: float  # mean over pairs of seeds of the matched signed decoder cosine
    pw_mcc_std: float
    shared_fraction: float  # mean over other seeds of the fraction of latents matched at >= tau
    shared_fraction_dec: float  # the same on decoder cosine alone (Paulo & Belrose's measure)
    subspace_cos: np.ndarray  # (F,) float64: the pair's mean (or min) principal-angle cosine; NaN unpaired
    subspace_stability: np.ndarray  # (F,) float64: share of seeds where it is >= subspace_tau; NaN unpaired
    by_subspace: np.ndarray  # (F,) bool: passes only because its pair's subspace is found


class StabilityNull(NamedTuple):
    """The SAE-level values of C2 for random dictionaries of the ensemble's shapes."""

    pw_mcc: float
    pw_mcc_std: float
    shared_fraction: float
    shared_fraction_dec: float


def _seed_matches(
    ref_enc: np.ndarray,
    ref_dec: np.ndarray,
    others: list[tuple[np.ndarray, np.ndarray]],
    cfg: StabilityConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(partner, min(dec, enc) similarity, decoder cosine), each (S-1, F), of the reference in every other seed."""
    partners, sims, decs = [], [], []
    ud_ref = unit_rows(ref_dec)
    for enc_b, dec_b in others:
        m = match_min_cosine([(ref_dec, dec_b), (ref_enc, enc_b)], cfg.exact_max, cfg.match_candidates)
        partners.append(m.partner)
        sims.append(np.nan_to_num(m.similarity, nan=-1.0))
        ok = m.partner >= 0
        dc = np.full(len(ref_dec), -1.0, dtype=np.float32)
        dc[ok] = np.einsum("fd,fd->f", ud_ref[ok], unit_rows(dec_b)[m.partner[ok]])
        decs.append(dc)
    return np.stack(partners), np.stack(sims), np.stack(decs)


def _pair_subspaces(
    ref_dec: np.ndarray,
    others: list[tuple[np.ndarray, np.ndarray]],
    partner: np.ndarray | None,
    cfg: StabilityConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """(subspace_cos, subspace_stability), each (F,), of C1's antipodal pairs (NaN elsewhere, or all NaN when off)."""
    n = len(ref_dec)
    groups = sub.pair_groups(partner) if partner is not None and cfg.subspace_match else []
    if not groups:
        return np.full(n, np.nan), np.full(n, np.nan)
    cos = sub.group_subspace_cos(unit_rows(ref_dec), groups, [unit_rows(dec) for _, dec in others])
    summary = cos.mean(axis=0) if cfg.match_cos == "mean" else cos.min(axis=0)
    return sub.per_latent(summary, groups, n), sub.per_latent(
        (cos >= cfg.subspace_tau).mean(axis=0), groups, n
    )


def stability(
    ref_enc: np.ndarray,
    ref_dec: np.ndarray,
    others: list[tuple[np.ndarray, np.ndarray]],
    cfg: StabilityConfig,
    partner: np.ndarray | None = None,
    *,
    with_pw_mcc: bool = True,
) -> StabilityResult:
    """C2 for every latent of the reference SAE (encoder rows (F, d), decoder rows (F, d)) against other seeds.

    `others` holds (encoder rows, decoder rows) of each other seed's SAE. With an antipodal `partner` array, a pair
    is stable as far as its less stable member: both get the min of the two stabilities and match_cos values; and
    with `subspace_match` the pair is also matched as a subspace, and passes when that subspace is found.
    """
    if not others:
        raise ValueError("stability needs at least one other seed")
    partners, similarity, dec_cos = _seed_matches(ref_enc, ref_dec, others, cfg)
    stab = (similarity >= cfg.tau).mean(axis=0)
    match = similarity.mean(axis=0) if cfg.match_cos == "mean" else similarity.min(axis=0)
    if partner is not None:
        paired = np.flatnonzero(partner >= 0)
        stab, match = stab.copy(), match.copy()
        stab[paired] = np.minimum(stab[paired], stab[partner[paired]])
        match[paired] = np.minimum(match[paired], match[partner[paired]])
    sub_cos, sub_stab = _pair_subspaces(ref_dec, others, partner, cfg)
    by_row = stab >= cfg.min_stability
    by_subspace = ~by_row & (np.nan_to_num(sub_stab, nan=-1.0) >= cfg.min_stability)
    if with_pw_mcc:
        mcc, mcc_std = pw_mcc([ref_dec] + [dec for _, dec in others], cfg.exact_max)
    else:
        mcc, mcc_std = float("nan"), float("nan")
    return StabilityResult(
        partner=partners,
        similarity=similarity,
        dec_cos=dec_cos,
        stability=stab,
        match_cos=match,
        passes=by_row | by_subspace,
        pw_mcc=mcc,
        pw_mcc_std=mcc_std,
        shared_fraction=float((similarity >= cfg.tau).mean()),
        shared_fraction_dec=float((dec_cos >= cfg.tau).mean()),
        subspace_cos=sub_cos,
        subspace_stability=sub_stab,
        by_subspace=by_subspace,
    )


def stability_null(
    shapes: list[tuple[int, int]], cfg: StabilityConfig, seed: int = NULL_SEED
) -> StabilityNull:
    """C2's SAE-level values for random dictionaries: seeded random unit encoder and decoder rows of each seed's
    (F, d) (`shapes`, the reference first), through the same matching. PW-MCC's null is `pw_mcc_null`'s, the same
    number training records in run.json."""
    rng = np.random.default_rng(seed)
    rand = [(random_unit_rows(s, rng), random_unit_rows(s, rng)) for s in shapes]
    res = stability(rand[0][0], rand[0][1], rand[1:], replace(cfg, subspace_match=False), with_pw_mcc=False)
    mcc, mcc_std = pw_mcc_null(shapes, cfg.exact_max, seed)
    return StabilityNull(mcc, mcc_std, res.shared_fraction, res.shared_fraction_dec)


def _not_applicable(ctx: Context) -> Outcome:
    """C2 without other seeds: NaN columns, a pass that does not gate, empty matches."""
    n = ctx.n_latents
    nan = np.full(n, np.nan)
    columns = {"stability": nan, "match_cos": nan, "subspace_cos": nan, "subspace_stability": nan,
               "stability_pass": np.ones(n, bool)}  # fmt: skip
    datasets = {
        "matches/seeds": np.zeros(0, np.int64),
        "matches/partner": np.zeros((0, n), np.int64),
        "matches/cos": np.zeros((0, n), np.float32),
        "matches/dec_cos": np.zeros((0, n), np.float32),
    }
    why = "no other seeds to match against (does not gate well_defined)"
    summary = {"stability": {"applicable": False, "why_not": why, "n_others": 0}}
    return Outcome(columns, None, summary=summary, datasets=datasets)


def _compute(ctx: Context, cfg: StabilityConfig) -> Outcome:
    """C2 against the other seeds, with the SAE-level PW-MCC and shared fractions beside their nulls, and the
    matches for the viewer; not applicable without other seeds."""
    if not ctx.others:
        return _not_applicable(ctx)
    stab = stability(ctx.enc, ctx.dec, ctx.others, cfg, ctx.partner)
    null = stability_null([ctx.dec.shape] + [dec.shape for _, dec in ctx.others], cfg)
    summary = {
        "pw_mcc": stab.pw_mcc,
        "pw_mcc_std": stab.pw_mcc_std,
        "pw_mcc_null": null.pw_mcc,
        "shared_fraction": stab.shared_fraction,
        "shared_fraction_null": null.shared_fraction,
        "shared_fraction_dec": stab.shared_fraction_dec,
        "shared_fraction_dec_null": null.shared_fraction_dec,
        "stable_by_subspace": int(stab.by_subspace.sum()),
        "tau": cfg.tau,
        "stability": {"applicable": True, "why_not": None, "n_others": len(ctx.others)},
    }
    datasets = {
        "matches/seeds": np.asarray(ctx.seeds[1:], np.int64),
        "matches/partner": stab.partner.astype(np.int64),
        "matches/cos": stab.similarity.astype(np.float32),
        "matches/dec_cos": stab.dec_cos.astype(np.float32),
    }
    columns = {
        "stability": stab.stability,
        "match_cos": stab.match_cos,
        "subspace_cos": stab.subspace_cos,
        "subspace_stability": stab.subspace_stability,
        "stability_pass": stab.passes,
    }
    return Outcome(columns, stab, summary=summary, datasets=datasets)


_OWNER = "criterion:stability"
CRITERION = Criterion(
    number=2,
    name="stability",
    title="stability",
    config=StabilityConfig,
    gates=True,
    passes="stability_pass",
    columns=(
        Column("stability", "float64", "C2: fraction of other seeds matched at >= tau", _OWNER),
        Column(
            "match_cos",
            "float64",
            "C2: mean (or min) matched min(dec, enc) cosine over the other seeds",
            _OWNER,
        ),
        Column(
            "subspace_cos",
            "float64",
            "C2: the antipodal pair's mean (or min) principal-angle cosine to the best two-row span in the other "
            "seeds (NaN when unpaired or subspace_match is off)",
            _OWNER,
        ),
        Column(
            "subspace_stability",
            "float64",
            "C2: fraction of other seeds where the pair's subspace is found (cosine >= subspace_tau; NaN unpaired)",
            _OWNER,
        ),
        Column(
            "stability_pass",
            "bool",
            "C2: found in enough seeds as a row, or as its pair's subspace; True where C2 is not applicable (no "
            "other seeds: its other columns NaN)",
            _OWNER,
        ),
    ),
    datasets=(
        Dataset("matches/seeds", "(S-1,)", "int64", "the other seeds", _OWNER),
        Dataset("matches/partner", "(S-1, F)", "int64", "matched partner in each other seed", _OWNER),
        Dataset("matches/cos", "(S-1, F)", "float32", "its min(dec, enc) cosine", _OWNER),
        Dataset("matches/dec_cos", "(S-1, F)", "float32", "its decoder cosine", _OWNER),
    ),
    verdicts=(
        VerdictRow(
            "fraction of other seeds matched",
            "stability",
            "≥",
            setting="min_stability",
            verdict="stability_pass",
        ),
        VerdictRow(
            "mean matched cosine", "match_cos", "≥ (per seed)", setting="tau", verdict="stability_pass"
        ),
        VerdictRow(
            "pair found as a subspace (fraction of seeds)",
            "subspace_stability",
            "≥",
            setting="min_stability",
            verdict="stability_pass",
        ),
    ),  # fmt: skip
    compute=_compute,
)
