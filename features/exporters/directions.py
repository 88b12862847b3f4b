"""The `safetensors` export: per-latent encoder and decoder directions, biases and thresholds, with metadata.

Tensors (n = selected latents, d = the SAE's input width), in the sub-SAE's JumpReLU form (see saelens_sub), so that
`act_j(x) = relu(pre_j) * (pre_j > threshold[j])` with `pre_j = (x - b_dec) @ encoder[j] + b_enc[j]` on raw
activations, and the reconstruction is `sum_j act_j * decoder[j] + b_dec`:

- `latents` (n,) int64: original latent indices;
- `encoder` (n, d), `decoder` (n, d), `b_enc` (n,), `threshold` (n,), `b_dec` (d,) float32.

String metadata: format, hook, source SAE, its architecture, where the thresholds come from, the selection.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from features.exporters.context import ExportContext

FILE = "directions.safetensors"


def write(ctx: ExportContext, folder: Path) -> None:
    from safetensors.numpy import save_file

    from features.exporters.saelens_sub import sub_weights

    w = sub_weights(ctx)
    tensors = {
        "latents": w.latents.astype(np.int64),
        "encoder": np.ascontiguousarray(w.W_enc.T, np.float32),
        "decoder": np.ascontiguousarray(w.W_dec, np.float32),
        "b_enc": w.b_enc.astype(np.float32),
        "threshold": w.threshold.astype(np.float32),
        "b_dec": w.b_dec.astype(np.float32),
    }
    meta = {
        "format": "xenofeat.directions",
        "format_version": "1.0",
        "hook": ctx.hook,
        "model_name": ctx.model_name(),
        "source_sae": str(ctx.sae_path),
        "source_architecture": w.source_architecture,
        "threshold_source": w.threshold_source,
        "calibration": json.dumps(w.calibration),
        "set": ctx.selected.name,
        "selection": ctx.selected.selection,
        "activation": "relu(pre) * (pre > threshold), pre = (x - b_dec) @ encoder.T + b_enc; x raw activations",
    }
    save_file(tensors, str(folder / FILE), metadata=meta)
