"""C2 stability against its null, subspace matching of antipodal pairs, and the sparse matching that scales.

Expectations are computed independently here: random dictionaries are drawn and matched with
`scipy.optimize.linear_sum_assignment` on explicitly built cosine matrices; rotated pairs are built by hand.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from features.cli.summary import summary_text
from features.criteria.registry import Context
from features.criteria.stability import CRITERION, StabilityConfig, stability, stability_null
from features.criteria.subspace import group_basis, subspace_cos
from sae_training.matching import match_min_cosine, pw_mcc, pw_mcc_null
from sae_training.sparse_matching import sparse_match
from viewer.overview import stability_line


def _unit(w: np.ndarray) -> np.ndarray:
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def _draws(shapes: list[tuple[int, int]], seed: int) -> list[np.ndarray]:
    """Random unit rows drawn as the null draws them: normalised float32 Gaussians from one seeded generator."""
    rng = np.random.default_rng(seed)
    return [_unit(rng.standard_normal(s, dtype=np.float32).astype(np.float64)) for s in shapes]


def _hungarian_mean(c: np.ndarray) -> float:
    r, k = linear_sum_assignment(c, maximize=True)
    return float(c[r, k].mean())


# ---- the null -------------------------------------------------------------------------------------------------


def test_pw_mcc_null_is_the_direct_computation():
    shapes = [(300, 40), (300, 40), (280, 40)]
    direct = [_hungarian_mean(a @ b.T) for a, b in combinations(_draws(shapes, seed=0), 2)]
    mean, std = pw_mcc_null(shapes, seed=0)
    assert abs(mean - np.mean(direct)) < 1e-5 and abs(std - np.std(direct)) < 1e-5
    assert pw_mcc_null(shapes, seed=0) == (mean, std)  # seeded: one number per shape


def test_pw_mcc_null_at_the_default_shape_is_about_0_17():
    mean, _ = pw_mcc_null([(3072, 384), (3072, 384)])
    assert 0.16 < mean < 0.19


def test_shared_fraction_null_is_the_direct_computation():
    # low dimension, so that random rows do reach tau now and then: the null is not trivially 0
    shapes, cfg = [(120, 6)] * 3, StabilityConfig(tau=0.8)
    rng = np.random.default_rng(0)
    draws = [
        (_unit(rng.standard_normal(s, dtype=np.float32).astype(np.float64)),
         _unit(rng.standard_normal(s, dtype=np.float32).astype(np.float64)))
        for s in shapes
    ]  # fmt: skip
    (ea, da), shared, shared_dec = draws[0], [], []
    for eb, db in draws[1:]:
        sim = np.minimum(da @ db.T, ea @ eb.T)
        r, k = linear_sum_assignment(sim, maximize=True)
        shared.append((sim[r, k] >= cfg.tau).mean())
        shared_dec.append(((da @ db.T)[r, k] >= cfg.tau).mean())
    null = stability_null(shapes, cfg)
    assert 0 < null.shared_fraction < 0.5
    assert abs(null.shared_fraction - np.mean(shared)) < 1e-9
    assert abs(null.shared_fraction_dec - np.mean(shared_dec)) < 1e-9
    assert (null.pw_mcc, null.pw_mcc_std) == pw_mcc_null(shapes)


def _planted_ensemble(n_seeds: int, f: int, d: int, shared: int, noise: float, seed: int = 0):
    """Seeds sharing `shared` directions (noisy, permuted), the rest random: (encoder rows, decoder rows) each."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((shared, d))
    out = []
    for _ in range(n_seeds):
        dec = rng.standard_normal((f, d))
        dec[:shared] = base + noise * rng.standard_normal((shared, d))
        p = rng.permutation(f)
        out.append(
            ((dec + 0.1 * rng.standard_normal((f, d)))[p].astype(np.float32), dec[p].astype(np.float32))
        )
    return out


def _context(ens: list[tuple[np.ndarray, np.ndarray]]) -> Context:
    (enc, dec), f = ens[0], ens[0][1].shape[0]
    return Context(
        acts=sp.csc_matrix((0, f), dtype=np.float32), doc_ids=np.zeros(0, np.int64), tokens=np.zeros((0, 1)),
        mask=np.zeros((0, 1), bool), n_tokens=0, enc=enc, dec=dec, others=ens[1:], seeds=list(range(len(ens))),
        function=None, hook="h", load_model=lambda: (None, "no model"),
    )  # fmt: skip


def test_planted_ensemble_is_well_above_its_null_in_the_summary():
    ens = _planted_ensemble(3, 256, 32, shared=200, noise=0.2)
    out = CRITERION.compute(_context(ens), StabilityConfig())
    s = out.summary
    assert s["pw_mcc"] > s["pw_mcc_null"] + 0.3
    assert s["shared_fraction"] > 0.6 and s["shared_fraction_null"] < 0.05
    assert s["pw_mcc_null"] == pw_mcc_null([(256, 32)] * 3)[0]  # the number run.json records for this shape
    text = summary_text(_fake_summary(s), where=__import__("pathlib").Path("x"))
    assert f"random dictionaries {s['pw_mcc_null']:.3f}" in text
    assert f"{s['pw_mcc_null']:.3f} for random dictionaries" in (stability_line(s) or "")


def test_summary_of_a_store_without_nulls_still_prints():
    s = {"pw_mcc": 0.5, "pw_mcc_std": 0.01, "shared_fraction": 0.1, "shared_fraction_dec": 0.2, "tau": 0.7}
    text = summary_text(_fake_summary(s), where=__import__("pathlib").Path("x"))
    assert "PW-MCC              0.500 +- 0.010" in text and "random" not in text
    assert stability_line(s) is None


def _fake_summary(stab: dict) -> dict:
    return {
        **stab, "best_describer": {}, "flagged_by_describer": {}, "n_latents": 1, "tokens_scored": 1, "alive": 1,
        "well_defined": 0, "passes": {}, "flagged": 0, "lbl_scored": 0, "seeds": [0, 1],
        "sae": {"path": "p", "explained_variance": 0.9, "l0": 8.0},
    }  # fmt: skip


# ---- subspace matching ---------------------------------------------------------------------------------------


def _rows_at(angles_deg: list[float], f: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """f random rows in d dimensions, the first ones replaced by unit vectors at these angles in the (e0, e1) plane."""
    dec = rng.standard_normal((f, d)).astype(np.float32)
    for k, a in enumerate(np.deg2rad(angles_deg)):
        dec[k] = 0.0
        dec[k, :2] = np.cos(a), np.sin(a)
    return dec


def test_principal_angle_cosine_by_hand():
    e = np.eye(4)
    plane = group_basis(e[:2])
    assert len(plane) == 2
    assert (
        abs(subspace_cos(plane, np.stack([e[0] + e[1], e[0] - e[1]])) - 1.0) < 1e-12
    )  # same plane, other basis
    tilted = np.stack([e[0], np.cos(0.3) * e[1] + np.sin(0.3) * e[2]])
    assert abs(subspace_cos(plane, tilted) - np.cos(0.3)) < 1e-12  # one principal angle of 0.3 rad
    near_antipodal = group_basis(np.stack([e[0], _unit(np.array([[-1.0, 0.2, 0, 0]]))[0]]))
    assert len(near_antipodal) == 1  # one signed direction, not a plane


def test_rotated_pair_passes_by_subspace_and_fails_by_rows():
    rng = np.random.default_rng(0)
    f, d = 40, 32
    ref = _rows_at([0, 90], f, d, rng)
    others = [_rows_at(a, f, d, rng) for a in ([50, 140], [-50, 40], [130, 220])]
    partner = np.full(f, -1)
    partner[[0, 1]] = [1, 0]
    cfg = StabilityConfig()
    on = stability(ref, ref, [(o, o) for o in others], cfg, partner, with_pw_mcc=False)
    off = stability(ref, ref, [(o, o) for o in others], StabilityConfig(subspace_match=False), partner,
                    with_pw_mcc=False)  # fmt: skip
    assert not off.passes[:2].any() and (off.stability[:2] < cfg.min_stability).all()
    assert on.passes[:2].all() and on.by_subspace[:2].all()
    assert np.allclose(on.subspace_cos[:2], 1.0) and np.allclose(on.subspace_stability[:2], 1.0)
    # ordinary latents: every C2 value unchanged, no subspace value
    for name in ("stability", "match_cos", "passes", "similarity", "partner"):
        assert np.array_equal(getattr(on, name)[..., 2:], getattr(off, name)[..., 2:]), name
    assert np.isnan(on.subspace_cos[2:]).all() and not on.by_subspace[2:].any()


def test_antipodal_pair_whose_direction_is_stable_passes_by_subspace():
    # a dense antipodal pair +-v split with a different perpendicular part in each seed: rows miss, v does not
    rng = np.random.default_rng(1)
    f, d = 50, 24
    v, w = np.eye(d)[0], np.eye(d)[1:]

    def seed(k: int, alpha: float) -> np.ndarray:
        dec = rng.standard_normal((f, d))
        dec[0] = np.cos(alpha) * v + np.sin(alpha) * w[k]
        dec[1] = -np.cos(alpha) * v + np.sin(alpha) * w[k]
        return dec.astype(np.float32)

    ref, others = seed(0, 0.35), [seed(k, np.pi / 4) for k in (1, 2)]
    partner = np.full(f, -1)
    partner[[0, 1]] = [1, 0]
    res = stability(ref, ref, [(o, o) for o in others], StabilityConfig(), partner, with_pw_mcc=False)
    assert (res.similarity[:, :2] < 0.7).all()  # cos(0.35) * cos(pi/4) = 0.66 for the rows
    assert res.passes[:2].all() and res.by_subspace[:2].all() and np.allclose(res.subspace_cos[:2], 1.0)


def test_pair_whose_subspace_is_not_found_fails():
    rng = np.random.default_rng(2)
    f, d = 40, 32
    ref = _rows_at([0, 90], f, d, rng)
    others = [rng.standard_normal((f, d)).astype(np.float32) for _ in range(2)]
    partner = np.full(f, -1)
    partner[[0, 1]] = [1, 0]
    res = stability(ref, ref, [(o, o) for o in others], StabilityConfig(), partner, with_pw_mcc=False)
    assert not res.passes[:2].any() and (res.subspace_cos[:2] < 0.8).all()


# ---- the sparse matching -------------------------------------------------------------------------------------


def test_sparse_matching_agrees_with_hungarian_on_random_and_planted_rows():
    # the C2 similarity at a reduced default shape: half of the latents planted (noisy, permuted), half random
    ens = _planted_ensemble(2, 1024, 128, shared=512, noise=0.3, seed=3)
    (ea, da), (eb, db) = ens
    pairs = [(da, db), (ea, eb)]
    exact = match_min_cosine(pairs, exact_max=10**9)
    sparse = match_min_cosine(pairs, exact_max=0)
    sim = np.minimum(_unit(da) @ _unit(db).T, _unit(ea) @ _unit(eb).T)
    r, k = linear_sum_assignment(sim, maximize=True)
    assert np.array_equal(exact.partner, k) and np.array_equal(r, np.arange(1024))
    assert np.array_equal(sparse.partner, exact.partner)  # the default candidates hold the whole optimum here
    assert np.allclose(sparse.similarity, exact.similarity, atol=1e-6)
    assert (exact.similarity >= 0.7).sum() > 400  # the planted half is found
    # with few candidates the random rows miss edges of the exact optimum: still one-to-one, never above it, and
    # the found latents keep their partners
    few = match_min_cosine(pairs, exact_max=0, k=16)
    found = exact.similarity >= 0.7
    assert (np.sort(few.partner) == np.arange(1024)).all() and few.mean < exact.mean
    assert np.array_equal(few.partner[found], exact.partner[found])
    assert abs(pw_mcc([da, db], exact_max=0)[0] - pw_mcc([da, db])[0]) < 1e-5


def test_sparse_matching_rectangular_and_tiny_candidate_lists():
    rng = np.random.default_rng(4)
    a, b = _unit(rng.standard_normal((60, 8))), _unit(rng.standard_normal((45, 8)))
    for k in (1, 3):  # with one candidate per row the diagonal edges keep a full matching possible
        partner, sim = sparse_match([(a, b)], k=k, block=16)
        matched = partner >= 0
        assert matched.sum() == 45 and len(set(partner[matched])) == 45
        assert np.allclose(sim[matched], np.einsum("fd,fd->f", a[matched], b[partner[matched]]), atol=1e-6)
        assert np.isnan(sim[~matched]).all()
    partner_t, _ = sparse_match([(b, a)], k=32)
    assert (partner_t >= 0).all() and len(set(partner_t)) == 45
