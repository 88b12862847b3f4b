"""`xenofeat score --device`: the encode pass's device option. On the CPU, `--device cpu` writes the very store the
default writes; a device this machine lacks, or a malformed one, is one line and writes nothing. (The GPU path is
exercised by benchmarks/gpu_check.sh on a GPU machine, never here.)"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from sae_training.config import TrainConfig
from tests.helpers.common import error_line, run_cli
from tests.helpers.training import planted_cache

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run, scored in this process with the default device: the store is RUN/features."""
    from features.score import ScoreJob, score
    from sae_training.trainer import train

    root = tmp_path_factory.mktemp("score-device")
    planted_cache(root / "cache.h5", n_seq=96, d=16, n_features=24, l0=2, seed=3)
    cfg = TrainConfig(
        seeds=(0, 1, 2), width=32, k=2, tokens=20_000, batch_size=512, lr=3e-3, downstream_seqs=0
    )
    run = train(cfg, root / "cache.h5", root / "run", progress=False)
    score(ScoreJob(run=run, workers=1, progress=False))
    return run


def test_device_cpu_writes_the_default_store(scored: Path, tmp_path: Path) -> None:
    r = run_cli("score", str(scored), "--out", str(tmp_path), "--device", "cpu", "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    got, want = tmp_path / "features", scored / "features"
    pd.testing.assert_frame_equal(
        pd.read_parquet(got / "features.parquet"), pd.read_parquet(want / "features.parquet")
    )
    with h5py.File(got / "examples.h5", "r") as fa, h5py.File(want / "examples.h5", "r") as fb:
        names: list[str] = []
        fb.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert names
        for name in names:
            x, y = fa[name][()], fb[name][()]
            assert np.array_equal(x, y, equal_nan=y.dtype.kind == "f"), name
    sa, sb = (json.loads((s / "summary.json").read_text()) for s in (got, want))
    sa.pop("timings"), sb.pop("timings")
    assert sa == sb


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_device_cuda_without_cuda_is_one_line_and_writes_nothing(scored: Path, tmp_path: Path) -> None:
    line = error_line(
        run_cli("score", str(scored), "--out", str(tmp_path / "o"), "--device", "cuda", "--quiet")
    )
    assert "--device" in line and "CUDA is not available" in line, line
    assert not (tmp_path / "o").exists()


def test_unknown_device_is_one_line_and_writes_nothing(scored: Path, tmp_path: Path) -> None:
    line = error_line(
        run_cli("score", str(scored), "--out", str(tmp_path / "o"), "--device", "gpu0", "--quiet")
    )
    assert line == 'xenofeat: error: --device: "gpu0" must be cpu, cuda, cuda:N or auto', line
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
@pytest.mark.parametrize("where", ["flag", "config"])
def test_run_refuses_a_missing_gpu_before_any_stage_writes(tmp_path: Path, where: str) -> None:
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--quiet"]
    if where == "flag":
        args += ["--device", "cuda"]
    else:
        config = tmp_path / "c.toml"
        config.write_text('[train]\ndevice = "cuda"\n')
        args += ["--config", str(config)]
    r = run_cli(*args)
    assert r.returncode == 2
    line = error_line(r)
    assert ("--device" in line if where == "flag" else "[train] device" in line) and "CUDA" in line
    assert not out.exists()
