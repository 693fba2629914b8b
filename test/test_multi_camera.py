"""One hybridnets_node serving three cameras over a real DDS graph: per-camera outputs, the
fused surround grid, a silent camera not stalling the others, per-camera diagnostics."""
import math
import threading

import numpy as np
import pytest

import ros_graph as rg  # sets the DDS environment before rclpy is imported
from hybridnets_ros.core.bev import UNSEEN
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from hybridnets_ros.ros.outputs import LATCHED_QOS, OUTPUT_QOS  # noqa: E402

pytestmark = pytest.mark.slow  # a hybridnets_node process over DDS

WIDTH, HEIGHT = 640, 360
POSES = {"front": (0.0, 0.0, 1.5, 0.0, 0.15, 0.0),
         "left": (0.0, 0.5, 1.5, 0.0, 0.15, math.pi / 2),    # yawed +90 deg
         "right": (0.0, -0.5, 1.5, 0.0, 0.15, -math.pi / 2)}  # yawed -90 deg
_stamp = [5_000_000_000]


class MultiProbe(Node):
    """Publishes each camera's images and CameraInfo; keeps outputs by camera and stamp."""

    def __init__(self):
        super().__init__("multi_probe")
        self.lock = threading.Lock()
        self.images, self.infos = {}, {}
        self.detections: dict[str, dict[int, Detection2DArray]] = {}
        self.grids: dict[str, dict[int, OccupancyGrid]] = {}
        self.fused: list[OccupancyGrid] = []
        self.diagnostics: list[DiagnosticArray] = []
        for name in POSES:
            self.images[name] = self.create_publisher(Image, f"{name}/image", qos_profile_sensor_data)
            self.infos[name] = self.create_publisher(CameraInfo, f"{name}/camera_info",
                                                     qos_profile_sensor_data)
            self.detections[name], self.grids[name] = {}, {}
            self.create_subscription(Detection2DArray, f"{name}/detections",
                                     self._keep(self.detections[name]), OUTPUT_QOS)
            self.create_subscription(OccupancyGrid, f"{name}/drivable/grid",
                                     self._keep(self.grids[name]), LATCHED_QOS)
        self.create_subscription(OccupancyGrid, "fused/drivable/grid", self._on_fused, LATCHED_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor_, self._thread = rg.spin_in_background(self)

    def _keep(self, store):
        def callback(msg):
            with self.lock:
                store[rg.stamp_ns(msg.header)] = msg
        return callback

    def _on_fused(self, msg):
        with self.lock:
            self.fused.append(msg)

    def _on_diag(self, msg):
        if any(s.name == "hybridnets_node: perception" for s in msg.status):
            with self.lock:
                self.diagnostics.append(msg)

    def send(self, name, bgr, stamp):
        K = CAMERAS[name].K
        self.infos[name].publish(rg.camera_info_msg(K, WIDTH, HEIGHT, stamp, f"{name}_optical"))
        self.images[name].publish(rg.image_msg(bgr, stamp, frame_id=f"{name}_optical"))

    def count(self, name) -> int:
        with self.lock:
            return len(self.detections[name])

    def close(self):
        rg.close_spinning(self, self.executor_, self._thread)


CAMERAS = {name: default_camera(WIDTH, HEIGHT, pose) for name, pose in POSES.items()}


@pytest.fixture(scope="module")
def frames():
    return {name: SyntheticRoad(camera).render(0.0)[0] for name, camera in CAMERAS.items()}


@pytest.fixture(scope="module")
def node(tmp_path_factory, random_weights):
    yield from rg.serve_node(tmp_path_factory.mktemp("multi"), {
        "weights": random_weights, "backend": "torch", "input_size": 320,
        "camera_resolution": f"[{WIDTH},{HEIGHT}]", **rg.camera_parameters(POSES),
        "fused_rate": 5.0})


@pytest.fixture(scope="module")
def probe(node):
    probe = MultiProbe()
    rg.wait_serving_cameras(node, probe, probe.images.values())
    yield probe
    probe.close()


def publish_until(probe, names, frames, processed: int, timeout: float = 90) -> None:
    """Publish every camera of ``names`` each round until each has ``processed`` more outputs."""
    start = {name: probe.count(name) for name in names}

    def send_round():
        _stamp[0] += 50_000_000
        for name in names:
            probe.send(name, frames[name], _stamp[0])

    rg.publish_rounds(send_round, lambda: all(probe.count(name) - start[name] >= processed
                                              for name in names), timeout,
                      f"{processed} more outputs for each of {', '.join(names)}")


def test_each_camera_gets_its_own_outputs_and_the_fused_grid_sees_around(node, probe, frames):
    publish_until(probe, POSES, frames, processed=2)
    for name in POSES:
        with probe.lock:
            detections = list(probe.detections[name].values())
            grids = list(probe.grids[name].values())
        assert {d.header.frame_id for d in detections} == {f"{name}_optical"}
        assert grids and grids[-1].header.frame_id == "base_footprint"
    with probe.lock:
        sent = {stamp for name in POSES for stamp in probe.detections[name]}

    def fused_from_results():
        # A fused grid stamped with an input stamp (the oldest contributing); one timed
        # before the first results is all unknown, stamped with the node's clock.
        with probe.lock:
            return next((g for g in reversed(probe.fused) if rg.stamp_ns(g.header) in sent),
                        None)
    assert rg.wait_for(lambda: fused_from_results() is not None, 10), node.log()
    fused = fused_from_results()
    info = fused.info
    assert (info.width, info.height, round(info.resolution, 6)) == (600, 600, 0.1)
    assert (info.origin.position.x, info.origin.position.y) == (-30.0, -30.0)
    assert fused.header.frame_id == "base_footprint"
    values = np.frombuffer(fused.data, np.int8).reshape(600, 600)

    def seen(x, y):
        return values[int((y + 30) / 0.1), int((x + 30) / 0.1)] != UNSEEN
    assert seen(10, 0) and seen(0, 10) and seen(0, -10), "ahead, left and right"
    assert not seen(-10, 0), "nobody looks backwards"


def test_a_silent_camera_does_not_stall_the_others(node, probe, frames):
    last_right = _stamp[0]  # right publishes nothing from here on
    publish_until(probe, ("front", "left"), frames, processed=3)
    with probe.lock:
        assert max(probe.detections["right"]) <= last_right
        assert max(probe.detections["front"]) > last_right and max(probe.detections["left"]) > last_right
    # /diagnostics: the shared engine first, then one status per camera.
    def statuses():
        with probe.lock:
            return {s.name: s for s in probe.diagnostics[-1].status} if probe.diagnostics else {}
    assert rg.wait_for(lambda: len(statuses()) == 4, 10)
    status = statuses()
    assert {"hybridnets_node: camera front", "hybridnets_node: camera left",
            "hybridnets_node: camera right"} <= set(status)
    engine = {kv.key: kv.value for kv in status["hybridnets_node: perception"].values}
    assert engine["cameras"] == "front, left, right" and int(engine["batches_run"]) > 0
    for name in POSES:
        values = {kv.key: kv.value for kv in status[f"hybridnets_node: camera {name}"].values}
        assert int(values["frames_processed"]) > 0 and "frames_dropped" in values
        assert "latency_median_ms" in values and "input_rate_hz" in values
    # The silent camera is named once its silence passes three diagnostics periods.
    assert rg.wait_for(lambda: "no image received on right/image"
                      in statuses()["hybridnets_node: camera right"].message, 15)
