"""The flag on every residual-stream layer of the embedded model (issue 11's "first real finding").

One cache holds `blocks.0` ... `blocks.5.hook_resid_post` on the embedded default corpus. For each hook, the ensemble
of `xenofeat run` is trained (its `[train]` defaults) and scored with the built-in definition (its `[score]`
defaults: 1M tokens, seed 0). Per layer: latents alive, well defined, learned (C7), flagged, token-anchored, PW-MCC
and shared fraction against random dictionaries of the same shape; and every flagged latent with its density, every
describer's AUROC, its conditional labelability where it has one, and C7's R².

    xenofeat cache --hook blocks.0.hook_resid_post ... --hook blocks.5.hook_resid_post --out layers/cache.h5
    PYTHONPATH=. python benchmarks/bench_layers.py layers/cache.h5 --work layers [--layers 0 1 2 3 4 5]

Each layer's run and store stay under WORK/ (`xenofeat view WORK/block-N` opens one); a finished layer is not redone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from features.cli.pipeline import DEFAULT_SCORE, DEFAULT_TRAIN
from features.score import ScoreJob, score
from features.store import FEATURES_DIR, FeatureStore
from sae_training.config import TrainConfig
from sae_training.run import read_run_json
from sae_training.trainer import train


def run_layer(cache: Path, layer: int, work: Path) -> dict[str, Any]:
    """Train and score one layer (resumed / skipped where done); returns its row and its flagged latents."""
    hook = f"blocks.{layer}.hook_resid_post"
    out = work / f"block-{layer}"
    run_dir = out / "sae"
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    info = read_run_json(run_dir) if run_dir.is_dir() else None
    if info is None or info.get("status") != "complete":
        cfg = TrainConfig.from_dict(DEFAULT_TRAIN, source="xenofeat run defaults")
        train(cfg, cache, run_dir, hook=hook, resume=info is not None, progress=False)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    if not (out / FEATURES_DIR).is_dir():
        s = DEFAULT_SCORE
        score(ScoreJob(run=run_dir, out=out, max_tokens=s["max_tokens"], workers=s["workers"], seed=s["seed"],
                       progress=False))  # fmt: skip
    score_s = time.perf_counter() - t
    with FeatureStore.open(out) as store:
        summ, table = store.summary, store.table
    learned = summ.get("learned") or {}
    row = {
        "hook": hook,
        "alive": summ["alive"],
        "well_defined": summ["well_defined"],
        "learned": learned.get("n_learned"),
        "judged": learned.get("n_judged"),
        "flagged": summ["flagged"],
        "token_anchored": summ.get("token_anchored", 0),
        "pw_mcc": summ["pw_mcc"],
        "pw_mcc_null": summ.get("pw_mcc_null"),
        "shared": summ["shared_fraction"],
        "shared_null": summ.get("shared_fraction_null"),
        "train_s": round(train_s),
        "score_s": round(score_s),
    }
    aurocs = [c for c in table.columns if c.startswith("auroc_")]
    extra = [c for c in ("density", "labelability", "labelability_hi", "best_describer", "lbl_conditional",
                         "learned_r2", "token_anchored") if c in table.columns]  # fmt: skip
    flagged = table[table["flag"]][["feature", *extra, *aurocs]]
    anchored = table[table["token_anchored"]] if "token_anchored" in table.columns else table.iloc[:0]
    row["flagged_latents"] = json.loads(flagged.to_json(orient="records"))
    row["token_anchored_latents"] = [int(f) for f in anchored["feature"]]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache", type=Path, help="a cache of the embedded default with the residual-stream hooks")
    ap.add_argument("--work", type=Path, required=True, help="folder for each layer's run and store")
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    args = ap.parse_args()
    rows = []
    for layer in args.layers:
        row = run_layer(args.cache, layer, args.work)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        "| hook | alive | well defined | learned (C7) | flagged | token-anchored | PW-MCC (null) | shared (null) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| `{r['hook']}` | {r['alive']} | {r['well_defined']} | {r['learned']} of {r['judged']} | "
            f"{r['flagged']} | {r['token_anchored']} | {r['pw_mcc']:.3f} ({r['pw_mcc_null']:.3f}) | "
            f"{r['shared']:.3f} ({r['shared_null']:.3f}) |"
        )


if __name__ == "__main__":
    main()
