"""Pretrained SAEs by name (`--sae sae-lens:RELEASE/SAE_ID`) and the seed companions C2 can match one against.

A pretrained SAE is loaded through sae-lens's own `SAE.from_pretrained`: the release is looked up in sae-lens's
registry (`pretrained_saes.yaml`, `get_pretrained_saes_directory`), its files come from the Hugging Face hub through
`huggingface_hub`. The CLI sets `HF_HUB_OFFLINE=1` unless `XENOFEAT_ONLINE=1`, so offline a release already in the
local Hugging Face cache (HF_HOME / HF_HUB_CACHE) loads and a missing one fails at once with one line naming it.
Unknown releases and SAE ids are refused before anything is read, with the nearest names as hints.

One pretrained SAE has no other seeds, so C2 has nothing to match it against. `STABILITY_MODES` are the choices
(`xenofeat score --stability`): `seeds` matches against the SAEs given with `--others` (the default with
`--others`, and for an SAE folder, as before); `none` records C2 as not applicable (the default for a pretrained SAE
without `--others`: C2 then does not gate `well_defined`); `companions` trains seed companions of the same
architecture and shape on the scored cache (`train_companions`, initialised by sae-lens's own training classes as
`xenofeat train` does) and matches against them; they answer "would a fresh SAE on this cache find the latent
again", a weaker question than seed stability of the pretrained recipe, which is why it is not the default.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activations.errors import UserError

log = logging.getLogger(__name__)

PREFIX = "sae-lens:"
"""What starts an `--sae` / `--others` value naming a pretrained release instead of a folder."""

STABILITY_MODES = ("seeds", "companions", "none")
"""How C2 gets the SAEs it matches the reference against (see the module docstring)."""

COMPANIONS_DIR = "companions"
"""The training run of the seed companions, inside the score's output folder (resumed or reused by a rerun)."""


@dataclass(frozen=True)
class PretrainedSpec:
    """A parsed `sae-lens:RELEASE/SAE_ID`."""

    release: str
    sae_id: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.release}/{self.sae_id}"


def is_pretrained(value: str | Path) -> bool:
    """Whether an `--sae` / `--others` value names a pretrained release."""
    return str(value).startswith(PREFIX)


def parse_spec(value: str, option: str) -> PretrainedSpec:
    """RELEASE and SAE_ID of `sae-lens:RELEASE/SAE_ID` (release names hold no "/", SAE ids may: Gemma Scope's)."""
    release, sep, sae_id = value.removeprefix(PREFIX).partition("/")
    if not sep or not release or not sae_id:
        raise UserError(f"{option}: {value} is not of the form {PREFIX}RELEASE/SAE_ID")
    return PretrainedSpec(release, sae_id)


def _hint(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def check_registry(spec: PretrainedSpec, option: str) -> str:
    """The release's Hugging Face repo id; UserError for a release or SAE id sae-lens's registry does not list."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    entry = directory.get(spec.release)
    if entry is None:
        raise UserError(
            f"{option}: unknown sae-lens release {spec.release!r} (not in sae-lens's pretrained_saes.yaml)"
            + _hint(spec.release, list(directory))
        )
    if spec.sae_id not in entry.saes_map:
        raise UserError(
            f"{option}: release {spec.release} has no SAE id {spec.sae_id!r} ({len(entry.saes_map)} ids)"
            + _hint(spec.sae_id, list(entry.saes_map))
        )
    return str(entry.repo_id)


def load_pretrained(value: str, option: str) -> Any:  # noqa: ANN401 - sae_lens.SAE
    """The SAE `sae-lens:RELEASE/SAE_ID` through `SAE.from_pretrained`, on the CPU, float32; one-line UserErrors."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from sae_lens import SAE

    spec = parse_spec(value, option)
    repo = check_registry(spec, option)
    try:
        return SAE.from_pretrained(spec.release, spec.sae_id, device="cpu", dtype="float32")
    except LocalEntryNotFoundError:
        # offline and not in the local cache, or online but the hub could not be reached: nothing was loaded
        what = f"release {spec.release} (SAE {spec.sae_id}, Hugging Face repo {repo})"
        if os.environ.get("XENOFEAT_ONLINE") != "1":
            raise UserError(
                f"{option}: offline: {what} is not in the local Hugging Face cache; set XENOFEAT_ONLINE=1 to "
                "download it"
            ) from None
        raise UserError(
            f"{option}: {what} could not be downloaded (is the hub reachable?) and is not in the local cache"
        ) from None
    except (HfHubHTTPError, OSError, ValueError, KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{option}: cannot load {spec} from {repo} ({first})") from None


def companion_config(ref: Any, tokens: int, n: int) -> Any:  # noqa: ANN401 - sae_lens.SAE -> TrainConfig
    """Training settings of `n` seed companions of the reference: its architecture where `xenofeat train` has it
    (else TopK), its width, its k (TopK family), seeds 1..n, `tokens` training tokens each."""
    from sae_training.config import ARCHS, TOPK_FAMILY, TrainConfig

    names = {v: k for k, v in ARCHS.items()}
    arch = names.get(str(ref.cfg.architecture()), "topk")
    extra: dict[str, Any] = {}
    if arch in TOPK_FAMILY and getattr(ref.cfg, "k", None):
        extra["k"] = int(ref.cfg.k)
    return TrainConfig(
        arch=arch, width=int(ref.cfg.d_sae), seeds=tuple(range(1, n + 1)), tokens=tokens,
        downstream_seqs=0, **extra,
    )  # fmt: skip


def train_companions(ref: Any, cache: Path, hook: str, out: Path, *, fingerprint: str, tokens: int,  # noqa: ANN401
                     n: int, overwrite: bool, progress: bool) -> tuple[Path, list[int], list[Any]]:  # fmt: skip
    """Train the companions into OUT/companions, or resume them, or reuse them when complete and trained on the same
    cache, hook and settings (else an error, or a fresh training with `overwrite`); their run, seeds and SAEs."""
    from sae_training.run import RUN_JSON, load_member, load_run
    from sae_training.trainer import train

    folder = Path(out) / COMPANIONS_DIR
    cfg = companion_config(ref, tokens, n)
    want = {"cache_fingerprint": fingerprint, "hook": hook, "config": json.loads(json.dumps(cfg.identity()))}
    run = load_run(folder) if (folder / RUN_JSON).exists() else None
    same = run is not None and all(run.info.get("identity", {}).get(k) == v for k, v in want.items())
    if run is not None and not same and not overwrite:
        raise UserError(
            f"{folder}: holds seed companions trained on another cache, hook or settings; pass --overwrite to "
            "train them again"
        )
    if not same or not run.complete:  # type: ignore[union-attr]
        log.info("training %d seed companion(s) of %s latents on %s (%s tokens each) into %s",
                 n, cfg.width, cache, f"{tokens:,}", folder)  # fmt: skip
        resume = same and not run.complete  # type: ignore[union-attr]
        train(cfg, cache, folder, hook=hook, resume=resume, overwrite=not same, progress=progress)
        run = load_run(folder)
    seeds = list(run.seeds)
    return folder, seeds, [load_member(folder, s) for s in seeds]
