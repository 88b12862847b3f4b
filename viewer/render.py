"""Rendering data safely: token highlighting as escaped HTML, and any text from a file, a folder name, a URL or a
person as Markdown that Streamlit shows literally.

Each token is a `<span>` whose background opacity is its activation divided by the scale (the latent's largest
activation), so windows of one latent are comparable. Token strings come from the store's vocabulary and are always
HTML-escaped; ids outside the vocabulary and -1 (outside the sequence, padding) are skipped or shown as `�`.

Streamlit interprets Markdown (and its own extensions: `:emoji:`, `:material/icon:`, `:red[...]`, `$LaTeX$`) in
st.markdown, st.caption, alerts, headers and widget labels, so an image `![p](http://…)` in a vocabulary token would
make the browser fetch that URL. `md_text` and `md_code` turn any string into Markdown that renders as that string.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Sequence

import numpy as np

HIGHLIGHT_RGB = (255, 120, 0)
STYLE = (
    "<style>.xf-win{font-family:ui-monospace,monospace;font-size:0.85rem;line-height:1.9;margin:2px 0;"
    "white-space:pre-wrap}.xf-tok{padding:1px 1px;border-radius:3px}"
    ".xf-centre{outline:1.5px solid #333;font-weight:600}.xf-val{color:#888;font-size:0.75rem;margin-right:6px}"
    "</style>"
)


# Every ASCII punctuation character may be backslash-escaped in CommonMark; these few are left as they are because
# they mean nothing inside a line (line breaks are replaced, and a leading one is escaped below), which keeps
# ordinary messages readable in their Markdown source.
_INERT = set(",;'\"?=%.-")
_ESCAPE = re.compile("([" + re.escape("".join(c for c in string.punctuation if c not in _INERT)) + "])")
_LINE_BREAK = re.compile(r"\r\n|[\r\n\v\f\x85\u2028\u2029]")
_LINE_START = re.compile(r"^(\s*)(\d*)([-=.])")


def md_text(value: object) -> str:
    """`value` as Markdown that Streamlit renders as exactly that text, on one line (line breaks become spaces).

    Escapes Markdown, HTML, Streamlit's emoji, icon and colour directives and LaTeX (`$`), so nothing in it becomes
    an image, a link target, a tag or a formula. Bare URLs may still be shown as links (GFM autolinks), never fetched.
    """
    text = _ESCAPE.sub(r"\\\1", _LINE_BREAK.sub(" ", str(value)))
    return _LINE_START.sub(r"\1\2\\\3", text)  # `- x`, `= x`, `1. x` leading a line: no list, no heading


def md_code(value: object) -> str:
    """`value` as a Markdown code span (monospace, nothing inside interpreted), whatever backticks it holds."""
    text = _LINE_BREAK.sub(" ", str(value))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    # CommonMark strips one space at each end of a code span, so the padding lets it start or end with a backtick.
    return f"{fence} {text} {fence}"


def token_text(vocab: Sequence[str], tok: int) -> str:
    """The vocabulary string of a token id, or a replacement character for an id the vocabulary lacks."""
    return vocab[tok] if 0 <= tok < len(vocab) else "\ufffd"


def window_html(
    tokens: np.ndarray,
    acts: np.ndarray,
    vocab: Sequence[str],
    scale: float,
    centre: int | None = None,
    lead: str = "",
) -> str:
    """One window (W,) of token ids (-1 = none) with activations (W,) as a `<div>` of highlighted spans.

    Opacity = clip(act / scale, 0, 1); the centre column (the example's firing token) is outlined; each span's
    title shows the activation.
    """
    scale = float(scale) if np.isfinite(scale) and scale > 0 else 1.0
    parts: list[str] = []
    for j, (t, a) in enumerate(
        zip(np.asarray(tokens).tolist(), np.asarray(acts, np.float64).tolist(), strict=True)
    ):
        if t < 0:
            continue
        alpha = min(max(a / scale, 0.0), 1.0)
        r, g, b = HIGHLIGHT_RGB
        cls = "xf-tok xf-centre" if j == centre else "xf-tok"
        text = html.escape(token_text(vocab, t), quote=True)
        parts.append(
            f'<span class="{cls}" style="background:rgba({r},{g},{b},{alpha:.2f})" '
            f'title="{html.escape(token_text(vocab, t), quote=True)}: {a:.3g}">{text}</span>'
        )
    return '<div class="xf-win">' + lead + " ".join(parts) + "</div>"


def windows_html(
    tokens: np.ndarray,
    acts: np.ndarray,
    vocab: Sequence[str],
    scale: float,
    centre: int | None = None,
    values: np.ndarray | None = None,
) -> str:
    """Several windows (n, W) as one HTML block (with the style sheet), each row led by its centre activation."""
    rows = [STYLE]
    for i in range(len(tokens)):
        lead = f'<span class="xf-val">{float(values[i]):.3g}</span>' if values is not None else ""
        rows.append(window_html(tokens[i], acts[i], vocab, scale, centre, lead))
    return "\n".join(rows)
