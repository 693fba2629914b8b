"""hybridnets_node over a real DDS graph: outputs, burst behaviour, bad input, parameters,
lifecycle. The node runs in its own process with seeded random weights."""
import importlib.util
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
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.qos import (QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile,  # noqa: E402
                       QoSReliabilityPolicy)
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from vision_msgs.msg import LabelInfo, VisionInfo  # noqa: E402
import rclpy  # noqa: E402
import yaml  # noqa: E402

from hybridnets_ros.core.registry import adapter  # noqa: E402

pytestmark = pytest.mark.slow  # a hybridnets_node process over DDS

CAMERA = default_camera()  # 1280x720, the demo images' size
POSE = (0.0, 0.0, 1.5, 0.0, 0.0, 0.0)  # config/hybridnets.yaml
_stamp = [1_000_000_000]


def next_stamp() -> int:
    _stamp[0] += 10_000_000
    return _stamp[0]


@pytest.fixture(scope="module")
def node(tmp_path_factory, random_weights):
    yield from rg.serve_node(tmp_path_factory.mktemp("node"), {"weights": random_weights})


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


call = rg.call  # idempotent services, resent until answered


def test_outputs_match_infer(node, probe, sample_images, random_pipeline):
    projector = BevProjector(CameraModel.from_pose(CAMERA.K, 1280, 720, POSE), GridSpec())
    for path in sample_images[::2]:  # three of the synthetic drive's frames
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
            assert grid.header.frame_id == "base_footprint" and rg.stamp_ns(grid.header) == stamp
            info = grid.info
            assert (info.width, info.height, round(info.resolution, 6)) == (400, 200, 0.1)
            assert (info.origin.position.x, info.origin.position.y) == (0.0, -10.0)
            values = np.frombuffer(grid.data, np.int8).reshape(200, 400)
            assert (values == ref).mean() > 0.999

        overlay = out["overlay"]
        assert (overlay.encoding, overlay.width, overlay.height) == ("bgr8", 1280, 720)

        label = out["segmentation/label"]
        assert (label.encoding, label.width, label.height) == ("mono8", 1280, 720)
        labels = np.frombuffer(label.data, np.uint8).reshape(720, 1280)
        assert (labels == expected.seg_mask).mean() > 0.9999
        colour = out["segmentation/color"]
        assert (colour.encoding, colour.width, colour.height) == ("rgb8", 1280, 720)
        rgb = np.frombuffer(colour.data, np.uint8).reshape(720, 1280, 3)
        assert (rgb == np.asarray(adapter("hybridnets").seg_colors_rgb, np.uint8)[labels]).all()


def set_conf_threshold(probe, value: float) -> None:
    client = probe.create_client(SetParameters, "/hybridnets_node/set_parameters")
    request = SetParameters.Request(parameters=[Parameter(name="conf_threshold", value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=value))])
    assert call(probe, client, request).results[0].successful


def test_3d_detections_and_markers_in_the_ground_frame_with_the_2d_ids(node, probe, sample_images):
    topics = {"detections", "detections_3d", "detections_3d/markers"}
    set_conf_threshold(probe, 0.12)  # the random network's best boxes (on the road) pass
    try:
        for path in sample_images[:2]:
            stamp = next_stamp()
            send(probe, cv2.imread(str(path)), stamp)
            assert probe.wait_for(lambda: topics <= set(probe.got(stamp)), 30), node.log()
            out = probe.got(stamp)
            det3d = out["detections_3d"]
            assert det3d.header.frame_id == "base_footprint" and rg.stamp_ns(det3d.header) == stamp
            ids_2d = [d.id for d in out["detections"].detections]
            assert all(ids_2d) and len(set(ids_2d)) == len(ids_2d)  # tracking is on by default
            ids_3d = [d.id for d in det3d.detections]
            assert ids_3d and ids_3d == [i for i in ids_2d if i in ids_3d]  # 2D order, in range
            markers = out["detections_3d/markers"].markers
            assert {m.id for m in markers if m.action == m.ADD} == {int(i) for i in ids_3d}
            assert all(m.header.frame_id == "base_footprint" for m in markers)
    finally:
        set_conf_threshold(probe, 0.25)


def test_road_geometry_while_subscribed_in_the_ground_frame(node, probe, sample_images):
    subscriptions = [probe.create_subscription(msg_type, topic, probe._store(topic),
                                               rg.OUTPUT_QOS)
                     for topic, msg_type in rg.ROAD_OUTPUTS.items()]
    try:
        assert probe.wait_for(lambda: all(probe.count_subscribers(t) >= 1
                                          for t in rg.ROAD_OUTPUTS), 10)
        got = {}
        # until the node's publishers have matched the new subscriptions
        for _ in range(10):
            stamp = next_stamp()
            send(probe, cv2.imread(str(sample_images[0])), stamp)
            probe.wait_for(lambda: set(rg.ROAD_OUTPUTS) <= set(probe.got(stamp)), 30)
            got = probe.got(stamp)
            if set(rg.ROAD_OUTPUTS) <= set(got):
                break
        assert set(rg.ROAD_OUTPUTS) <= set(got), node.log()
        for topic in ("road_geometry", "lanes", "drivable/scan"):
            assert got[topic].header.frame_id == "base_footprint", topic
            assert rg.stamp_ns(got[topic].header) == stamp, topic
        assert got["road_geometry"].lanes == got["lanes"].lanes  # one estimate, two topics
        assert all(m.header.frame_id == "base_footprint" for m in got["lanes/markers"].markers)
    finally:
        for subscription in subscriptions:
            probe.destroy_subscription(subscription)


def test_late_transient_local_subscriber_gets_grids_and_class_names(node, probe):
    """As Nav2's static layer subscribes (transient-local, reliable): a subscriber that joins
    after the grids were published still gets the newest ones, and the latched VisionInfo."""
    frame = np.full((720, 1280, 3), 80, np.uint8)
    stamp = next_stamp()
    send(probe, frame, stamp)
    assert probe.wait_for(lambda: "drivable/grid" in probe.got(stamp), 30), node.log()
    latched = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE, depth=1,
                         history=QoSHistoryPolicy.KEEP_LAST,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    got = {}
    late = rg.Node("late_subscriber")
    for topic, msg_type in (("drivable/grid", OccupancyGrid), ("lane/grid", OccupancyGrid),
                            ("vision_info", VisionInfo)):
        late.create_subscription(msg_type, topic, lambda msg, t=topic: got.setdefault(t, msg), latched)
    try:
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            rclpy.spin_once(late, timeout_sec=0.1)
    finally:
        late.destroy_node()
    assert set(got) == {"drivable/grid", "lane/grid", "vision_info"}, sorted(got)
    assert rg.stamp_ns(got["drivable/grid"].header) == stamp
    assert yaml.safe_load(got["vision_info"].database_location)["segmentation/label"] == {
        0: "background", 1: "road", 2: "lane"}


def test_semantic_layer_contract_for_a_late_subscriber(node, probe):
    """What Nav2's semantic_segmentation_layer assumes (docs/nav2.md), as it subscribes:
    LabelInfo reliable and transient-local, there before any frame; label, confidence and
    the organized cloud with sensor-data QoS, one size, mono8 rows without padding, x, y, z
    float32, the same stamp; the cloud in ground_frame, its points on the road plane."""
    client = probe.create_client(SetParameters, "/hybridnets_node/set_parameters")

    def set_scale(value: float) -> bool:
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        request = SetParameters.Request(parameters=[Parameter(name="semantic_output_scale",
                                                              value=value)])
        return call(probe, client, request).results[0].successful

    assert set_scale(0.3125)  # 1280x720 -> 400x225, Nav2's suggested size
    arrivals: list[tuple[str, object]] = []
    late = rg.Node("semantic_layer_stand_in")
    latched = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE, depth=5,
                         history=QoSHistoryPolicy.KEEP_LAST,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    late.create_subscription(LabelInfo, "segmentation/label_info",
                             lambda msg: arrivals.append(("label_info", msg)), latched)
    for topic, msg_type in (("segmentation/label", Image), ("segmentation/confidence", Image),
                            ("segmentation/points", PointCloud2)):
        late.create_subscription(msg_type, topic, lambda msg, t=topic: arrivals.append((t, msg)),
                                 qos_profile_sensor_data)
    executor, thread = rg.spin_in_background(late)
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[400:] = 40
    try:
        assert rg.wait_for(lambda: arrivals, 10), "LabelInfo is not latched"
        for _ in range(10):  # until the best-effort subscriptions are matched
            stamp = next_stamp()
            send(probe, frame, stamp)
            if rg.wait_for(lambda: len({t for t, m in list(arrivals)[1:]
                                        if rg.stamp_ns(m.header) == stamp}) == 3, 5):
                break
        else:
            pytest.fail(f"no frame reached the late subscriber: {node.log()}")
    finally:
        assert set_scale(1.0)
        rg.close_spinning(late, executor, thread)
    name, info = arrivals[0]
    assert name == "label_info" and [c.class_name for c in info.class_map] == list(
        adapter("hybridnets").seg_classes)
    got = {t: m for t, m in arrivals[1:] if rg.stamp_ns(m.header) == stamp}
    label, confidence, cloud = (got[t] for t in ("segmentation/label", "segmentation/confidence",
                                                  "segmentation/points"))
    for image in (label, confidence):
        assert (image.encoding, image.width, image.height, image.step) == ("mono8", 400, 225, 400)
        assert len(image.data) == 400 * 225 and image.header.frame_id == "camera_optical_frame"
    assert (cloud.width, cloud.height, cloud.point_step, cloud.row_step) == (400, 225, 12, 4800)
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        (n, 4 * i, PointField.FLOAT32, 1) for i, n in enumerate("xyz")]
    assert cloud.header.frame_id == "base_footprint" and not cloud.is_dense
    points = np.frombuffer(cloud.data, np.float32).reshape(225, 400, 3)
    finite = np.isfinite(points).all(-1)
    assert finite[-1].all() and not finite[0].any()  # ground below, sky above the horizon
    assert np.abs(points[finite][:, 2]).max() < 1e-3
    assert np.frombuffer(label.data, np.uint8).max() < 3


def test_burst_keeps_the_latest_and_counts_drops(node, probe):
    frame = np.full((720, 1280, 3), 90, np.uint8)
    before = probe.latest_diagnostics()
    rss_before = node.rss_mb()
    stamps = [next_stamp() for _ in range(100)]
    set_params = probe.create_client(SetParameters, "/hybridnets_node/set_parameters")
    request = SetParameters.Request(parameters=[Parameter(name="conf_threshold", value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=0.25))])
    assert call(probe, set_params, request).results[0].successful  # both ends matched first
    for stamp in stamps:
        send(probe, frame, stamp)
        time.sleep(0.005)
    # responsive while busy: a parameter change is answered promptly
    started = time.monotonic()
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
    assert received >= 90, "the shipped DDS profile should deliver nearly every frame"
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
    assert "camera_info.k: K must be finite" in log
    assert node.alive()


def test_camera_info_changes_and_refusals_are_said_once(node, probe):
    """A driver that re-sends its CameraInfo with values changing every frame: the lookup
    is rebuilt now and then, counted, and said in one line; a refused one (an absurd D) is
    said once with its field, counted per message, and detections go on without grids."""
    good = np.full((720, 1280, 3), 120, np.uint8)

    def frame(info, wanted, gap_ns=10_000_000):
        _stamp[0] += gap_ns
        stamp = _stamp[0]
        info.header.stamp.sec, info.header.stamp.nanosec = divmod(stamp, 10**9)
        probe.info_pub.publish(info)
        time.sleep(0.2)  # the CameraInfo is in before the image
        probe.image_pub.publish(rg.image_msg(good, stamp))
        assert probe.wait_for(lambda: wanted in probe.got(stamp), 60), node.log()
        return probe.got(stamp)

    frame(rg.camera_info_msg(CAMERA.K, 1280, 720, 0), "drivable/grid")
    assert rg.wait_for(lambda: "bird's-eye lookup built" in node.log(), 30)  # its log lags
    said = node.log().count("bird's-eye lookup built")
    before = probe.latest_diagnostics()
    for i in range(1, 5):  # fx jitters; 0.6 s of image time apart: a rebuild every other
        K = CAMERA.K.copy()
        K[0, 0] += 0.01 * i
        frame(rg.camera_info_msg(K, 1280, 720, 0), "drivable/grid", gap_ns=600_000_000)
    rebuilds = int(before.get("grid_lookup_rebuilds", 0))
    changed = probe.wait_diagnostics(lambda d: int(d.get("grid_lookup_rebuilds", 0)) >= rebuilds + 2)
    assert changed, node.log()
    assert rg.wait_for(lambda: "the CameraInfo or TF pose values changed" in node.log(), 30)
    log = node.log()
    assert log.count("the CameraInfo or TF pose values changed") == 1, log
    assert log.count("bird's-eye lookup built") == said + 1, log
    absurd = rg.camera_info_msg(CAMERA.K, 1280, 720, 0)
    absurd.d = [1e6, 0.0, 0.0, 0.0, 0.0]
    for _ in range(2):
        assert "drivable/grid" not in frame(absurd, "detections")
    refused = "camera_info.d: the radial distortion puts the image's corner"
    counted = probe.wait_diagnostics(lambda d: int(d.get("rejected: invalid camera_info", 0))
                                     - int(changed.get("rejected: invalid camera_info", 0)) >= 2)
    assert counted["camera_info"].startswith(f"refused: {refused}"), counted
    # logged with the first refusal of the node's life (an earlier test's may have been it)
    assert rg.wait_for(lambda: "rejected message: camera_info." in node.log(), 30)
    assert node.log().count("rejected message: camera_info.") == 1, node.log()
    assert node.log().count(refused) <= 1, node.log()
    frame(rg.camera_info_msg(CAMERA.K, 1280, 720, 0), "drivable/grid")  # a good one: grids
    assert probe.wait_diagnostics(lambda d: d["camera_info"] == "received")


def test_parameters_are_validated(node, probe):
    client = probe.create_client(SetParameters, "/hybridnets_node/set_parameters")

    def set_param(name, value):
        if isinstance(value, bool):
            v = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, float):
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
    assert set_param("use_sim_time", False).successful  # rclpy's own, not a setting


def test_lifecycle_deactivate_and_activate(node, probe):
    lifecycle = rg.Lifecycle(probe, "/hybridnets_node")
    assert lifecycle.change(Transition.TRANSITION_DEACTIVATE)
    frame = np.full((720, 1280, 3), 60, np.uint8)
    stamp = next_stamp()
    send(probe, frame, stamp)
    time.sleep(2.0)
    assert probe.got(stamp) == {}, "an inactive node must not publish"
    assert lifecycle.change(Transition.TRANSITION_ACTIVATE)
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


def test_exact_camera_info_sync_pairs_each_image_with_its_stamp(tmp_path, random_weights):
    """camera_info_sync:=exact, as image_transport's CameraSubscriber: an image is processed
    with the CameraInfo of its own stamp, not the newest one; an image whose CameraInfo never
    comes is not processed."""
    rg.init_rclpy()
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": random_weights,
                                                  "camera_info_sync": "exact"}, namespace="exact")
    probe = rg.Probe(namespace="exact")
    frame = np.full((720, 1280, 3), 80, np.uint8)

    def info(stamp, K=CAMERA.K):
        return rg.camera_info_msg(K, 1280, 720, stamp)
    try:
        probe.wait_ready(node)
        assert probe.wait_for(lambda: probe.info_pub.get_subscription_count() > 0, 10)
        own, newer, unmatched, last = (next_stamp() for _ in range(4))
        probe.info_pub.publish(info(own))
        probe.info_pub.publish(info(newer, np.zeros((3, 3))))  # the newest: unusable
        probe.image_pub.publish(rg.image_msg(frame, own))
        assert probe.wait_for(lambda: "drivable/grid" in probe.got(own), 30), node.log()
        probe.image_pub.publish(rg.image_msg(frame, unmatched))
        probe.info_pub.publish(info(unmatched + 1))  # 1 ns off: no pair
        probe.image_pub.publish(rg.image_msg(frame, last))  # its CameraInfo after it
        probe.info_pub.publish(info(last))
        assert probe.wait_for(lambda: "drivable/grid" in probe.got(last), 30), node.log()
        assert probe.got(unmatched) == {}
        values = probe.wait_diagnostics(lambda v: v.get("frames_paired") == "2")
        library = importlib.util.find_spec("message_filters") is not None
        pairing = "message_filters" if library else "own pairing"
        assert values["camera_info_sync"] == f"exact ({pairing})"
        assert values["rejected_total"] == "0"  # the unusable CameraInfo was never used
        assert "paired by message_filters' TimeSynchronizer" in node.log() or not library
    finally:
        probe.close()
        assert node.stop() == 0, node.log()


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


def test_managed_bring_up_and_diagnostics(tmp_path, random_weights):
    """autostart:=false, as under a lifecycle manager: every transition is driven from outside
    over the lifecycle services; /diagnostics says what is wrong at each step."""
    from diagnostic_msgs.msg import DiagnosticStatus as D
    rg.init_rclpy()
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": random_weights, "autostart": "false"},
                          namespace="managed")
    probe = rg.Probe(namespace="managed")
    lifecycle = rg.Lifecycle(probe, "/managed/hybridnets_node")
    state = lifecycle.state

    def no_nan(status) -> bool:
        return all(kv.value.lower() != "nan" for kv in status.values)

    try:
        assert state() == "unconfigured"  # autostart:=false: the node waits for its manager
        status = probe.wait_status(lambda s: True)
        assert status.name == "hybridnets_node: perception"  # as diagnostic_updater names it
        assert status.level == D.WARN and "unconfigured" in status.message and no_nan(status)
        assert lifecycle.change(Transition.TRANSITION_CONFIGURE)
        assert state() == "inactive"
        assert lifecycle.change(Transition.TRANSITION_ACTIVATE)
        assert state() == "active"
        # without bondpy the node says what a lifecycle_manager then needs (test_nav2_bond.py:
        # the bond with bondpy)
        if importlib.util.find_spec("bondpy") is None:
            assert probe.wait_for(lambda: "set bond_timeout: 0.0" in node.log(), 5), node.log()
        # no input: WARN, and no latencies to report yet
        status = probe.wait_status(lambda s: "no image received" in s.message)
        assert status.level == D.WARN and no_nan(status)
        assert "latency_median_ms" not in {kv.key for kv in status.values}
        # images but no CameraInfo: outputs without grids, WARN saying why
        probe.wait_for(lambda: probe.image_pub.get_subscription_count() > 0, 10)
        time.sleep(0.5)
        frame = np.full((720, 1280, 3), 70, np.uint8)
        stamp = next_stamp()
        send(probe, frame, stamp, info=False)
        assert probe.wait_for(lambda: "detections" in probe.got(stamp), 30), node.log()
        status = probe.wait_status(lambda s: "no occupancy grids" in s.message)
        assert status.level == D.WARN and "CameraInfo" in status.message and no_nan(status)
        # with CameraInfo all is well
        stamp = next_stamp()
        send(probe, frame, stamp)
        assert probe.wait_for(lambda: "drivable/grid" in probe.got(stamp), 30), node.log()
        for _ in range(3):  # keep images coming so that "no image" does not apply
            send(probe, frame, next_stamp())
            status = probe.wait_status(lambda s: True)
        assert (status.level, status.message) == (D.OK, "ok"), status
        # and back down, and up again
        assert lifecycle.change(Transition.TRANSITION_DEACTIVATE)
        assert state() == "inactive"
        assert lifecycle.change(Transition.TRANSITION_CLEANUP)
        assert state() == "unconfigured"
        assert lifecycle.change(Transition.TRANSITION_CONFIGURE)
        assert state() == "inactive"
    finally:
        probe.close()
        assert node.stop() == 0, node.log()


def test_diagnostics_error_when_the_model_does_not_load(tmp_path):
    from diagnostic_msgs.msg import DiagnosticStatus as D
    rg.init_rclpy()
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": str(tmp_path / "missing.pth")},
                          namespace="broken")
    probe = rg.Probe(namespace="broken")
    try:
        status = probe.wait_status(lambda s: s.level == D.ERROR, timeout=90)
        assert status.message.startswith("model failed to load") and "missing.pth" in status.message
        assert node.alive()  # stays up for a new configure
    finally:
        probe.close()
        assert node.stop() == 0, node.log()


def test_a_late_nav2_subscriber_gets_the_grid_only_detections_were_wanted_for(tmp_path,
                                                                               random_weights):
    """Only `detections` is subscribed while two frames are processed; a transient-local
    subscriber that joins afterwards (as Nav2's static layer) still gets the second frame's
    grids, and the latched LabelInfo and VisionInfo with the class map."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from vision_msgs.msg import Detection2DArray, LabelInfo
    from hybridnets_ros.ros.outputs import OUTPUT_QOS
    rg.init_rclpy()
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": random_weights}, namespace="late")
    graph = rg.Node("only_detections", namespace="late")
    image_pub = graph.create_publisher(Image, "image", qos_profile_sensor_data)
    info_pub = graph.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
    stamps = []
    graph.create_subscription(Detection2DArray, "detections",
                              lambda msg: stamps.append(rg.stamp_ns(msg.header)), OUTPUT_QOS)

    def spin_until(condition, timeout):
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline and node.alive():
            rclpy.spin_once(graph, timeout_sec=0.05)
        return condition()

    latched = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE, depth=1,
                         history=QoSHistoryPolicy.KEEP_LAST,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    try:
        assert spin_until(lambda: image_pub.get_subscription_count() > 0
                          and graph.count_publishers("/late/detections") > 0, 90), node.log()
        time.sleep(0.5)
        frame = np.full((720, 1280, 3), 80, np.uint8)
        for _ in range(2):
            stamp = next_stamp()
            # Best effort, and the node's reader may not have matched this fresh publisher
            # yet (a match is seen from one side first): resent until processed.
            for _ in range(6):
                info_pub.publish(rg.camera_info_msg(CAMERA.K, 1280, 720, stamp))
                image_pub.publish(rg.image_msg(frame, stamp))
                if spin_until(lambda: stamp in stamps, 5):
                    break
            assert stamp in stamps, node.log()
        got = {}
        for topic, msg_type in (("drivable/grid", OccupancyGrid), ("lane/grid", OccupancyGrid),
                                ("segmentation/label_info", LabelInfo), ("vision_info", VisionInfo)):
            graph.create_subscription(msg_type, topic, lambda msg, t=topic: got.setdefault(t, msg),
                                      latched)
        assert spin_until(lambda: len(got) == 4, 10), sorted(got)
    finally:
        graph.destroy_node()
        assert node.stop() == 0, node.log()
    assert rg.stamp_ns(got["drivable/grid"].header) == stamp  # the newest frame's
    assert rg.stamp_ns(got["lane/grid"].header) == stamp
    assert [(c.class_id, c.class_name) for c in got["segmentation/label_info"].class_map] == [
        (0, "background"), (1, "road"), (2, "lane")]
    assert yaml.safe_load(got["vision_info"].database_location)["detections"] == ["car"]
