"""The label tester: score a person's hypothesis about a latent on the held-out windows LBL-v1 used.

A hypothesis is one of three kinds (`parse_hypothesis(kind, text)`):

- `tokens`: the window's current token is one of the given vocabulary strings. Separate tokens by spaces or commas;
  quote a token that contains a space, comma or quote: `the, "of", " and"` (backslash escapes inside quotes).
- `regex`: a regular expression over the window text. The text is the window's tokens (the preceding context and
  then the current token, last) joined by single spaces, exactly as the vocabulary spells them. A window counts as
  predicted-firing when a match *reaches into the current token*: trying every start position, some match ends
  after the current token's first character. So `^` anchors at the start of the context and `$` at the end of the
  current token. Matching is bounded in time: with the `regex` package (installed with transformers) each call
  gets the remaining time budget and a pattern that backtracks catastrophically stops with a clear message; without
  it, patterns with nested quantifiers are refused up front and the text is capped in length. Compiling is bounded
  too: patterns are at most MAX_PATTERN characters, and nested repetition counts that `regex` would unroll at
  compile time (`(?:(?:a{1000}){1000}){1000}` is 10^9 copies) are refused when their product exceeds
  MAX_EXPANDED; a pattern Python's own parser cannot read (syntax only `regex` knows) is first compiled in a child
  process with a time and memory limit.
- `rule`: terms `cur=TOKEN`, `prev=TOKEN`, `bag=TOKEN` (TOKEN anywhere in the `bag` tokens before the current one)
  joined by AND / OR, AND binding tighter: `prev=New AND cur=York OR cur=NYC`. Quote tokens as above.

`score_hypothesis` returns precision, recall and AUROC of the hypothesis's yes/no prediction against the labels;
for a yes/no prediction AUROC = (TPR + 1 - FPR) / 2.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from features.labelability.metrics import auroc
from features.labelability.windows import context_tokens, window_matrix

try:  # the `regex` package gives a timeout; fall back to `re` with a static guard
    import regex as _regex
except ImportError:  # pragma: no cover - depends on the environment
    _regex = None

KINDS = ("tokens", "regex", "rule")
SLOTS = ("cur", "prev", "bag")
MAX_TEXT = 4000  # characters of window text matched (context trimmed from the left beyond this)
_ITEM = re.compile(r'\s*(?:"(?P<q>(?:[^"\\]|\\.)*)"|(?P<w>[^\s,"]+))\s*,?')
_TERM = re.compile(
    r'\s*(?:(?P<slot>[A-Za-z]+)\s*=\s*(?:"(?P<q>(?:[^"\\]|\\.)*)"|(?P<v>[^\s"]+))|(?P<op>\S+))'
)
MAX_PATTERN = 1000  # characters; a label is a short description, not a program
MAX_EXPANDED = 20_000  # pattern size with every counted repeat unrolled, as `regex` does when compiling
PROBE_TIMEOUT_S = 5.0  # a child compiling a pattern Python's parser cannot read gets this long ...
PROBE_MEMORY = 256 << 20  # ... and this much address space
_PROBE = (
    "import sys\n"
    "try:\n"
    "    import resource\n"
    "    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))\n"
    "except (ImportError, ValueError, OSError):\n"
    "    pass\n"
    "import regex\n"
    "try:\n"
    "    regex.compile(sys.stdin.read())\n"
    "except MemoryError:\n"
    "    sys.exit(3)\n"
    "except Exception as err:\n"
    "    sys.stdout.write(str(err)[:300])\n"
    "    sys.exit(4)\n"
)
_NESTED = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*[+*{]")


@dataclass(frozen=True)
class Hypothesis:
    """A parsed hypothesis; which fields are used depends on `kind`."""

    kind: Literal["tokens", "regex", "rule"]
    text: str
    """What the person typed."""
    tokens: frozenset[str] = frozenset()
    """kind tokens: the vocabulary strings of the current token."""
    clauses: tuple[tuple[tuple[str, str], ...], ...] = ()
    """kind rule: an OR of AND-clauses of (slot, token) terms."""


@dataclass(frozen=True)
class HypothesisScore:
    """How a hypothesis predicts the held-out labels."""

    precision: float
    """Firing windows among those it selects (NaN when it selects none)."""
    recall: float
    """Firing windows it selects, of all firing windows."""
    auroc: float
    """AUROC of the yes/no prediction: (TPR + 1 - FPR) / 2."""
    n_pos: int
    n_neg: int


def _unquote(quoted: str | None, bare: str | None) -> str:
    return re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else str(bare)


def _split_items(text: str) -> list[str]:
    items, at = [], 0
    while at < len(text.rstrip()):
        m = _ITEM.match(text, at)
        if not m or m.end() == at:
            raise ValueError(
                f"tokens: cannot read {text[at : at + 20]!r}; quote tokens with spaces or commas"
            )
        items.append(_unquote(m["q"], m["w"]))
        at = m.end()
    return items


def _parse_rule(text: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    clauses: list[list[tuple[str, str]]] = [[]]
    expect_term, at = True, 0
    while at < len(text.rstrip()):
        m = _TERM.match(text, at)
        if m is None:  # only trailing space can fail to match
            break
        at = m.end()
        if expect_term:
            if m["slot"] is None:
                raise ValueError(f"rule: expected a term like cur=TOKEN, got {m['op']!r}")
            if m["slot"].lower() not in SLOTS:
                raise ValueError(f"rule: unknown slot {m['slot']!r}; use cur=, prev= or bag=")
            clauses[-1].append((m["slot"].lower(), _unquote(m["q"], m["v"])))
        else:
            op = (m["op"] or "").upper()
            if op == "OR":
                clauses.append([])
            elif op != "AND":
                raise ValueError(f"rule: expected AND or OR between terms, got {m.group(0).strip()!r}")
        expect_term = not expect_term
    if expect_term:
        raise ValueError("rule: empty, or ends with AND/OR; write terms like prev=New AND cur=York")
    return tuple(tuple(c) for c in clauses)


def _expanded_size(node: object) -> int:
    """Size of a parsed pattern (re._parser's tree) with each counted repeat unrolled to its largest count."""
    from re import _constants as c
    from re import _parser as sre

    if isinstance(node, sre.SubPattern):
        return sum(_expanded_size(item) for item in node.data)
    if isinstance(node, tuple) and len(node) == 2 and isinstance(node[0], c._NamedIntConstant):
        op, av = node
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            count = lo if hi == c.MAXREPEAT else hi
            return max(1, count) * _expanded_size(sub)
        return 1 + _expanded_size(av)
    if isinstance(node, tuple | list):
        return sum(_expanded_size(item) for item in node)
    return 0


def _static_size(pattern: str) -> int | None:
    """The unrolled size of a pattern Python's parser reads, or None for syntax only `regex` knows."""
    from re import _parser as sre

    try:
        return _expanded_size(sre.parse(pattern))
    except (re.error, OverflowError, RecursionError, ValueError, TypeError):
        return None


def _probe_compile(pattern: str) -> None:
    """Compile with `regex` in a child with a time and memory limit; ValueError if it fails or runs out."""
    try:
        r = subprocess.run(
            [sys.executable, "-I", "-c", _PROBE, str(PROBE_MEMORY)],
            input=pattern,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as err:
        raise ValueError(
            f"regex: compiling the pattern took longer than {PROBE_TIMEOUT_S:g} s; simplify it"
        ) from err
    if r.returncode == 4:
        raise ValueError(f"regex: invalid pattern: {r.stdout.strip()}")
    if r.returncode != 0:
        raise ValueError(
            f"regex: compiling the pattern needs more than {PROBE_MEMORY >> 20} MiB; use smaller repeat counts"
        )


def _compile(pattern: str):
    """Compile a person's pattern with bounded cost; every failure is a ValueError with a message for them."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"regex: the pattern is {len(pattern)} characters long (at most {MAX_PATTERN})")
    size = _static_size(pattern)
    if size is not None and size > MAX_EXPANDED:
        raise ValueError(
            f"regex: nested repeat counts unroll to about {size:,} pattern items (at most {MAX_EXPANDED:,}); "
            "use smaller counts or + and *"
        )
    if _regex is not None:
        if size is None:
            _probe_compile(pattern)
        try:
            return _regex.compile(pattern)
        except _regex.error as err:
            raise ValueError(f"regex: invalid pattern: {err}") from err
        except (RecursionError, MemoryError, OverflowError, ValueError, TypeError, IndexError) as err:
            raise ValueError(f"regex: cannot compile the pattern ({type(err).__name__}: {err})") from err
    if _NESTED.search(pattern):
        raise ValueError("regex: nested quantifiers such as (a+)+ can take forever; rewrite without them")
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(f"regex: invalid pattern: {err}") from err
    except (RecursionError, MemoryError, OverflowError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"regex: cannot compile the pattern ({type(err).__name__}: {err})") from err


def parse_hypothesis(kind: str, text: str, *, vocab: list[str] | None = None) -> Hypothesis:
    """Parse what a person typed; ValueError with a message fit to show them. With `vocab`, tokens are checked."""
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if not text.strip():
        raise ValueError(f"{kind}: the hypothesis is empty")
    if kind == "tokens":
        h = Hypothesis("tokens", text, tokens=frozenset(_split_items(text)))
    elif kind == "regex":
        _compile(text)
        h = Hypothesis("regex", text)
    else:
        h = Hypothesis("rule", text, clauses=_parse_rule(text))
    if vocab is not None:
        _check_tokens(h, set(vocab))
    return h


def _check_tokens(h: Hypothesis, known: set[str]) -> None:
    wanted = set(h.tokens) | {tok for clause in h.clauses for _, tok in clause}
    missing = sorted(wanted - known)
    if missing:
        shown = ", ".join(repr(t) for t in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"{h.kind}: not in the vocabulary: {shown} (tokens are spelt as the tokenizer spells them)"
        )


def _ids(vocab: list[str], names: set[str] | frozenset[str]) -> np.ndarray:
    return np.array([i for i, s in enumerate(vocab) if s in names], np.int64)


def _predict_regex(h: Hypothesis, windows: np.ndarray, vocab: list[str], timeout_s: float) -> np.ndarray:
    pattern = _compile(h.text)
    deadline = time.monotonic() + timeout_s
    pred = np.zeros(len(windows), bool)
    for i, row in enumerate(windows):
        toks = [vocab[t] for t in row if t >= 0]
        context = " ".join(toks[:-1])
        text = f"{context} {toks[-1]}" if context else toks[-1]
        cur_start = len(text) - len(toks[-1])
        if len(text) > MAX_TEXT:
            cur_start -= len(text) - MAX_TEXT
            text = text[-MAX_TEXT:]
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            if _regex is not None:
                pred[i] = any(
                    m.end() > cur_start for m in pattern.finditer(text, overlapped=True, timeout=left)
                )
            else:  # same semantics with `re`: the match at every start position
                pred[i] = any(
                    (m := pattern.match(text, s)) is not None and m.end() > cur_start
                    for s in range(len(text) + 1)
                )
        except TimeoutError as err:
            raise ValueError(
                f"regex: matching took longer than {timeout_s:g} s on {len(windows)} windows; the pattern "
                "probably backtracks catastrophically (nested or overlapping quantifiers): simplify it"
            ) from err
    return pred


def predict(
    h: Hypothesis, windows: np.ndarray, vocab: list[str], *, bag: int = 8, timeout_s: float = 2.0
) -> np.ndarray:
    """(n,) bool: where the hypothesis says the latent fires, for windows (n, w + 1) of token ids (-1 = none)."""
    _check_tokens(h, set(vocab))
    if h.kind == "tokens":
        return np.isin(windows[:, -1], _ids(vocab, h.tokens))
    if h.kind == "regex":
        return _predict_regex(h, windows, vocab, timeout_s)
    cols = {"cur": windows[:, -1:], "prev": windows[:, -2:-1], "bag": windows[:, -1 - bag : -1]}
    pred = np.zeros(len(windows), bool)
    for clause in h.clauses:
        hit = np.ones(len(windows), bool)
        for slot, tok in clause:
            hit &= np.isin(cols[slot], _ids(vocab, {tok})).any(axis=1)
        pred |= hit
    return pred


def score_hypothesis(
    hypothesis: Hypothesis,
    windows: np.ndarray,
    labels: np.ndarray,
    vocab: list[str],
    *,
    bag: int = 8,
    timeout_s: float = 2.0,
) -> HypothesisScore:
    """Precision, recall and AUROC of a hypothesis on windows (n, w + 1) with bool labels (n,).

    Use the held-out windows of `LBLTable.test_windows[latent]` (see `held_out_windows`) so a person's label is
    judged on exactly the data the describers were judged on. `bag` should be the LBL config's `rule_bag`.
    """
    labels = np.asarray(labels, bool)
    pred = predict(hypothesis, windows, vocab, bag=bag, timeout_s=timeout_s)
    tp = int((pred & labels).sum())
    n_sel, n_pos = int(pred.sum()), int(labels.sum())
    return HypothesisScore(
        precision=tp / n_sel if n_sel else float("nan"),
        recall=tp / n_pos if n_pos else float("nan"),
        auroc=float(auroc(pred.astype(np.float64), labels)[0]),
        n_pos=n_pos,
        n_neg=int(len(labels) - n_pos),
    )


def held_out_windows(flat_idx: np.ndarray, tokens: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """(n, width + 1) token windows of held-out centres `flat_idx` over the (n_seq, L) cache grid."""
    flat, pos = context_tokens(tokens, mask)
    return window_matrix(np.asarray(flat_idx, np.int64), flat, pos, width)
