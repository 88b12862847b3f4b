"""The `xenofeat` command: one console script that mounts each package's subcommands.

This subpackage is the CLI's room: the root parser and `entry` (here), the `features` subcommands (`commands`:
`score` and `run`; `definition`; `export`), `xenofeat run`'s pipeline (`pipeline`) and what the commands print
(`summary`). A new `features` subcommand goes in a module here, registered from `commands.register`.

Each package owns the subcommands for its own work in its `cli.py`, exposing `register(subparsers)`; each handler
is set with `parser.set_defaults(func=handler)` and takes the parsed `argparse.Namespace`, returning an exit code.
Packages above `features` (the viewer) are mounted through the `xenofeat.commands` entry-point group, so imports keep
going one way. A `UserError` anywhere becomes one line on stderr and exit status 2; so does a command module that
fails to import (a broken installation), rather than a command that silently goes missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import entry_points

from activations.errors import UserError
from activations.version import __version__


def _broken(what: str, err: ImportError | AttributeError) -> UserError:
    """The one-line error for a command module that fails to import (a broken installation or plugin)."""
    return UserError(f"{what} cannot be loaded ({type(err).__name__}: {err}); the installation is broken")


def build_parser() -> argparse.ArgumentParser:
    """The root parser with every package's subcommands; UserError when one of them fails to import."""
    parser = argparse.ArgumentParser(
        prog="xenofeat",
        description="Find the features of a transformer that are well defined but resist human labels.",
    )
    parser.add_argument("--version", action="version", version=f"xenofeat {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # imported here, not at the top, so that `main` reports a broken command module (one imported while
    # registering too) as one line
    try:
        from activations import cli as activations_cli
        from features.cli import commands as features_commands
        from sae_training import cli as training_cli

        activations_cli.register(sub)
        training_cli.register(sub)
        features_commands.register(sub)
    except ImportError as err:
        raise _broken(f"the xenofeat commands ({err.name or 'a module'})", err) from err
    for ep in entry_points(group="xenofeat.commands"):
        try:
            register = ep.load()
        except (ImportError, AttributeError) as err:
            raise _broken(f"the `{ep.name}` command ({ep.value})", err) from err
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # a local model directory must never wait on the network; users who want the hub unset this themselves
    if os.environ.get("XENOFEAT_ONLINE") != "1":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        parser = build_parser()
    except UserError as err:
        sys.stderr.write(f"xenofeat: error: {err}\n")
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        sys.stderr.write(f"xenofeat: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("xenofeat: interrupted; rerun the same command with --resume to continue\n")
        return 130


def entry() -> None:
    """Console-script entry point.

    After an error, exit without interpreter teardown: an HDF5 file whose writes failed (a full disk) cannot be
    closed cleanly, and h5py would crash while finalising it, turning exit status 2 into a segfault.
    """
    code = main()
    if code != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
