"""`xenofeat run --control`'s side-by-side figures, and the flag without C7 that the control reads against."""

from __future__ import annotations

import json

import pandas as pd

from features.cli.pipeline import write_control_json
from features.cli.summary import control_text
from features.flags import FlagConfig, apply_flags, summarize


def _row(learned: bool, lbl: float, **passes: bool) -> dict:
    gates = {"support_pass": True, "stability_pass": True, "function_pass": True, "mdl_pass": True, **passes}
    return dict(**gates, learned_pass=learned, labelability=lbl, labelability_hi=lbl + 0.05, n_test_pos=60,
                firing_count=5, best_describer="token")  # fmt: skip


def test_flag_without_c7_counts_what_only_c7_kept_from_the_flag():
    table = apply_flags(
        pd.DataFrame([
            _row(True, 0.1),  # flagged
            _row(False, 0.1),  # resists labels, but a random copy carries it: flagged only without C7
            _row(False, 0.1, mdl_pass=False),  # fails C4 too: not flagged either way
            _row(False, 0.9),  # labelled: not flagged either way
        ]),
        FlagConfig(),
    )  # fmt: skip
    assert table["flag"].tolist() == [True, False, False, False]
    assert summarize(table, FlagConfig()).flagged_without_learned == 2
    assert summarize(table).flagged_without_learned is None  # without the flag's settings: not computed
    everything_learned = table.assign(learned_pass=True)  # C7 not gating (tag, or not applicable)
    assert summarize(everything_learned, FlagConfig()).flagged_without_learned is None


def test_control_text_and_json_show_both_models_side_by_side(tmp_path):
    trained = {"alive": 3061, "well_defined": 34, "flagged": 2, "flagged_without_learned": 5, "token_anchored": 2,
               "lbl_scored": 2900, "lbl_mean": 0.9, "pw_mcc": 0.47, "pw_mcc_null": 0.17,
               "learned": {"applicable": True, "n_learned": 831}}  # fmt: skip
    control = {"alive": 3000, "well_defined": 10, "flagged": 0, "flagged_without_learned": 7, "lbl_scored": 2500,
               "learned": {"applicable": False, "n_learned": None}}  # fmt: skip
    text = control_text(trained, control)
    lines = {ln[:24].strip(): ln[24:].split() for ln in text.splitlines()[1:]}
    assert lines["flagged"] == ["2", "0"] and lines["flagged without C7"] == ["5", "7"]
    assert lines["learned (C7)"] == ["831", "-"] and lines["token-anchored"] == ["2", "-"]
    assert lines["PW-MCC"] == ["0.470", "-"]
    path = tmp_path / "control.json"
    write_control_json(path, trained, control)
    data = json.loads(path.read_text())
    assert data["trained"]["flagged"] == 2 and data["random_init"]["flagged_without_learned"] == 7
    assert data["random_init"]["n_learned"] is None and not (tmp_path / "control.json.tmp").exists()
