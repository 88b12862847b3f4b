"""The `--device` option of training and scoring: its syntax, its resolution to a torch device, and what CUDA needs
for deterministic training.

A device is written `cpu`, `cuda` (under torchrun: `cuda:LOCAL_RANK`, see `World.device`), `cuda:N`, or `auto`
(`cuda` where a GPU is present, else `cpu`). The syntax is checked where a setting is declared
(`device_problem`); whether the device exists is checked once, before anything is written (`resolve_device`), so
a run recorded on a GPU machine can still be read, resumed or scored on a machine without one.
"""

from __future__ import annotations

import json
import os
import re

import torch

from activations.distributed import World
from activations.errors import UserError

DEVICE_FORMS = "cpu, cuda, cuda:N or auto"
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|auto")

# cuBLAS is bit-reproducible only with a fixed workspace per stream; torch refuses (or, with warn_only, warns about)
# cuBLAS calls in deterministic mode unless this is set. ":4096:8" is the value torch's documentation names.
CUBLAS_DETERMINISTIC = ":4096:8"


def device_problem(name: object) -> str | None:
    """What is wrong with a device name's syntax (None: nothing)."""
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        return f"must be {DEVICE_FORMS}"
    return None


def check_device(name: object, option: str = "--device") -> None:
    """UserError (naming `option`) if a device name is malformed."""
    problem = device_problem(name)
    if problem is not None:
        raise UserError(f"{option}: {json.dumps(name) if isinstance(name, str) else repr(name)} {problem}")


def resolve_device(requested: str, world: World | None = None, *, option: str = "--device") -> torch.device:
    """The torch device this process uses for `requested`; UserError (naming `option`) if it is malformed or absent
    here. Under torchrun, `cuda` is this rank's GPU (`cuda:LOCAL_RANK`)."""
    world = world or World()
    check_device(requested, option)
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    name = world.device(requested)
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise UserError(
            f"{option}: {json.dumps(requested)} asks for a GPU but CUDA is not available ({build}); use --device cpu"
        )
    device = torch.device(name)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise UserError(
            f"{option}: {json.dumps(name)} names GPU {index}, but this machine has {torch.cuda.device_count()} GPU(s)"
        )
    return torch.device(
        "cuda", index
    )  # with its index, so that devices compare equal however they were named


def prepare_deterministic_cuda(device: torch.device) -> None:
    """Before the first cuBLAS call on `device` in deterministic mode: fix cuBLAS's workspace (unless the user set
    CUBLAS_WORKSPACE_CONFIG). A process that already ran cuBLAS keeps its workspace; on one stream that is
    deterministic as well, and torch's check reads the variable at each call."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
