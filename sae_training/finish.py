"""The end of a training run: held-out metrics, saving each member as a sae-lens folder, run.json.

Held-out metrics are measured on the in-memory training SAEs on normalised activations (inference semantics:
batchtopk/matryoshka by their learnt threshold, as they are saved). The saved folders have the normalisation folded
in; tests load them with `sae_lens.SAE.load_from_disk` and check they reproduce these numbers on raw activations.
Held-out metrics run on the training device; then the members move to the CPU, where the downstream splice (the
model is loaded on the CPU) and the saving happen, so a saved member records `device: cpu` whatever trained it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from sae_lens.constants import SAE_WEIGHTS_FILENAME
from safetensors.torch import load_file, save_file

from activations.cache import ActivationCache
from activations.version import __version__
from sae_training import checkpoint as ck
from sae_training.config import TrainConfig
from sae_training.data import heldout_blocks
from sae_training.matching import pw_mcc, pw_mcc_null
from sae_training.metrics import ReconstructionStats
from sae_training.run import RUN_JSON, member_dir
from sae_training.saes import inference_encode

log = logging.getLogger(__name__)
PW_MCC_MAX_WIDTH = 8192  # Hungarian matching beyond this takes minutes on 2 cores


@torch.no_grad()
def heldout_stats(
    cfg: TrainConfig, cache: ActivationCache, hook: str, members: list[ck.MemberState], scale: float
) -> dict[int, ReconstructionStats]:
    """Stream the held-out tokens once through every member."""
    n_train = int(cache.n_seq - max(1, round(cache.n_seq * cfg.eval_fraction)))
    stats = {m.seed: ReconstructionStats(m.sae.cfg.d_sae) for m in members}
    device = members[0].since_fired.device if members else torch.device("cpu")
    for block in heldout_blocks(cache, hook, (n_train, cache.n_seq), cfg.eval_tokens):
        x = torch.from_numpy(block).to(device) * scale  # (n, d_in) normalised
        for s in range(0, len(x), cfg.batch_size):
            xb = x[s : s + cfg.batch_size]
            for m in members:
                m.sae.eval()
                acts = inference_encode(m.sae, cfg.arch, xb)
                stats[m.seed].add(xb, m.sae.decode(acts), acts)
    return stats


def save_member(
    m: ck.MemberState, folder: Path, scale: float, metadata: dict[str, Any], density: torch.Tensor
) -> None:
    """Fold the normalisation into the weights and write a sae-lens folder (via a temp folder and a rename)."""
    sae = m.sae
    sae.fold_activation_norm_scaling_factor(scale)  # W_enc*s, W_dec/s, b_dec/s (sae-lens's own fold)
    for key, value in metadata.items():
        sae.cfg.metadata[key] = value
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    sae.save_inference_model(tmp)
    save_file({"sparsity": density.contiguous()}, tmp / "sparsity.safetensors")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def finish_run(
    cfg: TrainConfig,
    cache: ActivationCache,
    hook: str,
    out: Path,
    members: list[ck.MemberState],
    info: dict[str, Any],
    scale: float,
) -> Path:
    """Measure, save every member, then mark run.json complete and drop the checkpoints."""
    return finish_ensemble(cfg, out, info, finish_members(cfg, cache, hook, out, members, info, scale))


def finish_members(
    cfg: TrainConfig,
    cache: ActivationCache,
    hook: str,
    out: Path,
    members: list[ck.MemberState],
    info: dict[str, Any],
    scale: float,
) -> dict[str, dict[str, Any]]:
    """Measure and save the given members (under torchrun seed-parallel: this rank's); {str(seed): metrics}."""
    stats = heldout_stats(cfg, cache, hook, members, scale)
    for m in members:  # the rest runs on the CPU (module docstring); the optimizer is not needed any more
        m.sae.to("cpu")
        m.since_fired = m.since_fired.cpu()
    dead_steps = max(1, cfg.dead_after_tokens // cfg.batch_size)
    per_seed: dict[str, dict[str, Any]] = {}
    for m in members:
        res = stats[m.seed].result()
        res["dead_fraction"] = float((m.since_fired > dead_steps).double().mean())
        per_seed[str(m.seed)] = res
    from sae_training.downstream import downstream_effect  # imports the model stack only when needed

    downstream = downstream_effect(cfg, cache, hook, members, scale, info["split"]["eval_seqs"])
    for m in members:
        res = per_seed[str(m.seed)]
        res["downstream"] = downstream.get(m.seed, downstream.get("_skipped"))
        meta = {
            "model_name": cache.meta.model_id,
            "hook_name": hook,
            "context_size": cache.meta.context_size,
            "xenofeat_version": __version__,
            "cache_path": info["cache"]["path"],
            "cache_fingerprint": cache.meta.fingerprint,
            "seed": m.seed,
            "train_config": cfg.to_dict(),
            "norm_scaling_factor": scale,
            "l0": res["l0"],
            "num_dead_features": int((m.since_fired > dead_steps).sum()),
            "explained_variance": res["explained_variance"],
        }
        save_member(m, member_dir(out, m.seed), scale, meta, stats[m.seed].log10_density())
    return per_seed


def finish_ensemble(
    cfg: TrainConfig, out: Path, info: dict[str, Any], per_seed: dict[str, dict[str, Any]]
) -> Path:
    """Once every member is saved (by whichever rank): PW-MCC over the saved decoders, run.json complete, no
    checkpoints. The decoders are read back from the member folders, so one process and N give the same number."""
    ensemble: dict[str, Any] = {}
    if len(cfg.seeds) > 1 and int(info["d_sae"]) <= PW_MCC_MAX_WIDTH:
        decoders = [load_file(member_dir(out, s) / SAE_WEIGHTS_FILENAME)["W_dec"].numpy() for s in cfg.seeds]
        mean, std = pw_mcc(decoders)
        # what PW-MCC reads against: its value for random unit rows of the same shapes (C2's `pw_mcc_null`)
        null, _ = pw_mcc_null([d.shape for d in decoders])
        ensemble = {"pw_mcc": mean, "pw_mcc_std": std, "pw_mcc_null": null}
    per_seed = {str(s): per_seed[str(s)] for s in cfg.seeds}  # seed order, whichever rank measured them
    info = {**info, "status": "complete", "metrics": {"per_seed": per_seed, "ensemble": ensemble}}
    ck.write_json(out / RUN_JSON, info)
    ck.remove_checkpoints(out)
    return out
