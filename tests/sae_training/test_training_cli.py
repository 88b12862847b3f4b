"""`xenofeat train` on bad input: one line, exit status 2, no corrupted run folder; plus a good run via --config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from features.cli import main
from tests.helpers.training import planted_cache

torch.set_num_threads(1)

FAST = ["--width", "64", "--k", "3", "--tokens", "8192", "--batch-size", "256", "--no-progress"]


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    paths = {"ok": d / "ok.h5", "partial": d / "partial.h5", "d16": d / "d16.h5", "nan": d / "nan.h5"}
    planted_cache(paths["ok"], n_seq=48)
    planted_cache(paths["partial"], n_seq=48, complete=False)
    planted_cache(paths["d16"], n_seq=48, d=16)
    # the NaN goes into the chunk that epoch 0 reads last (blocks of 8 sequences, order rng([data_seed, 0])),
    # so that training has passed a checkpoint before it meets the NaN
    last = int(np.random.default_rng([0, 0]).permutation(18)[-1])
    planted_cache(paths["nan"], nan_at_seq=last * 8 + 2)
    return paths


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("xenofeat: error:"), err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize(
    "extra,needles",
    [
        (["--hook", "blocks.9.hook_resid_post"], ["--hook", "blocks.9.hook_resid_post"]),
        (["--k", "64"], ["--k", "smaller than the width"]),
        (["--tokens", "0"], ["--tokens", "out of range [1, 10000000000000]"]),
        (["--batch-size", "-4"], ["--batch-size"]),
        (["--width", "100000000"], ["--width", "absurd"]),
        (["--width", "2000000", "--max-memory-gb", "1"], ["--width", "GiB", "available"]),
        (["--seeds", "1,1"], ["--seeds", "distinct"]),
    ],
)
def test_bad_options(caches, tmp_path, capsys, extra, needles) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    _fails(capsys, ["--cache", str(caches["ok"]), "--out", str(out), *FAST, *extra], *needles)
    assert not out.exists()


def test_incomplete_cache_needs_flag(caches, tmp_path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    _fails(
        capsys, ["--cache", str(caches["partial"]), "--out", str(out), *FAST], "incomplete", "--allow-partial"
    )
    assert not out.exists()
    assert (
        main(["train", "--cache", str(caches["partial"]), "--out", str(out), *FAST, "--allow-partial"]) == 0
    )


def test_config_file_and_out_holding_another_run(caches, tmp_path, capsys) -> None:  # noqa: ANN001
    toml = tmp_path / "t.toml"
    toml.write_text(
        '[train]\narch = "topk"\nwidth = 64\nk = 3\ntokens = 8192\nbatch-size = 256\nseeds = [0, 1]\n'
    )
    out = tmp_path / "run"
    assert (
        main(
            ["train", "--cache", str(caches["ok"]), "--out", str(out), "--config", str(toml), "--no-progress"]
        )
        == 0
    )
    info = json.loads((out / "run.json").read_text())
    assert info["seeds"] == [0, 1] and info["config"]["width"] == 64 and info["status"] == "complete"
    before = (out / "seed-0" / "sae_weights.safetensors").read_bytes()
    _fails(
        capsys, ["--cache", str(caches["ok"]), "--out", str(out), *FAST, "--k", "4"], "--out", "already holds"
    )
    assert (out / "seed-0" / "sae_weights.safetensors").read_bytes() == before
    bad = tmp_path / "bad.toml"
    bad.write_text("widht = 64\n")
    _fails(
        capsys, ["--cache", str(caches["ok"]), "--out", str(tmp_path / "r2"), "--config", str(bad)], "'widht'"
    )


def test_nan_stops_keeps_checkpoint_and_resume_checks_d_in(caches, tmp_path, capsys) -> None:  # noqa: ANN001
    toml = tmp_path / "t.toml"
    toml.write_text(
        "width = 64\nk = 3\nnorm_sample_tokens = 1024\npool_batches = 8\ncheckpoint_every = 2048\n"
    )
    out = tmp_path / "run"
    argv = [
        "--cache",
        str(caches["nan"]),
        "--out",
        str(out),
        "--config",
        str(toml),
        "--tokens",
        "40000",
        "--batch-size",
        "256",
        "--no-progress",
        "--eval-fraction",
        "0.1",
    ]
    err = _fails(capsys, argv, "NaN", "sequences", "checkpoint")
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] > 0 and not (out / "seed-0").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "training"
    assert "training step" in err
    argv16 = [
        "--cache",
        str(caches["d16"]),
        "--out",
        str(out),
        "--config",
        str(toml),
        "--tokens",
        "40000",
        "--batch-size",
        "256",
        "--no-progress",
        "--eval-fraction",
        "0.1",
        "--resume",
    ]
    _fails(capsys, argv16, "d_in mismatch")
    assert json.loads((out / "checkpoint" / "state.json").read_text()) == state
