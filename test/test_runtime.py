"""The node's framework-free helpers: the latest-frame slot and the statistics."""
import threading
import time

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
