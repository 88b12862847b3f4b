"""Publishing a feature store: `RUN/features.tmp/` becomes `RUN/features/`, recoverable at every instant.

A score writes its store into `RUN/features.tmp/`. Publishing it, under the run's lock (`RUN/.features.lock`, the
same lock the viewer's writers of sets.json and labels.jsonl take):

1. `features.tmp/READY` is written: the commit point. Before it, an interrupted score is rolled back (the unfinished
   folder is discarded by the next score); from it on, the publish is rolled forward by whoever comes next;
2. the person's files (`sets.json`, `labels.jsonl`, and `llm.jsonl`, the answers `xenofeat explain` paid for) are
   copied from `features/` into `features.tmp/`;
3. `features/` is renamed to `features.old/`;
4. `features.tmp/` is renamed to `features/`;
5. any person's file that `features/` lacks is taken from `features.old/`, and `features.old/` is removed.

`recover(run)` performs whatever steps are left, and is called by the next score (`prepare`), by `publish` itself,
and by every reader (`features.store.FeatureStore.open`), so a process killed at any instant leaves a run that the
next command completes (after READY) or rolls back (before it, restoring `features.old/` if need be); the person's
files are never deleted. The lock is an `fcntl.flock` on a file beside the store: the kernel releases it when its
holder dies, so a reader that gets the lock while a `READY` store is waiting knows the publisher is gone. A
`features/`, `features.tmp/` or `features.old/` that is a symbolic link is refused in one line (renaming a link
would publish beside its target and leave the target behind).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from activations.errors import UserError
from activations.faults import fault_point
from activations.overwrite import check_replace_store
from features.store.schema import FEATURES_DIR, TMP_DIR

OLD_DIR = "features.old"
READY = "READY"
LOCK_FILE = ".features.lock"
USER_FILES = (
    "sets.json",
    "labels.jsonl",
    "llm.jsonl",
)  # the viewer's and `xenofeat explain`'s, never scoring's
log = logging.getLogger(__name__)


@contextmanager
def store_lock(run: Path) -> Iterator[None]:
    """Hold the run's store lock (exclusive; blocks until free). Used by publishing and by the user-data writers."""
    path = Path(run) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise UserError(
            f"{path}: cannot create the lock file of the feature store ({err.strerror})"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _refuse_links(run: Path) -> None:
    for name in (FEATURES_DIR, TMP_DIR, OLD_DIR):
        if (run / name).is_symlink():
            raise UserError(
                f"{run / name}: is a symbolic link; xenofeat publishes a store only into a real folder "
                f"(replace the link by the folder it points to, or score into another run folder)"
            )


def needs_recovery(run: Path) -> bool:
    """True when an interrupted publish left work to do (cheap: two stat calls, no lock)."""
    return (run / OLD_DIR).exists() or (run / TMP_DIR / READY).exists()


def _copy_user_files(src: Path, dst: Path, *, replace: bool) -> None:
    """Copy the person's files from src to dst (each through a temporary name, so a copy is whole or absent)."""
    for name in USER_FILES:
        if not (src / name).is_file() or ((dst / name).exists() and not replace):
            continue
        part = dst / f".{name}.copy"
        shutil.copy2(src / name, part)
        os.replace(part, dst / name)


def _roll(run: Path) -> None:
    """Steps 2-5 of the module docstring from whatever state a killed publish left (call under the lock)."""
    final, tmp, old = run / FEATURES_DIR, run / TMP_DIR, run / OLD_DIR
    if old.exists() and final.exists():
        _finish_old(final, old)  # a cleanup that was cut short; `final` is current
    if (tmp / READY).exists():
        if final.exists():
            _copy_user_files(final, tmp, replace=True)
            fault_point("publish.after_copy")
            os.replace(final, old)
            fault_point("publish.between_renames")
        os.replace(tmp, final)
        fault_point("publish.after_renames")
    if old.exists():
        if final.exists():
            _finish_old(final, old)
        else:  # the store was moved aside but no finished one replaced it: put it back
            log.warning("%s: restoring the previous feature store from %s", final, old)
            os.replace(old, final)
    (final / READY).unlink(missing_ok=True)  # the published store's leftover commit mark


def _finish_old(final: Path, old: Path) -> None:
    _copy_user_files(old, final, replace=False)
    shutil.rmtree(old)


def recover(run: str | Path) -> None:
    """Complete or roll back an interrupted publish in `run` (nothing to do: returns at once, takes no lock)."""
    run = Path(run)
    if not needs_recovery(run):
        return
    _refuse_links(run)
    with store_lock(run):
        if needs_recovery(run):  # another process may have finished it while we waited
            log.info("%s: completing an interrupted publish of the feature store", run)
            _roll(run)


def prepare(run: Path, overwrite: bool) -> Path:
    """Check RUN/features before any work; returns a fresh RUN/features.tmp (an unfinished one is discarded)."""
    run = Path(run)
    _refuse_links(run)
    recover(run)
    final, tmp = run / FEATURES_DIR, run / TMP_DIR
    if final.exists():
        if not overwrite:
            raise UserError(f"{final}: already scored; pass --overwrite to score again")
        check_replace_store(final)
    if tmp.exists():
        log.info("discarding the unfinished score in %s (an earlier score was interrupted)", tmp)
        shutil.rmtree(tmp)
    run.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    return tmp


def publish(tmp: Path, run: Path) -> Path:
    """Publish the finished store in `tmp` (RUN/features.tmp) as RUN/features; returns RUN/features."""
    run = Path(run)
    _refuse_links(run)
    with store_lock(run):
        ready = tmp / READY
        with ready.open("w", encoding="utf-8") as fh:  # the commit point: from here on, roll forward
            fh.write("the store in this folder is complete; the next xenofeat command publishes it\n")
            fh.flush()
            os.fsync(fh.fileno())
        fault_point("publish.ready")
        _roll(run)
    return run / FEATURES_DIR
