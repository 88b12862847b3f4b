"""The flag and the token-anchored flag against planted truth: the synthetic run of the tests, read per planted kind.

Builds the scored synthetic run of `tests/scored_run.py` (the same config and seeds as the test session: planted
token, hash, hidden, dense-pair, position, document, token-anchored and rule-decided features; a 3-seed TopK
ensemble; `xenofeat score`), matches each planted feature to the latent of seed 0 that recovers it (decoder cosine
>= 0.9), and prints the flag's precision and recall on the planted unlabelable features (hash, hidden) and a table
of the planted kinds that issue 11 adds.

    PYTHONPATH=.:tests python benchmarks/bench_synthetic_flags.py [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from activations.synth import ANCHORED, DOCUMENT, HASH, HIDDEN, POSITION, RULE
from features.labelability import describer_names
from features.store import FeatureStore
from sae_training.recovery import recovery
from sae_training.run import load_member

COLUMNS = ("flag", "token_anchored", "labelability", "best_describer", "lbl_conditional", "lbl_conditional_hi",
           "anchor_fraction", "anchor_coverage")  # fmt: skip


def report(root: Path) -> str:
    from scored_run import build_scored_run

    sr = build_scored_run(root)
    t = FeatureStore.open(sr.run).table
    rec = recovery(load_member(sr.run, 0).W_dec.detach().numpy(), sr.truth.directions)
    kind = np.full(len(t), "", dtype=object)
    name = np.full(len(t), "", dtype=object)
    for f, (lat, cos) in enumerate(zip(rec.partner, rec.similarity, strict=True)):
        if cos >= 0.9:
            kind[lat], name[lat] = sr.truth.kinds[f], sr.truth.names[f]
    waiting = [k for k, d in ((POSITION, "position"), (DOCUMENT, "document")) if d not in describer_names()]
    unlabelable = np.isin(kind, [HASH, HIDDEN])
    flagged = t["flag"].to_numpy() & ~np.isin(kind, waiting)
    lines = [
        f"describers: {', '.join(describer_names())}; left out of precision (no describer yet): {waiting or 'none'}",
        f"flagged {int(t['flag'].sum())}, token-anchored {int(t['token_anchored'].sum())}; precision "
        f"{(flagged & unlabelable).sum() / max(flagged.sum(), 1):.3f}, recall "
        f"{(flagged & unlabelable).sum() / max(unlabelable.sum(), 1):.3f} ({int(unlabelable.sum())} hash/hidden "
        "recovered)",
        "token-anchored latents by planted kind: "
        + ", ".join(f"{k or 'none'} {int(n)}" for k, n in zip(*np.unique(kind[t["token_anchored"]], return_counts=True), strict=True)),
        "",
        "| planted | latent | " + " | ".join(COLUMNS) + " |",
        "| --- | ---: | " + " | ".join("---" for _ in COLUMNS) + " |",
    ]  # fmt: skip
    for k in (POSITION, DOCUMENT, ANCHORED, RULE):
        for lat in np.flatnonzero(kind == k):
            cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in t.loc[lat, list(COLUMNS)]]
            lines.append(f"| {name[lat]} | {lat} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None, help="folder for the run (default: a temporary one)")
    args = ap.parse_args()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=False)
        print(report(args.out))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(report(Path(tmp)))


if __name__ == "__main__":
    main()
