"""`xenofeat view RUN [--port P] [--host H]`: start the Streamlit viewer on a scored run.

Streamlit runs in a child process (`python -m streamlit run viewer/app.py -- RUN`), headless, bound to 127.0.0.1
unless `--host` says otherwise, with usage statistics off and no file watcher. The run is checked first, so a folder
without a feature store (or with a store this version cannot read) is refused with one line and exit status 2.
SIGTERM, SIGINT, SIGHUP and SIGQUIT sent to `xenofeat view` are passed on to the server, which it then waits for
(killing it after STOP_GRACE_S), so stopping the command never leaves a server running on the port.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from activations.errors import UserError

APP = Path(__file__).with_name("app.py")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
STOP_GRACE_S = 10.0  # how long a stopped server may take to shut down before it is killed
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
    return serve(streamlit_command(run, args.port, args.host), env)


class _Stop(Exception):
    """Raised in the main thread by a forwarded signal, to end the wait for the server."""


def serve(cmd: list[str], env: dict[str, str]) -> int:
    """Run the server `cmd` until it exits, passing FORWARDED signals on to it; returns its exit status.

    After a forwarded signal the server gets STOP_GRACE_S to shut down (Streamlit stops on SIGTERM and SIGINT; then
    0 is returned) and is otherwise killed (1): the server never outlives this process, which keeps the port free.
    """
    started: list[subprocess.Popen] = []

    def forward(signum: int, _frame: object) -> None:
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signum)
        raise _Stop

    # The handlers go in before the server starts, so no signal can end this process and leave the server behind.
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        try:
            started.append(subprocess.Popen(cmd, env=env))
            return started[0].wait()
        except _Stop:
            for sig in FORWARDED:  # a second signal while the server shuts down must not cut the wait short
                signal.signal(sig, signal.SIG_IGN)
            return _stop(started[0]) if started else 0
    finally:
        for proc in started:
            if proc.poll() is None:  # any other way out (an error in this process): the server goes too
                proc.kill()
                proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(proc: subprocess.Popen) -> int:
    """Wait up to STOP_GRACE_S for a signalled server; kill it if it is still running. 0 if it stopped itself."""
    try:
        proc.wait(STOP_GRACE_S)
        return 0
    except subprocess.TimeoutExpired:
        log.warning("the viewer did not stop within %.0f s; killing it", STOP_GRACE_S)
        proc.kill()
        proc.wait()
        return 1


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
