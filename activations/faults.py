"""Deterministic fault injection: kill the process hard at a named point, so crash-safety tests need no races.

Set `XENOFEAT_FAULT=NAME` (or `NAME:N`) and the process SIGKILLs itself the N-th time (default the first) it passes
`fault_point(NAME)`. The points (grep `fault_point(` for the full list):

| name | where |
| --- | --- |
| `cache.after_chunk` | `activations.writer.CacheWriter.append`, once the chunk and its counter are on disk |
| `train.after_step` | `sae_training.trainer`, after each training step (and its checkpoint, if one is due) |
| `score.stage:STAGE` | `features.score`, when a stage ends (stream, support, function_mdl, stability, atomicity, geometry, labelability, control, write) |
| `publish.STEP` | `features.store.publish`, at each step of publishing a store (ready, after_copy, between_renames, after_renames) |
| `export.before_rename` | `features.exporters`, when the export is complete in its hidden folder, before it takes its name |

A trailing `:N` of digits is the hit count; anything else after a colon is part of the name
(`score.stage:labelability` is hit once, `cache.after_chunk:3` on the third chunk). Under torchrun every rank sees
the same variable; set `XENOFEAT_FAULT_RANK=R` as well to kill only the process whose RANK is R (each rank counts
its own hits). With the variable unset a point
costs one dictionary lookup. SIGKILL, not an exception: nothing is flushed, closed or cleaned up, exactly as when
the machine loses power or the kernel kills the process.
"""

from __future__ import annotations

import os
import signal

ENV = "XENOFEAT_FAULT"
RANK_ENV = "XENOFEAT_FAULT_RANK"

# The one piece of module state: how often each point was passed in this process. It is acceptable because it
# exists only to count towards a kill of this very process, is read by nothing else, and stays empty (and unused)
# unless XENOFEAT_FAULT is set; a child process starts its own count, so "the N-th hit" is per process.
_hits: dict[str, int] = {}


def parse_fault(spec: str) -> tuple[str, int]:
    """`NAME` -> (NAME, 1); `NAME:N` with N digits -> (NAME, N). ValueError on an empty name or N < 1."""
    head, sep, tail = spec.strip().rpartition(":")
    name, count = (head, int(tail)) if sep and tail.isdigit() else (spec.strip(), 1)
    if not name or count < 1:
        raise ValueError(f"{ENV}={spec!r}: expected NAME or NAME:N with N >= 1")
    return name, count


def fault_point(name: str) -> None:
    """SIGKILL this process if XENOFEAT_FAULT names this point and this is its N-th hit; otherwise nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, count = parse_fault(spec)
    if name != target:
        return
    only = os.environ.get(RANK_ENV)
    if only is not None and only != os.environ.get("RANK", "0"):
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == count:
        # one unbuffered line, so a test (or a person) can tell an injected kill from a real crash
        os.write(2, f"xenofeat: fault injected at {name} (hit {count})\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
