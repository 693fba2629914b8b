"""Rates, latencies and rejection counts of the perception node (no ROS types)."""
from __future__ import annotations

import collections
import threading
import time

import numpy as np


class RateMeter:
    """Events per second over a sliding window of the most recent ``window`` seconds."""

    def __init__(self, window: float = 5.0):
        self.window = window
        self._times: collections.deque[float] = collections.deque()
        self.total = 0

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)
        self.total += 1

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(now - self._times[0], 1e-9)


class NodeStats:
    """Thread-safe counters shared by the callbacks, the worker and the diagnostics timer."""

    def __init__(self, latency_window: int = 200):
        self._lock = threading.Lock()
        self.received = RateMeter()
        self.processed = RateMeter()
        self._latencies: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._ages: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._stages: dict[str, collections.deque[float]] = {}
        self.rejected: collections.Counter[str] = collections.Counter()
        self.skipped_no_subscribers = 0
        self.errors = 0
        # Frames run without some output, or not run, by what kept them, and lookups rebuilt
        # for changed calibration values (diagnostics keys).
        self.problems: collections.Counter[str] = collections.Counter()

    def frame_received(self) -> None:
        with self._lock:
            self.received.tick()

    def frame_processed(self, latency_ms: float, stages_ms: dict[str, float],
                        age_ms: float | None = None) -> None:
        """``latency_ms``: arrival to outputs published (steady clock); ``age_ms``: outputs
        published minus the image stamp, on the node's clock (bag time with use_sim_time)."""
        with self._lock:
            self.processed.tick()
            self._latencies.append(latency_ms)
            if age_ms is not None:
                self._ages.append(age_ms)
            for name, ms in stages_ms.items():
                self._stages.setdefault(name, collections.deque(maxlen=self._latencies.maxlen)).append(ms)

    def count_error(self) -> None:
        with self._lock:
            self.errors += 1

    def count_skipped_no_subscribers(self) -> None:
        with self._lock:
            self.skipped_no_subscribers += 1

    def count_problem(self, key: str) -> None:
        with self._lock:
            self.problems[key] += 1

    def reject(self, reason: str) -> bool:
        """Count a rejected message; True the first time this reason is seen (log it then)."""
        with self._lock:
            self.rejected[reason] += 1
            return self.rejected[reason] == 1

    def snapshot(self) -> dict:
        with self._lock:
            lat = np.array(self._latencies) if self._latencies else None
            stages = {k: float(np.median(v)) for k, v in self._stages.items() if v}
            return {
                "frames_received": self.received.total,
                "frames_processed": self.processed.total,
                "input_rate_hz": self.received.rate(),
                "processed_rate_hz": self.processed.rate(),
                "latency_median_ms": float(np.median(lat)) if lat is not None else float("nan"),
                "latency_p95_ms": float(np.percentile(lat, 95)) if lat is not None else float("nan"),
                "stage_median_ms": stages,
                "input_age_median_ms": float(np.median(self._ages)) if self._ages else float("nan"),
                "rejected": dict(self.rejected),
                "skipped_no_subscribers": self.skipped_no_subscribers,
                "errors": self.errors,
                "problems": dict(self.problems),
            }
