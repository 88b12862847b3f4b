"""Training under torchrun: which members a rank trains, the data-parallel gradient reduction, and the check that
every rank was started with the same arguments.

Two ways to use N processes (activations.distributed.World says which process this is):

- seed-parallel (the default): member i of the seeds goes to rank i mod N; each rank reads the cache itself and
  trains its members exactly as one process would (the same pools, orders and steps), so every member is
  bit-identical to the same seed trained alone. Ranks meet only at checkpoints, log lines and the end.
- data-parallel (`--data-parallel`): every rank holds every member; rank r reads only tokens
  `pool_share(P, r, N)` of each shuffle pool and trains on the part of each global batch that falls there. Each
  rank's loss is weighted by its share of the batch (n_r / B), so the summed gradients are the one-process gradient
  of the same global batch up to float summation order. Gradients, the fired-latent mask (dead-latent statistics)
  and the loss terms travel in ONE flat all-reduce per member step. This is a manual all-reduce, not DDP: DDP hooks
  `module.forward`, which our sparse TopK step (topk_step.py) does not go through, and for a two-matrix SAE a
  single bucket per step costs what DDP's bucketing would while keeping the step's code one path. The all-reduce
  runs where the tensors are: on the default NCCL group for `--device cuda`, on gloo for the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from activations.distributed import SharedError, World
from activations.errors import UserError
from sae_training.config import TrainConfig
from sae_training.data import pool_share

DATA_PARALLEL_ARCHS = ("topk",)
"""Architectures whose loss is a mean of per-token terms, so a split batch gives the one-process gradient
(batchtopk and matryoshka select across the whole batch; sae-lens's other losses are not checked term by term)."""


@dataclass(frozen=True)
class Layout:
    """How one job's members and data are spread over its ranks."""

    world: World
    data_parallel: bool
    seeds: tuple[int, ...]

    @property
    def distributed(self) -> bool:
        return self.world.distributed

    @property
    def local_seeds(self) -> tuple[int, ...]:
        """The seeds this rank trains (all of them in one process or data-parallel)."""
        if self.data_parallel or not self.distributed:
            return self.seeds
        return self.seeds[self.world.rank :: self.world.world_size]

    @property
    def writes_members(self) -> bool:
        """Whether this rank writes its members' checkpoint files (data-parallel: rank 0, for all)."""
        return self.world.is_main or not self.data_parallel

    def share(self, pool_tokens: int) -> tuple[int, int] | None:
        """The part of every pool this rank reads (None: the whole pool)."""
        if not (self.data_parallel and self.distributed):
            return None
        return pool_share(pool_tokens, self.world.rank, self.world.world_size)

    def check(self, cfg: TrainConfig) -> None:
        """UserError (the same on every rank) for a layout that cannot train this config."""
        n, size = len(self.seeds), self.world.world_size
        if self.data_parallel and self.distributed and cfg.arch not in DATA_PARALLEL_ARCHS:
            raise UserError(
                f"--data-parallel: supported for --arch {', '.join(DATA_PARALLEL_ARCHS)} (a loss averaged over "
                f"tokens); {cfg.arch} selects across the whole batch, so a split batch would train another SAE"
            )
        if not self.data_parallel and n < size:
            raise UserError(
                f"--seeds: {n} seed(s) cannot be spread over {size} processes (each trains at least one member); "
                f"start at most {n} processes, or pass --data-parallel to train each member on all of them"
            )


class GradientReducer:
    """Sums the gradients, the fired-latent mask and the loss terms of one member step over all ranks."""

    def __init__(self, device: torch.device | None = None) -> None:
        # CUDA tensors reduce on the default group (NCCL where GPUs exist, see World.backend). NCCL cannot reduce
        # CPU tensors, so training on the CPU of a GPU machine reduces on a gloo group of its own (a collective that
        # every rank reaches alike: `agree_on_arguments` saw the same --device on every rank)
        on_cuda = device is not None and device.type == "cuda"
        self.group = None if on_cuda or dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def __call__(
        self, params: list[torch.nn.Parameter], fired: torch.Tensor, scalars: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace each parameter's gradient by the sum over ranks; returns (fired on any rank, summed scalars)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [fired.float(), scalars.float()])
        try:
            dist.all_reduce(flat, group=self.group)
        except RuntimeError as err:  # a peer died mid-step
            raise UserError(
                f"torch.distributed: lost contact with another rank ({str(err).splitlines()[0][:160]}); "
                "rerun the same command with --resume"
            ) from err
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        n_fired = fired.numel()
        return flat[offset : offset + n_fired] > 0, flat[offset + n_fired :]


def agree_on_arguments(world: World, values: dict[str, Any]) -> None:
    """SharedError on every rank, before anything is written, if any rank's `values` differ from rank 0's; the
    message names the options that differ."""
    gathered = world.all_gather(values)
    first = gathered[0]
    for rank, other in enumerate(gathered[1:], start=1):
        keys = [k for k in sorted(set(first) | set(other)) if first.get(k) != other.get(k)]
        if keys:
            parts = ", ".join(
                f"{k}: rank 0 has {first.get(k)!r}, rank {rank} has {other.get(k)!r}" for k in keys
            )
            raise SharedError(
                f"the ranks were started with different arguments ({parts}); start every rank with the same command"
            )
