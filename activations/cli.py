"""`xenofeat cache ...`: build, inspect, validate, import and synthesise activation caches."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from activations import format as fmt
from activations.build import DEFAULT_HOOK, CacheJob, build_cache
from activations.devices import resolve_device
from activations.distributed import World, on_ranks
from activations.errors import UserError
from activations.model import BACKENDS
from activations.synth_cli import add_synth_command


def _size(path: Path) -> str:
    from activations.inspect import _human

    return _human(path.stat().st_size)


def cmd_build(args: argparse.Namespace) -> int:
    if args.out is None:
        raise UserError("--out: name the cache file to write (e.g. --out cache.h5)")
    world = World.from_env()
    job = CacheJob(
        out=Path(args.out),
        model=args.model,
        corpus=args.corpus,
        hooks=tuple(args.hook or [DEFAULT_HOOK]),
        context_size=args.context_size,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        dtype=args.dtype,
        text_field=args.text_field,
        split=args.split,
        device=str(resolve_device(args.device, world)),
        backend=args.backend,
    )
    if world.distributed:
        return _build_sharded(job, world, args)
    out = build_cache(job, resume=args.resume, overwrite=args.overwrite)
    sys.stdout.write(f"cache written: {out} ({_size(out)})\n")
    return 0


def _build_sharded(job: CacheJob, world: World, args: argparse.Namespace) -> int:
    """One rank of `torchrun ... xenofeat cache`: rank 0 speaks for all, so an error is one line, not one a rank."""
    from activations.sharded_build import build_sharded

    code, out = on_ranks(
        world, lambda: build_sharded(job, world, resume=args.resume, overwrite=args.overwrite)
    )
    if code:
        return code
    if world.is_main:
        sys.stdout.write(f"cache written: {out} ({_size(out)}, {world.world_size} shards)\n")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from activations.inspect import describe

    sys.stdout.write(describe(args.file) + "\n")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from activations.inspect import validate

    problems = validate(args.file, allow_partial=args.allow_partial)
    if problems:
        for p in problems[:20]:
            sys.stderr.write(f"xenofeat: invalid: {p}\n")
        return 2
    sys.stdout.write(f"{args.file}: sound\n")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from activations.importer import import_cache

    out = import_cache(
        tokens=args.tokens,
        acts=args.acts,
        hook=args.hook,
        out=args.out,
        doc_ids=args.doc_ids,
        vocab=args.vocab,
        mask=args.mask,
        model_id=args.model_id,
        dtype=args.dtype,
        overwrite=args.overwrite,
    )
    sys.stdout.write(f"cache written: {out} ({_size(out)})\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `xenofeat cache` and its subcommands."""
    p = sub.add_parser(
        "cache",
        help="cache a model's activations on a corpus (or: info, validate, import, synth)",
        description="Cache activations of a model on a corpus to HDF5. Subcommands inspect, validate, import "
        "and synthesise caches.",
    )
    p.add_argument("--out", help="the HDF5 file to write")
    p.add_argument(
        "--model",
        default="default",
        help="'default' (all-MiniLM-L6-v2, embedded), a local model "
        "directory, or a Hugging Face name (needs XENOFEAT_ONLINE=1)",
    )
    p.add_argument(
        "--corpus",
        default="default",
        help="'default' (embedded CPython prose), 'default+packages' (plus installed packages' docstrings), a text "
        "file, folder, glob, .jsonl file, or hf:NAME[:SPLIT]",
    )
    p.add_argument(
        "--hook", action="append", help=f"hook point to capture, repeatable (default {DEFAULT_HOOK})"
    )
    p.add_argument("--context-size", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--max-tokens", type=int, default=None, help="cap on corpus tokens (default: all)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default 32)")
    p.add_argument("--dtype", choices=fmt.DTYPES, default="float16", help="storage dtype (default float16)")
    p.add_argument(
        "--text-field", default="text", help="text field of JSONL / data-set records (default text)"
    )
    p.add_argument(
        "--split",
        choices=("file", "paragraphs"),
        default="file",
        help="text files: one document per file or per paragraph group (default file)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="how activations are computed: 'auto' (default) reads residual-stream hooks straight from the Hugging "
        "Face layers where that equals TransformerLens's bridge bit for bit (checked on the first batch), else "
        "the bridge; 'bridge' always runs the bridge. Both write the same file",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted cache with the same settings"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_build)
    cs = p.add_subparsers(dest="cache_command", metavar="SUBCOMMAND")

    q = cs.add_parser("info", help="summarise a cache file")
    q.add_argument("file")
    q.set_defaults(func=cmd_info)

    q = cs.add_parser("validate", help="check checksums, shapes, attributes and completeness (exit 0 or 2)")
    q.add_argument("file")
    q.add_argument("--allow-partial", action="store_true", help="accept an incomplete cache")
    q.set_defaults(func=cmd_validate)

    q = cs.add_parser(
        "import", help="build a cache from your own token ids and activations (.npy/.safetensors)"
    )
    q.add_argument("--tokens", required=True, help="token ids (n_seq, L)")
    q.add_argument("--acts", required=True, help="activations (n_seq, L, d)")
    q.add_argument("--hook", required=True, help="hook name to record the activations under")
    q.add_argument("--out", required=True, help="the HDF5 file to write")
    q.add_argument(
        "--doc-ids", help="document ids (n_seq,) or (n_seq, L); default: one document per sequence"
    )
    q.add_argument("--vocab", help="JSON vocabulary: list of strings, or {token: id}")
    q.add_argument("--mask", help="(n_seq, L) booleans, True = exclude the token")
    q.add_argument("--model-id", default="imported", help="name of the model the activations came from")
    q.add_argument("--dtype", choices=fmt.DTYPES, default="float16", help="storage dtype (default float16)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    q.set_defaults(func=cmd_import)

    add_synth_command(cs)
