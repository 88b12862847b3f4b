"""Which process this is among several started by `torchrun`, and the few collectives xenofeat needs.

`World.from_env()` reads the variables torchrun (or SLURM through torchrun, or any launcher that follows its
convention) sets for every process: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. Without them it is the
one-process world (rank 0 of 1), and nothing here touches torch.distributed: a plain `xenofeat` command takes exactly
the path it always took. With them, `world.started()` initialises the default process group (gloo on CPU; NCCL with
`cuda:LOCAL_RANK` where GPUs are present) for the duration of a `with` block and tears it down afterwards.

The collectives move small Python objects (settings, hashes, error messages, counters), never activations: every
rank reads and writes its own files. A collective that fails because another process died becomes a `UserError`
that says so, so a surviving rank stops with one line instead of a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from activations.errors import UserError

# Long enough for the slowest rank to finish a batch (or load a model) while the others wait in a collective.
DEFAULT_TIMEOUT = timedelta(minutes=30)


class SharedError(UserError):
    """A UserError every rank agreed on (see `World.agree`): rank 0 reports it, the other ranks stop quietly."""


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as err:
        raise UserError(f"{name}={raw!r}: expected an integer (set by torchrun)") from err


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise UserError(
                f"RANK={self.rank}, WORLD_SIZE={self.world_size}, LOCAL_RANK={self.local_rank}: "
                "not a valid process layout (0 <= RANK < WORLD_SIZE)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> World:
        """The world torchrun describes in the environment; one process when WORLD_SIZE is unset."""
        env = os.environ if env is None else env
        return cls(
            rank=_env_int(env, "RANK", 0),
            world_size=_env_int(env, "WORLD_SIZE", 1),
            local_rank=_env_int(env, "LOCAL_RANK", 0),
        )

    @property
    def distributed(self) -> bool:
        """More than one process: the collectives below talk to the others."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, which writes what is written once (the index of a sharded cache, messages)."""
        return self.rank == 0

    def device(self, requested: str) -> str:
        """The torch device of this rank: `cuda` (without an index) becomes `cuda:LOCAL_RANK` when distributed."""
        if self.distributed and requested == "cuda":
            return f"cuda:{self.local_rank}"
        return requested

    def backend(self) -> str:
        """NCCL where this rank has a GPU, gloo otherwise."""
        return "nccl" if torch.cuda.is_available() and torch.cuda.device_count() > self.local_rank else "gloo"

    @contextmanager
    def started(self, timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[World]:
        """Initialise the default process group for the block (a no-op for one process); tear it down after."""
        if not self.distributed or dist.is_initialized():
            yield self
            return
        backend = self.backend()
        if backend == "nccl":
            torch.cuda.set_device(self.local_rank)  # the object collectives stage through the current device
        try:
            dist.init_process_group(
                backend=backend,
                init_method="env://",
                rank=self.rank,
                world_size=self.world_size,
                timeout=timeout,
            )
        except (RuntimeError, ValueError) as err:
            raise UserError(
                f"torch.distributed: cannot start the process group ({str(err).splitlines()[0][:200]})"
            ) from err
        try:
            yield self
        finally:
            dist.destroy_process_group()

    # -- collectives (each returns at once for one process) ---------------------------------------------------------
    def all_gather(self, obj: Any) -> list[Any]:  # noqa: ANN401 - any small picklable value
        """Every rank's `obj`, in rank order (pickled in memory between our own processes, never read from files)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(out, obj)
        except RuntimeError as err:  # a peer died: gloo/NCCL report the lost connection as RuntimeError
            raise UserError(
                f"torch.distributed: lost contact with another rank ({str(err).splitlines()[0][:160]}); "
                "rerun the same command with --resume"
            ) from err
        return out

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        self.all_gather(None)  # through all_gather: one code path, and no device-specific barrier quirks

    def agree(self, error: str | None) -> None:
        """Stop every rank if any rank has an error: raises SharedError with the first rank's message, tagged with
        the rank when distributed. Every rank must call it at the same point."""
        errors = self.all_gather(error)
        for rank, msg in enumerate(errors):
            if msg is not None:
                raise SharedError(f"rank {rank}: {msg}" if self.distributed else msg)


@contextmanager
def collected(world: World) -> Iterator[list[str]]:
    """Run a block whose UserError is held back, then `agree` on it: every rank stops, or none does.

    >>> with collected(world):
    ...     risky_local_step()   # a UserError here stops every rank at the end of the block
    """
    box: list[str] = []
    try:
        yield box
    except SharedError:
        raise
    except UserError as err:
        box.append(str(err))
    world.agree(box[0] if box else None)


def on_ranks(world: World, work: Callable[[], Any], timeout: timedelta = DEFAULT_TIMEOUT) -> tuple[int, Any]:
    """Run `work()` inside the process group: (0, its result), or (2, None) after a SharedError, which rank 0
    alone prints as the command's one error line; no rank returns (and makes torchrun stop the rest) before rank
    0's line is out."""
    with world.started(timeout):
        try:
            return 0, work()
        except SharedError as err:
            if world.is_main:
                sys.stderr.write(f"xenofeat: error: {err}\n")
                sys.stderr.flush()
            with contextlib.suppress(UserError):  # a UserError here: a rank is gone, nobody left to wait for
                world.barrier()
            return 2, None
