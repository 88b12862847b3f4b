"""Feature sets: name validation, atomic persistence in RUN/features/sets.json, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from activations.errors import UserError
from features.store.sets import (
    FeatureSet,
    delete_set,
    get_set,
    load_sets,
    save_set,
    sets_path,
    validate_set_name,
)


@pytest.fixture()
def run(tmp_path):
    (tmp_path / "features").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "x" * 101,
        "a/b",
        "a\\b",
        "..",
        "a..b",
        ".hidden",
        "tab\there",
        "nl\nx",
        "nul\x00",
        "bidi\u202e",
    ],
)
def test_bad_names_rejected(bad):
    with pytest.raises(ValueError):
        validate_set_name(bad)


@pytest.mark.parametrize("good", ["flagged", "weird ones (run 3)", "x" * 100, "ünïcode ✓", "a.b"])
def test_good_names_accepted(good):
    assert validate_set_name(good) == good


def test_save_load_update_delete(run):
    assert load_sets(run) == {}
    s = save_set(run, FeatureSet("alien", "hard to label", [5, 3, 5, np.int64(9)]))
    assert s.features == [5, 3, 9]  # deduplicated, order kept, numpy ints accepted
    got = load_sets(run)["alien"]
    assert got.features == [5, 3, 9] and got.description == "hard to label"
    created = got.created
    save_set(run, FeatureSet("alien", "changed", [1], created="2000-01-01T00:00:00+00:00"))
    got = get_set(run, "alien")
    assert got.features == [1] and got.description == "changed"
    assert got.created == created  # the first creation time survives a replace
    save_set(run, FeatureSet("other", "", [2]))
    assert sorted(load_sets(run)) == ["alien", "other"]
    # one file, nothing else left behind (the temporary file was renamed)
    assert sorted(p.name for p in (run / "features").iterdir()) == ["sets.json"]
    data = json.loads(sets_path(run).read_text())
    assert data["format"] == "xenofeat.feature-sets" and set(data["sets"]) == {"alien", "other"}
    delete_set(run, "alien")
    assert list(load_sets(run)) == ["other"]
    with pytest.raises(UserError, match="no feature set named 'alien'"):
        delete_set(run, "alien")
    with pytest.raises(UserError, match="other"):
        get_set(run, "missing")


def test_store_folder_accepted_and_run_without_store_refused(run, tmp_path_factory):
    save_set(run / "features", FeatureSet("a", "", [1]))
    assert list(load_sets(run)) == ["a"]
    empty = tmp_path_factory.mktemp("nostore")
    with pytest.raises(UserError, match="no feature store"):
        save_set(empty, FeatureSet("a", "", [1]))


def test_bad_features_and_range(run):
    with pytest.raises(ValueError):
        FeatureSet("a", "", [1.5])
    with pytest.raises(ValueError):
        FeatureSet("a", "", [-1])
    with pytest.raises(ValueError):
        FeatureSet("a", "", [True])
    with pytest.raises(UserError, match="out of range"):
        save_set(run, FeatureSet("a", "", [3, 10]), n_latents=10)
    assert load_sets(run) == {}


def test_corrupt_file_is_one_line_error(run):
    sets_path(run).write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        load_sets(run)
    sets_path(run).write_text(json.dumps({"format": "other"}))
    with pytest.raises(UserError, match="not a xenofeat feature-sets file"):
        load_sets(run)
