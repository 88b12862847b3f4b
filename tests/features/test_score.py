"""`xenofeat score` against planted truth, its controls, and every bad input it must refuse in one line."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from activations.errors import UserError
from activations.synth import HASH, HIDDEN, TOKEN, SynthConfig
from activations.synth_write import generate_synthetic
from features.labelability import shuffled_control
from features.score import ScoreJob, score
from features.store import FeatureStore
from sae_training.recovery import recovery
from sae_training.run import load_member
from tests.helpers.common import REPO, error_line, run_cli
from tests.helpers.scored_run import TRAIN


def _planted_kind(scored_run) -> np.ndarray:  # noqa: ANN001, F811
    """(F,) kind of the planted feature each latent of seed 0 recovers (cosine >= 0.9), "" for none."""
    dec = load_member(scored_run.run, 0).W_dec.detach().numpy()
    rec = recovery(dec, scored_run.truth.directions)
    kind = np.full(len(dec), "", dtype=object)
    for f, (lat, cos) in enumerate(zip(rec.partner, rec.similarity, strict=True)):
        if cos >= 0.9:
            kind[lat] = scored_run.truth.kinds[f]
    return kind


def test_flags_match_planted_unlabelable(scored_run) -> None:  # noqa: F811
    t = FeatureStore.open(scored_run.run).table
    kind = _planted_kind(scored_run)
    unlabelable = np.isin(kind, [HASH, HIDDEN])
    flagged = t["flag"].to_numpy()
    precision = (flagged & unlabelable).sum() / max(flagged.sum(), 1)
    recall = (flagged & unlabelable).sum() / unlabelable.sum()
    assert unlabelable.sum() >= 24  # most of the 28 planted hash/hidden features were recovered
    assert precision >= 0.9 and recall >= 0.8, (precision, recall)
    token = kind == TOKEN
    assert token.sum() >= 12
    assert not t.loc[token, "flag"].any()
    # LBL is measured where C1 holds (enough support to estimate it); a latent matched to a planted feature but
    # barely firing (a near-dead twin of the latent that carries the feature) has none
    supported = token & t["support_pass"].to_numpy()
    assert supported.sum() >= 12
    assert (t.loc[supported, "labelability"] >= 0.6).all()


def test_shuffled_control_is_near_zero(scored_run) -> None:  # noqa: F811
    from activations.cache import ActivationCache
    from features.streaming import stream

    store = FeatureStore.open(scored_run.run)
    assert store.summary["shuffled_control_lbl"] <= 0.1
    sae = load_member(scored_run.run, 0)
    with ActivationCache.open(scored_run.cache) as cache:
        res = stream(cache, cache.hooks[0], sae, max_tokens=None, n_null=4, null_seed=0, progress=False)
        vocab = cache.vocab
    latents = store.table.query("firing_count >= 500")["feature"].to_numpy()[:16]
    ctl = shuffled_control(res.acts_csc, res.tokens, res.doc_ids, res.mask, latents, seed=1, vocab=vocab)
    assert np.nanmean(ctl.labelability) <= 0.1


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("features*"))
    return dst


def test_score_killed_at_a_stage_leaves_no_store(scored_run, tmp_path: Path) -> None:  # noqa: F811
    run = _copy_run(scored_run.run, tmp_path / "run")
    r = run_cli("score", str(run), "--quiet", env={"XENOFEAT_FAULT": "score.stage:labelability"})
    assert r.returncode == -signal.SIGKILL and "fault injected at score.stage:labelability" in r.stderr
    assert (run / "features.tmp").is_dir() and not (run / "features").exists()
    with pytest.raises(UserError, match="interrupted"):
        FeatureStore.open(run)
    result = run_cli("score", str(run), "--quiet")  # the rerun discards the unfinished folder and restarts
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (run / "features.tmp").exists()
    assert FeatureStore.open(run).summary["flagged"] == FeatureStore.open(scored_run.run).summary["flagged"]


def test_interrupted_score_leaves_no_store(scored_run, tmp_path: Path) -> None:  # noqa: F811
    # the same with a kill at a random moment (extra coverage beyond the fault points)
    run = _copy_run(scored_run.run, tmp_path / "run")
    cmd = [sys.executable, "-c", "from features.cli import entry; entry()", "score", str(run), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (run / "features.tmp").exists() and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the score finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "features").exists()
    with pytest.raises(UserError, match="interrupted"):
        FeatureStore.open(run)
    result = run_cli("score", str(run), "--quiet")  # the rerun restarts cleanly
    assert result.returncode == 0, result.stderr[-2000:]
    assert "flagged" in result.stdout and not (run / "features.tmp").exists()
    assert FeatureStore.open(run).summary["flagged"] == FeatureStore.open(scored_run.run).summary["flagged"]
    assert "already scored" in error_line(run_cli("score", str(run)))


def test_bad_inputs(scored_run, tmp_path: Path) -> None:  # noqa: F811
    from sae_training.trainer import train

    one = train(TRAIN.__class__(**{**TRAIN.to_dict(), "seeds": (0,), "tokens": 8192}), scored_run.cache,
                tmp_path / "one", progress=False)  # fmt: skip
    line = error_line(run_cli("score", str(one)))
    assert "at least 2 seeds" in line and "this run has 1" in line
    line = error_line(
        run_cli(
            "score", str(tmp_path / "out"), "--sae", str(one / "seed-0"), "--cache", str(scored_run.cache)
        )
    )
    assert "--others" in line and "1 more" in line
    narrow = tmp_path / "narrow.h5"
    generate_synthetic(narrow, SynthConfig(d_model=16, n_seq=20, n_token=4, n_hash=0, n_hidden=0, n_circle=0))
    line = error_line(
        run_cli("score", str(tmp_path / "o2"), "--sae", str(scored_run.run / "seed-0"), "--others",
                str(scored_run.run / "seed-1"), "--cache", str(narrow))
    )  # fmt: skip
    assert "d_model=16" in line and "d_in=32" in line
    bad = tmp_path / "bad.toml"
    bad.write_text("[support]\nmin_documents = -3\n")
    line = error_line(run_cli("score", str(scored_run.run), "--definition", str(bad)))
    assert "min_documents" in line
    bad.write_text("[stability]\ntua = 0.7\n")
    assert "tua" in error_line(run_cli("score", str(scored_run.run), "--definition", str(bad)))


def test_sae_folder_with_others_scores(scored_run, tmp_path: Path) -> None:  # noqa: F811
    r = score(
        ScoreJob(run=tmp_path / "ext", sae=scored_run.run / "seed-0", others=(scored_run.run / "seed-1",),
                 cache=scored_run.cache, max_tokens=20_000, workers=1, control_latents=0, progress=False)
    )  # fmt: skip
    assert r.summary["tokens_scored"] <= 20_000 + 64 and r.summary["seeds"] == [0, 1]
    assert FeatureStore.open(tmp_path / "ext").table["feature"].size == 64
