"""`--overwrite` replaces only an output xenofeat wrote as the same kind (activations.overwrite), for cache, train,
score and run; everything else is one line, exit 2, nothing touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from activations import overwrite as ow
from activations.errors import UserError
from activations.synth import SynthConfig
from activations.synth_write import generate_synthetic
from features import store as st
from features.store.publish import prepare
from sae_training import run as sr
from sae_training.config import TrainConfig
from sae_training.trainer import train
from tests.helpers.common import REPO, error_line, run_cli

SMALL = SynthConfig(d_model=16, n_seq=40, context_size=16, n_token=4, n_hash=0, n_hidden=0, n_circle=0)
TINY = TrainConfig(
    seeds=(0,), width=16, k=2, tokens=2048, batch_size=256, downstream_seqs=0, checkpoint_every=0
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("c") / "c.h5"
    generate_synthetic(path, SMALL)
    return path


def cli_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", "from features.cli import entry; entry()", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_markers_agree_with_their_owners() -> None:
    assert ow.RUN_KIND == sr.RUN_KIND and ow.RUN_FILE == sr.RUN_JSON
    assert ow.STORE_FORMAT == st.STORE_FORMAT and ow.STORE_SUMMARY == st.SUMMARY_FILE
    from features.exporters import EXPORT_MARKER

    assert EXPORT_MARKER == ow.EXPORT_MARKER


def test_what_is(cache: Path, tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("x")
    assert ow.what_is(cache) == ow.CACHE
    assert ow.what_is(tmp_path / "plain.txt") is None and ow.what_is(tmp_path) is None
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text(json.dumps({"kind": ow.RUN_KIND}))
    assert ow.what_is(tmp_path / "r") == ow.RUN
    (tmp_path / "link").symlink_to(cache)
    assert ow.what_is(tmp_path / "link") is None


# ---- cache ----------------------------------------------------------------------------------------------------------


def test_cache_overwrite_refuses_what_is_not_a_cache(cache: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    line = error_line(run_cli("cache", "--out", str(notes), "--overwrite"))  # refused before the model loads
    assert "not an activation cache written by xenofeat" in line and notes.read_text() == "mine"
    with pytest.raises(UserError, match="not an activation cache"):
        generate_synthetic(notes, SMALL, overwrite=True)
    link = tmp_path / "link.h5"
    link.symlink_to(cache)
    with pytest.raises(UserError, match="symbolic link"):
        generate_synthetic(link, SMALL, overwrite=True)
    assert notes.read_text() == "mine" and link.is_symlink()


def test_cache_import_overwrite_refuses_a_run(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.zeros((2, 4), np.int64))
    np.save(tmp_path / "a.npy", np.ones((2, 4, 3), np.float32))
    run = tmp_path / "run.h5"  # a folder named like a file: a run
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": ow.RUN_KIND}))
    args = ("--tokens", str(tmp_path / "t.npy"), "--acts", str(tmp_path / "a.npy"), "--hook", "h")
    line = error_line(run_cli("cache", "import", *args, "--out", str(run), "--overwrite"))
    assert "a training run, not an activation cache" in line and (run / "run.json").exists()
    out = tmp_path / "ok.h5"
    assert run_cli("cache", "import", *args, "--out", str(out)).returncode == 0
    assert (
        run_cli("cache", "import", *args, "--out", str(out), "--overwrite").returncode == 0
    )  # a cache: replaced


def test_cache_overwrite_replaces_a_cache(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "again.h5"
    generate_synthetic(path, SMALL)
    generate_synthetic(path, SMALL, overwrite=True)
    assert ow.what_is(path) == ow.CACHE


# ---- train ----------------------------------------------------------------------------------------------------------


def test_train_overwrite_refuses_the_current_folder_and_a_store(cache: Path, tmp_path: Path) -> None:
    run = train(TINY, cache, tmp_path / "run", progress=False)
    before = sorted(p.name for p in run.iterdir())
    args = ("train", "--cache", str(cache), "--seeds", "0", "--width", "16", "--k", "2", "--tokens", "2048",
            "--batch-size", "256", "--no-progress")  # fmt: skip
    line = error_line(cli_in(run, *args, "--out", ".", "--overwrite"))
    assert "current folder" in line and sorted(p.name for p in run.iterdir()) == before
    store = tmp_path / "scored" / "features"
    store.mkdir(parents=True)
    (store / "summary.json").write_text(json.dumps({"format": ow.STORE_FORMAT}))
    line = error_line(run_cli(*args, "--out", str(store / "r2")))
    assert "inside the feature store" in line and not (store / "r2").exists()


def test_train_overwrite_replaces_a_run(cache: Path, tmp_path: Path) -> None:
    run = train(TINY, cache, tmp_path / "run", progress=False)
    (run / "marker").write_text("from the first run")
    train(TINY, cache, run, overwrite=True, progress=False)
    assert not (run / "marker").exists() and sr.load_run(run).complete


# ---- score ----------------------------------------------------------------------------------------------------------


def test_score_overwrite_refuses_a_features_folder_it_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "run" / "features"
    mine.mkdir(parents=True)
    (mine / "paper.md").write_text("mine")
    with pytest.raises(UserError, match="not a feature store written by xenofeat"):
        prepare(tmp_path / "run", overwrite=True)
    assert (mine / "paper.md").read_text() == "mine" and not (tmp_path / "run" / "features.tmp").exists()
    (mine / "summary.json").write_text(json.dumps({"format": ow.STORE_FORMAT}))
    assert prepare(tmp_path / "run", overwrite=True).name == "features.tmp"  # a store: may be replaced


# ---- run ------------------------------------------------------------------------------------------------------------


def test_run_never_replaces_a_foreign_cache_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "cache.h5").write_text("not a cache")
    line = error_line(run_cli("run", "--out", str(out), "--quiet"))
    assert "cache.h5" in line and (out / "cache.h5").read_text() == "not a cache"
    assert sorted(p.name for p in out.iterdir()) == ["cache.h5"]
