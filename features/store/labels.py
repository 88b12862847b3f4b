"""The label attempts log of a run: every hypothesis a person tried on a latent, with its scores.

`RUN/features/labels.jsonl` holds one JSON object per line, appended as attempts are made (in the viewer's label
tester, or by any other caller):

    {"latent": 12, "who": "ana", "when": "2025-01-01T12:00:00+00:00", "kind": "tokens", "text": "the, a",
     "precision": 0.5, "recall": 0.25, "auroc": 0.61, "n_pos": 40, "n_neg": 80}

NaN scores are written as null. Each attempt is appended with one `write`, under the run's store lock
(`features.store.publish.store_lock`, which publishing a rescore takes too, so an attempt saved during a rescore is carried
into the new store), so concurrent viewers neither interleave nor lose lines. A line cut short by a crash (not
JSON) is skipped with a warning when read; a line that is JSON but not a valid attempt (a list, a latent that is not
an index, a time that is not ISO-8601 text, ...) is a one-line `UserError` naming the line. The exporter reads this
file for a feature set's "labels tried".
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
from features.store.publish import FEATURES_DIR, store_lock

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
    with store_lock(path.parent.parent):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a line cut short by a crash stays on its own line (skipped when read)
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
        except json.JSONDecodeError as err:
            # what a crash mid-write leaves: part of a line; the next append starts a fresh line after it
            log.warning("%s:%d: skipping a label attempt cut short (%s)", path, n, err)
            continue
        try:
            att = check_attempt(rec)
        except ValueError as err:
            raise UserError(f"{path}:{n}: not a valid label attempt ({err})") from None
        if latent is None or att.latent == int(latent):
            out.append(att)
    return out


def _is_int(v: Any) -> bool:  # noqa: ANN401
    return isinstance(v, int) and not isinstance(v, bool)


def check_attempt(rec: Any) -> Attempt:  # noqa: ANN401 - anything read from the file
    """An Attempt from one parsed line, every field checked; ValueError naming the first bad field."""
    if not isinstance(rec, dict):
        raise ValueError(f"a line must be a JSON object, got {type(rec).__name__}")
    if not _is_int(rec.get("latent")) or rec["latent"] < 0:
        raise ValueError(f"latent must be a latent index, got {rec.get('latent')!r:.40}")
    for key in ("who", "kind", "text"):
        if not isinstance(rec.get(key), str):
            raise ValueError(f"{key} must be text, got {type(rec.get(key)).__name__}")
    when = rec.get("when")
    try:
        if not isinstance(when, str):
            raise ValueError
        datetime.fromisoformat(when)
    except ValueError:
        raise ValueError(f"when must be an ISO-8601 time as text, got {when!r:.40}") from None
    for key in ("precision", "recall", "auroc"):
        v = rec.get(key)
        if v is not None and not (isinstance(v, int | float) and not isinstance(v, bool)):
            raise ValueError(f"{key} must be a number or null, got {v!r:.40}")
    for key in ("n_pos", "n_neg"):
        v = rec.get(key)
        if v is not None and not (_is_int(v) and v >= 0):
            raise ValueError(f"{key} must be a count or null, got {v!r:.40}")
    return Attempt(**{k: rec.get(k) for k in Attempt.__dataclass_fields__})
