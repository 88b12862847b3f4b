"""C2 stability at scale: time and peak memory of the matching, and its agreement with exact Hungarian.

Each seed's SAE is synthetic: `--planted` of the F latents are noisy copies of shared directions (found again in
every seed, permuted), the rest random unit rows, encoder rows near the decoder rows. For each width F (d = `--d`):
C2 (`features.criteria.stability.stability`: the other seeds matched on min(decoder cos, encoder cos), and PW-MCC
over all pairs of seeds) and its null (`stability_null`: the same on random dictionaries of the same shape), timed
separately (wall clock and CPU time of all threads), with the process's peak resident memory (each width runs in its own process, so peaks do not mix).
Above `exact_max` (default 8,192) the sparse candidate matching is what runs. With `--agreement`, one pair of seeds
is matched both ways (exact Hungarian and sparse) and compared: partners, pass verdicts at tau, mean similarity.

    PYTHONPATH=. python benchmarks/bench_stability.py --widths 16384 65536 --d 768 --seeds 3
    PYTHONPATH=. python benchmarks/bench_stability.py --widths 3072 --d 384 --agreement
    PYTHONPATH=. python benchmarks/bench_stability.py --widths 65536 --d 768 --seeds 3 --no-null
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from features.criteria.stability import StabilityConfig, stability, stability_null
from sae_training.matching import match_min_cosine


def make_ensemble(
    n_seeds: int, f: int, d: int, planted: float, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(encoder rows, decoder rows) per seed: a `planted` fraction of shared noisy directions, the rest random."""
    rng = np.random.default_rng(seed)
    n_shared = int(planted * f)
    base = rng.standard_normal((n_shared, d), dtype=np.float32)
    out = []
    for _ in range(n_seeds):
        dec = rng.standard_normal((f, d), dtype=np.float32)
        dec[:n_shared] = base + 0.3 * rng.standard_normal((n_shared, d), dtype=np.float32)
        enc = dec + 0.3 * rng.standard_normal((f, d), dtype=np.float32)
        p = rng.permutation(f)
        out.append((enc[p], dec[p]))
    return out


def peak_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def one_width(f: int, d: int, n_seeds: int, planted: float, agreement: bool, with_null: bool = True) -> dict:
    """Measure one width in this process."""
    cfg = StabilityConfig()
    ens = make_ensemble(n_seeds, f, d, planted)
    base = peak_gib()
    t0, c0 = time.perf_counter(), time.process_time()
    res = stability(ens[0][0], ens[0][1], ens[1:], cfg)
    t_c2, cpu_c2 = time.perf_counter() - t0, time.process_time() - c0
    peak_c2 = peak_gib()
    t0, c0 = time.perf_counter(), time.process_time()
    null = stability_null([e[1].shape for e in ens], cfg) if with_null else None
    t_null, cpu_null = time.perf_counter() - t0, time.process_time() - c0
    row = {
        "F": f, "d": d, "seeds": n_seeds, "planted": planted, "method": "exact" if f <= cfg.exact_max else "sparse",
        "c2_s": round(t_c2, 1), "c2_cpu_s": round(cpu_c2, 1), "null_s": round(t_null, 1) if null else None,
        "null_cpu_s": round(cpu_null, 1) if null else None, "inputs_gib": round(base, 2),
        "peak_c2_gib": round(peak_c2, 2), "peak_gib": round(peak_gib(), 2), "pw_mcc": round(res.pw_mcc, 4),
        "pw_mcc_null": round(null.pw_mcc, 4) if null else None, "shared_fraction": round(res.shared_fraction, 4),
        "shared_fraction_null": round(null.shared_fraction, 4) if null else None,
    }  # fmt: skip
    if agreement:
        pairs = [(ens[0][1], ens[1][1]), (ens[0][0], ens[1][0])]
        t0 = time.perf_counter()
        exact = match_min_cosine(pairs, exact_max=10**9)
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        sparse = match_min_cosine(pairs, exact_max=0, k=cfg.match_candidates)
        t_sparse = time.perf_counter() - t0
        row["agreement"] = {
            "same_partner": float((exact.partner == sparse.partner).mean()),
            "same_pass_at_tau": float(((exact.similarity >= cfg.tau) == (sparse.similarity >= cfg.tau)).mean()),
            "mean_sim_exact": float(exact.mean), "mean_sim_sparse": float(sparse.mean),
            "exact_s": round(t_exact, 1), "sparse_s": round(t_sparse, 1),
        }  # fmt: skip
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16384])
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--planted", type=float, default=0.5)
    ap.add_argument(
        "--agreement", action="store_true", help="also match one pair by exact Hungarian and compare"
    )
    ap.add_argument("--no-null", action="store_true", help="skip the null (it costs as much as C2)")
    ap.add_argument(
        "--one", action="store_true", help=argparse.SUPPRESS
    )  # a child process measuring one width
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one_width(a.widths[0], a.d, a.seeds, a.planted, a.agreement, not a.no_null)))
        return
    for f in a.widths:
        cmd = [sys.executable, __file__, "--one", "--widths", str(f), "--d", str(a.d), "--seeds", str(a.seeds),
               "--planted", str(a.planted)] + (["--agreement"] if a.agreement else []) + (["--no-null"] if a.no_null else [])  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
