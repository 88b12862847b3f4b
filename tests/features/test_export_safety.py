"""Exports never lose data: `--overwrite` replaces only an earlier export, a killed export is cleaned up by the next
one, hostile selections are one line, and label attempts reach the Neuronpedia export as typed and scored."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from features.label_tester import parse_hypothesis, score_hypothesis
from features.store import FeatureStore
from features.store.labels import append_attempt
from tests.helpers.common import REPO, error_line, run_cli


def cli_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`xenofeat ARGS` run from the folder `cwd` (so `.` and `..` mean folders of the test, not the repository)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", "from features.cli import entry; entry()", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


CSV = ("--features", "1,2", "--format", "csv")


def test_overwrite_refuses_the_current_folder_and_its_parents(scored_run, tmp_path: Path) -> None:  # noqa: F811
    here = tmp_path / "work" / "here"
    here.mkdir(parents=True)
    (here / "notes.txt").write_text("mine")
    (tmp_path / "work" / "thesis.tex").write_text("mine too")
    before = _tree(tmp_path)
    for out in (".", "..", str(here)):
        line = error_line(cli_in(here, "export", str(scored_run.run), *CSV, "--out", out, "--overwrite"))
        assert "current folder or a folder above it" in line
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    "target, message",
    [
        ("", "a training run, not an export"),
        ("features", "a feature store, not an export"),
        ("seed-0", "not an export written by xenofeat"),
    ],
)
def test_overwrite_refuses_runs_stores_and_foreign_folders(
    scored_run,  # noqa: F811
    tmp_path: Path,
    target,
    message,
) -> None:
    run = scored_run.run
    before = _tree(run)
    line = error_line(run_cli("export", str(run), *CSV, "--out", str(run / target), "--overwrite"))
    assert message in line and "nothing was changed" in line
    assert _tree(run) == before


def test_overwrite_refuses_a_cache(scored_run, tmp_path: Path) -> None:  # noqa: F811
    before = scored_run.cache.read_bytes()
    line = error_line(
        run_cli("export", str(scored_run.run), *CSV, "--out", str(scored_run.cache), "--overwrite")
    )
    assert "an activation cache, not an export" in line
    assert scored_run.cache.read_bytes() == before


def test_out_inside_the_store_is_refused(scored_run) -> None:  # noqa: F811
    store = scored_run.run / "features"
    before = _tree(store)
    for extra in ([], ["--overwrite"]):
        line = error_line(run_cli("export", str(scored_run.run), *CSV, "--out", str(store / "mine"), *extra))
        assert "inside the feature store" in line
    assert _tree(store) == before


def test_killed_export_is_cleaned_by_the_next(scored_run, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "o"
    args = ("export", str(scored_run.run), *CSV, "--out", str(out))
    assert run_cli(*args).returncode == 0
    first = (out / "features.csv").read_text()
    three = (*args[:3], "1,2,3", *args[4:], "--overwrite")
    r = run_cli(*three, env={"XENOFEAT_FAULT": "export.before_rename"})
    assert r.returncode == -signal.SIGKILL and "fault injected at export.before_rename" in r.stderr
    (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(".o.tmp-")]
    assert (left / "features.csv").exists() and (out / "features.csv").read_text() == first  # old one kept
    # killed while replacing: the previous export moved aside, no `o`; the next export puts it back first
    pid = left.name.rsplit("-", 1)[1]
    os.replace(out, tmp_path / f".o.old-{pid}")
    assert "already exists" in error_line(run_cli(*args))
    assert (out / "features.csv").read_text() == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    r = run_cli(*three)
    assert r.returncode == 0, r.stderr
    assert len((out / "features.csv").read_text().splitlines()) == 4


def test_a_hidden_folder_it_did_not_write_is_left_alone(scored_run, tmp_path: Path) -> None:  # noqa: F811
    theirs = tmp_path / ".o.tmp-1"  # right name, a dead-looking pid, but no export marker
    theirs.mkdir()
    (theirs / "keep.txt").write_text("x")
    assert run_cli("export", str(scored_run.run), *CSV, "--out", str(tmp_path / "o")).returncode == 0
    assert (theirs / "keep.txt").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--features", "99999999999999999999999", "--format", "json"], "--features: latent 9999"),
        (["--features", "1", "--format", "delphi", "--splits", "-3"], "--splits: must be at least 1"),
        (["--features", "1", "--format", "delphi", "--splits", "0"], "--splits: must be at least 1"),
        (["--where=" + "-" * 990 + "density > 0", "--format", "csv"], "--where: more than 100 operators"),
        (["--where", "(" * 40 + "flag" + ")" * 40, "--format", "csv"], "--where: brackets nested"),
        (["--where", "'a' * 100000000000 == readable", "--format", "csv"], "arithmetic on str"),
        (["--where", "readable * 100000000000 == 'a'", "--format", "csv"], "non-numeric column"),
        (["--where", "readable == '" + "a" * 3000 + "'", "--format", "csv"], "longer than 2000 characters"),
        (["--where", "density * " + "9" * 1000 + " > 1", "--format", "csv"], "--where: cannot evaluate"),
    ],
)
def test_hostile_selection_is_one_line(scored_run, tmp_path: Path, args, message) -> None:  # noqa: F811
    r = run_cli("export", str(scored_run.run), *args, "--out", str(tmp_path / "o"))
    assert message in error_line(r)
    assert list(tmp_path.iterdir()) == []


def test_neuronpedia_exports_label_attempts_as_typed(scored_run, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(scored_run.run, run, ignore=shutil.ignore_patterns("labels.jsonl", "sets.json"))
    with FeatureStore.open(run) as store:
        latent = int(store.table.query("flag")["feature"].iloc[0])
        test = store.test_windows(latent)
        tok = store.vocab[int(test.tokens[test.label][0, -1])]
        sc = score_hypothesis(
            parse_hypothesis("tokens", tok, vocab=store.vocab), test.tokens, test.label, store.vocab
        )
    append_attempt(run, latent, "ana", "tokens", tok, sc)  # what the viewer's label tester saves
    append_attempt(run, latent, "bo", "regex", "never$", {"auroc": 0.0, "n_pos": 1, "n_neg": 1})
    out = tmp_path / "np"
    assert (
        run_cli(
            "export", str(run), "--features", str(latent), "--format", "neuronpedia", "--out", str(out)
        ).returncode
        == 0
    )
    (expl,) = out.glob("*/*/explanations/batch-0.jsonl.gz")
    rows = [json.loads(ln) for ln in gzip.decompress(expl.read_bytes()).decode().splitlines()]
    tried = [r for r in rows if r["typeName"] == "xenofeat_label_tester"]
    assert [r["description"] for r in tried] == [tok, "never$"]
    assert tried[0]["scoreV1"] == pytest.approx(sc.auroc) and 0.0 <= sc.auroc <= 1.0
    assert tried[1]["scoreV1"] == 0.0  # an AUROC of 0.0 is a score, not a missing one
