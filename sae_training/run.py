"""The run folder of an SAE ensemble: `RUN/run.json` and one sae-lens folder `RUN/seed-<s>/` per member.

`load_run(path)` and `load_member(path, seed)` are what later stages (scoring, the viewer) use. `prepare_out` decides,
before anything is written, whether an output folder may be used for a new run, resumed, or must be refused.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activations.errors import UserError
from activations.overwrite import RUN_FILE, RUN_KIND, check_location, check_replace_run

RUN_JSON = RUN_FILE  # the marker that makes a folder a run (activations.overwrite declares it for every kind)


def member_dir(run: str | Path, seed: int) -> Path:
    return Path(run) / f"seed-{seed}"


@dataclass(frozen=True)
class Run:
    """A trained (or training) ensemble as recorded in run.json."""

    path: Path
    info: dict[str, Any]  # the whole run.json

    @property
    def seeds(self) -> list[int]:
        return list(self.info["seeds"])

    @property
    def members(self) -> dict[int, Path]:
        """sae-lens folder of each seed."""
        return {s: member_dir(self.path, s) for s in self.seeds}

    @property
    def hook(self) -> str:
        return str(self.info["hook"])

    @property
    def cache_path(self) -> Path:
        return Path(self.info["cache"]["path"])

    @property
    def cache_fingerprint(self) -> str:
        return str(self.info["cache"]["fingerprint"])

    @property
    def complete(self) -> bool:
        return self.info.get("status") == "complete"

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.info.get("metrics") or {})


def read_run_json(path: Path) -> dict[str, Any] | None:
    """run.json of a folder, None if there is none; UserError if it is not ours or unreadable."""
    f = Path(path) / RUN_JSON
    if not f.exists():
        return None
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{f}: unreadable run file ({err})") from err
    if info.get("kind") != RUN_KIND:
        raise UserError(f"{f}: not a xenofeat SAE-ensemble run file")
    return info


def load_run(path: str | Path) -> Run:
    """Open a run folder (finished or not)."""
    path = Path(path)
    info = read_run_json(path)
    if info is None:
        raise UserError(f"{path}: not a training run folder (no {RUN_JSON})")
    return Run(path, info)


def load_member(path: str | Path, seed: int, *, device: str = "cpu"):  # noqa: ANN201 - sae_lens.SAE (lazy import)
    """The SAE of one member, loaded by sae-lens (works on raw activations; normalisation is folded in)."""
    from sae_lens import SAE

    run = load_run(path)
    if seed not in run.seeds:
        raise UserError(f"--seed: {seed} is not a member of {run.path} (seeds {run.seeds})")
    folder = member_dir(run.path, seed)
    if not (folder / "cfg.json").exists():
        raise UserError(f"{folder}: the member has not been saved yet (is the run finished?)")
    return SAE.load_from_disk(folder, device=device)


def prepare_out(
    out: Path, identity: dict[str, Any], *, resume: bool, overwrite: bool
) -> dict[str, Any] | None:
    """Check the output folder before anything is written; returns the old run.json when resuming.

    `identity` holds what must agree for a resume (cache fingerprint, hook, d_in, config).
    """
    check_location(out)
    info = read_run_json(out) if out.is_dir() else None
    if resume:
        if info is None:
            raise UserError(f"--resume: {out} holds no run to resume; start it without --resume")
        if info.get("status") == "complete":
            raise UserError(f"--resume: the run in {out} is already complete; nothing to resume")
        if info["d_in"] != identity["d_in"]:
            raise UserError(
                f"--resume: d_in mismatch: the run in {out} was trained on d_in={info['d_in']}, "
                f"the cache gives d_in={identity['d_in']}"
            )
        for key, label in (("cache_fingerprint", "cache"), ("hook", "--hook"), ("config", "configuration")):
            if info["identity"][key] != identity[key]:
                raise UserError(
                    f"--resume: the {label} differs from the one the run in {out} was started with"
                )
        return info
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if info is None:
            raise UserError(f"--out: {out} is not empty and holds no xenofeat run; choose another folder")
        if not overwrite:
            same = info.get("identity") == identity and info.get("status") != "complete"
            hint = (
                "pass --resume to continue it"
                if same
                else "pass --overwrite to replace it or choose another --out"
            )
            raise UserError(f"--out: {out} already holds a run ({info.get('status')}); {hint}")
        check_replace_run(out)
        shutil.rmtree(out)
    if not out.parent.exists():
        raise UserError(f"--out: the folder {out.parent} does not exist")
    return None
