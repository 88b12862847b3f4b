"""Open the flagged and token-anchored latents of a scored run, as a person would, and try the embedding describer.

For each latent with `flag` or `token_anchored` in OUT's store: its density, C7's R², every describer's held-out
AUROC and the readable description of the best, its top windows (the activating token in [brackets]) and a few of
its lowest-decile windows; then LBL again on exactly these latents with the semantic describer's sentence-embedding
backend (`semantic_backend = "minilm"`, the embedded MiniLM's mean-pooled final layer over each window's text)
against the default TF-IDF backend, so a flag that a topic explains is seen before it is reported.

    PYTHONPATH=. python benchmarks/open_flagged.py OUT [--windows 8]

OUT is a folder with `features/` (a `xenofeat run` output, or one layer of benchmarks/bench_layers.py).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from activations.cache import ActivationCache
from features.definition import load_definition
from features.labelability import labelability
from features.store import FeatureStore
from features.streaming import stream


def window_text(tokens: np.ndarray, centre: int, vocab: list[str]) -> str:
    """The window's tokens as text, the centre token in [brackets] (padding/masked ids < 0 dropped)."""
    out = []
    for i, t in enumerate(tokens):
        if t < 0:
            continue
        word = vocab[int(t)]
        out.append(f"[{word}]" if i == centre else word)
    return " ".join(out).replace(" ##", "")


def show_latent(store: FeatureStore, row: dict, n: int) -> None:
    aurocs = {k.removeprefix("auroc_"): row[k] for k in row if k.startswith("auroc_") and np.isfinite(row[k])}
    kind = "flag" if row["flag"] else "token_anchored"
    print(f"\n## latent {row['feature']} ({kind}) density {row['density']:.4f}, LBL {row['labelability']:.2f} "
          f"(hi {row['labelability_hi']:.2f}), best {row['best_describer']}, C7 R² {row.get('learned_r2', np.nan):.2f}"
          + (f", conditional LBL {row['lbl_conditional']:.2f}" if np.isfinite(row.get("lbl_conditional", np.nan))
             else ""))  # fmt: skip
    print("AUROC: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(aurocs.items(), key=lambda kv: -kv[1])))
    print(f"best describer reads: {row['readable']}")
    ex = store.examples(int(row["feature"]))
    vocab = store.vocab
    print("top windows:")
    for toks in ex.top.tokens[:n]:
        print("   ", window_text(toks, ex.top.center, vocab))
    dec = ex.deciles
    if len(dec.tokens) and dec.decile is not None:
        print("lowest-decile windows:")
        for toks in dec.tokens[dec.decile == dec.decile.min()][: max(2, n // 3)]:
            print("   ", window_text(toks, dec.center, vocab))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--windows", type=int, default=8)
    args = ap.parse_args()
    with FeatureStore.open(args.out) as store:
        table = store.table
        pick = table[table["flag"] | table["token_anchored"]]
        for row in pick.to_dict("records"):
            show_latent(store, row, args.windows)
        summary = store.summary
    latents = pick["feature"].to_numpy()
    if not len(latents):
        print("no flagged or token-anchored latent")
        return
    defn = load_definition(args.out / "features" / "definition.toml")
    from features.sae_inputs import resolve_inputs

    sae = Path(summary["sae"]["path"])
    run = sae.parent if sae.is_absolute() else (args.out / sae).parent
    inputs = resolve_inputs(run, sae=None, others=(), cache=Path(summary["cache"]["path"]), defn=defn)
    with ActivationCache.open(inputs.cache_path) as cache:
        vocab = cache.vocab
        res = stream(cache, inputs.hook, inputs.ref, max_tokens=summary.get("max_tokens"), n_null=0,
                     null_seed=0, progress=False)  # fmt: skip
    dense = table["dense"].to_numpy(bool) if "dense" in table else None
    print("\n## the semantic describer's backends on these latents (LBL seed as scored)")
    for backend in ("tfidf", "minilm"):
        cfg = dataclasses.replace(defn.labelability, semantic_backend=backend)
        got = labelability(res.acts_csc, res.tokens, res.doc_ids, res.mask, latents, cfg,
                           summary.get("lbl_seed", 0), vocab=vocab, progress=False, dense=dense)  # fmt: skip
        for j, lat in enumerate(latents):
            print(f"{backend:7s} latent {lat}: LBL {got.labelability[j]:.2f} (hi {got.labelability_hi[j]:.2f}), "
                  f"semantic AUROC {got.aurocs['semantic'][j]:.2f}, best {got.best_describer[j]}: {got.readable[j]}")  # fmt: skip


if __name__ == "__main__":
    main()
