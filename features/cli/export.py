"""`xenofeat export RUN (--flagged | --set NAME | --features 3,17 | --where EXPR) --format F --out DIR`."""

from __future__ import annotations

import argparse
import logging

from activations.errors import UserError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `xenofeat export` to the parser."""
    from features.exporters import FORMATS

    p = sub.add_parser(
        "export",
        help="export a feature set (json, csv, parquet, safetensors, saelens, neuronpedia, delphi)",
        description="Export the latents a selection picks from a scored run. Formats: "
        + "; ".join(f"{f.name}: {f.help}" for f in FORMATS.values()),
    )
    p.add_argument("run", help="the scored run folder (holding features/)")
    add_selection_options(p)
    p.add_argument("--format", required=True, metavar="F", help=f"one of {', '.join(FORMATS)}")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (must not exist unless --overwrite)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--splits", type=int, default=5, help="delphi: shards along the latent axis (default 5)")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from features.exporters import check_format, export

    check_format(args.format)
    if args.splits < 1:
        raise UserError(f"--splits: must be at least 1 (shards along the latent axis), got {args.splits}")
    sel = selection_from_args(args)
    out = export(args.run, sel, args.format, args.out, overwrite=args.overwrite, n_splits=args.splits)
    log.info("wrote %s", out)
    return 0


def add_selection_options(p: argparse.ArgumentParser) -> None:
    """The one-of selection options (--flagged / --set / --features / --where) `export` and `explain` share."""
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--flagged", action="store_true", help="the flagged latents (well defined, not labelable)")
    g.add_argument("--set", metavar="NAME", help="a feature set saved in the run (viewer or API)")
    g.add_argument("--features", metavar="I,J,...", help="latent indices, comma separated")
    g.add_argument(
        "--where", metavar="EXPR", help="a condition on the feature table, e.g. 'flag and density > 0.01'"
    )


def selection_from_args(args: argparse.Namespace):  # noqa: ANN201 - features.selection.Selection (lazy import)
    """The Selection the options of `add_selection_options` name."""
    from features.selection import Selection, parse_features

    if args.flagged:
        sel = Selection.flagged()
    elif args.set is not None:
        sel = Selection.from_set(args.set)
    elif args.features is not None:
        sel = Selection.from_features(parse_features(args.features))
    else:
        sel = Selection.where(args.where)
    return sel
