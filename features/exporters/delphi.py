"""The `delphi` export: a latent cache in EleutherAI delphi's layout, so delphi can explain and score the set.

Layout (as `delphi.latents.LatentCache.save_splits` / `save_config` write it, read by `delphi.latents.LatentDataset`):

    OUT/latents/{hook}/{start}_{end}.safetensors   latents start..end (inclusive), contiguous over 0..d_sae-1
    OUT/latents/{hook}/config.json                  delphi's CacheConfig fields plus model_name

Each shard holds `locations` (m, 3) = (sequence, position, latent - start) as uint16 when both the sequence and
the latent offset fit, else uint32; `activations` (m,) float16; `tokens` (n_seq, ctx_len) the scored token grid.
Latent indices stay the run's own: only the selected latents have entries (the others' shards are empty), so
`LatentDataset(OUT/"latents", ..., modules=[hook], latents={hook: torch.tensor(selected)})` reads exactly the set.
Activations are those of the reference SAE on the scored cache rows; masked tokens (padding, special tokens) are
left out, like delphi's `|act| > 1e-5` filter leaves out zeros.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from activations.errors import UserError
from features.exporters.context import ExportContext

MIN_ACT = 1e-5  # delphi keeps |act| > 1e-5


def split_edges(d_sae: int, n_splits: int) -> list[tuple[int, int]]:
    """Contiguous inclusive (start, end) ranges tiling 0..d_sae-1, as delphi's `_generate_split_indices`."""
    bounds = np.linspace(0, d_sae, min(n_splits, d_sae) + 1).astype(int)
    return [(int(a), int(b) - 1) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def write(ctx: ExportContext, folder: Path) -> None:
    from safetensors.numpy import save_file

    n_splits = ctx.option("n_splits", 5)
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1:
        raise UserError(f"--splits: must be a whole number of at least 1, got {n_splits!r}")
    sel = ctx.features
    sae = ctx.load_sae()
    locs, vals = [], []
    for s, codes, mask in ctx.iter_codes(sae, sel):
        keep = (np.abs(codes) > MIN_ACT) & ~mask[..., None]  # (s, L, n)
        q, p, j = np.nonzero(keep)
        locs.append(np.stack([q + s, p, sel[j]], axis=1).astype(np.int64))
        vals.append(codes[q, p, j])
    loc = np.concatenate(locs) if locs else np.zeros((0, 3), np.int64)
    act = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    tokens = ctx.store.grid_tokens.astype(np.int64)  # (n_seq, L)
    vocab_max = len(ctx.store.vocab)
    tokens = np.where(tokens < 0, 0, tokens)  # delphi decodes every token; padding has no id of its own
    hook_dir = folder / "latents" / ctx.hook
    hook_dir.mkdir(parents=True)
    for start, end in split_edges(ctx.store.n_latents, n_splits):
        m = (loc[:, 2] >= start) & (loc[:, 2] <= end)
        part = loc[m].copy()
        part[:, 2] -= start
        small = len(part) == 0 or (part[:, 2].max() < 2**16 and part[:, 0].max() < 2**16)
        save_file(
            {
                "locations": part.astype(np.uint16 if small else np.uint32),
                "activations": act[m].astype(np.float16),
                "tokens": tokens,
            },
            str(hook_dir / f"{start}_{end}.safetensors"),
        )
    cfg = {
        "dataset_repo": str(ctx.cache_path),
        "dataset_split": f"first {ctx.scored_seqs()} sequences (scored)",
        "dataset_name": "",
        "dataset_column": "text",
        "batch_size": 32,
        "cache_ctx_len": int(tokens.shape[1]),
        "n_tokens": int(tokens.size),
        "n_splits": n_splits,
        "model_name": ctx.model_name(),
        "xenofeat": {
            "set": ctx.selected.name,
            "selection": ctx.selected.selection,
            "latents": [int(i) for i in sel],
            "source_sae": str(ctx.sae_path),
            "vocab_size": vocab_max,
        },
    }
    (hook_dir / "config.json").write_text(json.dumps(cfg, indent=4), encoding="utf-8")
