"""Run a test against a chosen subset of the registered describers (for example LBL-v1's token, rule and semantic
describers, whose numbers a fixture pins), restoring the full registry afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from features.labelability import register_describer, registered_describers, unregister_describer

V1 = ("token", "rule", "semantic")
"""LBL-v1's describers: the ones `tests/fixtures/lbl_planted_expected.json` was computed with."""


@contextmanager
def only_describers(names: tuple[str, ...] = V1) -> Iterator[None]:
    """Unregister every describer not in `names` for the duration of the block."""
    removed = [unregister_describer(d.name) for d in registered_describers() if d.name not in names]
    try:
        yield
    finally:
        for d in removed:
            register_describer(d, replace=True)
