"""model:=hydra, hyctas and yolop over a real DDS graph, and `hybridnets replay` with hydra
and yolop: each publishes exactly the outputs its network has (random weights, 320x180
frames)."""
import time

import cv2
import numpy as np
import pytest
import yaml

import ros_graph as rg  # sets the DDS environment before rclpy is imported
from hybridnets_ros.cli import main
from hybridnets_ros.core.camera import CameraModel
from hybridnets_ros.core.registry import ADAPTERS as FAMILIES
from hybridnets_ros.core.synthetic import SyntheticRoad
from hybridnets_ros.ros.outputs import LATCHED_QOS, supported
from hybridnets_ros.tools.bags import BagReader

from vision_msgs.msg import VisionInfo  # noqa: E402

pytestmark = pytest.mark.slow  # node processes over DDS, replay runs

CAMERA = CameraModel.from_pose(CameraModel.intrinsics(230.0, 230.0, 160.0, 90.0), 320, 180,
                               (0.0, 0.0, 1.5, 0.0, 0.0, 0.0))
SETTINGS = {"hydra": {"input_scale": 0.5}, "hyctas": {"hyctas_path": "native"}}


def expected_topics(model: str) -> set[str]:
    return {o.topic for o in supported(FAMILIES[model]) if o.per_frame and o.enabled_by is None}


@pytest.mark.parametrize("model", ["hydra", "hyctas", "yolop"])
def test_node_publishes_what_the_model_has(tmp_path, model):
    rg.init_rclpy()
    params = {"model": model, "allow_random_weights": "true", "backend": "onnxruntime",
              "device": "cpu", "camera_resolution": "[320,180]", **SETTINGS.get(model, {})}
    node = rg.NodeProcess(tmp_path / "node.log", params)
    probe = rg.Probe()
    for topic, msg_type in rg.ROAD_OUTPUTS.items():  # the probe leaves them out by default
        probe.create_subscription(msg_type, topic, probe._store(topic), rg.OUTPUT_QOS)
    infos = []
    probe.create_subscription(VisionInfo, "vision_info", infos.append, LATCHED_QOS)
    try:
        probe.wait_ready(node, topic="segmentation/label", timeout=120)
        bgr = SyntheticRoad(CAMERA).render(0.0)[0]
        stamp = 5_000_000_000
        probe.info_pub.publish(rg.camera_info_msg(CAMERA.K, 320, 180, stamp))
        time.sleep(0.2)
        probe.image_pub.publish(rg.image_msg(bgr, stamp))
        # RViz markers are sent only when there is something to draw or delete: random
        # weights may find no object.
        markers = {"detections_3d/markers"}
        wanted = expected_topics(model)
        assert probe.wait_for(lambda: set(probe.got(stamp)) >= wanted - markers, 60), \
            f"got {sorted(probe.got(stamp))}, expected {sorted(wanted)}\n{node.log()}"
        time.sleep(0.5)
        out = probe.got(stamp)
        if "detections" in out and not out["detections"].detections:
            wanted -= markers
        assert set(out) == wanted  # nothing the model does not have
        family = FAMILIES[model]
        labels = np.frombuffer(out["segmentation/label"].data, np.uint8)
        assert labels.size == 320 * 180 and labels.max() < len(family.seg_classes)
        grid = out["drivable/grid"]
        assert grid.header.frame_id == "base_footprint" and rg.stamp_ns(grid.header) == stamp
        assert set(np.unique(np.frombuffer(grid.data, np.int8))) <= {-1, 0, 100}
        if model == "hydra":
            depth = out["depth"]
            assert (depth.encoding, depth.width, depth.height, depth.step) == ("32FC1", 320, 180, 1280)
            assert depth.header.frame_id == "camera_optical_frame"
            assert np.isfinite(np.frombuffer(depth.data, np.float32)).all()
            points = out["points"]
            assert [f.name for f in points.fields] == ["x", "y", "z", "class"]
            assert points.header.frame_id == "base_footprint"
        assert probe.wait_for(lambda: infos, 10)
        classes = yaml.safe_load(infos[-1].database_location)
        assert classes["segmentation/label"] == dict(enumerate(family.seg_classes))
        assert classes["detections"] == list(family.detection_classes)
        assert infos[-1].method == family.method
    finally:
        probe.close()
        assert node.stop() == 0, node.log()


# Written once per replay: the class names (latched) and the camera pose.
ONCE = {"vision_info", "segmentation/label_info", "tf_static"}


def replay_synthetic(tmp_path, *options: str) -> dict[str, list]:
    """Three synthetic frames with their CameraInfo through `hybridnets replay OPTIONS`
    (random weights, ONNX Runtime): the output bag's messages by topic."""
    frames = tmp_path / "frames"
    frames.mkdir()
    scene = SyntheticRoad(CAMERA)
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), scene.render(i * 0.1)[0])
    calib = tmp_path / "calib.yaml"
    calib.write_text(yaml.safe_dump({
        "image_width": 320, "image_height": 180, "camera_name": "cam",
        "camera_matrix": {"rows": 3, "cols": 3, "data": CAMERA.K.ravel().tolist()},
        "distortion_model": "plumb_bob",
        "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.0] * 5}}))
    assert main(["make-bag", str(frames), "--out", str(tmp_path / "in"), "--rate", "5",
                 "--camera-info", str(calib)]) == 0
    assert main(["replay", str(tmp_path / "in"), "--out", str(tmp_path / "out"), *options,
                 "--random-weights", "--backend", "onnxruntime", "--device", "cpu"]) == 0
    with BagReader(tmp_path / "out") as reader:
        messages = {}
        for topic, _, _, msg in reader.messages({t.name for t in reader.topics()}):
            messages.setdefault(topic, []).append(msg)
    return messages


def test_replay_with_hydra(tmp_path):
    messages = replay_synthetic(tmp_path, "--model", "hydra", "--input-scale", "0.5")
    assert set(messages) == {"/" + t for t in expected_topics("hydra") | ONCE}
    assert all(len(messages[t]) == 3 for t in messages if t[1:] not in ONCE)
    depth = messages["/depth"][0]
    assert (depth.encoding, depth.width, depth.height) == ("32FC1", 320, 180)
    assert "Hydra" in messages["/vision_info"][0].method


def test_replay_with_yolop(tmp_path):
    messages = replay_synthetic(tmp_path, "--model", "yolop")
    assert set(messages) == {"/" + t for t in expected_topics("yolop") | ONCE}
    assert all(len(messages[t]) == 3 for t in messages if t[1:] not in ONCE)
    assert messages["/vision_info"][0].method == FAMILIES["yolop"].method
