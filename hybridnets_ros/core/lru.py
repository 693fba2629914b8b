"""A least-recently-used dict for things kept per network input size."""
from __future__ import annotations

import threading
from collections import OrderedDict

from .memory import release_freed_memory

# Static-shape engines (sessions, traces, compiled models) and per-shape tables kept, one per
# network input size: a stream of odd sizes must not keep one each (docs/benchmarks.md has
# their sizes). The camera's size plus a couple of others stay; the least recently used goes.
# The node's `max_engines` setting changes it for the engines.
ENGINES_KEPT = 3


class ShapeLru(OrderedDict):
    """A dict of at most ``size`` entries; reading an entry makes it the most recent, and
    storing one beyond ``size`` drops the least recently used and gives the memory it held
    back to the operating system (an engine is hundreds of MB that RSS would go on counting).
    Safe to use from two threads (an engine built in the background while another runs)."""

    def __init__(self, size: int = ENGINES_KEPT):
        super().__init__()
        self.size = size
        self._lock = threading.RLock()

    def __getitem__(self, key):
        with self._lock:
            value = super().__getitem__(key)
            self.move_to_end(key)
            return value

    def __setitem__(self, key, value):
        with self._lock:
            super().__setitem__(key, value)
            self.move_to_end(key)
            evicted = []
            while len(self) > self.size:
                evicted.append(self.popitem(last=False))
        if evicted:
            del evicted  # the last references: freed before the trim
            release_freed_memory()

    def __contains__(self, key) -> bool:
        with self._lock:
            return super().__contains__(key)
