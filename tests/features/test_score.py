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
from activations.synth import ANCHORED, DOCUMENT, HASH, HIDDEN, POSITION, RULE, TOKEN, SynthConfig
from activations.synth_write import generate_synthetic
from features.definition import Definition
from features.labelability import describer_names, shuffled_control
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


_DESCRIBED_BY = {POSITION: "position", DOCUMENT: "document"}
"""Planted kinds only a describer of LBL-v2 labels (issue 11): until one named so is registered, LBL-v1 cannot label
them, so they are left out of the flag's precision and their LBL is not asserted."""


def _waiting_for_describer() -> list[str]:
    return [kind for kind, name in _DESCRIBED_BY.items() if name not in describer_names()]


def test_flags_match_planted_unlabelable(scored_run) -> None:  # noqa: F811
    t = FeatureStore.open(scored_run.run).table
    kind = _planted_kind(scored_run)
    unlabelable = np.isin(kind, [HASH, HIDDEN])
    flagged = t["flag"].to_numpy() & ~np.isin(kind, _waiting_for_describer())
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


def _latent_of(scored_run, kind: str) -> int:  # noqa: ANN001, F811
    """The latent of seed 0 that recovers the one planted feature of `kind` (cosine >= 0.9)."""
    (latent,) = np.flatnonzero(_planted_kind(scored_run) == kind)
    return int(latent)


def test_token_anchored_flag_on_planted_kinds(scored_run) -> None:  # noqa: F811
    t = FeatureStore.open(scored_run.run).table.set_index("feature")
    cfg = Definition().flag
    # fires on its token only while a hidden document state is on: labelled by the token as a whole, but which
    # occurrences fire resists every describer
    a = t.loc[_latent_of(scored_run, ANCHORED)]
    assert a["token_anchored"] and a["well_defined"] and not a["flag"]
    assert (
        a["anchor_fraction"] < cfg.anchor_max_fraction
        and a["lbl_conditional_hi"] < cfg.max_lbl_conditional_hi
    )
    # fires on its token only after a given previous token: also a minority of the token's occurrences, but the
    # rule says which, so it is not token-anchored
    r = t.loc[_latent_of(scored_run, RULE)]
    assert r["anchor_fraction"] < cfg.anchor_max_fraction and r["labelability"] >= cfg.max_lbl
    assert r["lbl_conditional"] >= 0.8 and r["conditional_describer"] in ("rule", "compose")
    assert not r["token_anchored"]
    # a bigram is what a random network of the token stream computes too: C7 calls it not learned
    assert not r["learned"] and not r["well_defined"]
    # position and document features are never token-anchored
    for kind in (POSITION, DOCUMENT):
        assert not t.loc[_latent_of(scored_run, kind), "token_anchored"], kind
    assert FeatureStore.open(scored_run.run).summary["token_anchored"] == int(t["token_anchored"].sum()) >= 1


@pytest.mark.parametrize("kind", [POSITION, DOCUMENT])
def test_position_and_document_features_are_labelled_and_not_flagged(scored_run, kind: str) -> None:  # noqa: F811
    if kind in _waiting_for_describer():
        pytest.skip(f"no describer named {_DESCRIBED_BY[kind]!r} is registered yet (issue 11, LBL-v2)")
    row = FeatureStore.open(scored_run.run).table.loc[_latent_of(scored_run, kind)]
    assert row["labelability"] >= 0.6 and row["best_describer"] == _DESCRIBED_BY[kind]
    assert not row["flag"] and not row["token_anchored"]


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
    assert FeatureStore.open(tmp_path / "ext").table["feature"].size == TRAIN.width
