"""End-to-end training on planted-feature caches: recovery, sae-lens round trip, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sae_training.config import TrainConfig
from sae_training.matching import pw_mcc_null
from sae_training.metrics import ReconstructionStats
from sae_training.recovery import recovery
from sae_training.run import load_member, load_run
from sae_training.trainer import train
from tests.helpers.common import REPO
from tests.helpers.training import HOOK, planted_cache

torch.set_num_threads(1)
ROOT = REPO

SMALL = dict(
    width=96,
    k=3,
    tokens=150_000,
    batch_size=256,
    pool_batches=8,
    lr=3e-3,
    dead_after_tokens=20_000,
    log_every=100,
    checkpoint_every=25_600,
    eval_fraction=0.1,
)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("planted") / "c.h5"
    return path, planted_cache(path)


@pytest.fixture(scope="module")
def trained(planted: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    train(TrainConfig(seeds=(0, 1), **SMALL), planted[0], out, progress=False)
    return out


def test_topk_ensemble_recovers_planted_directions(trained: Path, planted: tuple[Path, np.ndarray]) -> None:
    run = load_run(trained)
    assert run.complete and run.seeds == [0, 1]
    decoders = {s: load_member(trained, s).W_dec.detach().numpy() for s in run.seeds}
    for seed, dec in decoders.items():
        r = recovery(dec, planted[1])
        assert r.mcc >= 0.9, (seed, r.mcc)
    # members differ: own init and own data order
    assert not np.allclose(decoders[0], decoders[1])
    # run.json's PW-MCC stands beside its value for random dictionaries of the same shape, and well above it
    ens = run.info["metrics"]["ensemble"]
    assert ens["pw_mcc_null"] == pw_mcc_null([d.shape for d in decoders.values()])[0]
    assert ens["pw_mcc"] > ens["pw_mcc_null"] + 0.3


def test_saved_members_reproduce_metrics_on_raw_activations(
    trained: Path, planted: tuple[Path, np.ndarray]
) -> None:
    from activations.cache import ActivationCache

    run = load_run(trained)
    a, b = run.info["split"]["eval_seqs"]
    with ActivationCache.open(planted[0]) as cache:
        x = torch.from_numpy(cache.read_acts(HOOK, a, b)[~cache.mask[a:b]])  # RAW activations, CLS excluded
    for seed in run.seeds:
        sae = load_member(trained, seed)
        cfg = json.loads((trained / f"seed-{seed}" / "cfg.json").read_text())
        meta = cfg["metadata"]
        assert meta["hook_name"] == HOOK and meta["seed"] == seed
        assert meta["cache_fingerprint"] == run.cache_fingerprint and "xenofeat_version" in meta
        assert meta["train_config"]["k"] == 3 and cfg["normalize_activations"] == "none"
        stats = ReconstructionStats(sae.cfg.d_sae)
        with torch.no_grad():
            acts = sae.encode(x)
            stats.add(x, sae.decode(acts), acts)
        got, want = stats.result(), run.metrics["per_seed"][str(seed)]
        assert got["eval_tokens"] == want["eval_tokens"]
        assert got["explained_variance"] == pytest.approx(want["explained_variance"], abs=1e-4)
        assert got["l0"] == pytest.approx(want["l0"], abs=1e-3)
        assert got["explained_variance"] > 0.9
        sparsity = load_file(trained / f"seed-{seed}" / "sparsity.safetensors")["sparsity"]
        assert sparsity.shape == (96,)
    lines = [json.loads(ln) for ln in (trained / "metrics.jsonl").read_text().splitlines()]
    assert {"explained_variance", "l0", "dead_fraction", "tokens_per_s", "mse_loss"} <= set(lines[-1])


def _weights(run: Path, seed: int) -> dict[str, torch.Tensor]:
    return load_file(run / f"seed-{seed}" / "sae_weights.safetensors")


KILL_CFG = dict(SMALL, tokens=120_000)  # 468 steps of 256 tokens, a checkpoint every 100 steps


@pytest.fixture(scope="module")
def uninterrupted(planted: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    ref = tmp_path_factory.mktemp("ref") / "ref"
    train(TrainConfig(seeds=(0, 1), **KILL_CFG), planted[0], ref, progress=False)
    return ref


def _assert_same_run(ref: Path, run: Path) -> None:
    for seed in (0, 1):
        a, b = _weights(ref, seed), _weights(run, seed)
        for k in a:
            assert torch.equal(a[k], b[k]), (seed, k)
    assert load_run(run).metrics["per_seed"] == load_run(ref).metrics["per_seed"]
    assert not (run / "checkpoint").exists()


def test_kill_after_a_known_step_then_resume_is_bit_identical(
    planted: tuple[Path, np.ndarray], uninterrupted: Path, tmp_path: Path
) -> None:
    killed = tmp_path / "killed"
    code = (
        "import torch; torch.set_num_threads(1);"
        "from sae_training.config import TrainConfig; from sae_training.trainer import train;"
        f"train(TrainConfig(seeds=(0, 1), **{KILL_CFG!r}), {str(planted[0])!r}, {str(killed)!r}, progress=False)"
    )
    env = {**os.environ, "XENOFEAT_FAULT": "train.after_step:150", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == -signal.SIGKILL and "fault injected at train.after_step" in r.stderr, r.stderr[
        -2000:
    ]
    # killed 50 steps past the checkpoint of step 100: the resume redoes them from it
    assert json.loads((killed / "checkpoint" / "state.json").read_text())["step"] == 100
    assert not (killed / "seed-0").exists()
    train(TrainConfig(seeds=(0, 1), **KILL_CFG), planted[0], killed, resume=True, progress=False)
    _assert_same_run(uninterrupted, killed)


def test_sigkill_then_resume_is_bit_identical(
    planted: tuple[Path, np.ndarray], uninterrupted: Path, tmp_path: Path
) -> None:
    # the same with a kill at whatever moment the first checkpoint appears (extra coverage beyond the fault points)
    cfg, ref = KILL_CFG, uninterrupted
    killed = tmp_path / "killed"
    code = (
        f"import torch, sys; torch.set_num_threads(1); sys.path.insert(0, {str(ROOT)!r});"
        "from sae_training.config import TrainConfig; from sae_training.trainer import train;"
        f"train(TrainConfig(seeds=(0, 1), **{cfg!r}), {str(planted[0])!r}, {str(killed)!r}, progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.time() + 60
    while not (killed / "checkpoint" / "state.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "seed-0").exists(), "the run finished before it could be killed"
    train(TrainConfig(seeds=(0, 1), **cfg), planted[0], killed, resume=True, progress=False)
    _assert_same_run(ref, killed)
