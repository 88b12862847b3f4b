"""`xenofeat run`: cache -> train (3 seeds) -> score on the embedded default, in one command, resumable by stage.

Layout of the output folder (default `xenofeat-run/`):

    OUT/cache.h5        the activation cache (stage 1, `activations.build.build_cache`)
    OUT/sae/            the SAE ensemble run folder (stage 2, `sae_training.train`)
    OUT/features/       the feature store (stage 3, `features.score.score`); `xenofeat view OUT` opens it

A finished stage is not redone (a complete cache, a complete run, a published store); an interrupted stage resumes
(the cache and the training from their last flushed rows / checkpoint) or, for the score, restarts cleanly.
Settings come from the embedded defaults below, overridden by a TOML file with `[cache]`, `[train]` and `[score]`
tables (keys as in `CacheJob`, `TrainConfig`, and `max_tokens`, `workers`, `seed`, `definition` for the score).
The defaults take about 7.5 minutes on 2 CPU cores (measured: benchmarks/RESULTS.md).

Under torchrun every stage runs on every rank: the cache is sharded (`activations.sharded_build`), the ensemble's
seeds are spread over the ranks (`train_on_ranks`, seed-parallel), and the score is distributed (`features.score`);
`--control` runs the same stages again for the random-init copy. Whether a stage is done is rank 0's decision,
shared, so every rank takes the same path; only rank 0 logs, draws progress bars and prints, and the folder it
leaves holds what one process writes (plus the cache's shard folder), equal as tests/features/test_distributed_run.py
checks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from activations.build import CacheJob, build_cache
from activations.cache import ActivationCache
from activations.devices import resolve_device
from activations.distributed import World, collected
from activations.errors import UserError
from features.cli.summary import control_figures, control_text, summary_text
from sae_training.config import PRESETS, TrainConfig
from sae_training.run import read_run_json

log = logging.getLogger(__name__)

DEFAULT_HOOK = "blocks.3.hook_resid_post"
DEFAULT_CACHE: dict[str, Any] = {
    "model": "default",
    "corpus": "default",
    "hooks": [DEFAULT_HOOK],
    "context_size": 128,
}
"""The whole embedded corpus (about 430k tokens) through MiniLM up to block 3."""
DEFAULT_TRAIN: dict[str, Any] = {
    "arch": "topk",
    "expansion": 8.0,
    "k": 32,
    "seeds": [0, 1, 2],
    "batch_size": 4096,
    "downstream_seqs": 16,
    **PRESETS["small-corpus"].values,
}
"""TopK, 3,072 latents, k 32, 3 seeds, and the `small-corpus` preset (sae_training.config.PRESETS, which says why it
differs from `xenofeat train`'s defaults): 1.5M tokens each (about 3.5 epochs of the default cache; about 4 minutes
on 2 cores), lr 1e-3, dead after 200k tokens."""
DEFAULT_SCORE: dict[str, Any] = {
    "max_tokens": 1_000_000,
    "workers": 2,
    "seed": 0,
    "definition": None,
    "device": "cpu",
}
SCORE_KEYS = tuple(DEFAULT_SCORE)


def load_config(path: Path | None) -> dict[str, dict[str, Any]]:
    """The defaults overridden by a `--config` TOML file; unknown tables or keys are UserErrors naming them."""
    cfg = {"cache": dict(DEFAULT_CACHE), "train": dict(DEFAULT_TRAIN), "score": dict(DEFAULT_SCORE)}
    if path is None:
        return cfg
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"--config: cannot read {path} ({err.strerror or err})") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"--config: {path} is not valid TOML ({err})") from None
    known = {
        "cache": {f.name for f in fields(CacheJob)} - {"out"} | {"hook"},
        "train": {f.name for f in fields(TrainConfig)},
        "score": set(SCORE_KEYS),
    }
    for table, values in raw.items():
        if table not in known or not isinstance(values, dict):
            raise UserError(f"--config: {path}: unknown table [{table}] (known: cache, train, score)")
        for key, value in values.items():
            key = key.replace("-", "_")
            if key not in known[table]:
                raise UserError(f"--config: {path}: [{table}] unknown key '{key}'")
            if table == "cache" and key == "hook":
                key, value = "hooks", [value]
            cfg[table][key] = value
    return cfg


def _say(world: World, message: str, *args: object) -> None:
    """A log line of the pipeline, said once: by rank 0 (every rank would say the same)."""
    if world.is_main:
        log.info(message, *args)


def train_on_ranks(world: World, tcfg: TrainConfig, cache_path: Path, run_dir: Path, *, hook: str, resume: bool,
                   progress: bool) -> None:  # fmt: skip
    """The train stage on every rank: the ensemble's members spread over the ranks (seed-parallel,
    `sae_training.parallel.Layout`; each member bit-identical to one-process training), rank 0 writing run.json."""
    from sae_training.trainer import train

    if not world.distributed:
        train(tcfg, cache_path, run_dir, hook=hook, resume=resume, progress=progress)
        return
    with collected(world):  # an error on any rank stops them all, in one line from rank 0
        train(
            tcfg,
            cache_path,
            run_dir,
            hook=hook,
            resume=resume,
            progress=progress and world.is_main,
            world=world,
        )


def _cache_state(cache_path: Path) -> tuple[bool, bool]:
    """(exists, complete) of the pipeline's cache."""
    if not cache_path.exists():
        return False, False
    with ActivationCache.open(cache_path, allow_partial=True) as c:
        return True, c.meta.complete


def run_pipeline(
    out: Path, cfg: dict[str, dict[str, Any]], *, progress: bool = True, world: World | None = None
) -> dict[str, Any] | None:
    """Run (or resume) the three stages into `out`; returns the store's summary (None on ranks other than 0)."""
    from activations.sharded_build import build_sharded
    from features.score import ScoreJob, score
    from features.store import FEATURES_DIR, FeatureStore
    from features.store.publish import recover

    world = World() if world is None else world
    progress = progress and world.is_main
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    cache_path, run_dir = out / "cache.h5", out / "sae"

    t = time.perf_counter()
    _say(world, "[1/3] cache -> %s", cache_path)
    job = CacheJob(out=cache_path, **{**cfg["cache"], "hooks": tuple(cfg["cache"]["hooks"])})
    job = replace(job, device=str(resolve_device(job.device, world)))  # `auto`, and `cuda` as cuda:LOCAL_RANK
    exists, done = world.all_gather(_cache_state(cache_path) if world.is_main else None)[0]
    if done:
        _say(world, "      the cache is complete; not redone")
    elif world.distributed:
        build_sharded(job, world, resume=exists, progress=progress)
    else:
        build_cache(job, resume=exists, progress=progress)
    timings["cache"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    _say(world, "[2/3] train %d seeds -> %s", len(cfg["train"]["seeds"]), run_dir)
    try:
        tcfg = TrainConfig.from_dict(cfg["train"], source="--config [train]")
    except (ValueError, TypeError) as err:
        raise UserError(str(err)) from None
    info = read_run_json(run_dir) if world.is_main and run_dir.is_dir() else None
    info = world.all_gather(info)[0]
    if info is not None and info.get("status") == "complete":
        _say(world, "      the ensemble is trained; not redone")
    else:
        train_on_ranks(world, tcfg, cache_path, run_dir, hook=job.hooks[0], resume=info is not None,
                       progress=progress)  # fmt: skip
    timings["train"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    _say(world, "[3/3] score -> %s", out / FEATURES_DIR)
    s = cfg["score"]
    if world.is_main:
        recover(out)  # a publish cut short by a kill counts as done once completed
    if world.all_gather((out / FEATURES_DIR).is_dir() if world.is_main else None)[0]:
        _say(world, "      the store exists; not redone")
    else:
        definition = Path(s["definition"]) if s.get("definition") else None
        score(ScoreJob(run=run_dir, out=out, definition=definition, max_tokens=s["max_tokens"],
                       workers=s["workers"], seed=s["seed"], progress=progress, device=s["device"]), world)  # fmt: skip
    timings["score"] = round(time.perf_counter() - t, 1)
    if not world.is_main:
        return None
    summary = FeatureStore.open(out).summary
    log.info("stage times (s): %s", timings)
    return summary


def pipeline_from_args(args: argparse.Namespace) -> int:
    """The `xenofeat run` handler: prints the summary and the command that opens the viewer."""
    cfg = load_config(Path(args.config) if args.config else None)
    if args.max_tokens is not None:
        if args.max_tokens < 1:
            raise UserError(f"--max-tokens: must be positive, got {args.max_tokens}")
        cfg["score"]["max_tokens"] = args.max_tokens
    if args.device is not None:  # every stage on it: the model's forward, the SAEs' training, the encode pass
        for table in ("cache", "train", "score"):
            cfg[table]["device"] = args.device
    out = Path(args.out)
    world = World.from_env()
    # a GPU that is not there: refused before the first stage writes
    for table in ("cache", "train", "score"):
        option = "--device" if args.device is not None else f"{args.config}: [{table}] device"
        resolve_device(cfg[table].get("device", "cpu"), world, option=option)
    with_control = getattr(args, "control", False)

    def runs() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        if world.distributed:
            from features.distributed_score import agree_on_values

            # by setting, so that the refusal names the one that differs (`score.max_tokens`, not `score`)
            settings = {f"{table}.{key}": v for table, values in cfg.items() for key, v in values.items()}
            agree_on_values(world, {"out": out.resolve(), "control": with_control, **settings})
        summary = run_pipeline(out, cfg, progress=not args.quiet, world=world)
        if not with_control:
            return summary, None
        _say(world, "control: the same pipeline on a random-init copy of the model -> %s", out / CONTROL_DIR)
        control = run_pipeline(out / CONTROL_DIR, control_config(cfg), progress=not args.quiet, world=world)
        return summary, control

    if world.distributed:  # under torchrun: every stage on every rank (module docstring); rank 0 prints
        from activations.distributed import on_ranks
        from features.distributed_score import SCORE_TIMEOUT

        code, result = on_ranks(world, runs, SCORE_TIMEOUT)
        if code or not world.is_main:
            return code
    else:
        result = runs()
    summary, control = result
    sys.stdout.write(summary_text(summary, out / "features"))
    if control is not None:
        write_control_json(out / CONTROL_JSON, summary, control)
        sys.stdout.write(control_text(summary, control))
    sys.stdout.write(f"open the viewer with:\n  xenofeat view {out}\n")
    return 0


CONTROL_DIR = "control"
CONTROL_JSON = "control.json"
"""OUT/control.json: the figures `xenofeat run --control` prints, for the trained model and the random-init copy."""


def write_control_json(path: Path, trained: dict[str, Any], control: dict[str, Any]) -> None:
    """Store the side-by-side figures (atomically: a kill leaves the old file or the new one)."""
    data = {"trained": control_figures(trained), "random_init": control_figures(control)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def control_config(cfg: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The same settings with the model replaced by a random-init copy (`random-init:MODEL`)."""
    from activations.model import RANDOM_INIT

    model = str(cfg["cache"]["model"])
    out = {table: dict(values) for table, values in cfg.items()}
    out["cache"]["model"] = model if model.startswith(RANDOM_INIT) else RANDOM_INIT + model
    return out
