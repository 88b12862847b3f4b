"""`xenofeat explain RUN (--flagged | --set NAME | --features I,J | --where EXPR) --endpoint URL --model NAME`:
the LLM cross-check of the flag (features.explain) against any OpenAI-compatible chat-completions server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from features.cli.export import add_selection_options, selection_from_args


def register(sub: argparse._SubParsersAction) -> None:
    """Add `xenofeat explain` to the parser."""
    p = sub.add_parser(
        "explain",
        help="ask an LLM to explain latents and score its explanation on the held-out windows (the llm describer)",
        description="Explain the selected latents of a scored run with an LLM served by any OpenAI-compatible "
        "chat-completions server (vLLM, llama.cpp, Ollama, a hosted API) and score each explanation by detection "
        "on the held-out windows LBL scored the describers on. Answers are cached in RUN/features/llm.jsonl; "
        "the definition's [llm] mode decides whether the score is shown only, tags, or enters LBL and the flag.",
    )
    p.add_argument("run", metavar="RUN", help="the scored run folder (holding features/)")
    add_selection_options(p)
    p.add_argument(
        "--endpoint",
        required=True,
        metavar="URL",
        help="the server's base URL, e.g. http://127.0.0.1:8000/v1",
    )
    p.add_argument("--model", required=True, metavar="NAME", help="the model name the server serves")
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key (never pass the key itself)",
    )
    p.add_argument(
        "--max-requests", type=int, metavar="N", help="refuse to start if more requests are needed"
    )
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="requests in flight (default 4)")
    p.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="seconds per request (default 60)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from features.explain import ExplainJob, explain

    sel = selection_from_args(args)
    job = ExplainJob(
        run=Path(args.run),
        selection=sel,
        endpoint=args.endpoint,
        model=args.model,
        api_key_env=args.api_key_env,
        max_requests=args.max_requests,
        concurrency=args.concurrency,
        timeout=args.timeout,
        progress=not args.quiet,
    )
    explain(job, sys.stdout)
    return 0
