"""`torchrun --nproc-per-node 2 xenofeat run --control`: every stage on two gloo ranks, equal to one process.

One run pair (in one test), with the tiny settings of tests/test_pipeline.py and `--control` (so the random-init copy's three
stages run under torchrun as well): `xenofeat run` in one process, then the same command under torchrun in the same
folder (the first run's folder is moved aside first, so that every path either run records is the same and their
summaries and reports compare as they are). Both pin torch to one thread per process. Each stage is compared with
the check of its own 2-rank test: the cache bit for bit (tests/activations/test_sharded_cache.py: the ranks' batches
are the one process's batches), the members byte for byte (seed-parallel, as
tests/sae_training/test_distributed_training.py checks), the store column by column with floats within the
distributed score's tolerance (tests/features/test_distributed_score.py).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.activations.test_sharded_cache import assert_same_cache, error_line_of
from tests.features.test_distributed_score import assert_same_store, assert_same_values
from tests.helpers.common import run_cli
from tests.helpers.pipeline import tiny_run_config
from tests.helpers.sharded import torchrun

# one process and two ranks each run the whole pipeline twice (the trained model, the control)
pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)  # three seeds on two ranks: rank 0 trains two members, rank 1 one
FOLDERS = (".", "control")  # the trained model's stages and the random-init copy's
BARS = ("%|", "it/s", "tok/s", "\r", "caching", "tokenising:", "training ")


@dataclass(frozen=True)
class Pair:
    one: Path  # the one-process run's folder (moved aside)
    two: Path  # the torchrun's folder
    one_stdout: str
    one_stderr: str
    stdout: dict[int, str]  # each rank's, by rank
    stderr: dict[int, str]


def run_pair(root: Path, corpus: Path) -> Pair:
    """`xenofeat run --control` in one process into ROOT/run, moved to ROOT/one; then under torchrun into ROOT/run."""
    out = root / "run"
    args = ["run", "--out", str(out), "--config", str(tiny_run_config(root, corpus)), "--quiet", "--control"]
    one = run_cli(*args, env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-3000:]
    out.rename(root / "one")
    r, stderr, stdout = torchrun(*args, logs=root / "logs")
    assert r.returncode == 0, (r.stderr[-2000:], stderr)
    return Pair(root / "one", out, one.stdout, one.stderr, stdout, stderr)


def test_two_ranks_run_every_stage_as_one_process(tmp_path: Path, corpus_dir: Path) -> None:
    # one test, not one per stage over a shared fixture: pytest-xdist would build the pair once per worker
    pair = run_pair(tmp_path, corpus_dir)
    check_caches(pair)
    check_members(pair)
    check_stores(pair)
    check_reports(pair)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def check_caches(pair: Pair) -> None:
    for sub in FOLDERS:
        # assert_same_cache also checks that the torchrun's cache is the sharded kind (an index over 2 shards)
        assert_same_cache(pair.two / sub / "cache.h5", pair.one / sub / "cache.h5")
        assert sorted(p.name for p in (pair.two / sub / "cache.h5.shards").iterdir()) == [
            "rank-00000-of-00002.h5",
            "rank-00001-of-00002.h5",
        ]


def check_members(pair: Pair) -> None:
    for sub in FOLDERS:
        one, two = pair.one / sub / "sae", pair.two / sub / "sae"
        for seed in SEEDS:
            got, want = two / f"seed-{seed}", one / f"seed-{seed}"
            for name in ("sae_weights.safetensors", "sparsity.safetensors"):
                assert (got / name).read_bytes() == (want / name).read_bytes(), (sub, seed, name)
            # the same settings (sae_lens writes the keys in an order that varies from process to process)
            assert json.loads((got / "cfg.json").read_text()) == json.loads((want / "cfg.json").read_text())
        # run.json holds no timing: the whole file is the same, the ensemble's PW-MCC included
        assert json.loads((two / "run.json").read_text()) == json.loads((one / "run.json").read_text())
        assert _metric_lines(two) == _metric_lines(one)


def _metric_lines(run: Path) -> list[dict]:
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in ln.items() if k != "tokens_per_s"} for ln in lines]  # the one timing field


def check_stores(pair: Pair) -> None:
    for sub in FOLDERS:
        assert_same_store(pair.two / sub / "features", pair.one / sub / "features")
    control = [json.loads((run / "control.json").read_text()) for run in (pair.two, pair.one)]
    assert_same_values(*control, "control.json")
    # rank 0 wrote what one process writes, and the cache's shards besides; rank 1 wrote nothing else
    shards = {f for f in _files(pair.two) if "cache.h5.shards/" in f}
    assert len(shards) == 4 and _files(pair.two) - shards == _files(pair.one)


def check_reports(pair: Pair) -> None:
    assert pair.stdout[0] == pair.one_stdout  # the summary, the control table and the viewer command
    assert "latents alive" in pair.one_stdout and f"xenofeat view {pair.two}" in pair.one_stdout
    assert "random init" in pair.one_stdout
    assert pair.stdout[1] == "" and pair.stderr[1] == ""  # rank 1 neither prints nor logs

    def lines(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if not ln.startswith("stage times")]

    assert lines(pair.stderr[0]) == lines(pair.one_stderr)  # the same stage lines, in the same order
    assert "[3/3] score" in pair.stderr[0] and "random-init copy" in pair.stderr[0]
    for bar in BARS:  # --quiet holds on every rank, the sharded cache's bars included
        assert bar not in pair.stderr[0], (bar, pair.stderr[0][-2000:])


def test_ranks_started_with_different_arguments_are_refused_before_writing(
    tmp_path: Path, corpus_dir: Path
) -> None:
    out = tmp_path / "run"
    cfg = tiny_run_config(tmp_path, corpus_dir)
    xenofeat = Path(sys.executable).parent / "xenofeat"
    command = f"exec {xenofeat} run --out {out} --config {cfg} --quiet --max-tokens $((4000 + RANK))"
    r, stderr, _ = torchrun("sh", "-c", command, logs=tmp_path / "logs", no_python=True)
    line = error_line_of(stderr, rank_exit=r)  # one line from rank 0, exit 2 on every rank, no traceback
    assert "different arguments (score.max_tokens: rank 0 has '4000', rank 1 has '4001')" in line, line
    assert not out.exists()  # refused before anything was written
