"""The label attempts log of a run: every hypothesis a person tried on a latent, with its scores.

`RUN/features/labels.jsonl` holds one JSON object per line, appended as attempts are made (in the viewer's label
tester, or by any other caller):

    {"latent": 12, "who": "ana", "when": "2025-01-01T12:00:00+00:00", "kind": "tokens", "text": "the, a",
     "precision": 0.5, "recall": 0.25, "auroc": 0.61, "n_pos": 40, "n_neg": 80}

NaN scores are written as null. Each attempt is written with one `write` on a file opened for appending, so
concurrent viewers never interleave half lines; a line cut short by a crash is skipped (with a warning) when read.
The exporter reads this file for a feature set's "labels tried".
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from activations.errors import UserError
from features.store import FEATURES_DIR

LABELS_FILE = "labels.jsonl"
SCORE_KEYS = ("precision", "recall", "auroc", "n_pos", "n_neg")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """One label attempt as stored in labels.jsonl."""

    latent: int
    """The latent of the reference SAE the hypothesis describes."""
    who: str
    """Who tried it (free text; never used as a path)."""
    when: str
    """ISO-8601 UTC time of the attempt."""
    kind: str
    """Hypothesis kind: tokens, regex or rule (see features.label_tester)."""
    text: str
    """The hypothesis as typed."""
    precision: float | None
    recall: float | None
    auroc: float | None
    n_pos: int | None
    n_neg: int | None


def labels_path(run: str | Path) -> Path:
    """`RUN/features/labels.jsonl` (accepts the run folder or its `features/` folder)."""
    run = Path(run)
    folder = run if run.name == FEATURES_DIR else run / FEATURES_DIR
    return folder / LABELS_FILE


def _clean(v: Any) -> float | None:
    """A score as a JSON-safe float: None for missing, NaN or infinite."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def append_attempt(
    run: str | Path,
    latent: int,
    who: str,
    hypothesis_kind: str,
    text: str,
    scores: Any,
) -> Attempt:
    """Append one attempt to `RUN/features/labels.jsonl` and return it.

    `scores` is a `features.label_tester.HypothesisScore` (or any dataclass or mapping with precision, recall,
    auroc, n_pos, n_neg). The run must hold a feature store folder (`features/`); nothing is created elsewhere.
    """
    path = labels_path(run)
    if not path.parent.is_dir():
        raise UserError(f"{path.parent}: no feature store folder; run `xenofeat score` first")
    sc = asdict(scores) if is_dataclass(scores) else dict(scores)
    values = {k: _clean(sc.get(k)) for k in SCORE_KEYS}
    for k in ("n_pos", "n_neg"):
        values[k] = None if values[k] is None else int(values[k])
    attempt = Attempt(
        latent=int(latent),
        who=str(who).strip() or "anonymous",
        when=datetime.now(UTC).isoformat(timespec="seconds"),
        kind=str(hypothesis_kind),
        text=str(text),
        **values,
    )
    line = (json.dumps(asdict(attempt), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    # one write() on an O_APPEND descriptor: concurrent writers never interleave inside a line
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return attempt


def read_attempts(run: str | Path, latent: int | None = None) -> list[Attempt]:
    """All attempts of the run in the order they were made (only `latent`'s when given); [] when none yet."""
    path = labels_path(run)
    if not path.exists():
        return []
    out: list[Attempt] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: unreadable ({err})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            att = Attempt(**{k: rec.get(k) for k in Attempt.__dataclass_fields__})
        except (json.JSONDecodeError, TypeError) as err:
            # a crash mid-write can only cut the last line; anything else is a damaged file worth hearing about
            log.warning("%s:%d: skipping an unreadable label attempt (%s)", path, n, err)
            continue
        if latent is None or att.latent == int(latent):
            out.append(att)
    return out
