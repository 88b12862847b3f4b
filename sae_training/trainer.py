"""Training an SAE ensemble from an activation cache: `train(cfg, cache_path, out)` -> the run folder.

One process trains every member (one per seed) in lockstep: each shuffle pool is read from the cache once and every
member draws its own permutation of it (data.py). Members share no state: each has its own weights, Adam, and
dead-latent counters. Activations are scaled to unit mean squared norm (factor estimated on a sample) and the factor
is folded into the saved weights, so the saved sae-lens SAEs work on raw activations.

Under torchrun (`world`, `data_parallel`) the members or the data are spread over the ranks (parallel.py says how);
with one process `train` takes exactly the one-process path.

Devices (`cfg.device`): members are initialised on the CPU (so a seed gives the same initial weights on any device)
and then moved; each shuffle pool is copied to the device once (from pinned memory, asynchronously) and batches are
drawn there. Checkpoints and saved members hold CPU tensors, so a run resumes, and is read, on any device.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Any

import torch
from sae_lens.saes.sae import TrainStepInput
from tqdm.auto import tqdm

from activations.cache import ActivationCache
from activations.devices import prepare_deterministic_cuda, resolve_device
from activations.distributed import World, collected
from activations.errors import UserError
from activations.faults import fault_point
from activations.version import __version__
from sae_training import checkpoint as ck
from sae_training.config import TrainConfig
from sae_training.data import (
    NonFiniteActivations,
    PoolSchedule,
    member_order,
    split_sequences,
    squared_norm_sum,
)
from sae_training.finish import finish_ensemble, finish_members, finish_run
from sae_training.metrics import batch_metrics
from sae_training.parallel import GradientReducer, Layout
from sae_training.run import RUN_JSON, RUN_KIND, prepare_out
from sae_training.saes import available_bytes, build_training_sae, bytes_needed, coefficient_values
from sae_training.topk_step import topk_forward

log = logging.getLogger(__name__)
METRICS_LOG = "metrics.jsonl"


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate at a step: linear warm-up, constant, linear decay to 0 over the last lr_decay_fraction."""
    total = cfg.steps
    if cfg.lr_warmup_steps and step < cfg.lr_warmup_steps:
        return cfg.lr * (step + 1) / cfg.lr_warmup_steps
    decay = int(total * cfg.lr_decay_fraction)
    if decay and step >= total - decay:
        return cfg.lr * (total - step) / decay
    return cfg.lr


def _check_memory(cfg: TrainConfig, d_in: int) -> None:
    need = bytes_needed(cfg, d_in)
    have = cfg.max_memory_gb * 2**30 if cfg.max_memory_gb is not None else available_bytes()
    if need > have:
        opt = "--width" if cfg.width is not None else "--expansion"
        raise UserError(
            f"{opt}: {cfg.d_sae(d_in)} latents x {len(cfg.seeds)} seed(s) at batch {cfg.batch_size} need about "
            f"{need / 2**30:.1f} GiB (weights, Adam, batch), more than the {have / 2**30:.1f} GiB available; "
            "lower the width, the batch size or the number of seeds"
        )


def _step(
    cfg: TrainConfig,
    m: ck.MemberState,
    x: torch.Tensor,
    step: int,
    dead_steps: int,
    reducer: GradientReducer | None = None,
) -> dict[str, Any]:
    """One optimiser step of one member on a normalised batch x (B, d_in); returns loss terms and batch metrics.

    With a `reducer` (data-parallel) x is this rank's part of the global batch (possibly empty): its loss is
    weighted by its share of the batch and gradients, fired latents and losses are summed over the ranks before the
    clip and the optimiser step, which then agree on every rank."""
    sae, opt = m.sae, m.optimizer
    dev = m.since_fired.device
    for group in opt.param_groups:
        group["lr"] = lr_at(cfg, step)
    sae.train()
    dead = m.since_fired > dead_steps  # sae-lens's rule: no firing for more than the window
    if len(x) == 0:  # data-parallel: no token of this batch lies in this rank's part of the pool
        fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=dev)
        l0, x_hat, loss = torch.zeros(0, device=dev), x, torch.zeros((), device=dev)
        losses = {"mse_loss": loss, "auxiliary_reconstruction_loss": loss}
    elif cfg.arch == "topk":
        out = topk_forward(sae, x, dead)
        fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=dev)
        fired[out.idx[out.acts > 0]] = True
        l0 = (out.acts > 0).sum(-1)
        loss, losses, x_hat = out.loss, out.losses, out.sae_out
    else:
        tso = sae.training_forward_pass(
            TrainStepInput(
                sae_in=x,
                coefficients=coefficient_values(sae, step),
                dead_neuron_mask=dead,
                n_training_steps=step,
                is_logging_step=False,
            )
        )
        on = tso.feature_acts.detach() != 0
        fired, l0 = on.any(0), on.sum(-1)
        loss, losses, x_hat = tso.loss, {k: v.detach() for k, v in tso.losses.items()}, tso.sae_out.detach()
    if reducer is not None:
        weight = len(x) / cfg.batch_size
        if len(x):
            (loss * weight).backward()
        names = list(losses)
        fired, sums = reducer(
            list(sae.parameters()), fired, torch.stack([loss.detach(), *losses.values()]) * weight
        )
        loss, losses = sums[0], dict(zip(names, sums[1:], strict=True))
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss of seed {m.seed} became {loss.item()} at step {step}")
    if reducer is None:
        loss.backward()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    m.since_fired += 1
    m.since_fired[fired] = 0
    return {"loss": loss.detach(), "losses": losses, "x_hat": x_hat, "l0": l0, "dead": int(dead.sum())}


def _new_member(cfg: TrainConfig, d_in: int, seed: int, device: torch.device | None = None) -> ck.MemberState:
    """A fresh member on `device` (default CPU), initialised on the CPU so its weights do not depend on the device."""
    device = device or torch.device("cpu")
    sae = build_training_sae(cfg, d_in, seed).to(device)  # sae-lens's `to` also updates sae.cfg.device
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
    return ck.MemberState(seed, sae, opt, torch.zeros(sae.cfg.d_sae, dtype=torch.int64, device=device))


def train(
    cfg: TrainConfig,
    cache_path: str | Path,
    out: str | Path,
    *,
    hook: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    allow_partial: bool = False,
    progress: bool = True,
    world: World | None = None,
    data_parallel: bool = False,
) -> Path:
    """Train one SAE per seed of cfg on a cache's hook; returns the run folder (see run.py for its layout).

    Under torchrun every rank calls this with its `world` (process group started) and the same arguments."""
    layout = Layout(world or World(), data_parallel, cfg.seeds)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    try:
        return _train(cfg, cache_path, out, hook=hook, resume=resume, overwrite=overwrite,
                      allow_partial=allow_partial, progress=progress, layout=layout)  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(previous)


def _train(
    cfg: TrainConfig,
    cache_path: str | Path,
    out: str | Path,
    *,
    hook: str | None,
    resume: bool,
    overwrite: bool,
    allow_partial: bool,
    progress: bool,
    layout: Layout,
) -> Path:
    out, world = Path(out), layout.world
    with collected(world):  # every rank checks the cache and the options; rank 0 alone prepares the folder
        device = resolve_device(cfg.device, world)
        if cfg.deterministic:
            prepare_deterministic_cuda(device)
        cache = ActivationCache.open(cache_path, allow_partial=allow_partial)
    with cache:
        with collected(world):
            hook = cache.check_hook(hook)
            d_in = cache.d_model
            try:
                cfg.resolve(d_in)
            except ValueError as err:
                raise UserError(str(err)) from err
            _check_memory(cfg, d_in)
            layout.check(cfg)
        identity = {
            "cache_fingerprint": cache.meta.fingerprint,
            "hook": hook,
            "d_in": d_in,
            "config": cfg.identity(),
        }
        with collected(world):
            old = prepare_out(out, identity, resume=resume, overwrite=overwrite) if world.is_main else None
        old = world.all_gather(old)[0]
        n_train = split_sequences(cache.n_seq, cfg.eval_fraction)
        pool_tokens = cfg.pool_batches * cfg.batch_size
        schedule = PoolSchedule(cache, hook, n_train, pool_tokens, cfg.data_seed)
        if old is not None:
            scale = float(old["norm_scaling_factor"])
        else:
            with collected(world):
                part = squared_norm_sum(schedule, cfg.norm_sample_tokens, layout.share(pool_tokens))
            parts = world.all_gather(part) if layout.share(pool_tokens) else [part]
            msn = sum(t for t, _ in parts) / sum(n for _, n in parts)
            if not msn > 0 or not math.isfinite(msn):
                raise UserError(
                    f"{cache.path}: the activations of {hook} have mean squared norm {msn}; cannot train"
                )
            scale = 1.0 / math.sqrt(msn)
        info = old or {
            "kind": RUN_KIND,
            "status": "training",
            "xenofeat_version": __version__,
            "cache": {
                "path": str(Path(cache_path).resolve()),
                "fingerprint": cache.meta.fingerprint,
                "model_id": cache.meta.model_id,
                "source": cache.meta.source,
            },
            "hook": hook,
            "d_in": d_in,
            "d_sae": cfg.d_sae(d_in),
            "seeds": list(cfg.seeds),
            "config": cfg.to_dict(),
            "identity": identity,
            "norm_scaling_factor": scale,
            "split": {"train_seqs": [0, n_train], "eval_seqs": [n_train, cache.n_seq]},
            "metrics": None,
        }
        # on --resume `info` is the old run.json: its config and device become this (re)start's, as a resumed run
        # may train on another device than it began on
        info = {**info, "config": cfg.to_dict(), "device": str(world.all_gather(str(device))[0])}
        if world.is_main:
            out.mkdir(exist_ok=True)
            ck.write_json(out / RUN_JSON, info)
        _note_device(device, cfg, world)
        members = [_new_member(cfg, d_in, s, device) for s in layout.local_seeds]
        start = 0
        ckpt = ck.find_checkpoint(out) if resume else None
        ckpt = world.all_gather(ckpt)[0]  # rank 0's choice (every rank sees the same folder)
        if ckpt is not None:
            start = int(ck.load_counters(ckpt)["step"])
            for m in members:
                ck.load_member(ckpt, m)
            if world.is_main:
                log.info("resuming %s from step %d of %d", out, start, cfg.steps)
        if world.is_main:
            _truncate_log(out / METRICS_LOG, start)
        _loop(cfg, out, schedule, members, start, scale, progress and world.is_main, layout)
        return _finish(cfg, cache, hook, out, members, info, scale, layout)


def _finish(cfg, cache, hook, out, members, info, scale, layout: Layout) -> Path:  # noqa: ANN001 - see _train
    """One process, or data-parallel (identical members on every rank): rank 0 finishes alone. Seed-parallel:
    each rank measures and saves its members, rank 0 writes the ensemble's results once all are saved."""
    world = layout.world
    if not layout.distributed:
        return finish_run(cfg, cache, hook, out, members, info, scale)
    if layout.data_parallel:
        with collected(world):
            if world.is_main:
                finish_run(cfg, cache, hook, out, members, info, scale)
        return out
    with collected(world):
        mine = finish_members(cfg, cache, hook, out, members, info, scale)
    per_seed = {k: v for part in world.all_gather(mine) for k, v in part.items()}
    with collected(world):
        if world.is_main:
            finish_ensemble(cfg, out, info, per_seed)
    return out


def _loop(
    cfg: TrainConfig,
    out: Path,
    schedule: PoolSchedule,
    members: list[ck.MemberState],
    start: int,
    scale: float,
    progress: bool,
    layout: Layout | None = None,
) -> None:
    layout = layout or Layout(World(), False, tuple(m.seed for m in members))
    world = layout.world
    B, P = cfg.batch_size, cfg.pool_batches
    share = layout.share(P * B)
    lo, hi = share or (0, P * B)
    device = members[0].since_fired.device if members else torch.device("cpu")
    reducer = GradientReducer(device) if share is not None else None
    dead_steps = max(1, cfg.dead_after_tokens // B)
    ckpt_steps = max(1, cfg.checkpoint_every // B) if cfg.checkpoint_every else 0
    bar = tqdm(
        total=cfg.steps * B,
        initial=start * B,
        unit="tok",
        unit_scale=True,
        disable=not progress,
        desc=f"training {len(members)} SAE(s)",
    )
    t0, tok0 = time.perf_counter(), start
    step = start
    pools = schedule.pools(start // P, share=share, pin=device.type == "cuda")
    try:
        with (out / METRICS_LOG).open("a", encoding="utf-8") if world.is_main else nullcontext() as logf:
            while step < cfg.steps:
                try:
                    pool_index, pool = next(pools)
                except NonFiniteActivations as err:
                    raise UserError(
                        f"{err} (needed by training step {err.pool * P} onwards); stopped, the last good checkpoint "
                        f"in {out} is kept: repair or regenerate the cache, then rerun with --resume"
                    ) from err
                # (P*B, d_in) normalised, on the device; data-parallel: its tokens [lo, hi)
                pool = pool.to(device, non_blocking=True) * scale
                orders = {m.seed: member_order(m.seed, pool_index, P * B).to(device) for m in members}
                for j in range(step - pool_index * P, P):
                    if step >= cfg.steps:
                        break
                    lines = []
                    log_step = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
                    for m in members:
                        order = orders[m.seed][j * B : (j + 1) * B]
                        if share is not None:  # the tokens of the global batch that lie in this rank's part
                            order = order[(order >= lo) & (order < hi)] - lo
                        x = pool[order]  # (B, d_in), or this rank's part of it
                        r = _checked_step(cfg, m, x, step, dead_steps, reducer, out)
                        if log_step and len(x):
                            lines.append(_log_line(cfg, m, r, x, step, len(layout.seeds), t0, tok0))
                    if log_step:
                        _write_lines(logf, lines, layout)
                    step += 1
                    bar.update(B)
                    if ckpt_steps and step % ckpt_steps == 0 and step < cfg.steps:
                        if logf is not None:
                            logf.flush()
                        own = members if layout.writes_members else []
                        ck.save_checkpoint(out, own, {"step": step, "tokens": step * B}, world)
                        t0, tok0 = time.perf_counter(), step
                    fault_point("train.after_step")
    finally:
        bar.close()
        pools.close()


def _note_device(device: torch.device, cfg: TrainConfig, world: World) -> None:
    """On a GPU, say once what determinism means there (README: "Determinism on CUDA")."""
    if world.is_main and device.type == "cuda":
        how = (
            f"deterministic (dense TopK backward, CUBLAS_WORKSPACE_CONFIG={os.environ.get('CUBLAS_WORKSPACE_CONFIG')}"
            "): repeats bit for bit on this GPU and software, differs from CPU training by float rounding"
            if cfg.deterministic
            else "not deterministic (deterministic = false)"
        )
        log.info("training on %s, %s", device, how)


def _checked_step(cfg, m, x, step, dead_steps, reducer, out) -> dict[str, Any]:  # noqa: ANN001 - see _step
    try:
        return _step(cfg, m, x, step, dead_steps, reducer)
    except FloatingPointError as err:
        raise UserError(
            f"training diverged: {err}; the last good checkpoint in {out} is kept "
            "(lower --lr and rerun with --resume, or start again)"
        ) from err


def _write_lines(logf: IO[str] | None, lines: list[dict[str, Any]], layout: Layout) -> None:
    """Rank 0 writes a log step's lines in seed order; seed-parallel ranks send it theirs (a collective: every
    rank calls this at every log step). Data-parallel: rank 0's own lines (its share of each batch)."""
    if layout.distributed and not layout.data_parallel:
        lines = [ln for part in layout.world.all_gather(lines) for ln in part]
        lines.sort(key=lambda ln: layout.seeds.index(ln["seed"]))
    if logf is not None:
        logf.write("".join(json.dumps(ln) + "\n" for ln in lines))


def _log_line(cfg, m, r, x, step, n_members, t0, tok0) -> dict[str, Any]:  # noqa: ANN001 - private helper
    elapsed = max(time.perf_counter() - t0, 1e-9)
    return {
        "seed": m.seed,
        "step": step + 1,
        "tokens": (step + 1) * cfg.batch_size,
        "lr": lr_at(cfg, step),
        "loss": float(r["loss"]),
        **{k: float(v) for k, v in r["losses"].items()},
        **batch_metrics(x, r["x_hat"], r["l0"]),
        "dead_fraction": r["dead"] / m.sae.cfg.d_sae,
        "tokens_per_s": (step + 1 - tok0) * cfg.batch_size * n_members / elapsed,
    }


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past a resumed checkpoint (and a line cut short by a kill), so the log reads as one run."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(ln)["step"] <= step:
                keep.append(ln)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # the half-written last line of a killed run
    path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")
