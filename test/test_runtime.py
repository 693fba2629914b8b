"""The node's framework-free helpers: the latest-frame slot and the statistics."""
import threading
import time

import numpy as np

from hybridnets_ros.pipeline.slot import LatestSlots
from hybridnets_ros.pipeline.stats import NodeStats, RateMeter


def test_latest_frame_wins_per_camera_and_all_waiting_come_together():
    slots = LatestSlots(("front", "left"))
    for i in range(5):
        slots.put("front", i)
    slots.put("left", "a")
    assert slots.take_all(0) == {"front": 4, "left": "a"}
    assert slots.dropped == {"front": 4, "left": 0}
    assert slots.take_all(0.01) == {}


def test_take_wakes_up_on_put_and_close():
    slots = LatestSlots(("front",))
    got = []
    worker = threading.Thread(target=lambda: got.append(slots.take_all(5)))
    worker.start()
    time.sleep(0.05)
    slots.put("front", "frame")
    worker.join(1)
    assert got == [{"front": "frame"}]
    worker = threading.Thread(target=lambda: got.append(slots.take_all(5)))
    worker.start()
    started = time.monotonic()
    slots.close()
    worker.join(1)
    assert got[-1] == {} and time.monotonic() - started < 1
    slots.reopen()
    slots.put("front", 1)
    assert slots.take_all(0) == {"front": 1}


def test_rates_and_latencies():
    meter = RateMeter(window=5.0)
    for t in range(11):
        meter.tick(100.0 + t * 0.5)
    assert abs(meter.rate(now=105.0) - 2.0) < 1e-9
    assert meter.rate(now=200.0) == 0.0 and meter.total == 11
    stats = NodeStats()
    for ms in range(1, 101):
        stats.frame_processed(float(ms), {"network": 10.0})
    assert stats.reject("bad encoding") and not stats.reject("bad encoding")
    snap = stats.snapshot()
    assert snap["latency_median_ms"] == 50.5 and 95 <= snap["latency_p95_ms"] <= 96
    assert snap["rejected"] == {"bad encoding": 2} and snap["stage_median_ms"] == {"network": 10.0}


def test_trouble_counts_in_total_and_over_the_recent_window():
    stats = NodeStats(recent_s=10.0)
    assert stats.reject("unsupported encoding", now=100.0)
    stats.reject("unsupported encoding", now=100.5)
    stats.count_error(now=101.0)
    stats.count_problem("frames_impossible_pose", now=102.0)
    snap = stats.snapshot(now=105.0)
    assert snap["recent_rejected"] == {"unsupported encoding": 2} and snap["recent_errors"] == 1
    assert snap["recent_problems"] == {"frames_impossible_pose": 1}
    # 20 s later nothing is recent; the totals stay
    snap = stats.snapshot(now=125.0)
    assert snap["recent_rejected"] == {} and snap["recent_errors"] == 0
    assert snap["recent_problems"] == {}
    assert snap["rejected"] == {"unsupported encoding": 2} and snap["errors"] == 1
    assert snap["problems"] == {"frames_impossible_pose": 1}
    # a flood is counted in one bucket a second, not one entry a message
    for i in range(100_000):
        stats.reject("empty image", now=200.0 + i * 1e-4)
    assert stats.snapshot(now=210.5)["recent_rejected"] == {"empty image": 100_000}
    assert len(stats._rejected["empty image"]._buckets) <= 11


def test_frame_times_over_the_window_and_the_frame_in_process():
    stats = NodeStats(recent_s=10.0)
    for start in (100.0, 106.5):  # two frames of 6 s
        stats.frame_started(now=start)
        stats.frame_processed(6200.0, {}, now=start + 6.0)
        stats.frame_done()
    snap = stats.snapshot(now=113.0)
    assert snap["recent_frame_median_ms"] == 6000.0 and np.isnan(snap["in_flight_ms"])
    stats.frame_started(now=113.0)
    assert stats.snapshot(now=120.0)["in_flight_ms"] == 7000.0
    stats.frame_done()  # it failed: no time recorded
    assert np.isnan(stats.snapshot(now=140.0)["recent_frame_median_ms"])
