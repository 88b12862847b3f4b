"""The pure parts of the `llm` describer (features.labelability.llm): parsing answers, the judged sample, the score
and what the definition's `[llm] mode` does to the table (off, tag, lbl)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.flags import FlagConfig
from features.labelability import describer_names, llm
from features.labelability.registry import _discover, registered_describers


def test_the_llm_is_not_run_by_the_lbl_pass() -> None:
    _discover()
    assert llm.NAME not in describer_names()
    assert all(d.name != llm.NAME for d in registered_describers())
    assert not hasattr(llm, "DESCRIBER")


def test_parsing_answers() -> None:
    assert llm.parse_explanation("thinking...\n[EXPLANATION]: dates in a year\n") == "dates in a year"
    assert llm.parse_explanation("just a sentence\nthe last line") == "the last line"
    with pytest.raises(ValueError):
        llm.parse_explanation("  \n ")
    top = [{"token": "1", "logprob": math.log(0.3)}, {"token": " 0", "logprob": math.log(0.1)}]
    assert llm.parse_judgement("1", top).p == pytest.approx(0.75)
    assert llm.parse_judgement("0", None) == llm.Judgement(0.0, False)
    assert llm.parse_judgement("Yes", []) == llm.Judgement(1.0, False)
    with pytest.raises(ValueError):
        llm.parse_judgement("maybe", None)


def test_window_text_marks_runs_of_tokens() -> None:
    vocab = ["Ġthe", "Ġcat", "Ġsat", "."] * 10
    assert llm.window_text([0, 1, 2, 3], vocab, [False, True, True, False]) == "the<< cat sat>>."
    words = [f"w{i}" for i in range(40)]
    assert llm.window_text([-1, 0, 1, 2], words, [False, False, False, True]) == "w0 w1 <<w2>>"


def test_detection_sample_is_class_balanced_and_deterministic() -> None:
    label = np.array([True] * 30 + [False] * 5 + [True] * 10)
    pick = llm.detection_sample(label, 20, 7)
    assert len(pick) == 20 and (~label[pick]).sum() == 5  # the short class whole, the rest to the other
    assert np.array_equal(pick, llm.detection_sample(label, 20, 7))
    assert len(llm.detection_sample(label, 1000, 7)) == len(label)


def test_score_kind() -> None:
    lab = np.array([True, True, False, False])
    probs = [llm.Judgement(p, True) for p in (0.9, 0.6, 0.7, 0.1)]
    assert llm.detection_score(probs, lab) == (pytest.approx(0.75), "auroc")
    yes_no = [llm.Judgement(p, False) for p in (1.0, 0.0, 0.0, 0.0)]
    assert llm.detection_score(yes_no, lab) == (pytest.approx(0.75), "balanced_accuracy")  # (1/2 + 1) / 2


def _table() -> pd.DataFrame:
    """Two flagged latents (LBL 0.1 by the token describer) and one not scored by LBL."""
    t = pd.DataFrame({"feature": [0, 1, 2], "labelability": [0.1, 0.1, np.nan], "labelability_hi": [0.2, 0.2, np.nan],
                      "n_test_pos": [100, 100, 0], "best_describer": ["token", "token", "none"],
                      "readable": ["cur in {a}"] * 3})  # fmt: skip
    for name in describer_names():
        t[f"auroc_{name}"] = [0.55, 0.55, np.nan] if name == "token" else [0.5, 0.5, np.nan]
    from features.criteria.registry import pass_columns

    for c in pass_columns():
        t[c] = True
    t["flag"] = [True, True, False]
    t["well_defined"] = True
    return t


RESULTS = [llm.LatentResult(0, "dates", 0.95, "auroc", 40), llm.LatentResult(2, "x", 0.9, "auroc", 10)]


@pytest.mark.parametrize("mode", ["off", "tag", "lbl"])
def test_modes(mode: str) -> None:
    out = llm.merge_results(_table(), RESULTS, "m", llm.LLMConfig(mode=mode), FlagConfig())
    assert out.loc[0, "llm_explanation"] == "dates" and out.loc[1, "llm_explanation"] == ""
    assert out.loc[0, "auroc_llm"] == 0.95 and math.isnan(out.loc[1, "auroc_llm"])
    assert out.loc[0, "llm_named"] == (mode != "off") and not out.loc[1, "llm_named"]
    if mode == "lbl":
        assert out.loc[0, "labelability"] == pytest.approx(0.9) and out.loc[0, "best_describer"] == "llm"
        assert out.loc[0, "labelability_hi"] == pytest.approx(0.9)
        assert not out.loc[0, "flag"] and out.loc[1, "flag"]  # the LLM named latent 0: no longer flagged
        assert math.isnan(out.loc[2, "labelability"])  # not scored by LBL: the LLM cannot score it alone
        again = llm.merge_results(out, [llm.LatentResult(0, "d", 0.6, "auroc", 40)], "m", llm.LLMConfig(mode=mode),
                                  FlagConfig())  # fmt: skip
        assert again.loc[0, "best_describer"] == "llm" and again.loc[0, "labelability"] == pytest.approx(0.2)
        worse = llm.merge_results(out, [llm.LatentResult(0, "d", 0.5, "auroc", 40)], "m", llm.LLMConfig(mode=mode),
                                  FlagConfig())  # fmt: skip
        assert worse.loc[0, "best_describer"] == "token" and worse.loc[0, "labelability"] == pytest.approx(
            0.1
        )
    else:
        assert out.loc[0, "labelability"] == 0.1 and out.loc[0, "flag"]
