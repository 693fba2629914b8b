"""/diagnostics says what is wrong now: recent trouble, not the node's history (issue 31).

The first tests build the statuses from real statistics (NodeStats, the node's Camera) with
their clock driven; the slow one runs the node over DDS: a rejected message gives a WARN
that ends once good frames have come for longer than the window, and a setting that makes
each frame take seconds gives "falling behind", never "ok".
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import ros_graph as rg  # sets the DDS environment before rclpy is imported
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus as D  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from hybridnets_ros.core.synthetic import default_camera  # noqa: E402
from hybridnets_ros.pipeline.config import NodeConfig  # noqa: E402
from hybridnets_ros.pipeline.stats import NodeStats  # noqa: E402
from hybridnets_ros.ros.diagnostics import (NodeHealth, camera_problem,  # noqa: E402
                                            diagnostic_array, falling_behind)
from hybridnets_ros.ros.node import Camera  # noqa: E402

CONFIG = NodeConfig()


def frames(stats: NodeStats, seconds: float, rate_hz: float, until: float, count: int) -> None:
    """``count`` frames arriving at ``rate_hz`` up to ``until`` (monotonic), each of the
    last ones processed in ``seconds``."""
    for k in range(count):
        stats.frame_received(now=until - (count - 1 - k) / rate_hz)
    for k in range(3):
        end = until - k * seconds
        stats.frame_started(now=end - seconds)
        stats.frame_processed(seconds * 1e3, {}, now=end)
        stats.frame_done()


def a_camera(name: str = "") -> Camera:
    camera = Camera(name, NodeStats(recent_s=10.0))
    camera.last_image = time.monotonic()
    return camera


def test_a_rejection_warns_while_recent_and_the_totals_stay():
    camera = a_camera()
    now = time.monotonic()
    camera.stats.reject("unsupported encoding", now=now - 20.0)  # long ago
    camera.stats.reject("empty image", now=now - 15.0)
    assert camera_problem(camera, CONFIG, now) is None
    camera.stats.reject("unsupported encoding", now=now - 1.0)
    camera.stats.count_error(now=now - 2.0)
    assert camera_problem(camera, CONFIG, now) == (
        "1 messages rejected in the last 10 s (unsupported encoding); 1 frames failed in the "
        "last 10 s")
    values = {kv.key: kv.value for kv in diagnostic_array(
        health(), [camera], [0], [], Time()).status[0].values}
    assert values["rejected_total"] == "3" and values["rejected: unsupported encoding"] == "2"
    assert values["rejected_recent"] == "1" and values["recent_window_s"] == "10"
    assert values["errors"] == values["errors_recent"] == "1"


def health(multi: bool = False) -> NodeHealth:
    return NodeHealth("hybridnets_node", "/hybridnets_node", "torch", "active", CONFIG, None,
                      None, time.monotonic(), multi)


def test_frames_that_take_seconds_are_falling_behind_not_ok():
    now = time.monotonic()
    camera = a_camera()
    frames(camera.stats, 6.1, 2.0, now, 10)
    assert camera_problem(camera, CONFIG, now) == (
        "falling behind: frames take 6.1 s (median of the last 10 s) against a 0.50 s input "
        "period; outputs come late and most frames are dropped")
    status = diagnostic_array(health(), [camera], [0], [], Time()).status[0]
    assert status.level == D.WARN and status.message.startswith("falling behind")


@pytest.mark.parametrize("seconds, rate_hz, behind", [
    (0.3, 2.0, False),   # keeps up
    (0.9, 2.0, False),   # slower than the camera but within a second: frames are dropped
    (0.5, 30.0, False),  # a fast camera: the newest frame wins, as designed
    (1.2, 2.0, True),    # over 2 periods and over a second
    (1.5, 0.5, False),   # a slow camera: within 2 periods
    (6.1, 2.0, True)])
def test_falling_behind_is_over_two_periods_and_a_second(seconds, rate_hz, behind):
    stats = NodeStats(recent_s=10.0)
    frames(stats, seconds, rate_hz, 1000.0, 20)
    assert (falling_behind(stats.snapshot(now=1000.0)) is not None) == behind


def test_a_frame_stuck_in_process_is_falling_behind_and_old_slow_frames_are_forgotten():
    stats = NodeStats(recent_s=10.0)
    frames(stats, 6.0, 2.0, 1000.0, 10)
    for k in range(10):
        stats.frame_received(now=1020.0 + k / 2)
    stats.frame_started(now=1020.0)
    assert falling_behind(stats.snapshot(now=1024.5)) == (
        "falling behind: the frame in process has taken 4.5 s so far against a 0.50 s input "
        "period; outputs come late and most frames are dropped")
    stats.frame_processed(300.0, {}, now=1020.3)  # it was quick after all
    stats.frame_done()
    assert falling_behind(stats.snapshot(now=1024.5)) is None


def test_several_cameras_each_say_what_is_wrong_now():
    now = time.monotonic()
    front, left = a_camera("front"), a_camera("left")
    left.stats.reject("unsupported encoding", now=now - 1.0)
    front.stats.reject("unsupported encoding", now=now - 30.0)
    statuses = {s.name: s for s in diagnostic_array(health(multi=True), [front, left], [0, 0],
                                                    [], Time()).status}
    assert statuses["hybridnets_node: camera front"].level == D.OK
    assert statuses["hybridnets_node: camera left"].level == D.WARN
    assert statuses["hybridnets_node: perception"].message.startswith(
        "camera left: 1 messages rejected in the last 10 s")


# ------------------------------------------------------------------ the node over DDS (slow)

CAMERA = default_camera()


@pytest.mark.slow
def test_node_warns_for_recent_rejections_and_for_frames_that_take_seconds(tmp_path,
                                                                           random_weights):
    rg.init_rclpy()
    # A small network input: ordinary frames well within a second on a busy machine.
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": random_weights, "backend": "torch",
                                                  "input_size": 320, "diagnostics_window": 2.0},
                          namespace="window")
    probe = rg.Probe(namespace="window")
    good = np.full((720, 1280, 3), 100, np.uint8)
    stamp = [2_000_000_000]

    def send(encoding="bgr8"):
        stamp[0] += 50_000_000
        probe.info_pub.publish(rg.camera_info_msg(CAMERA.K, 1280, 720, stamp[0]))
        msg = rg.image_msg(good, stamp[0])
        msg.encoding = encoding
        probe.image_pub.publish(msg)

    def status_while_sending(condition, timeout, rate_hz, encoding="bgr8"):
        """Sends frames at ``rate_hz`` until a status meets ``condition`` (best effort: a
        frame may be lost, so bad ones too are sent until they are seen)."""
        deadline = time.monotonic() + timeout
        seen = len(probe.diagnostics)
        while time.monotonic() < deadline:
            send(encoding)
            time.sleep(1 / rate_hz)
            with probe.lock:
                new, seen = probe.diagnostics[seen:], len(probe.diagnostics)
            for msg in new:
                if condition(msg.status[0]):
                    return msg.status[0]
        with probe.lock:
            last = probe.diagnostics[-1].status[0] if probe.diagnostics else None
        pytest.fail(f"no status met the condition in {timeout} s; last: {last}\n{node.log()}")

    try:
        probe.wait_ready(node)
        # 1 Hz: "falling behind" only past 2 s a frame
        status_while_sending(lambda s: s.level == D.OK, 60, 1.0)
        warned = status_while_sending(lambda s: "rejected" in s.message, 20, 1.0, "bayer_rggb8")
        assert warned.level == D.WARN and "unsupported encoding" in warned.message
        # good frames for longer than the window: OK again, the total kept
        ok = status_while_sending(lambda s: s.level == D.OK, 20, 1.0)
        assert int({kv.key: kv.value for kv in ok.values}["rejected: unsupported encoding"]) >= 1
        # Valid settings that make each frame take seconds: random weights give thousands
        # of boxes at a score threshold of 0, and NMS at 0.9 keeps max_detections of them.
        client = probe.create_client(SetParameters, "/window/hybridnets_node/set_parameters")
        result = rg.call(probe, client, SetParameters.Request(parameters=[
            Parameter(name, value=value).to_parameter_msg() for name, value in
            (("conf_threshold", 0.0), ("iou_threshold", 0.9), ("max_detections", 10_000))]))
        assert all(r.successful for r in result.results), result
        # 10 Hz: "falling behind" past 1 s a frame
        behind = status_while_sending(lambda s: "falling behind" in s.message, 60, 10.0)
        assert behind.level == D.WARN, behind
        assert node.alive()
    finally:
        probe.close()
        assert node.stop() == 0, node.log()
