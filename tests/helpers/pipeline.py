"""The smallest `xenofeat run` settings that still run every stage: the TOML file the pipeline tests share."""

from __future__ import annotations

from pathlib import Path


def tiny_run_config(folder: Path, corpus: Path) -> Path:
    """`folder/tiny.toml`: the embedded model on `corpus` in 32-token sequences, a 96-latent TopK ensemble (3 seeds,
    32 steps of 512 tokens) and a score of at most 4,000 tokens with one LBL worker."""
    cfg = folder / "tiny.toml"
    cfg.write_text(
        f"""
[cache]
corpus = "{corpus}"
context_size = 32
batch_size = 8

[train]
width = 96
k = 4
tokens = 16384
batch_size = 512
checkpoint_every = 0
norm_sample_tokens = 2048
eval_tokens = 512

[score]
max_tokens = 4000
workers = 1
"""
    )
    return cfg
