"""One-frame mailboxes (one per camera) between the ROS callbacks and the inference worker.

Latest frame wins: a frame that arrives while another of the same camera is waiting
replaces it (and is counted as dropped), so the worker never works through a backlog of
stale frames.
"""
from __future__ import annotations

import threading
from typing import Any


class LatestSlots:
    """One latest-frame mailbox per camera, emptied together.

    ``take_all`` hands over every waiting frame at once (at most one per camera, the newest),
    so the worker runs them as one batch and no camera starves another."""

    def __init__(self, keys):
        self._cond = threading.Condition()
        self._items: dict[Any, Any] = {}
        self._closed = False
        self.dropped = {key: 0 for key in keys}

    def put(self, key, item: Any) -> None:
        with self._cond:
            if key in self._items:
                self.dropped[key] += 1
            self._items[key] = item
            self._cond.notify()

    def take_all(self, timeout: float | None = None) -> dict:
        """Every waiting item by key (empty after ``timeout`` seconds or once closed)."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            items, self._items = self._items, {}
            return items

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
            self._items = {}
