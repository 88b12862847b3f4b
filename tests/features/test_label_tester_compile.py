"""The label tester's regex kind: patterns costly to compile are refused quickly, every compile error is a ValueError.

The viewer's label panel shows a ValueError's message to the person; anything else would be a traceback in the page,
and a pattern `regex` unrolls at compile time could hang the viewer or exhaust its memory.
"""

from __future__ import annotations

import resource

import numpy as np
import pytest

from features import label_tester as lt
from features.label_tester import parse_hypothesis, score_hypothesis

needs_regex = pytest.mark.skipif(lt._regex is None, reason="needs the `regex` package")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("(?:(?:a{1000}){1000}){1000}", "unroll"),
        ("(?:a{1000}){1000}", "unroll"),
        ("x" * (lt.MAX_PATTERN + 1), "characters long"),
        ("a{99999999999}", "invalid pattern"),
        ("[z-a]", "invalid pattern"),
        ("a**", "invalid pattern"),
    ],
)
def test_costly_or_broken_patterns_are_a_value_error(pattern, words):
    before = _rss_mib()
    with pytest.raises(ValueError, match=words):
        parse_hypothesis("regex", pattern)
    # refused before anything was unrolled: a compiled 10^6-item pattern alone takes ~270 MiB
    assert _rss_mib() - before < 100


@needs_regex
def test_deep_nesting_is_a_value_error_not_a_recursion_error():
    with pytest.raises(ValueError, match="regex:"):
        parse_hypothesis("regex", "(" * 400 + "a" + ")" * 400)


@needs_regex
def test_regex_only_syntax_is_compiled_in_a_bounded_child():
    """Python's parser cannot read \\p{L}, so the static count is unavailable; the child runs out, not us."""
    before = _rss_mib()
    with pytest.raises(ValueError, match="MiB"):
        parse_hypothesis("regex", r"(?:(?:a{1000}){1000}){1000}\p{L}")
    assert _rss_mib() - before < 100
    assert parse_hypothesis("regex", r"\p{Lu}\w+$").kind == "regex"


def test_static_size_counts_unrolled_repeats():
    assert lt._static_size("abc") == 3
    assert lt._static_size("(?:ab){10}") == 20
    assert lt._static_size("(?:a{10}){10}") == 100
    assert lt._static_size("a+") == 1  # unbounded repeats are not unrolled
    assert lt._static_size(r"\p{L}") is None


def test_ordinary_patterns_still_score():
    vocab = ["new", "york", "city", "the"]
    windows = np.array([[0, 1], [3, 1], [0, 2], [3, 3]])
    labels = np.array([True, False, False, False])
    h = parse_hypothesis("regex", r"new york$", vocab=vocab)
    sc = score_hypothesis(h, windows, labels, vocab)
    assert (sc.precision, sc.recall, sc.auroc) == (1.0, 1.0, 1.0)
    counted = parse_hypothesis("regex", r"(?:e\w{2}){1}w? york$")
    assert counted.kind == "regex"
