"""Cost of the semantic describer's sentence-embedding backend ("minilm") against TF-IDF on a real LBL pass.

Streams the reference SAE of a trained run over its cache (as `xenofeat score` does), takes the latents LBL would
score (C1 support), and in this process:
  1. runs LBL over all of them with the default TF-IDF backend (`workers` processes), counting the latents whose
     costly describers are not pruned (the semantic describer runs for those only) and their sampled windows;
  2. runs LBL with `semantic_backend = "minilm"` on a seeded sample of `--sample` of those unpruned latents in one
     process, and the TF-IDF backend on the same sample, and reports the extra seconds per latent and per window;
  3. extrapolates the extra time of the whole pass (every unpruned latent, `workers` processes), which is what
     `xenofeat run` would add with the MiniLM backend.

    PYTHONPATH=. python benchmarks/bench_semantic_backend.py --run RUN [--cache CACHE] [--sample 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from activations.cache import ActivationCache
from features.criteria.support import support
from features.definition import load_definition
from features.labelability import LBLConfig, labelability, run_lbl
from features.sae_inputs import resolve_inputs
from features.streaming import stream


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--sample", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=None)
    args = ap.parse_args()

    defn = load_definition(None)
    inputs = resolve_inputs(args.run, sae=None, others=(), cache=args.cache, defn=defn)
    with ActivationCache.open(inputs.cache_path) as cache:
        vocab = cache.vocab
        res = stream(cache, inputs.hook, inputs.ref, max_tokens=args.max_tokens, n_null=0, null_seed=0,
                     progress=False)  # fmt: skip
    acts = res.acts_csc
    sup = support(acts, res.doc_ids.reshape(-1), defn.support)
    cfg: LBLConfig = defn.labelability
    n_valid = int((~res.mask).sum())
    scored = np.flatnonzero(sup.passes & (sup.firing_count >= cfg.min_test_pos))
    dense = sup.firing_count / max(n_valid, 1) > defn.support.max_density
    print(f"tokens {n_valid:,} (unmasked); latents {acts.shape[1]:,}; scored by LBL {len(scored):,}; "
          f"dense {int(dense[scored].sum())}")  # fmt: skip

    lbl_args = (acts, res.tokens, res.doc_ids, res.mask)
    t0 = time.perf_counter()
    full = run_lbl(*lbl_args, scored, cfg, 0, vocab, args.workers, progress=False, dense=dense)
    t_full = time.perf_counter() - t0
    unpruned = scored[np.isfinite(full.aurocs["semantic"])]
    # about half of a latent's windows are test windows (test_fraction 0.5)
    windows = np.array([2 * len(full.test_windows[int(j)].flat_idx) for j in unpruned])
    print(f"TF-IDF pass: {t_full:.1f} s with {args.workers} processes; unpruned (semantic runs) {len(unpruned):,} "
          f"latents, ~{windows.sum():,} sampled windows ({windows.mean():.0f} per latent)")  # fmt: skip

    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(unpruned, size=min(args.sample, len(unpruned)), replace=False))
    times = {}
    for backend in ("tfidf", "minilm"):
        c = dataclasses.replace(cfg, semantic_backend=backend)
        t0 = time.perf_counter()
        got = labelability(*lbl_args, pick, c, 0, vocab=vocab, progress=False, dense=dense)
        times[backend] = time.perf_counter() - t0
        print(f"{backend}: {times[backend]:.1f} s for {len(pick)} latents in 1 process; "
              f"mean AUROC semantic {np.nanmean(got.aurocs['semantic']):.3f}, "
              f"best = semantic for {int((got.best_describer == 'semantic').sum())}")  # fmt: skip
    n_win = sum(2 * len(full.test_windows[int(j)].flat_idx) for j in pick)
    extra = times["minilm"] - times["tfidf"]
    per_latent = extra / max(len(pick), 1)
    print(f"MiniLM extra: {per_latent:.2f} s per latent, {1e3 * extra / max(n_win, 1):.1f} ms per window "
          f"(model load included once)")  # fmt: skip
    print(f"extrapolated extra time of the whole pass: {per_latent * len(unpruned) / args.workers / 60:.1f} min "
          f"with {args.workers} processes")  # fmt: skip


if __name__ == "__main__":
    main()
