"""Shared fixtures: a small text corpus and a small real cache of the embedded model, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers.common import PROSE

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

# the session-wide `scored_run` fixture; under xdist, the tests sharing an expensive fixture on one worker
pytest_plugins = ["tests.helpers.scored_run", "tests.helpers.grouping"]


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small UTF-8 text files (one document each)."""
    d = tmp_path_factory.mktemp("corpus")
    for i in range(12):
        (d / f"doc{i:02d}.txt").write_text(
            " ".join(PROSE[(i + j) % len(PROSE)] for j in range(3)), encoding="utf-8"
        )
    return d


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """A complete cache of the embedded model on the small corpus: two hooks, float32, 32-token sequences."""
    from activations.build import CacheJob, build_cache

    out = tmp_path_factory.mktemp("cache") / "small.h5"
    job = CacheJob(
        out=out,
        corpus=str(corpus_dir),
        hooks=("blocks.1.hook_resid_post", "blocks.3.hook_resid_post"),
        context_size=32,
        batch_size=4,
        dtype="float32",
    )
    return build_cache(job)
