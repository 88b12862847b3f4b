"""Training an SAE ensemble from an activation cache: `train(cfg, cache_path, out)` -> the run folder.

One process trains every member (one per seed) in lockstep: each shuffle pool is read from the cache once and every
member draws its own permutation of it (data.py). Members share no state: each has its own weights, Adam, and
dead-latent counters. Activations are scaled to unit mean squared norm (factor estimated on a sample) and the factor
is folded into the saved weights, so the saved sae-lens SAEs work on raw activations.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from sae_lens.saes.sae import TrainStepInput
from tqdm.auto import tqdm

from activations.cache import ActivationCache
from activations.errors import UserError
from activations.faults import fault_point
from activations.version import __version__
from sae_training import checkpoint as ck
from sae_training.config import TrainConfig
from sae_training.data import (
    NonFiniteActivations,
    PoolSchedule,
    mean_squared_norm,
    member_order,
    split_sequences,
)
from sae_training.finish import finish_run
from sae_training.metrics import batch_metrics
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


def _step(cfg: TrainConfig, m: ck.MemberState, x: torch.Tensor, step: int, dead_steps: int) -> dict[str, Any]:
    """One optimiser step of one member on a normalised batch x (B, d_in); returns loss terms and batch metrics."""
    sae, opt = m.sae, m.optimizer
    for group in opt.param_groups:
        group["lr"] = lr_at(cfg, step)
    sae.train()
    dead = m.since_fired > dead_steps  # sae-lens's rule: no firing for more than the window
    if cfg.arch == "topk":
        out = topk_forward(sae, x, dead)
        fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
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
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss of seed {m.seed} became {loss.item()} at step {step}")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    m.since_fired += 1
    m.since_fired[fired] = 0
    return {"loss": loss.detach(), "losses": losses, "x_hat": x_hat, "l0": l0, "dead": int(dead.sum())}


def _new_member(cfg: TrainConfig, d_in: int, seed: int) -> ck.MemberState:
    sae = build_training_sae(cfg, d_in, seed)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
    return ck.MemberState(seed, sae, opt, torch.zeros(sae.cfg.d_sae, dtype=torch.int64))


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
) -> Path:
    """Train one SAE per seed of cfg on a cache's hook; returns the run folder (see run.py for its layout)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    try:
        return _train(cfg, cache_path, out, hook=hook, resume=resume, overwrite=overwrite,
                      allow_partial=allow_partial, progress=progress)  # fmt: skip
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
) -> Path:
    out = Path(out)
    with ActivationCache.open(cache_path, allow_partial=allow_partial) as cache:
        hook = cache.check_hook(hook)
        d_in = cache.d_model
        try:
            cfg.resolve(d_in)
        except ValueError as err:
            raise UserError(str(err)) from err
        _check_memory(cfg, d_in)
        identity = {
            "cache_fingerprint": cache.meta.fingerprint,
            "hook": hook,
            "d_in": d_in,
            "config": cfg.to_dict(),
        }
        old = prepare_out(out, identity, resume=resume, overwrite=overwrite)
        n_train = split_sequences(cache.n_seq, cfg.eval_fraction)
        pool_tokens = cfg.pool_batches * cfg.batch_size
        schedule = PoolSchedule(cache, hook, n_train, pool_tokens, cfg.data_seed)
        if old is not None:
            scale = float(old["norm_scaling_factor"])
        else:
            msn = mean_squared_norm(schedule, cfg.norm_sample_tokens)
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
        out.mkdir(exist_ok=True)
        ck.write_json(out / RUN_JSON, info)
        members = [_new_member(cfg, d_in, s) for s in cfg.seeds]
        start = 0
        ckpt = ck.find_checkpoint(out) if resume else None
        if ckpt is not None:
            start = int(ck.load_counters(ckpt)["step"])
            for m in members:
                ck.load_member(ckpt, m)
            log.info("resuming %s from step %d of %d", out, start, cfg.steps)
        _truncate_log(out / METRICS_LOG, start)
        _loop(cfg, out, schedule, members, start, scale, progress)
        return finish_run(cfg, cache, hook, out, members, info, scale)


def _loop(
    cfg: TrainConfig,
    out: Path,
    schedule: PoolSchedule,
    members: list[ck.MemberState],
    start: int,
    scale: float,
    progress: bool,
) -> None:
    B, P = cfg.batch_size, cfg.pool_batches
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
    pools = schedule.pools(start // P)
    try:
        with (out / METRICS_LOG).open("a", encoding="utf-8") as logf:
            while step < cfg.steps:
                try:
                    pool_index, pool = next(pools)
                except NonFiniteActivations as err:
                    raise UserError(
                        f"{err} (needed by training step {err.pool * P} onwards); stopped, the last good checkpoint "
                        f"in {out} is kept: repair or regenerate the cache, then rerun with --resume"
                    ) from err
                pool = pool * scale  # (P*B, d_in) normalised
                orders = {m.seed: member_order(m.seed, pool_index, P * B) for m in members}
                for j in range(step - pool_index * P, P):
                    if step >= cfg.steps:
                        break
                    for m in members:
                        x = pool[orders[m.seed][j * B : (j + 1) * B]]  # (B, d_in)
                        try:
                            r = _step(cfg, m, x, step, dead_steps)
                        except FloatingPointError as err:
                            raise UserError(
                                f"training diverged: {err}; the last good checkpoint in {out} is kept "
                                "(lower --lr and rerun with --resume, or start again)"
                            ) from err
                        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                            _log_line(logf, cfg, m, r, x, step, len(members), t0, tok0)
                    step += 1
                    bar.update(B)
                    if ckpt_steps and step % ckpt_steps == 0 and step < cfg.steps:
                        logf.flush()
                        ck.save_checkpoint(out, members, {"step": step, "tokens": step * B})
                        t0, tok0 = time.perf_counter(), step
                    fault_point("train.after_step")
    finally:
        bar.close()
        pools.close()


def _log_line(logf, cfg, m, r, x, step, n_members, t0, tok0) -> None:  # noqa: ANN001 - private helper
    import json

    elapsed = max(time.perf_counter() - t0, 1e-9)
    line = {
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
    logf.write(json.dumps(line) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past a resumed checkpoint (and a line cut short by a kill), so the log reads as one run."""
    import json

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
