"""hybridnets_node over a real DDS graph: outputs, burst behaviour, bad input, parameters,
lifecycle. The node runs in its own process with seeded random weights."""
import time

import cv2
import numpy as np
import pytest

import ros_graph as rg  # sets the DDS environment before rclpy is imported
from conftest import match_detections
from hybridnets_ros.core.bev import BevProjector, GridSpec
from hybridnets_ros.core.camera import CameraModel
from hybridnets_ros.core.synthetic import default_camera

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

pytestmark = pytest.mark.slow  # a hybridnets_node process over DDS

CAMERA = default_camera()  # 1280x720, the demo images' size
POSE = (0.0, 0.0, 1.5, 0.0, 0.0, 0.0)  # config/hybridnets.yaml
_stamp = [1_000_000_000]


def next_stamp() -> int:
    _stamp[0] += 10_000_000
    return _stamp[0]


@pytest.fixture(scope="module")
def node(tmp_path_factory, random_weights):
    rg.init_rclpy()
    process = rg.NodeProcess(tmp_path_factory.mktemp("node") / "node.log",
                             {"weights": random_weights})
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def probe(node):
    probe = rg.Probe()
    probe.wait_ready(node)
    yield probe
    probe.close()


def send(probe, bgr, stamp, info=True, encoding="bgr8"):
    if info:
        probe.info_pub.publish(rg.camera_info_msg(CAMERA.K, bgr.shape[1], bgr.shape[0], stamp))
    probe.image_pub.publish(rg.image_msg(bgr, stamp, encoding=encoding))


def call(probe, client, request, timeout=10.0):
    assert client.wait_for_service(timeout_sec=timeout)
    future = client.call_async(request)
    assert probe.wait_for(future.done, timeout), "service call timed out"
    return future.result()


def test_outputs_match_infer(node, probe, sample_images, random_pipeline):
    projector = BevProjector(CameraModel.from_pose(CAMERA.K, 1280, 720, POSE), GridSpec())
    for path in sample_images:
        bgr = cv2.imread(str(path))
        stamp = next_stamp()
        send(probe, bgr, stamp)
        assert probe.wait_for(lambda: len(probe.got(stamp)) == len(rg.OUTPUTS), 30), \
            f"{path.name}: got only {sorted(probe.got(stamp))}\n{node.log()}"
        out = probe.got(stamp)
        expected = random_pipeline(bgr)

        det = out["detections"]
        assert det.header.frame_id == "camera_optical_frame"
        boxes = np.array([[d.bbox.center.position.x - d.bbox.size_x / 2,
                           d.bbox.center.position.y - d.bbox.size_y / 2,
                           d.bbox.center.position.x + d.bbox.size_x / 2,
                           d.bbox.center.position.y + d.bbox.size_y / 2] for d in det.detections])
        scores = np.array([d.results[0].hypothesis.score for d in det.detections])
        assert all(d.results[0].hypothesis.class_id == "car" for d in det.detections)
        e = expected.detections
        match_detections(boxes.reshape(-1, 4), scores, np.zeros(len(scores), np.int64),
                         e.boxes, e.scores, e.classes)

        for topic, cls in (("drivable/mask", 1), ("lane/mask", 2)):
            mask = out[topic]
            assert (mask.encoding, mask.width, mask.height) == ("mono8", 1280, 720)
            assert mask.header.frame_id == "camera_optical_frame"
            pixels = np.frombuffer(mask.data, np.uint8).reshape(720, 1280)
            assert set(np.unique(pixels)) <= {0, 255}
            assert ((pixels == 255) == (expected.seg_mask == cls)).mean() > 0.9999

        drivable_ref, lane_ref = projector.project(expected.seg_mask)
        for topic, ref in (("drivable/grid", drivable_ref), ("lane/grid", lane_ref)):
            grid = out[topic]
            assert grid.header.frame_id == "base_link" and rg.stamp_ns(grid.header) == stamp
            info = grid.info
            assert (info.width, info.height, round(info.resolution, 6)) == (400, 200, 0.1)
            assert (info.origin.position.x, info.origin.position.y) == (0.0, -10.0)
            values = np.frombuffer(grid.data, np.int8).reshape(200, 400)
            assert (values == ref).mean() > 0.999

        overlay = out["overlay"]
        assert (overlay.encoding, overlay.width, overlay.height) == ("bgr8", 1280, 720)


def test_burst_keeps_the_latest_and_counts_drops(node, probe):
    frame = np.full((720, 1280, 3), 90, np.uint8)
    before = probe.latest_diagnostics()
    rss_before = node.rss_mb()
    stamps = [next_stamp() for _ in range(100)]
    set_params = probe.create_client(SetParameters, "/hybridnets_node/set_parameters")
    for stamp in stamps:
        send(probe, frame, stamp)
        time.sleep(0.005)
    # responsive while busy: a parameter change is answered promptly
    started = time.monotonic()
    request = SetParameters.Request(parameters=[Parameter(name="conf_threshold", value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=0.25))])
    assert call(probe, set_params, request).results[0].successful
    assert time.monotonic() - started < 3.0
    # the newest frame is processed ...
    assert probe.wait_for(lambda: "detections" in probe.got(stamps[-1]), 30), node.log()
    time.sleep(1.5)
    after = probe.latest_diagnostics()
    received = int(after["frames_received"]) - int(before["frames_received"])
    processed = int(after["frames_processed"]) - int(before["frames_processed"])
    dropped = int(after["frames_dropped"]) - int(before["frames_dropped"])
    # ... only a few are, the rest are counted as dropped, and nothing is left waiting
    assert received >= 90, "LARGE_DATA should deliver nearly every frame"
    assert processed <= 10 and dropped == received - processed
    assert sum(1 for s in stamps if "detections" in probe.got(s)) == processed
    assert node.rss_mb() - rss_before < 100, "memory grew during the burst"


def test_bad_messages_are_rejected_and_counted(node, probe):
    good = np.full((720, 1280, 3), 120, np.uint8)
    cases = []
    msg = rg.image_msg(good, next_stamp())
    msg.encoding = "bayer_rggb8"
    cases.append((msg, "unsupported encoding"))
    msg = rg.image_msg(good, next_stamp())
    msg.data = msg.data[: len(msg.data) // 2]
    cases.append((msg, "data shorter than height*step"))
    cases.append((rg.image_msg(np.zeros((0, 0, 3), np.uint8), next_stamp()), "empty image"))
    before = probe.latest_diagnostics()
    rejected = int(before["rejected_total"])
    for msg, _ in cases * 2:  # each twice: logged once, counted twice
        probe.image_pub.publish(msg)
        rejected += 1  # one at a time, so that none replaces another in the waiting slot
        probe.wait_diagnostics(lambda d: int(d["rejected_total"]) == rejected)
    # NaN in K: grids are skipped for that frame, everything else goes on
    stamp = next_stamp()
    info = rg.camera_info_msg(CAMERA.K, 1280, 720, stamp)
    info.k[0] = float("nan")
    probe.info_pub.publish(info)
    time.sleep(0.2)
    probe.image_pub.publish(rg.image_msg(good, stamp))
    assert probe.wait_for(lambda: "detections" in probe.got(stamp), 30)
    assert "drivable/grid" not in probe.got(stamp)
    # the node keeps working
    stamp = next_stamp()
    send(probe, good, stamp)
    assert probe.wait_for(lambda: "drivable/grid" in probe.got(stamp), 30), node.log()
    time.sleep(1.2)
    after = probe.latest_diagnostics()
    for _, reason in cases:
        assert int(after[f"rejected: {reason}"]) - int(before.get(f"rejected: {reason}", 0)) == 2
        assert node.log().count("rejected message: ") >= 1
    assert int(after["rejected: invalid camera_info"]) >= 1
    log = node.log()
    assert log.count("unsupported encoding 'bayer_rggb8'") == 1
    assert "invalid camera matrix K" in log
    assert node.alive()


def test_parameters_are_validated(node, probe):
    client = probe.create_client(SetParameters, "/hybridnets_node/set_parameters")

    def set_param(name, value):
        if isinstance(value, float):
            v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        elif isinstance(value, list):
            v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=value)
        else:
            v = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        result = call(probe, client, SetParameters.Request(parameters=[Parameter(name=name, value=v)]))
        return result.results[0]

    refused = set_param("conf_threshold", 1.5)
    assert not refused.successful and refused.reason
    assert not set_param("camera_pose", [1.0, 2.0, 3.0]).successful
    assert "6 finite numbers" in set_param("camera_pose", [1.0, 2.0, 3.0]).reason
    assert "max > min" in set_param("grid_x_range", [10.0, 5.0]).reason
    assert not set_param("backend", "torch").successful  # read-only after start-up
    assert set_param("conf_threshold", 0.6).successful
    assert set_param("conf_threshold", 0.25).successful


def test_lifecycle_deactivate_and_activate(node, probe):
    client = probe.create_client(ChangeState, "/hybridnets_node/change_state")
    assert call(probe, client, ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_DEACTIVATE))).success
    frame = np.full((720, 1280, 3), 60, np.uint8)
    stamp = next_stamp()
    send(probe, frame, stamp)
    time.sleep(2.0)
    assert probe.got(stamp) == {}, "an inactive node must not publish"
    assert call(probe, client, ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_ACTIVATE))).success
    assert probe.wait_for(lambda: probe.image_pub.get_subscription_count() > 0, 10)
    time.sleep(0.5)
    stamp = next_stamp()
    send(probe, frame, stamp)
    assert probe.wait_for(lambda: "detections" in probe.got(stamp), 30), node.log()


def test_compressed_input(tmp_path, random_weights, sample_images, random_pipeline):
    rg.init_rclpy()
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": random_weights,
                                                  "use_compressed": "true"}, namespace="cmp")
    probe = rg.Probe(namespace="cmp")
    try:
        probe.wait_ready(node, compressed=True)
        jpeg = sample_images[0].read_bytes()
        stamp = next_stamp()
        probe.compressed_pub.publish(_compressed(jpeg, stamp))
        assert probe.wait_for(lambda: "detections" in probe.got(stamp), 30), node.log()
        expected = random_pipeline(cv2.imread(str(sample_images[0])))
        assert len(probe.got(stamp)["detections"].detections) == len(expected.detections)
        # one at a time: while the worker is busy a newer message would replace a waiting one
        for count, bad in enumerate((jpeg[: len(jpeg) // 2], b"not a jpeg at all"), start=1):
            probe.compressed_pub.publish(_compressed(bad, next_stamp()))
            probe.wait_diagnostics(
                lambda d: int(d.get("rejected: undecodable compressed image", 0)) == count)
        stamp = next_stamp()
        probe.compressed_pub.publish(_compressed(jpeg, stamp))
        assert probe.wait_for(lambda: "detections" in probe.got(stamp), 30)
        assert "truncated JPEG" in node.log()
    finally:
        probe.close()
        assert node.stop() == 0, node.log()


def _compressed(data: bytes, stamp: int) -> CompressedImage:
    msg = CompressedImage(format="jpeg")
    msg.header.frame_id = "camera_optical_frame"
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
    msg.data = data
    return msg


def test_sim_time_from_a_bag_player(tmp_path, random_weights):
    """As under `ros2 bag play --clock`: outputs carry bag time, and so do diagnostics."""
    from rosgraph_msgs.msg import Clock
    rg.init_rclpy()
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": random_weights,
                                                  "use_sim_time": "true"}, namespace="sim")
    probe = rg.Probe(namespace="sim")
    clock_pub = probe.create_publisher(Clock, "/clock", 10)
    bag_time = 1_600_000_000 * 10**9  # a recording from 2020

    def tick(ns):
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(ns, 10**9)
        clock_pub.publish(msg)

    try:
        probe.wait_ready(node)
        frame = np.full((720, 1280, 3), 100, np.uint8)
        for i in range(2):
            stamp = bag_time + i * 100_000_000
            tick(stamp)
            send(probe, frame, stamp)
            assert probe.wait_for(lambda: "drivable/grid" in probe.got(stamp), 30), node.log()
            tick(stamp + 50_000_000)
        assert rg.stamp_ns(probe.got(stamp)["detections"].header) == stamp
        values = probe.wait_diagnostics(lambda d: int(d["frames_processed"]) >= 2)
        with probe.lock:
            diag_stamp = rg.stamp_ns(probe.diagnostics[-1].header)
        assert abs(diag_stamp - bag_time) < 60 * 10**9, "diagnostics should be stamped in bag time"
        age = float(values["input_age_median_ms"])
        assert 0 <= age < 60_000, f"input age {age} ms should be measured in bag time"
    finally:
        probe.close()
        assert node.stop() == 0, node.log()
