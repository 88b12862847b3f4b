"""Read-ahead for cache readers: `prefetched` runs an iterator in a background thread a few items ahead.

`ActivationCache.scan` (scoring) and `sae_training.data.PoolSchedule` (training) read whole HDF5 chunks (the cheap
unit: one decompression and one checksum each) through it, so disk reads overlap the consumer's compute.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetched(make: Callable[[], Iterator[T]], depth: int) -> Iterator[T]:
    """Run the iterator `make()` in a daemon thread, `depth` items ahead; errors re-raise in the consumer."""
    if depth <= 0:
        yield from make()
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in make():
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            q.put(err)

    thread = threading.Thread(target=work, daemon=True, name="xenofeat-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
