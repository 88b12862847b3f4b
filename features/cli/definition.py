"""`xenofeat definition show [--definition F]`: print a feature definition as it would be applied.

Mounted under the `xenofeat` root by `features.cli.commands.register`.
"""

from __future__ import annotations

import argparse
import sys

from features.definition import definition_to_toml, load_definition


def _show(args: argparse.Namespace) -> int:
    defn = load_definition(args.definition)
    sys.stdout.write(definition_to_toml(defn))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `definition show` to the `xenofeat` parser."""
    parser = sub.add_parser("definition", help="show or check a feature definition (WDF-v1, LBL-v1, flag)")
    dsub = parser.add_subparsers(dest="definition_command", metavar="ACTION", required=True)
    show = dsub.add_parser("show", help="print the definition (the built-in default, or a file validated)")
    show.add_argument(
        "--definition",
        metavar="F",
        default=None,
        help="a definition TOML file (default: the built-in WDF-v1)",
    )
    show.set_defaults(func=_show)
