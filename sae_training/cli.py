"""`xenofeat train`: train an SAE ensemble (one sae-lens SAE per seed) from an activation cache.

Under `torchrun` every rank runs this command: the seeds are spread over the ranks (or, with `--data-parallel`,
each member's batches), rank 0 speaks for all, and ranks started with different arguments stop before writing.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from activations.distributed import World, collected, on_ranks
from activations.errors import UserError
from sae_training.config import ARCHS, TrainConfig, load_toml

log = logging.getLogger(__name__)

# CLI option -> TrainConfig field, for options that map one to one
_FIELDS = (
    "arch",
    "width",
    "expansion",
    "k",
    "l1",
    "target_l0",
    "tokens",
    "batch_size",
    "lr",
    "checkpoint_every",
    "eval_fraction",
    "max_memory_gb",
    "device",
)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from err


def register(sub: argparse._SubParsersAction) -> None:
    """Add `train` to the `xenofeat` parser."""
    p = sub.add_parser(
        "train",
        help="train an SAE ensemble from an activation cache",
        description="Train one SAE per seed on a cache's hook; writes RUN/run.json and RUN/seed-<s>/.",
    )
    p.add_argument("--cache", type=Path, help="activation cache (.h5)")
    p.add_argument("--hook", help="hook to train on (default: the cache's only hook)")
    p.add_argument("--out", type=Path, help="run folder to create")
    p.add_argument("--config", type=Path, help="TOML file of training options (command-line options win)")
    p.add_argument("--arch", choices=list(ARCHS), help="architecture (default topk)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--width", type=int, help="number of latents")
    size.add_argument("--expansion", type=float, help="latents = expansion x d_in (default 8)")
    sparsity = p.add_mutually_exclusive_group()
    sparsity.add_argument(
        "--k", type=int, help="active latents per token (topk, batchtopk, matryoshka; default 32)"
    )
    sparsity.add_argument("--l1", type=float, help="L1 coefficient (standard, gated)")
    sparsity.add_argument("--target-l0", type=float, help="target L0 (jumprelu)")
    p.add_argument(
        "--seeds",
        type=_seeds,
        help="comma-separated seeds, one member each (default 0,1,2: the stability criterion needs an ensemble)",
    )
    p.add_argument("--tokens", type=int, help="training tokens per member")
    p.add_argument("--batch-size", type=int, help="tokens per step (default 4096)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 3e-4)")
    p.add_argument("--checkpoint-every", type=int, help="tokens between checkpoints (0: none)")
    p.add_argument("--eval-fraction", type=float, help="held-out fraction of sequences (default 0.05)")
    p.add_argument("--max-memory-gb", type=float, help="memory budget for the up-front estimate")
    p.add_argument(
        "--device",
        help="torch device: cpu (default), cuda (under torchrun cuda:LOCAL_RANK), cuda:N, or auto (cuda if present)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--allow-partial", action="store_true", help="accept an incomplete cache")
    p.add_argument(
        "--data-parallel",
        action="store_true",
        help="under torchrun: train every member on all ranks, each reading its own part of every shuffle pool "
        "(default: spread the seeds over the ranks); with one process it trains as one process",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any]]:
    """The TrainConfig of a command line (TOML file first, then options); also cache/hook/out from the file."""
    values: dict[str, Any] = {}
    try:
        if args.config is not None:
            values = load_toml(args.config)
        paths = {k: values.pop(k) for k in ("cache", "hook", "out") if k in values}
        for name in _FIELDS:
            v = getattr(args, name, None)
            if v is not None:
                values[name] = v
        if args.width is not None:
            values.pop("expansion", None)
        if args.seeds is not None:
            values["seeds"] = args.seeds
        return TrainConfig.from_dict(
            values, source=f"--config {args.config}" if args.config else "options"
        ), paths
    except (ValueError, TypeError) as err:
        raise UserError(str(err)) from err


def handle(args: argparse.Namespace) -> int:
    world = World.from_env()
    if not world.distributed:
        if args.data_parallel:
            log.info("--data-parallel: one process, so nothing to split; training as one process")
        return _report(_run(args, world))

    def work() -> Path:
        run = _run(args, world)
        world.barrier()  # rank 0 has finished the run before anyone reports it
        return run

    code, run = on_ranks(world, work)
    if code:
        return code
    return _report(run) if world.is_main else 0


def _run(args: argparse.Namespace, world: World) -> Path:
    """Check the command line (the same on every rank), then train; the run folder."""
    from sae_training.parallel import agree_on_arguments
    from sae_training.trainer import train

    with collected(world):
        cfg, paths = config_from_args(args)
        cache = args.cache or paths.get("cache")
        out = args.out or paths.get("out")
        if cache is None:
            raise UserError("--cache: required (or `cache = ...` in --config)")
        if out is None:
            raise UserError("--out: required (or `out = ...` in --config)")
    hook = args.hook or paths.get("hook")
    if world.distributed:
        values = {"--" + k.replace("_", "-"): v for k, v in cfg.to_dict().items()}
        flags = ("resume", "overwrite", "allow_partial", "data_parallel")
        values |= {"--" + f.replace("_", "-"): bool(getattr(args, f)) for f in flags}
        values |= {"--cache": str(cache), "--out": str(out), "--hook": hook}
        agree_on_arguments(world, values)
    return train(
        cfg,
        cache,
        out,
        hook=hook,
        resume=args.resume,
        overwrite=args.overwrite,
        allow_partial=args.allow_partial,
        progress=not args.no_progress,
        world=world,
        data_parallel=args.data_parallel,
    )


def _report(run: Path) -> int:
    """Log the per-seed table and the ensemble's PW-MCC of a finished run."""
    from sae_training.run import load_run

    info = load_run(run)
    rows = [("seed", "EV", "L0", "dead", "MSE", "downstream")]
    for seed, m in info.metrics["per_seed"].items():
        ds = m.get("downstream") or {}
        dtxt = next(
            (f"{k}={v:.4f}" for k, v in ds.items() if k in ("embedding_cosine", "ce_recovered")), "n/a"
        )
        rows.append(
            (
                seed,
                f"{m['explained_variance']:.4f}",
                f"{m['l0']:.1f}",
                f"{m['dead_fraction']:.3f}",
                f"{m['mse']:.4g}",
                dtxt,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    log.info("trained %d SAE(s) on %s -> %s\n%s", len(info.seeds), info.hook, run, table)
    ens = info.metrics.get("ensemble") or {}
    if "pw_mcc" in ens:
        null = ens.get("pw_mcc_null", float("nan"))
        log.info(
            "ensemble PW-MCC %.4f (std %.4f; random dictionaries of the same shape: %.4f)",
            ens["pw_mcc"],
            ens["pw_mcc_std"],
            null,
        )
    return 0
