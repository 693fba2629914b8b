"""A least-recently-used dict for things kept per network input size."""
from __future__ import annotations

from collections import OrderedDict

# Static-shape engines (sessions, traces, compiled models) and per-shape tables kept, one per
# network input size: a stream of odd sizes must not keep one each (docs/benchmarks.md has
# their sizes). The camera's size plus a couple of others stay; the least recently used goes.
ENGINES_KEPT = 3


class ShapeLru(OrderedDict):
    """A dict of at most ``size`` entries; reading an entry makes it the most recent, and
    storing one beyond ``size`` drops the least recently used."""

    def __init__(self, size: int = ENGINES_KEPT):
        super().__init__()
        self.size = size

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
