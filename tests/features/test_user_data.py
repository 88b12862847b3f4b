"""The person's files beside a store (sets.json, labels.jsonl): concurrent writers lose nothing, and every field is
checked on read (one clear line, never a traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activations.errors import UserError
from features.store.labels import append_attempt, labels_path, read_attempts
from features.store.sets import FeatureSet, add_to_set, load_sets, save_set, sets_path
from tests.helpers.common import REPO

N = 200  # saves per process, as in the issue (2 x 200: without the lock about half were lost)


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    (tmp_path / "features").mkdir()
    return tmp_path


def _two_writers(run: Path, body: str) -> None:
    """Run `body` (with `run`, `me` and `N` defined) in two processes at once."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from pathlib import Path\nrun, me, N = Path({str(run)!r}), {me}, {N}\n{body}",
            ],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]


def test_concurrent_set_saves_keep_every_set(run: Path) -> None:
    _two_writers(
        run,
        "from features.store.sets import FeatureSet, save_set\n"
        "for i in range(N):\n"
        "    save_set(run, FeatureSet(f'p{me}-{i}', '', [i]))\n",
    )
    sets = load_sets(run)
    assert len(sets) == 2 * N
    assert all(sets[f"p{me}-{i}"].features == [i] for me in (0, 1) for i in range(N))


def test_concurrent_additions_to_one_set_keep_every_latent(run: Path) -> None:
    _two_writers(
        run,
        "from features.store.sets import add_to_set\n"
        "for i in range(N):\n"
        "    add_to_set(run, 'shared', [me * N + i])\n",
    )
    assert sorted(load_sets(run)["shared"].features) == list(range(2 * N))


def test_concurrent_label_attempts_keep_every_line(run: Path) -> None:
    _two_writers(
        run,
        "from features.store.labels import append_attempt\n"
        "for i in range(N):\n"
        "    append_attempt(run, me * N + i, f'p{me}', 'tokens', 'the', {'auroc': 0.5})\n",
    )
    assert sorted(a.latent for a in read_attempts(run)) == list(range(2 * N))


def test_add_to_set_keeps_description_created_and_checks_range(run: Path) -> None:
    first = add_to_set(run, "s", [3], description="why")
    second = add_to_set(run, "s", [3, 5])
    assert second.features == [3, 5] and second.description == "why" and second.created == first.created
    with pytest.raises(UserError, match="out of range"):
        add_to_set(run, "s", [9], n_latents=9)
    assert load_sets(run)["s"].features == [3, 5]


def _sets_file(run: Path, sets: object) -> None:
    sets_path(run).write_text(
        json.dumps({"format": "xenofeat.feature-sets", "format_version": "1.0", "sets": sets})
    )


GOOD = {
    "name": "a",
    "description": "",
    "features": [1],
    "created": "2025-01-01T00:00:00+00:00",
    "updated": "",
}


@pytest.mark.parametrize(
    "sets, message",
    [
        ([1], '"sets" must be an object'),
        ({"a": [1]}, "a set must be an object, got list"),
        ({"a": {**GOOD, "created": 5}}, "created must be an ISO-8601 time as text, got int"),
        ({"a": {**GOOD, "created": "<img src=x>"}}, "is not an ISO-8601 time"),
        ({"a": {**GOOD, "updated": "yesterday"}}, "is not an ISO-8601 time"),
        ({"a": {**GOOD, "features": 7}}, "features must be a list"),
        ({"a": {**GOOD, "features": ["1"]}}, "is not an integer latent index"),
        ({"a": {**GOOD, "description": ["x"]}}, "description must be text"),
        ({"a": {**GOOD, "name": 3}}, "set name must be text"),
        ({"a": {**GOOD, "name": "b"}}, "stored as 'a' is named 'b'"),
        ({"a": {k: v for k, v in GOOD.items() if k != "name"}}, "no name"),
    ],
)
def test_malformed_sets_file_is_one_line(run: Path, sets: object, message: str) -> None:
    _sets_file(run, sets)
    before = sets_path(run).read_bytes()
    with pytest.raises(UserError, match="sets.json") as err:
        load_sets(run)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError):  # a save never replaces a file it cannot read
        save_set(run, FeatureSet("other", "", [1]))
    assert sets_path(run).read_bytes() == before


def test_good_sets_file_reads(run: Path) -> None:
    _sets_file(run, {"a": GOOD})
    assert load_sets(run)["a"].created == GOOD["created"]


ATTEMPT = {
    "latent": 4, "who": "ana", "when": "2025-01-01T12:00:00+00:00", "kind": "tokens", "text": "the",
    "precision": 0.5, "recall": None, "auroc": 0.0, "n_pos": 3, "n_neg": 5,
}  # fmt: skip


@pytest.mark.parametrize(
    "line, message",
    [
        ([1, 2], "a line must be a JSON object, got list"),
        ({**ATTEMPT, "latent": "4"}, "latent must be a latent index"),
        ({**ATTEMPT, "latent": True}, "latent must be a latent index"),
        ({**ATTEMPT, "latent": -1}, "latent must be a latent index"),
        ({**ATTEMPT, "when": 1700000000}, "when must be an ISO-8601 time"),
        ({**ATTEMPT, "when": "soon"}, "when must be an ISO-8601 time"),
        ({**ATTEMPT, "text": {"a": 1}}, "text must be text"),
        ({**ATTEMPT, "auroc": "high"}, "auroc must be a number or null"),
        ({**ATTEMPT, "n_pos": 1.5}, "n_pos must be a count or null"),
    ],
)
def test_malformed_label_line_is_one_line(run: Path, line: object, message: str) -> None:
    labels_path(run).write_text(json.dumps(ATTEMPT) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(UserError, match="labels.jsonl:2: not a valid label attempt") as err:
        read_attempts(run)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_line_cut_short_is_skipped_and_the_next_attempt_starts_a_new_line(run: Path) -> None:
    labels_path(run).write_text(json.dumps(ATTEMPT) + "\n" + '{"latent": 7, "wh')  # a crash mid-write
    append_attempt(run, 9, "bo", "regex", "x$", {"auroc": 0.75})
    got = read_attempts(run)
    assert [(a.latent, a.auroc) for a in got] == [(4, 0.0), (9, 0.75)]
