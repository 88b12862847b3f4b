"""Publishing a rescore (features.store.publish) is recoverable at every instant and never loses the person's files.

Each fault point of `publish` kills a real publish in a subprocess; the next reader (FeatureStore.open), the next
score or `xenofeat score` itself must then complete it (every point lies after the commit point), keeping
sets.json and labels.jsonl. States from before the commit point roll back to the previous store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from activations.errors import UserError
from features.store import FeatureStore
from features.store.labels import append_attempt, read_attempts
from features.store.publish import OLD_DIR, READY, TMP_DIR, prepare, publish, recover
from features.store.sets import FeatureSet, load_sets, save_set
from tests.helpers.common import REPO, error_line, run_cli

POINTS = ("publish.ready", "publish.after_copy", "publish.between_renames", "publish.after_renames")


def _tag(store: Path, which: str) -> None:
    summary = json.loads((store / "summary.json").read_text())
    (store / "summary.json").write_text(json.dumps({**summary, "which": which}))


def _scored_copy(src: Path, dst: Path) -> Path:
    """A copy of the session's scored run: its store tagged "old", a set and a label attempt saved in it."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("features*", ".features.lock"))
    shutil.copytree(
        src / "features", dst / "features", ignore=shutil.ignore_patterns("sets.json", "labels.jsonl")
    )
    _tag(dst / "features", "old")
    save_set(dst, FeatureSet("mine", "made in the viewer", [1, 2, 3]))
    append_attempt(dst, 4, "ana", "tokens", "the, a", {"auroc": 0.0, "n_pos": 3, "n_neg": 5})
    return dst


def _new_store(run: Path, src: Path) -> Path:
    """A finished, unpublished store in RUN/features.tmp (as a score leaves it), tagged "new"."""
    tmp = run / TMP_DIR
    shutil.copytree(src / "features", tmp, ignore=shutil.ignore_patterns("sets.json", "labels.jsonl"))
    _tag(tmp, "new")
    return tmp


def _assert_published(run: Path) -> None:
    store = FeatureStore.open(run)  # completes whatever is left
    assert store.summary["which"] == "new"
    assert load_sets(run)["mine"].features == [1, 2, 3]
    (att,) = read_attempts(run)
    assert att.text == "the, a" and att.auroc == 0.0
    assert not (run / TMP_DIR).exists() and not (run / OLD_DIR).exists()
    assert not (run / "features" / READY).exists()


def _kill_publish(run: Path, point: str) -> None:
    code = f"from pathlib import Path; from features.store.publish import publish; publish(Path({str(run / TMP_DIR)!r}), Path({str(run)!r}))"
    env = {**os.environ, "XENOFEAT_FAULT": point, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == -signal.SIGKILL and f"fault injected at {point}" in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("point", POINTS)
def test_killed_publish_is_completed_by_the_next_reader(scored_run, tmp_path: Path, point: str) -> None:  # noqa: F811
    run = _scored_copy(scored_run.run, tmp_path / "run")
    _new_store(run, scored_run.run)
    _kill_publish(run, point)
    if point == "publish.between_renames":  # the state of the issue: no features/, only .old and .tmp
        assert (
            not (run / "features").exists() and (run / OLD_DIR).is_dir() and (run / TMP_DIR / READY).exists()
        )
    _assert_published(run)


def test_killed_publish_is_completed_by_the_next_score(scored_run, tmp_path: Path) -> None:  # noqa: F811
    run = _scored_copy(scored_run.run, tmp_path / "run")
    _new_store(run, scored_run.run)
    _kill_publish(run, "publish.between_renames")
    # the rerun a person would type: it completes the publish, keeps their files, and says the run is scored
    assert "already scored" in error_line(run_cli("score", str(run), "--quiet"))
    _assert_published(run)


def test_before_the_commit_point_the_previous_store_stays(scored_run, tmp_path: Path) -> None:  # noqa: F811
    run = _scored_copy(scored_run.run, tmp_path / "run")
    tmp = _new_store(run, scored_run.run)  # unfinished: no READY
    os.replace(run / "features", run / OLD_DIR)  # even moved aside by hand, it is put back
    store = FeatureStore.open(run)
    assert store.summary["which"] == "old" and load_sets(run)["mine"].features == [1, 2, 3]
    assert tmp.exists()  # an unfinished score is the next score's to discard, not a reader's
    fresh = prepare(run, overwrite=True)
    assert fresh == tmp and list(fresh.iterdir()) == []
    assert FeatureStore.open(run).summary["which"] == "old"


def test_a_cleanup_cut_short_keeps_the_persons_files(scored_run, tmp_path: Path) -> None:  # noqa: F811
    run = _scored_copy(scored_run.run, tmp_path / "run")
    shutil.copytree(run / "features", run / OLD_DIR)  # the old store, with the person's files
    (run / "features" / "labels.jsonl").unlink()  # ... which the new store lacks
    _tag(run / "features", "new")
    recover(run)
    assert not (run / OLD_DIR).exists()
    assert [a.text for a in read_attempts(run)] == ["the, a"]


def test_publish_replaces_and_keeps_user_files(scored_run, tmp_path: Path) -> None:  # noqa: F811
    run = _scored_copy(scored_run.run, tmp_path / "run")
    publish(_new_store(run, scored_run.run), run)
    _assert_published(run)


def test_symlinked_store_is_refused_in_one_line(scored_run, tmp_path: Path) -> None:  # noqa: F811
    run = _scored_copy(scored_run.run, tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    os.replace(run / "features", elsewhere)
    (run / "features").symlink_to(elsewhere, target_is_directory=True)
    assert FeatureStore.open(run).summary["which"] == "old"  # reading through the link is fine
    with pytest.raises(UserError, match="symbolic link"):
        prepare(run, overwrite=True)
    before = sorted(p.name for p in elsewhere.iterdir())
    line = error_line(run_cli("score", str(run), "--overwrite", "--quiet"))
    assert "symbolic link" in line and str(run / "features") in line
    assert (run / "features").is_symlink() and sorted(p.name for p in elsewhere.iterdir()) == before
    assert not (run / TMP_DIR).exists()


def test_real_rescore_killed_between_renames(scored_run, tmp_path: Path) -> None:  # noqa: F811
    run = _scored_copy(scored_run.run, tmp_path / "run")
    r = run_cli(
        "score", str(run), "--overwrite", "--quiet", env={"XENOFEAT_FAULT": "publish.between_renames"}
    )
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert not (run / "features").exists()
    store = FeatureStore.open(run)
    assert "which" not in store.summary  # the rescore's store, not the tagged old one
    assert load_sets(run)["mine"].features == [1, 2, 3] and len(read_attempts(run)) == 1
    assert not (run / OLD_DIR).exists() and not (run / TMP_DIR).exists()
