"""C2 stability: is a latent of the reference SAE found again in SAEs trained with other seeds?

Following Paulo & Belrose (2025), each other seed's latents are matched one-to-one to the reference's by the
Hungarian algorithm on the similarity min(decoder cosine, encoder cosine), so a partner must agree on both what the
latent reads and what it writes. Per latent: its partner and matched similarity in every other seed, `stability` =
the fraction of other seeds where that similarity is >= tau, and `match_cos` = the mean (default) or min of the
matched similarities over seeds. SAE level: PW-MCC (Song et al. 2025: Hungarian on signed decoder cosines, mean over
all pairs of seeds, `sae_training.matching.pw_mcc`) and the shared fraction at tau (fraction of reference latents
whose match reaches tau, averaged over the other seeds; comparable to Paulo & Belrose's "shared" fraction, which
they compute on decoder cosines alone, also reported as `shared_fraction_dec`).

Cosine matrices are built in row blocks; a 16k x 16k float32 similarity is 1 GiB (scipy's assignment copies it as
float64), which is the practical limit of dense Hungarian matching here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from activations.settings import Settings, choice, integer, number
from features.columns import Column
from features.criteria.registry import Context, Criterion, Dataset, Outcome, VerdictRow
from sae_training.matching import hungarian, pw_mcc, unit_rows


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


class StabilityResult(NamedTuple):
    """Per-latent and SAE-level stability of the reference SAE against the other seeds."""

    partner: np.ndarray  # (S-1, F) int64: matched latent in each other seed (-1 when unmatched)
    similarity: np.ndarray  # (S-1, F) float32: min(dec cos, enc cos) with that partner
    dec_cos: np.ndarray  # (S-1, F) float32: decoder cosine with that partner
    stability: np.ndarray  # (F,) float64: fraction of other seeds with similarity >= tau
    match_cos: np.ndarray  # (F,) float64: mean (or min, per cfg) matched similarity over seeds
    passes: np.ndarray  # (F,) bool: stability >= min_stability
    pw_mcc: float  # mean over pairs of seeds of the Hungarian-matched signed decoder cosine
    pw_mcc_std: float
    shared_fraction: float  # mean over other seeds of the fraction of latents matched at >= tau
    shared_fraction_dec: float  # the same on decoder cosine alone (Paulo & Belrose's measure)


def min_cosine_matrix(
    enc_a: np.ndarray, dec_a: np.ndarray, enc_b: np.ndarray, dec_b: np.ndarray, block: int = 2048
) -> np.ndarray:
    """(F_a, F_b) float32 min(decoder cosine, encoder cosine), built in row blocks without a second full matrix."""
    ea, da, eb, db = unit_rows(enc_a), unit_rows(dec_a), unit_rows(enc_b), unit_rows(dec_b)
    out = np.empty((len(da), len(db)), dtype=np.float32)
    for s in range(0, len(da), block):
        np.minimum(da[s : s + block] @ db.T, ea[s : s + block] @ eb.T, out=out[s : s + block])
    return out


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
    is stable as far as its less stable member: both get the min of the two stabilities and match_cos values.
    """
    if not others:
        raise ValueError("stability needs at least one other seed")
    n = len(ref_dec)
    partners, sims, decs = [], [], []
    ud_ref = unit_rows(ref_dec)
    for enc_b, dec_b in others:
        sim = min_cosine_matrix(ref_enc, ref_dec, enc_b, dec_b)  # (F, F_b)
        m = hungarian(sim)
        partners.append(m.partner)
        sims.append(np.nan_to_num(m.similarity, nan=-1.0))
        ok = m.partner >= 0
        dc = np.full(n, -1.0, dtype=np.float32)
        dc[ok] = np.einsum("fd,fd->f", ud_ref[ok], unit_rows(dec_b)[m.partner[ok]])
        decs.append(dc)
        del sim
    similarity = np.stack(sims)  # (S-1, F)
    dec_cos = np.stack(decs)
    stab = (similarity >= cfg.tau).mean(axis=0)
    match = similarity.mean(axis=0) if cfg.match_cos == "mean" else similarity.min(axis=0)
    if partner is not None:
        paired = np.flatnonzero(partner >= 0)
        stab, match = stab.copy(), match.copy()
        stab[paired] = np.minimum(stab[paired], stab[partner[paired]])
        match[paired] = np.minimum(match[paired], match[partner[paired]])
    if with_pw_mcc:
        mcc, mcc_std = pw_mcc([ref_dec] + [dec for _, dec in others])
    else:
        mcc, mcc_std = float("nan"), float("nan")
    return StabilityResult(
        partner=np.stack(partners),
        similarity=similarity,
        dec_cos=dec_cos,
        stability=stab,
        match_cos=match,
        passes=stab >= cfg.min_stability,
        pw_mcc=mcc,
        pw_mcc_std=mcc_std,
        shared_fraction=float((similarity >= cfg.tau).mean()),
        shared_fraction_dec=float((dec_cos >= cfg.tau).mean()),
    )


def _compute(ctx: Context, cfg: StabilityConfig) -> Outcome:
    """C2 against the other seeds, with the SAE-level PW-MCC and shared fractions, and the matches for the viewer."""
    stab = stability(ctx.enc, ctx.dec, ctx.others, cfg, ctx.partner)
    summary = {
        "pw_mcc": stab.pw_mcc,
        "pw_mcc_std": stab.pw_mcc_std,
        "shared_fraction": stab.shared_fraction,
        "shared_fraction_dec": stab.shared_fraction_dec,
        "tau": cfg.tau,
    }
    datasets = {
        "matches/seeds": np.asarray(ctx.seeds[1:], np.int64),
        "matches/partner": stab.partner.astype(np.int64),
        "matches/cos": stab.similarity.astype(np.float32),
        "matches/dec_cos": stab.dec_cos.astype(np.float32),
    }
    columns = {"stability": stab.stability, "match_cos": stab.match_cos, "stability_pass": stab.passes}
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
        Column("stability_pass", "bool", "C2", _OWNER),
    ),
    datasets=(
        Dataset("matches/seeds", "(S-1,)", "int64", "the other seeds", _OWNER),
        Dataset("matches/partner", "(S-1, F)", "int64", "Hungarian partner in each other seed", _OWNER),
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
    ),  # fmt: skip
    compute=_compute,
)
