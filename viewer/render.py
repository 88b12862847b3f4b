"""Token highlighting: a window of token ids and activations as escaped HTML, no model needed.

Each token is a `<span>` whose background opacity is its activation divided by the scale (the latent's largest
activation), so windows of one latent are comparable. Token strings come from the store's vocabulary and are always
HTML-escaped; ids outside the vocabulary and -1 (outside the sequence, padding) are skipped or shown as `�`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

HIGHLIGHT_RGB = (255, 120, 0)
STYLE = (
    "<style>.xf-win{font-family:ui-monospace,monospace;font-size:0.85rem;line-height:1.9;margin:2px 0;"
    "white-space:pre-wrap}.xf-tok{padding:1px 1px;border-radius:3px}"
    ".xf-centre{outline:1.5px solid #333;font-weight:600}.xf-val{color:#888;font-size:0.75rem;margin-right:6px}"
    "</style>"
)


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
