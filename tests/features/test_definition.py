"""The feature definition file: default, round trip, validation errors naming the key, and `definition show`."""

from __future__ import annotations

import tomllib
from dataclasses import fields

import pytest

from activations.errors import UserError
from features.cli import main as cli_main
from features.cli.definition import register
from features.criteria.stability import StabilityConfig
from features.definition import (
    DEFAULT_PATH,
    Definition,
    definition_to_toml,
    load_definition,
    write_definition,
)
from features.labelability import LBLConfig


def test_default_file_is_the_dataclass_defaults_written_out():
    defn = load_definition(None)
    assert defn == Definition()
    # the shipped file is exactly what the writer produces; if LBLConfig changed, regenerate it with
    # python -c "from features.definition import *; write_definition(Definition(), DEFAULT_PATH)"
    assert DEFAULT_PATH.read_text() == definition_to_toml(defn)


def test_design_thresholds_are_the_defaults():
    d = load_definition(None)
    assert (d.name, d.version) == ("WDF-v1", 1)
    assert (d.support.min_firing_tokens, d.support.min_documents) == (200, 20)
    assert (d.support.max_density, d.support.antipodal_score) == (0.1, 0.8)
    assert (d.stability.tau, d.stability.min_stability) == (0.7, 0.5)
    assert d.function.null_quantile == 0.95 and d.mdl.num_bins == 16
    a = d.atomicity
    assert (a.duplicate_cos, a.metasae_width_ratio, a.metasae_k, a.metasae_recon_cos) == (0.9, 0.25, 4, 0.9)
    assert (d.geometry.top_k, d.geometry.min_cos) == (2, 0.5)
    assert (d.geometry.separability_bits, d.geometry.mixture_index) == (0.5, 0.4)
    assert (d.flag.max_lbl, d.flag.max_lbl_hi, d.flag.min_test_pos) == (0.4, 0.5, 50)
    assert isinstance(d.labelability, LBLConfig)


def test_round_trip_of_a_changed_definition(tmp_path):
    changed = Definition().replace(
        name="my-def",
        version=3,
        stability=StabilityConfig(tau=0.65, min_stability=1.0, min_seeds=4, match_cos="min"),
        labelability=LBLConfig(window=8, rule_bag=4, bootstrap=50),
    )
    path = write_definition(changed, tmp_path / "d.toml")
    back = load_definition(path)
    assert back == changed
    assert definition_to_toml(back) == path.read_text()
    # the file is plain TOML a user can read with any parser
    assert tomllib.loads(path.read_text())["stability"]["tau"] == 0.65


def test_partial_file_takes_defaults_and_integer_for_float(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text("[stability]\ntau = 1\n[labelability]\nwindow = 8\nrule_bag = 4\n")
    d = load_definition(path)
    assert d.stability.tau == 1.0 and isinstance(d.stability.tau, float)
    assert d.labelability.window == 8 and d.support == Definition().support


BAD = [
    ("[stability]\ntau = 1.5\n", "d.toml: [stability] tau = 1.5 is out of range (0, 1]"),
    ("[stability]\ntau = 0\n", "[stability] tau = 0 is out of range (0, 1]"),  # the value as written
    ("[stability]\ntaux = 0.5\n", "[stability] unknown key 'taux'"),
    ("[stabilty]\ntau = 0.5\n", "unknown key 'stabilty'"),
    ("colour = 1\n", "unknown key 'colour'"),
    ('[stability]\ntau = "high"\n', '[stability] tau = "high" must be a number'),
    ('[stability]\nmatch_cos = "median"\n', '[stability] match_cos = "median" must be one of mean, min'),
    ("[stability]\nmin_seeds = 1\n", "[stability] min_seeds = 1 is out of range [2, 1000]"),
    ("[support]\nmin_firing_tokens = -1\n", "[support] min_firing_tokens = -1 is out of range [0, inf)"),
    ("[support]\nmin_documents = 2.5\n", "[support] min_documents = 2.5 must be an integer"),
    ("[support]\nmax_density = 0.0\n", "[support] max_density = 0.0 is out of range (0, 1]"),
    ("[support]\nantipodal_score = 2.0\n", "[support] antipodal_score = 2.0 is out of range (0, 1]"),
    ("[function]\nnull_quantile = 1.0\n", "[function] null_quantile = 1.0 is out of range (0, 1)"),
    ("[function]\nn_null = 1\n", "[function] n_null = 1 is out of range [2, 10000]"),
    ('[function]\nmode = "ablation"\n', '[function] mode = "ablation" must be one of offline'),
    ("[function]\nrequire_positive = 1\n", "[function] require_positive = 1 must be true or false"),
    ("[mdl]\nnum_bins = 1\n", "[mdl] num_bins = 1 is out of range [2, 4096]"),
    ("[atomicity]\nduplicate_cos = 1.1\n", "[atomicity] duplicate_cos = 1.1 is out of range (0, 1]"),
    ("[atomicity]\nmetasae_k = 0\n", "[atomicity] metasae_k = 0 is out of range [1, 1024]"),
    ("[geometry]\nmin_cos = -2.0\n", "[geometry] min_cos = -2.0 is out of range [-1, 1]"),
    ("[geometry]\nmax_size = 3\nmin_size = 4\n", "[geometry] max_size = 3 must be >= min_size (4)"),
    ("[geometry]\nmixture_index = 1.5\n", "[geometry] mixture_index = 1.5 is out of range [0, 1]"),
    ("[flag]\nmax_lbl = 0\n", "[flag] max_lbl = 0 is out of range (0, 1]"),
    ("[flag]\nmin_test_pos = -5\n", "[flag] min_test_pos = -5 is out of range [0, inf)"),
    ("[flag]\nmax_lbl = nan\n", "[flag] max_lbl = nan is out of range (0, 1]"),
    ("[labelability]\nwindoww = 3\n", "[labelability] unknown key 'windoww'"),
    ("[labelability]\nwindow = 0\n", "[labelability] window"),
    ("[labelability]\ntest_fraction = 1.5\n", "[labelability] test_fraction"),
    ("version = 0\n", "d.toml: version = 0 must be an integer >= 1"),
    ('name = ""\n', 'd.toml: name = "" must be a non-empty string'),
    ("stability = 3\n", "d.toml: [stability] must be a table"),
    ("[stability\n", "d.toml: not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_definition_names_the_key(tmp_path, text, message):
    path = tmp_path / "d.toml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_definition(path)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{path}: ")


def test_every_numeric_key_has_a_checked_range():
    # each section field (except the LBL table, validated by LBLConfig) carries kind metadata the validator reads
    for section in ("support", "stability", "function", "mdl", "atomicity", "geometry", "flag"):
        for f in fields(getattr(Definition(), section)):
            assert "kind" in f.metadata, f"[{section}] {f.name} has no validation metadata"


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read the definition"):
        load_definition(tmp_path / "nope.toml")


def _cli(argv, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="xenofeat")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def test_definition_show_prints_default_and_a_users_file(tmp_path, capsys):
    code, out = _cli(["definition", "show"], capsys)
    assert code == 0 and out == DEFAULT_PATH.read_text()
    path = tmp_path / "mine.toml"
    path.write_text("[flag]\nmax_lbl = 0.3\n")
    code, out = _cli(["definition", "show", "--definition", str(path)], capsys)
    assert code == 0 and tomllib.loads(out)["flag"]["max_lbl"] == 0.3


def test_definition_show_bad_file_through_the_root(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[stability]\ntau = 1.5\n")
    code = cli_main(["definition", "show", "--definition", str(path)])
    assert code == 2
    assert "bad.toml: [stability] tau = 1.5 is out of range (0, 1]" in capsys.readouterr().err
