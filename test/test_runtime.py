"""The node's framework-free helpers: the latest-frame slot and the statistics."""
import threading
import time

from hybridnets_ros.pipeline.slot import LatestSlot
from hybridnets_ros.pipeline.stats import NodeStats, RateMeter


def test_latest_frame_wins():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(0) == 4 and slot.dropped == 4
    assert slot.take(0.01) is None


def test_take_wakes_up_on_put_and_close():
    slot = LatestSlot()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(5)))
    worker.start()
    time.sleep(0.05)
    slot.put("frame")
    worker.join(1)
    assert got == ["frame"]
    worker = threading.Thread(target=lambda: got.append(slot.take(5)))
    worker.start()
    started = time.monotonic()
    slot.close()
    worker.join(1)
    assert got[-1] is None and time.monotonic() - started < 1
    slot.reopen()
    slot.put(1)
    assert slot.take(0) == 1


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
