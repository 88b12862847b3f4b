"""`torchrun ... xenofeat train`: seed-parallel members bit-identical to one process, data-parallel members within a
stated tolerance of one process with the same global batch, a rank killed mid-training then resumed, ranks started
with different arguments refused, and `--data-parallel` with one process.

Each torchrun is two gloo ranks of one thread on a planted cache of 48 sequences (32 steps of 256 tokens), a few
seconds of compute; the one-process references run in this process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from activations.cache import ActivationCache
from activations.distributed import World
from activations.errors import UserError
from sae_training.config import TrainConfig
from sae_training.data import PoolSchedule, pool_share, squared_norm_sum
from sae_training.parallel import Layout
from sae_training.trainer import train
from tests.helpers.common import run_cli
from tests.helpers.sharded import BIN, torchrun
from tests.helpers.training import HOOK, planted_cache

torch.set_num_threads(1)

# lr high and the dead window short, so that 32 steps move the weights far and AuxK (dead latents) takes part
TINY = dict(
    width=64,
    k=3,
    tokens=8192,
    batch_size=256,
    lr=3e-3,
    dead_after_tokens=1024,
    checkpoint_every=2048,
    pool_batches=4,
    eval_fraction=0.1,
    log_every=4,
)
ARGS = [
    "--width", "64", "--k", "3", "--tokens", "8192", "--batch-size", "256", "--lr", "3e-3",
    "--checkpoint-every", "2048", "--eval-fraction", "0.1", "--no-progress",
]  # fmt: skip
SEEDS = (0, 1, 2)  # three seeds on two ranks: a world size that does not divide the seeds
# Data-parallel vs one process: the same batches and the same gradient up to float summation order (two partial
# sums instead of one); over 32 Adam steps the weights stay within this of each other (measured: ~1e-7).
DP_ATOL = 1e-5


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dist") / "c.h5"
    planted_cache(path, n_seq=48)
    return path


def _config(tmp: Path) -> Path:
    """The TINY settings as a --config file (pool_batches, dead_after_tokens and log_every have no option)."""
    toml = tmp / "tiny.toml"
    toml.write_text("pool-batches = 4\ndead-after-tokens = 1024\nlog-every = 4\n")
    return toml


@pytest.fixture(scope="module")
def reference(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ensemble trained in one process (this one)."""
    out = tmp_path_factory.mktemp("one") / "run"
    train(TrainConfig(seeds=SEEDS, **TINY), cache, out, progress=False)
    return out


def _launch(
    cache: Path, out: Path, tmp: Path, *extra: str, env: dict[str, str] | None = None, name: str = "logs"
):
    logs = tmp / name
    args = ["train", "--cache", str(cache), "--out", str(out), "--config", str(_config(tmp)), *ARGS, *extra]
    r, stderr, _stdout = torchrun(*args, logs=logs, env=env)
    return r, stderr


def _weights(run: Path, seed: int) -> dict[str, torch.Tensor]:
    return load_file(run / f"seed-{seed}" / "sae_weights.safetensors")


def _log(run: Path) -> list[dict]:
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in ln.items() if k != "tokens_per_s"} for ln in lines]


@pytest.fixture(scope="module")
def data_parallel(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dp")
    r, stderr = _launch(cache, tmp / "run", tmp, "--seeds", "0,1,2", "--data-parallel")
    assert r.returncode == 0, (r.stderr[-2000:], stderr)
    return tmp / "run"


def test_seed_parallel_members_are_bit_identical_to_one_process(
    cache: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    r, stderr = _launch(cache, out, tmp_path, "--seeds", "0,1,2")
    assert r.returncode == 0, (r.stderr[-2000:], stderr)
    for seed in SEEDS:
        assert (out / f"seed-{seed}" / "sae_weights.safetensors").read_bytes() == (
            reference / f"seed-{seed}" / "sae_weights.safetensors"
        ).read_bytes(), seed
        assert (out / f"seed-{seed}" / "sparsity.safetensors").read_bytes() == (
            reference / f"seed-{seed}" / "sparsity.safetensors"
        ).read_bytes(), seed
    one, two = (json.loads((p / "run.json").read_text()) for p in (reference, out))
    assert two["status"] == "complete" and two["seeds"] == list(SEEDS)
    assert two["metrics"] == one["metrics"]  # per-seed metrics and the ensemble's PW-MCC, measured once
    assert two["norm_scaling_factor"] == one["norm_scaling_factor"]
    assert _log(out) == _log(reference)  # rank 0 wrote every member's lines, in seed order
    assert not (out / "checkpoint").exists()
    assert "trained 3 SAE(s)" in stderr[0] and "trained" not in stderr[1]  # rank 0 reports, once


def test_data_parallel_matches_one_process_within_tolerance(data_parallel: Path, reference: Path) -> None:
    one, dp = (json.loads((p / "run.json").read_text()) for p in (reference, data_parallel))
    # the normaliser: each rank sums its part of the sample, the parts are added
    assert dp["norm_scaling_factor"] == pytest.approx(one["norm_scaling_factor"], rel=1e-12)
    for seed in SEEDS:
        a, b = _weights(reference, seed), _weights(data_parallel, seed)
        for key in a:
            assert torch.allclose(a[key], b[key], rtol=0, atol=DP_ATOL), (
                seed,
                key,
                (a[key] - b[key]).abs().max(),
            )
        # and the tolerance is tight: training moved the weights far further than it
        other = _weights(reference, (seed + 1) % 3)
        assert (a["W_dec"] - other["W_dec"]).abs().max() > 1000 * DP_ATOL
    # dead-latent statistics are reduced over the ranks: the dead fraction of each member matches one process
    for seed in map(str, SEEDS):
        assert (
            dp["metrics"]["per_seed"][seed]["dead_fraction"]
            == one["metrics"]["per_seed"][seed]["dead_fraction"]
        )
        assert dp["metrics"]["per_seed"][seed]["l0"] == pytest.approx(one["metrics"]["per_seed"][seed]["l0"])
    # the logged loss is the global batch's (reduced), AuxK included
    for x, y in zip(_log(reference), _log(data_parallel), strict=True):
        assert (x["seed"], x["step"]) == (y["seed"], y["step"])
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4)
        assert y["auxiliary_reconstruction_loss"] == pytest.approx(
            x["auxiliary_reconstruction_loss"], rel=1e-4
        )
    assert any(x["auxiliary_reconstruction_loss"] > 0 for x in _log(data_parallel))


def test_data_parallel_rank_killed_then_resumed(cache: Path, data_parallel: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    kill = {"XENOFEAT_FAULT": "train.after_step:20", "XENOFEAT_FAULT_RANK": "1"}
    r, stderr = _launch(cache, out, tmp_path, "--seeds", "0,1,2", "--data-parallel", env=kill, name="killed")
    assert r.returncode != 0
    assert "fault injected at train.after_step (hit 20)" in stderr[1]
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 16  # the last checkpoint before the kill (every 8 steps), written once by rank 0
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "seed-0.safetensors", "seed-1.safetensors", "seed-2.safetensors", "state.json",
    ]  # fmt: skip
    assert not any((out / f"seed-{s}").exists() for s in SEEDS)
    r, stderr = _launch(
        cache, out, tmp_path, "--seeds", "0,1,2", "--data-parallel", "--resume", name="resumed"
    )
    assert r.returncode == 0, (r.stderr[-2000:], stderr)
    for seed in SEEDS:  # the resumed run continues exactly where the uninterrupted one went
        assert (out / f"seed-{seed}" / "sae_weights.safetensors").read_bytes() == (
            data_parallel / f"seed-{seed}" / "sae_weights.safetensors"
        ).read_bytes(), seed
    assert _log(out) == _log(data_parallel)


def test_ranks_started_with_different_arguments_are_refused(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    xenofeat = BIN / "xenofeat"
    command = (
        f"exec {xenofeat} train --cache {cache} --out {out} --width 64 --k $((3 + RANK)) --tokens 8192 "
        "--batch-size 256 --seeds 0,1 --no-progress"
    )
    r, stderr, _stdout = torchrun("sh", "-c", command, logs=tmp_path / "logs", no_python=True)
    assert r.returncode != 0
    lines = [ln for ln in stderr[0].splitlines() if ln.startswith("xenofeat: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr[0], stderr[0]
    assert "different arguments" in lines[0] and "--k: rank 0 has 3, rank 1 has 4" in lines[0], lines[0]
    assert "xenofeat: error:" not in stderr[1]
    assert not out.exists()  # refused before anything was written


def test_data_parallel_with_one_process_trains_as_one_process(
    cache: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    r = run_cli("train", "--cache", str(cache), "--out", str(out), "--config", str(_config(tmp_path)), *ARGS,
                "--seeds", "0,1,2", "--data-parallel", env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--data-parallel: one process, so nothing to split; training as one process" in r.stderr
    for seed in SEEDS:
        assert _weights(out, seed)["W_dec"].equal(_weights(reference, seed)["W_dec"])


# -- the pieces, without processes ------------------------------------------------------------------------------------


def test_pool_shares_partition_every_pool(cache: Path) -> None:
    with ActivationCache.open(cache) as c:
        schedule = PoolSchedule(c, HOOK, 40, 3 * 128, 5)  # pools that straddle blocks and epochs
        whole = [p for _, (_, p) in zip(range(9), schedule.pools(2, prefetch=0), strict=False)]
        for world_size in (2, 3):
            parts = [
                [p for _, (_, p) in zip(range(9), schedule.pools(2, prefetch=0, share=pool_share(384, r, world_size)),
                                   strict=False)]
                for r in range(world_size)
            ]  # fmt: skip
            for i, pool in enumerate(whole):
                assert torch.equal(torch.cat([part[i] for part in parts]), pool), (world_size, i)
        sample = squared_norm_sum(schedule, 1000)
        halves = [squared_norm_sum(schedule, 1000, pool_share(384, r, 2)) for r in range(2)]
        assert sum(n for _, n in halves) == sample[1] == 1000
        assert sum(t for t, _ in halves) == pytest.approx(sample[0], rel=1e-12)


def test_layout_spreads_seeds_and_refuses_idle_ranks() -> None:
    seeds = (7, 8, 9)
    assert [Layout(World(r, 2), False, seeds).local_seeds for r in range(2)] == [(7, 9), (8,)]
    assert Layout(World(1, 2), True, seeds).local_seeds == seeds
    assert (
        not Layout(World(1, 2), True, seeds).writes_members
        and Layout(World(1, 2), False, seeds).writes_members
    )
    with pytest.raises(UserError, match=r"--seeds: 3 seed\(s\) cannot be spread over 4 processes"):
        Layout(World(0, 4), False, seeds).check(TrainConfig(seeds=seeds))
    with pytest.raises(UserError, match="--data-parallel: supported for --arch topk"):
        Layout(World(0, 2), True, seeds).check(TrainConfig(seeds=seeds, arch="batchtopk"))
    Layout(World(0, 4), True, seeds).check(TrainConfig(seeds=seeds))  # data-parallel: any number of ranks
