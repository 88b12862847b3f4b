"""The criteria registry: C1-C6 declared once, and a new criterion (a toy C8 registered here) reaches the definition
file, its validation, the store's schema and STORE.md's table, the viewer's verdict table, `well_defined` and the
scorer's loop without any other file changing."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from activations.errors import UserError
from activations.settings import Settings, number
from features.columns import Column
from features.criteria.function import FunctionAccumulator
from features.criteria.registry import Context, Criterion, Outcome, VerdictRow, criteria, register, unregister
from features.criteria.support import SupportConfig
from features.definition import Definition, definition_to_toml, load_definition
from features.flags import FlagConfig, apply_flags, verdict_table
from features.scoring import Timer, run_criteria
from features.store import FeatureStore
from features.store.schema import column_table_md, table_columns
from tests.helpers.demo_store import build_random_store

torch.set_num_threads(1)


@dataclass(frozen=True)
class ShareConfig(Settings):
    """C8 share (a test criterion): the latent's firing tokens are a large enough share of all firings."""

    min_share: float = number(0.1, 0.0, 1.0, lo_open=True)
    """Least share of all firing tokens."""


def _share(ctx: Context, cfg: ShareConfig) -> Outcome:
    count = ctx.results["support"].firing_count.astype(np.float64)  # C1's typed result, read from the context
    share = count / max(count.sum(), 1.0)
    return Outcome(
        {"share": share, "share_pass": share >= cfg.min_share}, share, summary={"max_share": share.max()}
    )


C8 = Criterion(
    number=8,
    name="share",
    title="share",
    config=ShareConfig,
    gates=True,
    passes="share_pass",
    needs=("support",),
    columns=(
        Column("share", "float64", "C8: share of all firing tokens", "criterion:share"),
        Column("share_pass", "bool", "C8", "criterion:share"),
    ),
    verdicts=(VerdictRow("share of firings", "share", "≥", setting="min_share", verdict="share_pass"),),
    compute=_share,
)


@pytest.fixture
def c8():
    register(C8)
    yield C8
    unregister(C8.name)


def test_builtin_criteria_in_order():
    names = [(c.number, c.name, c.gates) for c in criteria()]
    assert names == [(1, "support", True), (2, "stability", True), (3, "function", True), (4, "mdl", True),
                     (5, "atomicity", False), (6, "geometry", False), (7, "learned", True)]  # fmt: skip
    assert list(Definition().sections) == [n for _, n, _ in names] + ["labelability", "flag", "llm"]


def test_a_registered_criterion_joins_the_definition_file(c8, tmp_path: Path):
    defn = Definition()
    assert defn.share == ShareConfig() and list(defn.sections)[7] == "share"
    text = definition_to_toml(defn)
    assert (
        "[share]\n# C8 share (a test criterion)" in text
        and "# Least share of all firing tokens.\nmin_share = 0.1" in text
    )
    assert tomllib.loads(text)["share"] == {"min_share": 0.1}
    path = tmp_path / "d.toml"
    path.write_text("[share]\nmin_share = 0.25\n")
    assert load_definition(path).share.min_share == 0.25
    path.write_text("[share]\nmin_share = 2.0\n")
    with pytest.raises(UserError, match=r"d.toml: \[share\] min_share = 2.0 is out of range \(0, 1\]"):
        load_definition(path)
    unregister(C8.name)
    with pytest.raises(UserError, match="unknown key 'share'"):  # without C8 the section is unknown again
        load_definition(path)


def test_a_registered_criterion_joins_the_schema_and_store_md(c8, tmp_path: Path):
    names = [c.name for c in table_columns()]
    assert names.index("share") == names.index("learned_pass") + 1  # gating criteria come before labelability
    assert names.index("share_pass") < names.index("labelability")
    assert "| share_pass | bool | C8 | criterion:share |" in column_table_md()
    # the demo builder writes every schema column through the one writer, so C8's columns are in its store too
    build_random_store(tmp_path, 8)
    assert {"share", "share_pass"} <= set(FeatureStore.open(tmp_path).table.columns)


def test_a_registered_criterion_gates_well_defined_and_has_its_verdict_row(c8):
    row = {"support_pass": True, "stability_pass": True, "function_pass": True, "mdl_pass": True,
           "learned_pass": True, "labelability": 0.1, "labelability_hi": 0.2, "n_test_pos": 100}  # fmt: skip
    table = pd.DataFrame(
        [{**row, "share": 0.5, "share_pass": True}, {**row, "share": 0.05, "share_pass": False}]
    )
    out = apply_flags(table, FlagConfig())
    assert out["well_defined"].tolist() == [True, False] and out["flag"].tolist() == [True, False]
    with pytest.raises(KeyError, match="share_pass"):
        apply_flags(pd.DataFrame([row]), FlagConfig())
    rows = verdict_table(table.iloc[1], Definition())
    share = [r for r in rows if r[0] == "C8 share"]
    assert share == [("C8 share", "share of firings", 0.05, "≥", 0.1, "fail")]
    assert [r[0] for r in rows][-3:] == ["flag"] * 3


def _context(rng: np.random.Generator, n_seq: int = 20, L: int = 16, F: int = 8, d: int = 6) -> Context:
    """A small context: codes of F latents on n_seq * L tokens, two SAEs' weights, C3's accumulator fed."""
    T = n_seq * L
    acts = sp.random(T, F, density=0.2, random_state=1, format="csr", dtype=np.float32)
    dec = rng.standard_normal((F, d)).astype(np.float32)
    x = (acts @ dec + 0.1 * rng.standard_normal((T, d))).astype(np.float32)
    acc = FunctionAccumulator(dec, n_null=4, seed=0)
    acc.update(x, np.asarray(acts @ dec), acts)
    other = (dec + 0.01 * rng.standard_normal((F, d))).astype(np.float32)
    return Context(
        acts=acts.tocsc(), doc_ids=np.repeat(np.arange(n_seq), L), tokens=rng.integers(0, 50, (n_seq, L)),
        mask=np.zeros((n_seq, L), bool), n_tokens=T, enc=dec, dec=dec, others=[(other, other)], seeds=[0, 1],
        function=acc, hook="h", load_model=lambda: (None, "no model in this test"),
    )  # fmt: skip


def test_scoring_runs_every_criterion_in_order_with_c8(c8):
    ctx = _context(np.random.default_rng(0))
    defn = Definition(support=SupportConfig(min_firing_tokens=1, min_documents=1))
    res = run_criteria(ctx, defn, Timer())
    assert list(res.outcomes) == [
        "support",
        "stability",
        "function",
        "mdl",
        "atomicity",
        "geometry",
        "learned",
        "share",
    ]
    count = res.column("firing_count")
    np.testing.assert_allclose(res.column("share"), count / count.sum())
    assert res.merged("summary")["max_share"] == pytest.approx((count / count.sum()).max())
    assert ctx.partner is not None and set(res.merged("datasets")) == {
        "matches/seeds", "matches/partner", "matches/cos", "matches/dec_cos"
    }  # fmt: skip


def test_a_criterion_returning_undeclared_columns_is_refused():
    bad = Criterion(
        number=9, name="bad", title="bad", config=ShareConfig, gates=False,
        columns=(Column("bad_value", "float64", "x", "criterion:bad"),),
        compute=lambda ctx, cfg: Outcome({"other": np.zeros(ctx.n_latents)}, None),
    )  # fmt: skip
    register(bad)
    try:
        with pytest.raises(ValueError, match="criterion bad returned columns"):
            run_criteria(_context(np.random.default_rng(0)), Definition(), Timer())
    finally:
        unregister("bad")
