"""Subcommands of the `features` package: `xenofeat score`, `run`, `definition`, `export` and `explain`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from features.cli import definition, explain, export
from features.cli.summary import summary_text


def _sae_arg(value: str) -> Path | str:
    """An `--sae` / `--others` value: a pretrained `sae-lens:RELEASE/SAE_ID` as given, else a folder."""
    return value if value.startswith("sae-lens:") else Path(value)


def _score(args: argparse.Namespace) -> int:
    from activations.distributed import World
    from features.distributed_score import score_command
    from features.score import ScoreJob, score

    job = ScoreJob(
        run=Path(args.run),
        out=Path(args.out) if args.out else None,
        definition=Path(args.definition) if args.definition else None,
        max_tokens=args.max_tokens,
        sae=_sae_arg(args.sae) if args.sae else None,
        others=tuple(_sae_arg(p) for p in args.others or ()),
        stability=args.stability,
        companion_tokens=args.companion_tokens,
        cache=Path(args.cache) if args.cache else None,
        overwrite=args.overwrite,
        workers=args.workers,
        seed=args.seed,
        progress=not args.quiet,
        device=args.device,
    )
    world = World.from_env()
    if world.distributed:  # under torchrun (features.distributed_score)
        return score_command(job, world)
    res = score(job)
    sys.stdout.write(summary_text(res.summary, res.folder))
    return 0


def _run(args: argparse.Namespace) -> int:
    from features.cli.pipeline import pipeline_from_args

    return pipeline_from_args(args)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `score`, `run` and `definition` to the `xenofeat` parser."""
    p = sub.add_parser(
        "score", help="apply the feature definition, measure labelability, flag (writes RUN/features/)"
    )
    p.add_argument(
        "run", metavar="RUN", help="run folder (its ensemble is scored; the store goes to RUN/features/)"
    )
    p.add_argument("--definition", metavar="D.toml", help="feature definition (default: the built-in WDF-v1)")
    p.add_argument(
        "--max-tokens", type=int, default=1_000_000, metavar="N", help="cache tokens scored (default 1M)"
    )
    p.add_argument(
        "--sae",
        metavar="DIR|sae-lens:RELEASE/SAE_ID",
        help="score this sae-lens SAE folder, or this pretrained SAE of sae-lens's registry (downloaded only with "
        "XENOFEAT_ONLINE=1, else read from the local Hugging Face cache), instead of the run's seed 0",
    )
    p.add_argument(
        "--others",
        nargs="+",
        metavar="DIR|sae-lens:...",
        help="SAEs of other seeds (folders or pretrained; with --sae, for C2)",
    )
    p.add_argument(
        "--stability",
        choices=("seeds", "companions", "none"),
        help="what C2 matches the SAE against: seeds (the run's other seeds or --others), companions (train 2 "
        "SAEs of the same architecture and shape on the cache into OUT/companions/), none (C2 not applicable: "
        "does not gate well_defined); default: none for one pretrained SAE without --others, else seeds",
    )
    p.add_argument(
        "--companion-tokens",
        type=int,
        default=2_000_000,
        metavar="N",
        help="training tokens of each companion (--stability companions; default 2M)",
    )
    p.add_argument(
        "--cache", metavar="F.h5", help="activation cache (required with --sae; default: the run's)"
    )
    p.add_argument(
        "--out", metavar="DIR", help="folder that receives the store (DIR/features/; default: RUN)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--workers", type=int, default=2, help="processes for labelability (default 2)")
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device of the encode pass: cpu (default), cuda (under torchrun cuda:LOCAL_RANK), cuda:N, auto",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the labelability samples (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_score)

    r = sub.add_parser(
        "run", help="cache -> train (3 seeds) -> score on the embedded default, resumable by stage"
    )
    r.add_argument(
        "--out", default="xenofeat-run", metavar="DIR", help="output folder (default xenofeat-run)"
    )
    r.add_argument(
        "--config", metavar="F.toml", help="[cache], [train] and [score] settings (see `xenofeat run`)"
    )
    r.add_argument(
        "--control",
        action="store_true",
        help="also run the same pipeline on a random-init copy of the model into OUT/control/ and compare "
        "labelability (what token statistics alone explain)",
    )
    r.add_argument(
        "--max-tokens", type=int, default=None, metavar="N", help="tokens scored (default: [score])"
    )
    r.add_argument(
        "--device",
        default=None,
        help="torch device of every stage: cpu, cuda (cuda:LOCAL_RANK under torchrun), cuda:N or auto "
        "(default: each table's, cpu)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_run)

    definition.register(sub)
    export.register(sub)
    explain.register(sub)
