"""The one exception type every xenofeat command turns into a clear one-line error and exit status 2.

Raise `UserError` for anything the user can fix (a bad option, a missing or corrupt file, a mismatch between
files). The CLI root prints `xenofeat: error: <message>` and exits 2; programming errors still raise normally.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one line naming the file or option at fault."""


def corrupt_rows(path: object, hook: str, start: int, stop: int, err: OSError) -> UserError:
    """The error for activation rows [start, stop) whose HDF5 chunks fail to read (checksum mismatch, truncation)."""
    return UserError(f"{path}: activations of {hook} rows {start}-{stop} are corrupt ({err})")
