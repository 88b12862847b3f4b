"""The viewer's pure parts: the label attempts log, token highlighting, latent and index parsing, table filters,
and `xenofeat view`'s checks and command line (no server started)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from activations.errors import UserError
from features.label_tester import HypothesisScore
from features.store.labels import append_attempt, labels_path, read_attempts
from tests.helpers.demo_store import build_random_store
from viewer import cli
from viewer.data import parse_indices, parse_latent, run_dir_from
from viewer.render import window_html
from viewer.table import TableFilter, filter_table, sort_rows


@pytest.fixture
def run(tmp_path: Path) -> Path:
    (tmp_path / "features").mkdir()
    return tmp_path


def test_attempts_round_trip_with_nan_as_null(run):
    append_attempt(run, 3, "ana", "tokens", "the, of", HypothesisScore(0.5, 0.25, 0.6, 40, 80))
    append_attempt(run, 4, "bo", "regex", r"\d+$", HypothesisScore(float("nan"), 0.0, 0.5, 10, 20))
    lines = [json.loads(x) for x in labels_path(run).read_text().splitlines()]
    assert lines[1]["precision"] is None and lines[1]["text"] == r"\d+$"
    a, b = read_attempts(run)
    assert (a.latent, a.who, a.kind, a.precision, a.recall, a.auroc, a.n_pos, a.n_neg) == (
        3, "ana", "tokens", 0.5, 0.25, 0.6, 40, 80,
    )  # fmt: skip
    assert b.precision is None and b.n_neg == 20
    assert [x.latent for x in read_attempts(run, latent=4)] == [4]
    assert read_attempts(run, latent=9) == []


def test_a_line_cut_short_is_skipped(run):
    append_attempt(
        run, 1, "x", "rule", "cur=a", {"precision": 1, "recall": 1, "auroc": 1, "n_pos": 1, "n_neg": 1}
    )
    with labels_path(run).open("a") as fh:
        fh.write('{"latent": 2, "who": "y", "wh')  # a crash mid-write
    assert [a.latent for a in read_attempts(run)] == [1]


def test_attempts_need_a_store_folder(tmp_path):
    with pytest.raises(UserError, match="no feature store"):
        append_attempt(tmp_path, 1, "x", "tokens", "a", HypothesisScore(1, 1, 1, 1, 1))
    assert not any(tmp_path.iterdir())


def test_highlighting_escapes_tokens_and_scales_opacity():
    vocab = ["a", "<script>x</script>", '"q"&']
    out = window_html(np.array([-1, 0, 1, 2]), np.array([9.0, 0.0, 1.0, 4.0]), vocab, scale=4.0, centre=2)
    assert "<script>" not in out and "&lt;script&gt;x&lt;/script&gt;" in out and "&quot;q&quot;&amp;" in out
    alphas = [float(x) for x in __import__("re").findall(r"rgba\(255,120,0,([0-9.]+)\)", out)]
    assert alphas == [0.0, 0.25, 1.0]  # the -1 column is skipped; act / scale, clipped
    assert out.count("xf-centre") == 1


@pytest.mark.parametrize(
    ("text", "expect"),
    [("3", (3, None)), (" 9 ", (9, None)), ("", (None, None)), ("10", (None, "out of range")),
     ("-1", (None, "out of range")), ("x", (None, "not a whole number"))],
)  # fmt: skip
def test_parse_latent(text, expect):
    latent, err = parse_latent(text, 10)
    assert latent == expect[0]
    assert (err is None) if expect[1] is None else (expect[1] in err)


def test_parse_indices():
    sel, err = parse_indices("3, 5-7,3", 10)
    assert err is None and sel.tolist() == [3, 5, 6, 7]
    assert "out of range" in parse_indices("8-12", 10)[1]
    assert "cannot read" in parse_indices("a-b", 10)[1]


def test_filters_against_pandas_queries():
    t = pd.DataFrame(
        {
            "feature": np.arange(6),
            "flag": [True, False, True, False, False, True],
            "well_defined": [True, True, True, False, False, True],
            "dense": [False, False, True, False, True, True],
            "mdl_pass": [True, True, True, False, True, True],
            "best_describer": ["token", "rule", "rule", "semantic", "token", "rule"],
            "labelability": [0.1, 0.9, np.nan, 0.5, 0.2, 0.3],
        }
    )
    got = filter_table(t, TableFilter(flag="flagged", tags=["dense"], describers=["rule"]))
    assert (
        got["feature"].tolist() == t.query("flag and dense and best_describer == 'rule'")["feature"].tolist()
    )
    got = filter_table(t, TableFilter(must_fail=["mdl_pass"]))
    assert got["feature"].tolist() == [3]
    got = filter_table(t, TableFilter(range_col="labelability", range_lo=0.2, latents=np.array([1, 2, 3, 4])))
    assert got["feature"].tolist() == [1, 3, 4]
    assert sort_rows(t, "labelability", True)["feature"].tolist() == [1, 3, 5, 4, 0, 2]


def test_token_anchored_filter():
    t = pd.DataFrame({"feature": np.arange(4), "flag": [True, False, False, False],
                      "token_anchored": [False, True, False, True]})  # fmt: skip
    assert filter_table(t, TableFilter(flag="token-anchored"))["feature"].tolist() == [1, 3]
    # a store scored before the column existed has no token-anchored latent
    assert filter_table(t.drop(columns="token_anchored"), TableFilter(flag="token-anchored")).empty


def test_run_folder_from_argv_or_environment(tmp_path):
    app = str(Path(cli.APP))
    assert run_dir_from([app, str(tmp_path)], {}) == tmp_path
    assert run_dir_from(["pytest", "-x"], {"XENOFEAT_RUN": "/r"}) == Path("/r")
    with pytest.raises(UserError, match="XENOFEAT_RUN"):
        run_dir_from(["pytest"], {})


def _view(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["view", *argv])


def test_view_refuses_a_run_without_features(tmp_path):
    with pytest.raises(UserError, match="no feature store"):
        cli.handler(_view([str(tmp_path)]))
    with pytest.raises(UserError, match="no such folder"):
        cli.handler(_view([str(tmp_path / "nope")]))


def test_view_refuses_a_newer_examples_file(tmp_path):
    import h5py

    build_random_store(tmp_path, 8)
    with h5py.File(tmp_path / "features" / "examples.h5", "a") as f:
        f.attrs["format_version"] = "7.0"
    with pytest.raises(UserError, match="newer xenofeat"):
        cli.check_run(tmp_path)


def test_view_command_line_is_local_headless_and_private(tmp_path):
    args = _view([str(tmp_path)])
    assert (args.host, args.port) == ("127.0.0.1", 8501)
    cmd = cli.streamlit_command(tmp_path, 8600, args.host)
    flags = dict(zip(cmd[5:-2:2], cmd[6:-2:2], strict=True))
    assert flags["--server.headless"] == "true" and flags["--server.address"] == "127.0.0.1"
    assert flags["--browser.gatherUsageStats"] == "false" and flags["--server.port"] == "8600"
    assert cmd[-2:] == ["--", str(tmp_path)] and cmd[4].endswith("viewer/app.py")
