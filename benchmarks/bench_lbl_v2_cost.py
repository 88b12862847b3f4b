"""Scoring with LBL-v2 and C7 against LBL-v1 on the same trained ensemble, in one script (issue 11).

The same run folder is scored twice with `features.score.score` (1M tokens, seed 0, 2 workers, `xenofeat run`'s
`[score]` defaults), alternating which goes first over `--repeats`:
- **v2**: the built-in definition as it is (every registered describer, centre hard negatives and conditional
  labelability, dense latents labelled on their activation, C7 learned with its random-init copy);
- **v1**: LBL-v1 as it was before issue 11: the token, rule and semantic describers only, no centre hard negatives
  (`centre_neg_per_pos = 0`), dense latents labelled on firing (`dense_target = "firing"`), and no C7 (the criterion
  is left out of the registry for that call, which only a benchmark does).
Printed: wall time of each and their ratio, each store's per-stage timings, and what each flags (so the same script
gives the "before LBL-v2" and "after" counts of a run, e.g. of the random-init control).

    PYTHONPATH=. python benchmarks/bench_lbl_v2_cost.py xenofeat-run/sae --work /tmp/lblcost
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from features.cli.pipeline import DEFAULT_SCORE
from features.criteria import registry
from features.labelability import register_describer, registered_describers, unregister_describer
from features.score import ScoreJob, score
from features.store import FeatureStore

V1_DESCRIBERS = ("token", "rule", "semantic")
V1_DEFINITION = '[labelability]\ncentre_neg_per_pos = 0.0\ndense_target = "firing"\n'


@contextmanager
def lbl_v1() -> Iterator[None]:
    """LBL-v1's describers only, and no C7, for the duration of the block."""
    removed = [unregister_describer(d.name) for d in registered_describers() if d.name not in V1_DESCRIBERS]
    package = registry._package_criteria
    try:
        with mock.patch.object(
            registry, "_package_criteria", lambda: [c for c in package() if c.name != "learned"]
        ):
            yield
    finally:
        for d in removed:
            register_describer(d, replace=True)


def score_once(run: Path, out: Path, definition: Path | None) -> tuple[float, dict]:
    s = DEFAULT_SCORE
    t = time.perf_counter()
    score(ScoreJob(run=run, out=out, definition=definition, max_tokens=s["max_tokens"], workers=s["workers"],
                   seed=s["seed"], overwrite=True, progress=False))  # fmt: skip
    wall = time.perf_counter() - t
    with FeatureStore.open(out) as store:
        summ = store.summary
    keep = ("well_defined", "flagged", "token_anchored", "best_describer", "flagged_by_describer", "timings")
    return wall, {k: summ.get(k) for k in keep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a trained run folder (e.g. xenofeat-run/sae)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=1, help="pairs of scorings, alternating which goes first")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    v1_def = args.work / "lbl-v1.toml"
    v1_def.write_text(V1_DEFINITION)
    walls: dict[str, list[float]] = {"v1": [], "v2": []}
    for rep in range(args.repeats):
        order = ("v1", "v2") if rep % 2 == 0 else ("v2", "v1")
        for which in order:
            if which == "v1":
                with lbl_v1():
                    wall, summ = score_once(args.run, args.work / "v1", v1_def)
            else:
                wall, summ = score_once(args.run, args.work / "v2", None)
            walls[which].append(wall)
            print(json.dumps({"which": which, "wall_s": round(wall, 1), **summ}), flush=True)
    v1, v2 = min(walls["v1"]), min(walls["v2"])
    print(
        f"scoring wall time (best of {args.repeats}): LBL-v1 {v1:.0f} s, LBL-v2 + C7 {v2:.0f} s, ratio {v2 / v1:.2f}x"
    )


if __name__ == "__main__":
    main()
