"""When hybridnets_node cannot publish, it says so (issue 26), over a real DDS graph: a
camera's new image size builds its engine while the other camera keeps being served,
impossible camera poses are refused or reported, blank fused grids replace stale ones, and
the model can be chosen again while the node is unconfigured."""
import math
import threading
import time

import numpy as np
import pytest

import ros_graph as rg  # sets the DDS environment before rclpy is imported
from hybridnets_ros.core.bev import UNSEEN
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from hybridnets_ros.ros.outputs import LATCHED_QOS, OUTPUT_QOS  # noqa: E402

pytestmark = pytest.mark.slow  # hybridnets_node processes over DDS

# front's size is the configured camera_resolution (its engines are built at configure);
# left's gives another network input at input_size 384 (384x384 against 256x384).
SIZES = {"front": (640, 360), "left": (640, 480)}
POSES = {"front": (0.0, 0.0, 1.5, 0.0, 0.15, 0.0),
         "left": (0.0, 0.5, 1.5, 0.0, 0.15, math.pi / 2)}
SKY = (0.0, 0.0, 1.5, 0.0, -0.8, 0.0)  # pitched 46 deg up: no pixel sees the ground
_stamp = [7_000_000_000]


def next_stamp() -> int:
    _stamp[0] += 50_000_000
    return _stamp[0]


class SignalsProbe(Node):
    """Publishes both cameras' images; keeps detections (with arrival times), fused grids,
    and this node's /diagnostics statuses by name."""

    def __init__(self, node_name: str):
        super().__init__("signals_probe")
        self.lock = threading.Lock()
        self.images, self.infos = {}, {}
        self.detections: dict[str, list[tuple[float, int]]] = {}  # (arrival, stamp)
        self.fused: list[OccupancyGrid] = []
        self.statuses: list[DiagnosticStatus] = []
        self._node_name = node_name
        for name in SIZES:
            self.images[name] = self.create_publisher(Image, f"{name}/image",
                                                      qos_profile_sensor_data)
            self.infos[name] = self.create_publisher(CameraInfo, f"{name}/camera_info",
                                                     qos_profile_sensor_data)
            self.detections[name] = []
            self.create_subscription(Detection2DArray, f"{name}/detections",
                                     self._keep(self.detections[name]), OUTPUT_QOS)
        self.create_subscription(OccupancyGrid, "fused/drivable/grid", self._on_fused, LATCHED_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor_, self._thread = rg.spin_in_background(self)

    def _keep(self, store):
        def callback(msg):
            with self.lock:
                store.append((time.monotonic(), rg.stamp_ns(msg.header)))
        return callback

    def _on_fused(self, msg):
        with self.lock:
            self.fused.append(msg)

    def _on_diag(self, msg):
        ours = [s for s in msg.status if any(kv.key == "node" and kv.value == self._node_name
                                             for kv in s.values)]
        with self.lock:
            self.statuses.extend(ours)

    def send(self, name: str, frames: dict, stamp: int) -> None:
        width, height = SIZES[name]
        self.infos[name].publish(rg.camera_info_msg(CAMERAS[name].K, width, height, stamp,
                                                    f"{name}_optical"))
        self.images[name].publish(rg.image_msg(frames[name], stamp, frame_id=f"{name}_optical"))

    def wait_for(self, condition, timeout: float) -> bool:
        return rg.wait_for(condition, timeout)

    def outputs(self, name: str) -> list[tuple[float, int]]:
        with self.lock:
            return list(self.detections[name])

    def status_seen(self, condition) -> DiagnosticStatus | None:
        with self.lock:
            return next((s for s in self.statuses if condition(s)), None)

    def close(self):
        rg.close_spinning(self, self.executor_, self._thread)


CAMERAS = {name: default_camera(*SIZES[name], POSES[name]) for name in SIZES}


def values(status: DiagnosticStatus) -> dict:
    return {kv.key: kv.value for kv in status.values}


def set_parameter(probe, service: str, name: str, value):
    client = probe.create_client(SetParameters, service)
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return rg.call(probe, client, request).results[0]  # the same value again: idempotent


@pytest.fixture(scope="module")
def frames():
    return {name: SyntheticRoad(camera).render(0.0)[0] for name, camera in CAMERAS.items()}


@pytest.fixture(scope="module")
def node(tmp_path_factory, random_weights):
    yield from rg.serve_node(tmp_path_factory.mktemp("signals"), {
        "weights": random_weights, "backend": "torch", "input_size": 384,
        "camera_resolution": "[640,360]", **rg.camera_parameters(POSES),
        "fused_rate": 5.0, "diagnostics_period": 0.5})


@pytest.fixture(scope="module")
def probe(node):
    probe = SignalsProbe("/hybridnets_node")
    rg.wait_serving_cameras(node, probe, probe.images.values())
    yield probe
    probe.close()


def publish_until(probe, names, frames, condition, timeout: float, what: str) -> None:
    def send_round():
        stamp = next_stamp()
        for name in names:
            probe.send(name, frames, stamp)

    rg.publish_rounds(send_round, condition, timeout, what)


def test_a_new_size_builds_its_engine_while_the_other_camera_is_served(node, probe, frames):
    publish_until(probe, ["front"], frames, lambda: len(probe.outputs("front")) >= 2, 90,
                  "front's outputs")
    first_left = _stamp[0] + 50_000_000  # the next round's stamp: left's first frame
    publish_until(probe, ["front", "left"], frames, lambda: probe.outputs("left"), 240,
                  "left's first output (its engine built)")
    left_first_arrival = probe.outputs("left")[0][0]
    served = [stamp for arrival, stamp in probe.outputs("front")
              if stamp >= first_left and arrival < left_first_arrival]
    assert len(served) >= 2, (f"front was not served while left's engine was built: {served}",
                              node.log())
    building = probe.status_seen(lambda s: s.name == "hybridnets_node: camera left"
                                 and "building engine for 640x480, batch 1" in s.message)
    assert building is not None and building.level == DiagnosticStatus.WARN, node.log()
    assert probe.status_seen(lambda s: s.name == "hybridnets_node: perception"
                             and "640x480, batch 1" in values(s).get("engine_builds", ""))
    # Done: its duration reported, left's dropped frames counted, front never waited.
    assert rg.wait_for(lambda: probe.status_seen(
        lambda s: "last_engine_build" in values(s)
        and values(s)["last_engine_build"].startswith("640x480, batch 1 in ")), 10)
    left = probe.status_seen(lambda s: s.name == "hybridnets_node: camera left"
                             and "frames_dropped_engine_build" in values(s)
                             and "building" not in s.message)
    assert left is not None and int(values(left)["frames_dropped_engine_build"]) >= 1
    # The worker writes these lines after the status values change: wait for them.
    for line in ("camera left: building engine for 640x480, batch 1 (network input 384x384)",
                 "engine for 640x480, batch 1 built in"):
        assert rg.wait_for(lambda line=line: line in node.log(), 30), (line, node.log())


def test_impossible_poses_are_refused_or_reported_and_the_fused_grid_goes_blank(
        node, probe, frames):
    service = "/hybridnets_node/set_parameters"
    below = [*POSES["front"], 0.0, 0.5, -1.5, 0.0, 0.15, math.pi / 2]
    refused = set_parameter(probe, service, "camera_poses", below)
    assert not refused.successful
    assert "camera_poses of camera left" in refused.reason and "below the ground" in refused.reason

    def blank() -> bool:
        with probe.lock:
            grid = probe.fused[-1] if probe.fused else None
        return grid is not None and (np.frombuffer(grid.data, np.int8) == UNSEEN).all()
    publish_until(probe, ["front", "left"], frames, lambda: probe.fused and not blank(), 120,
                  "a fused grid with seen cells")
    # Both pitched at the sky: plausible numbers, but no pixel sees the ground.
    assert set_parameter(probe, service, "camera_poses", [*SKY, *SKY]).successful
    with probe.lock:
        probe.statuses.clear()

    def told() -> DiagnosticStatus | None:
        return probe.status_seen(lambda s: "impossible camera pose" in values(s).get(
            "fused_grids", ""))
    publish_until(probe, ["front", "left"], frames, lambda: blank() and told(), 60,
                  "an all-unknown fused grid and its reason in /diagnostics")
    engine = told()
    assert values(engine)["fused_grids"].startswith(
        "all unknown: no camera sees a cell of the fused grid (front: impossible camera pose"), \
        values(engine)
    for name in SIZES:
        def reported(name=name) -> DiagnosticStatus | None:
            return probe.status_seen(lambda s: s.name == f"hybridnets_node: camera {name}"
                                     and "impossible camera pose" in s.message)
        publish_until(probe, ["front", "left"], frames, reported, 60,
                      f"camera {name}'s status naming its impossible pose")
        status = reported()
        assert status.level == DiagnosticStatus.WARN
        assert "no part of the image sees the ground" in status.message
        assert int(values(status)["frames_impossible_pose"]) >= 1
        # said once in the log (written after the status changed), however many frames followed
        said = f"camera {name}: impossible camera pose"
        assert rg.wait_for(lambda said=said: said in node.log(), 30), node.log()
        assert node.log().count(said) == 1, node.log()
    assert node.alive()


def test_an_impossible_pose_at_start_up_is_an_error_and_the_node_stays_up(tmp_path,
                                                                          random_weights):
    rg.init_rclpy()
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": random_weights,
                                                  "camera_pose": "[0.0,0.0,-1.5,0.0,0.0,0.0]"},
                          namespace="under")
    probe = rg.Probe(namespace="under")
    try:
        status = probe.wait_status(lambda s: "bad parameters" in s.message, timeout=60)
        assert status.level == DiagnosticStatus.ERROR
        assert "camera_pose" in status.message and "below the ground plane" in status.message
        assert node.alive()
    finally:
        probe.close()
        assert node.stop() == 0, node.log()


def test_the_model_is_chosen_again_while_unconfigured(tmp_path):
    rg.init_rclpy()
    node = rg.NodeProcess(tmp_path / "node.log", {
        "allow_random_weights": "true", "autostart": "false", "backend": "torch",
        "camera_resolution": "[]", "input_size": 256}, namespace="relo")
    probe = rg.Probe(namespace="relo")
    lifecycle = rg.Lifecycle(probe, "/relo/hybridnets_node")
    transition, state = lifecycle.change, lifecycle.state
    service = "/relo/hybridnets_node/set_parameters"

    try:
        assert state() == "unconfigured"
        assert set_parameter(probe, service, "model", "yolop").successful
        assert set_parameter(probe, service, "input_size", 320).successful
        assert transition(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
        assert rg.wait_for(lambda: "model ready: yolop" in node.log(), 10), node.log()
        refused = set_parameter(probe, service, "model", "hybridnets")
        assert not refused.successful
        assert "model can only change while the node is unconfigured (it is inactive)" in \
            refused.reason
        assert transition(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
        assert set_parameter(probe, service, "model", "hybridnets").successful
        assert transition(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
        assert rg.wait_for(lambda: "model ready: hybridnets" in node.log(), 10), node.log()
        assert not set_parameter(probe, service, "cameras", ["a"]).successful  # fixed for life
    finally:
        probe.close()
        assert node.stop() == 0, node.log()
