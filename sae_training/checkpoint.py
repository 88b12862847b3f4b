"""Crash-safe checkpoints of an ensemble: safetensors for tensors (weights, Adam moments, dead-latent counters),
JSON for counters. No pickles.

Layout: `RUN/checkpoint/state.json` + `RUN/checkpoint/seed-<s>.safetensors`. A new checkpoint is written to
`checkpoint.tmp/`, then swapped in by renames (`checkpoint` -> `checkpoint.old`, `checkpoint.tmp` -> `checkpoint`),
so a process killed at any moment leaves either the previous or the new checkpoint complete. Under torchrun every
rank writes the files of the members it trains into the same `checkpoint.tmp/` and rank 0 swaps it in once all have
written, so the layout (and `--resume`, with any number of processes) is the same as for one process.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sae_lens.saes.sae import TrainingSAE
from safetensors.torch import load_file, save_file

from activations.distributed import World

CKPT = "checkpoint"


@dataclass
class MemberState:
    """Everything of one ensemble member that changes during training."""

    seed: int
    sae: TrainingSAE
    optimizer: torch.optim.Adam
    since_fired: torch.Tensor  # (d_sae,) int64: steps since each latent last fired


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _member_tensors(m: MemberState) -> dict[str, torch.Tensor]:
    """CPU copies of a member's state: a checkpoint does not remember the device it was written from."""
    out = {f"sae.{k}": v.detach().cpu().contiguous() for k, v in m.sae.state_dict().items()}
    for i, st in m.optimizer.state_dict()["state"].items():
        for key, val in st.items():
            out[f"adam.{i}.{key}"] = torch.as_tensor(val).detach().cpu().contiguous()
    out["since_fired"] = m.since_fired.cpu()
    return out


def save_checkpoint(
    run: Path, members: list[MemberState], counters: dict[str, Any], world: World | None = None
) -> None:
    """Write a complete checkpoint of all members and swap it in atomically.

    Under torchrun every rank calls this at the same step with the members whose files it writes; the barriers
    make rank 0 swap only a folder every rank has finished (a rank that dies first leaves the previous one)."""
    world = world or World()
    tmp, cur, old = run / f"{CKPT}.tmp", run / CKPT, run / f"{CKPT}.old"
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    world.barrier()
    for m in members:
        save_file(_member_tensors(m), tmp / f"seed-{m.seed}.safetensors")
    world.barrier()
    if not world.is_main:
        return
    write_json(tmp / "state.json", counters)
    shutil.rmtree(old, ignore_errors=True)
    if cur.exists():
        os.replace(cur, old)
    os.replace(tmp, cur)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    for name in (CKPT, f"{CKPT}.old"):  # .old survives only if a swap was interrupted
        if (run / name / "state.json").exists():
            return run / name
    return None


def load_counters(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "state.json").read_text(encoding="utf-8"))


def load_member(ckpt: Path, m: MemberState) -> None:
    """Restore a freshly built member (same config and seed, on any device) from a checkpoint, in place: the
    tensors are read to the CPU and copied to the member's device (Adam's `load_state_dict` moves its moments to
    their parameters' device)."""
    tensors = load_file(ckpt / f"seed-{m.seed}.safetensors")
    m.sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, val in tensors.items():
        if key.startswith("adam."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = val
    sd = m.optimizer.state_dict()
    m.optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
    m.since_fired = tensors["since_fired"].to(m.since_fired.device, copy=True)


def remove_checkpoints(run: Path) -> None:
    for name in (CKPT, f"{CKPT}.old", f"{CKPT}.tmp"):
        shutil.rmtree(run / name, ignore_errors=True)
