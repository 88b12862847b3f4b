"""Integer options of `xenofeat train` beyond what torch, numpy or a file can hold: one line, exit 2, no run left."""

from __future__ import annotations

import pytest

from sae_training.config import MAX_SEED, TrainConfig
from tests.helpers.common import error_line, run_cli
from tests.helpers.training import planted_cache

HUGE = 99999999999999999999  # > 2^64: overflows torch.manual_seed


@pytest.mark.parametrize("seeds", [str(HUGE), f"0,{HUGE}"])
def test_seed_beyond_int64_is_one_line_and_no_run_json(tmp_path, seeds):
    cache = tmp_path / "c.h5"
    planted_cache(cache, n_seq=40)
    out = tmp_path / "run"
    line = error_line(
        run_cli("train", "--cache", str(cache), "--out", str(out), "--width", "64", "--k", "3",
                "--tokens", "2048", "--batch-size", "1024", "--seeds", seeds, "--no-progress")
    )  # fmt: skip
    assert "--seeds" in line and str(HUGE) in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("field", "value", "option"),
    [
        ("seeds", (0, MAX_SEED + 1), "--seeds"),
        ("data_seed", HUGE, "--data-seed"),
        ("checkpoint_every", HUGE, "--checkpoint-every"),
        ("log_every", HUGE, "--log-every"),
        ("lr_warmup_steps", HUGE, "--lr-warmup-steps"),
        ("norm_sample_tokens", HUGE, "--norm-sample-tokens"),
        ("pool_batches", HUGE, "--pool-batches"),
        ("width", HUGE, "--width"),
        ("k", "3", "--k"),
        ("tokens", 2.5e6, "--tokens"),
        ("seeds", (0, True), "--seeds"),
        ("expansion", float("inf"), "--expansion"),
    ],
)
def test_config_refuses_out_of_range_or_mistyped_numbers(field, value, option):
    with pytest.raises(ValueError) as err:
        TrainConfig(**{field: value})
    assert str(err.value).startswith(f"{option}:")


def test_largest_seed_is_accepted():
    assert TrainConfig(seeds=(0, MAX_SEED)).seeds == (0, MAX_SEED)
