"""The label tester against hand computations on five windows, its error messages, and LBL's held-out windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from features import label_tester as lt
from features.label_tester import held_out_windows, parse_hypothesis, score_hypothesis
from features.labelability import labelability

torch.set_num_threads(1)

VOCAB = ["New", "York", "City", "the", "a", "of", "a" * 40, "b"]
# windows of width 3 (the last column is the current token); -1 = before the sequence start
WINDOWS = np.array(
    [
        [-1, 3, 0, 1],  # "the New York"       fires
        [3, 0, 1, 2],  # "the New York City"  fires
        [4, 5, 3, 1],  # "a of the York"      silent
        [-1, -1, -1, 3],  # "the"              silent
        [0, 1, 5, 2],  # "New York of City"   fires
    ]
)
LABELS = np.array([True, True, False, False, True])


def score(kind: str, text: str, **kw):
    return score_hypothesis(parse_hypothesis(kind, text, vocab=VOCAB), WINDOWS, LABELS, VOCAB, **kw)


@pytest.mark.parametrize(
    ("kind", "text", "precision", "recall", "auroc"),
    [
        # selects windows 0 and 2: TP 1, FP 1; TPR 1/3, FPR 1/2 -> AUROC (1/3 + 1 - 1/2) / 2
        ("tokens", "York", 1 / 2, 1 / 3, 5 / 12),
        ("tokens", 'York, "City"', 3 / 4, 1.0, 3 / 4),  # selects 0, 1, 2, 4
        ("rule", "prev=New AND cur=York OR cur=City", 1.0, 1.0, 1.0),  # selects 0, 1, 4
        ("rule", "cur=York AND prev=the", 0.0, 0.0, 1 / 4),  # selects 2 only: (0 + 1 - 1/2) / 2
        # the match must reach into the current token: "New York" ends inside "York" only in window 0
        ("regex", "New York", 1.0, 1 / 3, 2 / 3),
        ("regex", "York City$", 1.0, 1 / 3, 2 / 3),  # window 1 only
        ("regex", "o", 1 / 2, 1 / 3, 5 / 12),  # an "o" in the current token: "York" in windows 0 and 2
    ],
)
def test_scores_match_hand_computation(kind, text, precision, recall, auroc):
    s = score(kind, text)
    assert (s.n_pos, s.n_neg) == (3, 2)
    assert s.precision == pytest.approx(precision)
    assert s.recall == pytest.approx(recall)
    assert s.auroc == pytest.approx(auroc)


def test_bag_terms_look_only_at_the_preceding_tokens():
    s = score("rule", "bag=New", bag=2)  # bag = the 2 tokens before the current: windows 0 and 1
    assert (s.precision, s.recall, s.auroc) == pytest.approx((1.0, 2 / 3, 5 / 6))
    assert score("rule", "bag=New", bag=3).recall == pytest.approx(1.0)  # window 4 has New 3 back


def test_a_regex_that_never_reaches_the_current_token_selects_nothing():
    s = score("regex", "New")  # always in the context, never the current token
    assert math.isnan(s.precision) and s.recall == 0 and s.auroc == 0.5


def test_quoted_tokens_and_case_insensitive_operators():
    h = parse_hypothesis("tokens", '"a b", ",", plain "q\\"uote"')
    assert h.tokens == {"a b", ",", "plain", 'q"uote'}
    r = parse_hypothesis("rule", 'cur="New" or prev = York and bag=a')
    assert r.clauses == ((("cur", "New"),), (("prev", "York"), ("bag", "a")))


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("tokens", "Boston York", "not in the vocabulary: 'Boston'"),
        ("tokens", "   ", "empty"),
        ("regex", "(New", "invalid pattern"),
        ("rule", "cur=York AND", "ends with AND/OR"),
        ("rule", "foo=York", "unknown slot 'foo'"),
        ("rule", "cur=York XOR cur=New", "expected AND or OR"),
        ("rule", "York", "expected a term"),
        ("words", "York", "kind: must be one of"),
    ],
)
def test_bad_hypotheses_get_clear_messages(kind, text, message):
    with pytest.raises(ValueError, match=message):
        parse_hypothesis(kind, text, vocab=VOCAB)


def test_catastrophic_regex_stops_with_a_message_not_a_hang():
    windows = np.array([[6, 7]] * 4)  # "aaaa...a b"
    h = parse_hypothesis("regex", "(a|aa)+$")
    with pytest.raises(ValueError, match="longer than 0.3 s"):
        score_hypothesis(h, windows, np.array([True, False, True, False]), VOCAB, timeout_s=0.3)


def test_fallback_without_the_regex_package(monkeypatch):
    monkeypatch.setattr(lt, "_regex", None)
    with pytest.raises(ValueError, match="nested quantifiers"):
        parse_hypothesis("regex", "(a+)+$")
    with pytest.raises(ValueError, match="invalid pattern"):
        parse_hypothesis("regex", "(New")
    s = score("regex", "New York")  # the same semantics through `re`
    assert (s.precision, s.recall) == pytest.approx((1.0, 1 / 3))


def test_scores_lbl_held_out_windows():
    from tests.helpers.planted_lbl import CFG, TOKEN_SET, planted

    acts, tokens, doc_ids, mask, vocab = planted()
    table = labelability(acts, tokens, doc_ids, mask, np.array([0, 1]), CFG, seed=3, vocab=vocab)
    tw = table.test_windows[0]
    windows = held_out_windows(tw.flat_idx, tokens, mask, CFG.window)
    assert np.array_equal(windows[:, -1], tokens.reshape(-1)[tw.flat_idx])
    h = parse_hypothesis("tokens", " ".join(vocab[t] for t in TOKEN_SET), vocab=vocab)
    s = score_hypothesis(h, windows, tw.label, vocab)
    assert (s.precision, s.recall, s.auroc) == (1.0, 1.0, 1.0)
    assert s.n_pos == table.n_test_pos[0]
    tw1 = table.test_windows[1]
    bigram = parse_hypothesis("rule", "prev=t6 AND cur=t0", vocab=vocab)
    s1 = score_hypothesis(bigram, held_out_windows(tw1.flat_idx, tokens, mask, CFG.window), tw1.label, vocab)
    assert s1.auroc == 1.0
