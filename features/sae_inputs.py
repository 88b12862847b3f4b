"""Resolving what `xenofeat score` scores: the reference SAE, the other seeds, the cache and the hook, all checked.

Either a run folder's ensemble (`RUN/run.json`, reference = its first seed), sae-lens folders given directly
(`--sae DIR --others DIR... --cache F`), or pretrained SAEs by name (`--sae sae-lens:RELEASE/SAE_ID`,
`features.pretrained`), which `--others` also takes. What C2 matches against is the `--stability` mode
(`features.pretrained.STABILITY_MODES`): the other seeds (`seeds`), nothing (`none`: C2 not applicable), or seed
companions the scorer trains (`companions`, filled in by `features.score`). Every mismatch a user can fix is a
one-line `UserError`: too few seeds for C2, a hook the cache does not hold, a width that differs from the cache's
d_model (each naming the SAE and the cache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activations.cache import ActivationCache
from activations.errors import UserError
from features.definition import Definition
from features.pretrained import is_pretrained, load_pretrained
from sae_training.run import load_member, load_run

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """The SAEs and cache of one scoring job."""

    ref: Any  # sae_lens.SAE: the reference (seed 0)
    ref_path: Path | str  # its folder, or `sae-lens:RELEASE/SAE_ID`
    others: list[tuple[int, Any]]  # (seed label, sae_lens.SAE) of the other seeds
    other_paths: list[Path | str]
    seeds: list[int]  # reference first
    cache_path: Path
    hook: str
    cache_fingerprint: str
    metrics: dict[str, Any]
    stability: str = "seeds"  # where C2's other seeds come from: seeds, companions (trained later) or none


def load_sae_folder(path: Path, option: str) -> Any:  # noqa: ANN401 - sae_lens.SAE
    """An SAE from a sae-lens folder, or a UserError naming the option."""
    from sae_lens import SAE

    if not (Path(path) / "cfg.json").exists():
        raise UserError(f"{option}: {path} is not a sae-lens SAE folder (no cfg.json)")
    try:
        return SAE.load_from_disk(str(path), device="cpu")
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"{option}: cannot load the SAE in {path} ({err})") from None


def load_sae(value: Path | str, option: str) -> Any:  # noqa: ANN401 - sae_lens.SAE
    """A pretrained SAE (`sae-lens:RELEASE/SAE_ID`) or a sae-lens folder."""
    return (
        load_pretrained(str(value), option) if is_pretrained(value) else load_sae_folder(Path(value), option)
    )


def default_stability(sae: Path | str | None, others: tuple[Path | str, ...]) -> str:
    """`--stability`'s default: `none` for one pretrained SAE (it has no other seeds), else `seeds`."""
    return "none" if sae is not None and is_pretrained(sae) and not others else "seeds"


def sae_hook(sae: Any) -> str | None:  # noqa: ANN401
    meta = getattr(sae.cfg, "metadata", None)
    return getattr(meta, "hook_name", None) if meta is not None else None


def check_against_cache(cache_path: Path, hook: str | None, saes: list[tuple[str, Any]]) -> tuple[str, str]:
    """The hook to read (the SAE's) and the cache fingerprint; UserError on a hook or width mismatch."""
    with ActivationCache.open(cache_path) as cache:
        if hook is None:
            hook = cache.check_hook(None)
        elif hook not in cache.hooks:
            raise UserError(
                f"--cache: {cache_path} holds hook(s) {', '.join(cache.hooks)}, but the SAE {saes[0][0]} reads "
                f"hook {hook}"
            )
        for name, sae in saes:
            if int(sae.cfg.d_in) != cache.d_model:
                raise UserError(
                    f"--cache: {cache_path} has width d_model={cache.d_model}, but the SAE {name} reads "
                    f"d_in={sae.cfg.d_in}"
                )
        return hook, cache.meta.fingerprint


def resolve_inputs(
    run: Path,
    *,
    sae: Path | str | None,
    others: tuple[Path | str, ...],
    cache: Path | None,
    defn: Definition,
    stability: str | None = None,
) -> Inputs:
    """Load and check the SAEs and cache of a scoring job; `stability` None: `default_stability`."""
    mode = stability or default_stability(sae, others)
    if mode != "seeds" and others:
        raise UserError(f"--others: only with --stability seeds (C2 here: --stability {mode})")
    if sae is not None:
        return _direct(sae, others, cache, defn, mode)
    return _from_run(run, cache, defn, mode)


def _direct(sae: Path | str, others: tuple[Path | str, ...], cache: Path | None, defn: Definition,
            mode: str) -> Inputs:  # fmt: skip
    """`--sae X [--others Y...] --cache F`: folders or pretrained SAEs."""
    need = defn.stability.min_seeds
    if mode == "seeds" and 1 + len(others) < need:
        raise UserError(
            f"--others: stability (C2) needs at least {need} SAEs trained with different seeds "
            f"([stability] min_seeds); give {need - 1 - len(others)} more with --others, or pass "
            "--stability companions (train them on the cache) or --stability none (C2 not applicable)"
        )
    ref = load_sae(sae, "--sae")
    rest = [load_sae(p, "--others") for p in others]
    hook, fp = check_against_cache(
        Path(cache),
        sae_hook(ref),
        [(str(sae), ref)] + [(str(p), o) for p, o in zip(others, rest, strict=True)],
    )
    ref_path = str(sae) if is_pretrained(sae) else Path(sae)
    other_paths: list[Path | str] = [str(p) if is_pretrained(p) else Path(p) for p in others]
    return Inputs(ref, ref_path, list(enumerate(rest, 1)), other_paths, list(range(1 + len(rest))),
                  Path(cache), hook, fp, {}, mode)  # fmt: skip


def _from_run(run: Path, cache: Path | None, defn: Definition, mode: str) -> Inputs:
    """A run folder's ensemble; with `--stability` none or companions, its first seed alone."""
    need = defn.stability.min_seeds
    r = load_run(run)
    if not r.complete:
        raise UserError(
            f"{run}: the training run is not finished; resume it with `xenofeat train ... --resume`"
        )
    seeds = r.seeds if mode == "seeds" else r.seeds[:1]
    if mode == "seeds" and len(seeds) < need:
        raise UserError(
            f"{run}: stability (C2) needs an ensemble of at least {need} seeds ([stability] min_seeds), "
            f"this run has {len(seeds)} ({', '.join(map(str, seeds))}); train one with --seeds 0,1,2"
        )
    cache_path = Path(cache) if cache is not None else r.cache_path
    if not cache_path.is_absolute() and not cache_path.exists():
        cache_path = r.path / cache_path
    saes = [load_member(r.path, s) for s in seeds]
    hook, fp = check_against_cache(
        cache_path, r.hook, [(str(r.members[s]), m) for s, m in zip(seeds, saes, strict=True)]
    )
    if fp != r.cache_fingerprint:
        log.warning(
            "%s is not the cache the run was trained on (fingerprint differs); scoring it anyway", cache_path
        )
    others_ = list(zip(seeds[1:], saes[1:], strict=True))
    paths: list[Path | str] = [r.members[s] for s in seeds[1:]]
    return Inputs(saes[0], r.members[seeds[0]], others_, paths, seeds, cache_path, hook, fp, r.metrics, mode)
