"""Rates, latencies and rejection counts of the perception node (no ROS types).

Totals count the node's whole life; what went wrong is also counted over a recent window
(``recent_s``), so that /diagnostics can say what is wrong now rather than what ever was.
Every method takes ``now`` (time.monotonic() by default) so that tests can drive time.
"""
from __future__ import annotations

import collections
import math
import threading
import time

import numpy as np

# Rejections, failed frames and slow frames raise a WARN while this recent (seconds; the
# node's diagnostics_window).
RECENT_S = 10.0


def _now(now: float | None) -> float:
    return time.monotonic() if now is None else now


class RateMeter:
    """Events per second over a sliding window of the most recent ``window`` seconds."""

    def __init__(self, window: float = 5.0):
        self.window = window
        self._times: collections.deque[float] = collections.deque()
        self.total = 0

    def tick(self, now: float | None = None) -> None:
        self._times.append(_now(now))
        self.total += 1

    def rate(self, now: float | None = None) -> float:
        now = _now(now)
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(now - self._times[0], 1e-9)


class RecentCount:
    """How many events in total and within the last ``window`` seconds, in one bucket per
    second: bounded memory at any rate of events (a flood of bad messages)."""

    def __init__(self, window: float):
        self.window = window
        self.total = 0
        self._buckets: collections.deque[list] = collections.deque()  # [second, count]

    def add(self, now: float | None = None) -> None:
        second = math.floor(_now(now))
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([second, 1])
        self.total += 1

    def recent(self, now: float | None = None) -> int:
        now = _now(now)
        while self._buckets and self._buckets[0][0] + 1 <= now - self.window:
            self._buckets.popleft()
        return sum(count for _, count in self._buckets)


class NodeStats:
    """Thread-safe counters shared by the callbacks, the worker and the diagnostics timer."""

    def __init__(self, latency_window: int = 200, recent_s: float = RECENT_S):
        self._lock = threading.Lock()
        self.recent_s = recent_s
        self.received = RateMeter()
        self.processed = RateMeter()
        self._latencies: collections.deque[float] = collections.deque(maxlen=latency_window)
        # (finished, seconds) of the frames processed: from taken to finished
        self._frame_times: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=latency_window)
        self._ages: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._stages: dict[str, collections.deque[float]] = {}
        self._started: float | None = None  # when the frame in process was taken
        self._rejected: dict[str, RecentCount] = {}
        self._errors = RecentCount(recent_s)
        self.skipped_no_subscribers = 0
        # Frames run without some output, or not run, by what kept them, and lookups rebuilt
        # for changed calibration values (diagnostics keys).
        self._problems: dict[str, RecentCount] = {}

    def frame_received(self, now: float | None = None) -> None:
        with self._lock:
            self.received.tick(now)

    def frame_started(self, now: float | None = None) -> None:
        """The worker took a frame."""
        with self._lock:
            self._started = _now(now)

    def frame_done(self) -> None:
        """The frame taken is finished, whatever became of it."""
        with self._lock:
            self._started = None

    def frame_processed(self, latency_ms: float, stages_ms: dict[str, float],
                        age_ms: float | None = None, now: float | None = None) -> None:
        """``latency_ms``: arrival to outputs published (steady clock); ``age_ms``: outputs
        published minus the image stamp, on the node's clock (bag time with use_sim_time).
        Its processing time counts from :meth:`frame_started`."""
        now = _now(now)
        with self._lock:
            self.processed.tick(now)
            self._latencies.append(latency_ms)
            if self._started is not None:
                self._frame_times.append((now, now - self._started))
            if age_ms is not None:
                self._ages.append(age_ms)
            for name, ms in stages_ms.items():
                self._stages.setdefault(name, collections.deque(maxlen=self._latencies.maxlen)).append(ms)

    def count_error(self, now: float | None = None) -> None:
        with self._lock:
            self._errors.add(now)

    def count_skipped_no_subscribers(self) -> None:
        with self._lock:
            self.skipped_no_subscribers += 1

    def count_problem(self, key: str, now: float | None = None) -> None:
        with self._lock:
            self._problems.setdefault(key, RecentCount(self.recent_s)).add(now)

    def reject(self, reason: str, now: float | None = None) -> bool:
        """Count a rejected message; True the first time this reason is seen (log it then)."""
        with self._lock:
            count = self._rejected.setdefault(reason, RecentCount(self.recent_s))
            count.add(now)
            return count.total == 1

    @property
    def errors(self) -> int:
        return self._errors.total

    def snapshot(self, now: float | None = None) -> dict:
        """Totals, rates and latencies, and over the last ``recent_s``: the rejections,
        errors and problems and the median processing time of the frames finished; how
        long the frame in process has taken so far (NaN where there is none)."""
        now = _now(now)
        with self._lock:
            lat = np.array(self._latencies) if self._latencies else None
            stages = {k: float(np.median(v)) for k, v in self._stages.items() if v}
            recent = [seconds for finished, seconds in self._frame_times
                      if finished >= now - self.recent_s]
            recent_rejected = {k: n for k, c in self._rejected.items() if (n := c.recent(now))}
            recent_problems = {k: n for k, c in self._problems.items() if (n := c.recent(now))}
            return {
                "frames_received": self.received.total,
                "frames_processed": self.processed.total,
                "input_rate_hz": self.received.rate(now),
                "processed_rate_hz": self.processed.rate(now),
                "latency_median_ms": float(np.median(lat)) if lat is not None else float("nan"),
                "latency_p95_ms": float(np.percentile(lat, 95)) if lat is not None else float("nan"),
                "stage_median_ms": stages,
                "input_age_median_ms": float(np.median(self._ages)) if self._ages else float("nan"),
                "rejected": {k: c.total for k, c in self._rejected.items()},
                "skipped_no_subscribers": self.skipped_no_subscribers,
                "errors": self._errors.total,
                "problems": {k: c.total for k, c in self._problems.items()},
                "recent_s": self.recent_s,
                "recent_rejected": recent_rejected,
                "recent_errors": self._errors.recent(now),
                "recent_problems": recent_problems,
                "recent_frame_median_ms": (float(np.median(recent)) * 1e3 if recent
                                           else float("nan")),
                "in_flight_ms": (float("nan") if self._started is None
                                 else (now - self._started) * 1e3),
            }
