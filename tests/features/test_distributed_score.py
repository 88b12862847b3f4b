"""`torchrun ... xenofeat score`: the store of a distributed score equals the one-process store.

The run is a tiny planted-feature cache (7 scan chunks of 32 sequences, so neither 2 nor 3 ranks divide them) with
a 3-seed TopK ensemble, scored once in this process (the reference). Each distributed score runs as
`torchrun --standalone --nproc-per-node N xenofeat score RUN --out DIR` in a subprocess, with gloo on the CPU and
one thread per rank, and its store is compared with the reference table by table and column by column: identical
columns, exact equality of everything but floats, floats within `TOL` (the streaming pass's sums are added in
another order across ranks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from activations.cache import ActivationCache
from features.criteria.function import FunctionAccumulator
from features.definition import load_definition
from features.sae_inputs import resolve_inputs
from features.streaming import add_sums, chunk_ranges, combine_parts, stream, stream_part
from sae_training.config import TrainConfig
from tests.helpers.common import REPO
from tests.helpers.training import planted_cache

BIN = Path(sys.executable).parent  # torchrun and the xenofeat console script live next to the venv's python
TOL = {"rtol": 1e-9, "atol": 1e-9}
"""Floats of a distributed store against the one-process store (measured: at most ~1e-14 relative)."""
N_SEQ, SEQ_LEN = 200, 32  # planted_cache writes 8 sequences per HDF5 chunk: scan chunks of 32 sequences -> 7


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained and (in this process) scored run over a cache of 7 scan chunks; the store is RUN/features."""
    from features.score import ScoreJob, score
    from sae_training.trainer import train

    root = tmp_path_factory.mktemp("dscore")
    planted_cache(root / "cache.h5", n_seq=N_SEQ, seq_len=SEQ_LEN, d=16, n_features=24, l0=2, seed=3)
    cfg = TrainConfig(
        seeds=(0, 1, 2),
        width=32,
        k=2,
        tokens=40_000,
        batch_size=512,
        lr=3e-3,
        downstream_seqs=0,
        checkpoint_every=0,
    )
    run = train(cfg, root / "cache.h5", root / "run", progress=False)
    score(ScoreJob(run=run, workers=1, progress=False))
    return run


def torchrun(
    args: list[str],
    logs: Path,
    *,
    nproc: int = 2,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], dict[int, str]]:
    """`torchrun --standalone --nproc-per-node NPROC xenofeat ARGS` (or COMMAND ARGS), one thread per rank;
    returns the launcher's result and each rank's stderr."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("XENOFEAT_FAULT")}
    full_env = {
        **inherited,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    launcher = [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={nproc}", f"--log-dir={logs}"]
    program = ["--no-python", *command] if command else [str(BIN / "xenofeat")]
    r = subprocess.run(
        [*launcher, "--redirects=3", *program, *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    stderr = {int(p.parent.name): p.read_text() for p in sorted(logs.glob("*/attempt_0/*/stderr.log"))}
    return r, stderr


def assert_same_store(got: Path, want: Path) -> None:
    """The two stores hold the same table (columns, dtypes, values), examples.h5 datasets and summary."""
    a, b = pd.read_parquet(got / "features.parquet"), pd.read_parquet(want / "features.parquet")
    assert list(a.columns) == list(b.columns) and list(a.dtypes) == list(b.dtypes) and len(a) == len(b)
    for col in b.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, **TOL, err_msg=col)
        else:
            assert x.tolist() == y.tolist(), col
    with h5py.File(got / "examples.h5", "r") as fa, h5py.File(want / "examples.h5", "r") as fb:
        names: list[str] = []
        fb.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert names and all(isinstance(fa.get(n), h5py.Dataset) for n in names)
        for name in names:
            x, y = fa[name][()], fb[name][()]
            if y.dtype.kind == "f":
                np.testing.assert_allclose(x, y, **TOL, err_msg=name)
            else:
                assert np.array_equal(x, y), name
        assert dict(fa.attrs) == dict(fb.attrs)
    sa, sb = (json.loads((s / "summary.json").read_text()) for s in (got, want))
    sa.pop("timings"), sb.pop("timings")
    assert_same_values(sa, sb, "summary.json")
    assert (got / "definition.toml").read_text() == (want / "definition.toml").read_text()


def assert_same_values(a: object, b: object, where: str) -> None:
    """Two JSON values are equal, floats within `TOL` (summary.json holds quantiles of summed values)."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and sorted(a) == sorted(b), where
        for key in b:
            assert_same_values(a[key], b[key], f"{where}[{key}]")
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_values(x, y, f"{where}[{i}]")
    elif isinstance(b, float) and not isinstance(a, bool):
        np.testing.assert_allclose(a, b, **TOL, err_msg=where)
    else:
        assert a == b, where


def test_parts_of_interleaved_chunks_combine_to_the_one_process_pass(tiny_run: Path) -> None:
    defn = load_definition(None)
    inputs = resolve_inputs(tiny_run, sae=None, others=(), cache=None, defn=defn)
    n_null, seed = defn.function.n_null, defn.function.seed
    with ActivationCache.open(inputs.cache_path) as cache:
        whole = stream(
            cache, inputs.hook, inputs.ref, max_tokens=None, n_null=n_null, null_seed=seed, progress=False
        )
        ranges = chunk_ranges(cache, cache.n_seq)
        assert len(ranges) == 7
        w_dec = inputs.ref.W_dec.detach().float().numpy()
        parts = [
            stream_part(cache, inputs.hook, inputs.ref, ranges[r::3], FunctionAccumulator(w_dec, n_null, seed),
                        progress=False)
            for r in (2, 0, 1)
        ]  # fmt: skip
        acc = add_sums(FunctionAccumulator(w_dec, n_null, seed), parts)
        split = combine_parts(cache, cache.n_seq, parts, acc)
    # the codes are the same numbers in the same places: the chunks are encoded alike in either case
    assert (whole.acts_csc != split.acts_csc).nnz == 0 and whole.acts_csc.shape == split.acts_csc.shape
    assert whole.n_tokens == split.n_tokens == int((~whole.mask).sum()) and whole.l0 == split.l0
    np.testing.assert_array_equal(whole.tokens, split.tokens)
    np.testing.assert_allclose(split.sum_x, whole.sum_x, rtol=1e-12)
    for name in ("sum_a2", "cross", "null_cross", "sse_total"):
        np.testing.assert_allclose(getattr(split.function, name), getattr(whole.function, name), rtol=1e-12)
    assert split.explained_variance == pytest.approx(whole.explained_variance, rel=1e-12)


def test_two_ranks_write_the_one_process_store(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r, err = torchrun(
        ["score", str(tiny_run), "--out", str(out), "--workers", "1", "--quiet"], tmp_path / "logs"
    )
    assert r.returncode == 0, err
    assert_same_store(out / "features", tiny_run / "features")
    assert sorted(p.name for p in out.iterdir()) == [".features.lock", "features"]  # rank 0's, nothing else
    stdout = {int(p.parent.name): p.read_text() for p in (tmp_path / "logs").glob("*/attempt_0/*/stdout.log")}
    assert "scored 32 latents" in stdout[0] and stdout[1] == ""  # rank 0 alone reports


def test_a_rank_killed_mid_score_then_a_rerun_on_three_ranks_writes_the_same_store(
    tiny_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["score", str(tiny_run), "--out", str(out), "--workers", "1", "--quiet"]
    fault = {"XENOFEAT_FAULT": "score.stage:stream", "XENOFEAT_FAULT_RANK": "1"}
    r, err = torchrun(args, tmp_path / "logs1", env=fault)
    assert r.returncode != 0 and "fault injected at score.stage:stream" in err[1], err
    assert not (out / "features").exists()  # nothing published
    r, err = torchrun(
        args, tmp_path / "logs2", nproc=3
    )  # 7 chunks over 3 ranks; discards the unfinished store
    assert r.returncode == 0, err
    assert_same_store(out / "features", tiny_run / "features")
    assert not (out / "features.tmp").exists()


def test_ranks_started_with_different_arguments_stop_before_writing(tiny_run: Path, tmp_path: Path) -> None:
    wrapper = tmp_path / "rank_args.py"
    wrapper.write_text(
        "import os, sys\n"
        "from features.cli import entry\n"
        "sys.argv += ['--seed', os.environ['RANK']]\n"
        "entry()\n"
    )
    out = tmp_path / "out"
    args = ["score", str(tiny_run), "--out", str(out), "--quiet"]
    r, err = torchrun(args, tmp_path / "logs", command=[sys.executable, str(wrapper)])
    lines = [ln for text in err.values() for ln in text.splitlines() if ln.startswith("xenofeat: error:")]
    assert r.returncode != 0 and "exitcode  : 2" in r.stderr and "exitcode  : 1" not in r.stderr
    assert len(lines) == 1 and lines[0] in err[0] and not any("Traceback" in t for t in err.values()), err
    assert "different arguments (seed: rank 0 has '0', rank 1 has '1')" in lines[0]
    assert not out.exists()
