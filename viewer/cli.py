"""`xenofeat view RUN [--port P] [--host H]`: start the Streamlit viewer on a scored run.

Streamlit runs in a child process (`python -m streamlit run viewer/app.py -- RUN`), headless, bound to 127.0.0.1
unless `--host` says otherwise, with usage statistics off and no file watcher. The run is checked first, so a folder
without a feature store (or with a store this version cannot read) is refused with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from activations.errors import UserError

APP = Path(__file__).with_name("app.py")
log = logging.getLogger(__name__)


def streamlit_command(run: Path, port: int, host: str) -> list[str]:
    """The command line that serves the viewer on `host:port` for `run`."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true",
        "--server.address", host,
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "minimal",
        "--", str(run),
    ]  # fmt: skip


def check_run(run: Path) -> None:
    """UserError unless `run` holds a feature store this xenofeat can read (opened and closed again)."""
    from features.store import FeatureStore

    if not run.exists():
        raise UserError(f"{run}: no such folder")
    store = FeatureStore.open(run)
    try:
        store.h5  # noqa: B018 - checks examples.h5's format and version too
    finally:
        store.close()


def handler(args: argparse.Namespace) -> int:
    run = Path(args.run).resolve()
    check_run(run)
    if not 0 < args.port < 65536:
        raise UserError(f"--port: {args.port} is not a port number (1 to 65535)")
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    sys.stdout.write(f"xenofeat viewer for {run}: {url}\n")
    sys.stdout.flush()
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    try:
        return subprocess.call(streamlit_command(run, args.port, args.host), env=env)
    except KeyboardInterrupt:
        return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `xenofeat view` to the `xenofeat` parser."""
    p = sub.add_parser("view", help="browse a scored run in the Streamlit viewer")
    p.add_argument("run", metavar="RUN", help="run folder holding a feature store (features/)")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.set_defaults(func=handler)


def main(argv: list[str] | None = None) -> int:
    """`python -m viewer.cli RUN [--port P] [--host H]`: the same as `xenofeat view` without installation."""
    parser = argparse.ArgumentParser(prog="xenofeat")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["view", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except UserError as err:
        sys.stderr.write(f"xenofeat: error: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
