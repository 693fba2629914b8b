"""make-bag -> replay -> the output bag read back; interruption; unreadable and empty bags
(damaged ones: test_damaged_inputs)."""
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import ros_graph  # noqa: F401  (isolated DDS environment; rclpy message types)
from conftest import REPO, check_humble_metadata, match_detections, read_bag
from hybridnets_ros.cli import main
from hybridnets_ros.tools.bags import typestore
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera

pytestmark = pytest.mark.slow  # CLI runs of make-bag and replay, a replay subprocess

CAMERA_YAML = """image_width: 1280
image_height: 720
camera_name: dashcam
camera_matrix: {rows: 3, cols: 3, data: [914.0, 0.0, 640.0, 0.0, 914.0, 360.0, 0.0, 0.0, 1.0]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [0.0, 0.0, 0.0, 0.0, 0.0]}
"""
# The model's description (VisionInfo, LabelInfo): once per bag, as the node latches it.
MODEL_TOPICS = {"/vision_info", "/segmentation/label_info"}
OUTPUT_TOPICS = {"/detections", "/drivable/mask", "/lane/mask", "/segmentation/label",
                 "/segmentation/confidence", "/segmentation/color", "/overlay"}
# Written when the bag has a CameraInfo.
CAMERA_TOPICS = {"/drivable/grid", "/lane/grid", "/detections_3d", "/detections_3d/markers",
                 "/segmentation/points", "/road_geometry", "/lanes", "/lanes/markers",
                 "/drivable/scan"}


def run(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def infer_npz(tmp_path_factory, sample_images, random_weights):
    out = tmp_path_factory.mktemp("infer")
    assert run("infer", sample_images[0].parent, "--weights", random_weights, "--output", out,
               "--save-npz") == 0
    return {p.stem: dict(np.load(p)) for p in out.glob("*.npz")}


@pytest.fixture(scope="module")
def camera_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "dashcam.yaml"
    path.write_text(CAMERA_YAML)
    return path


@pytest.mark.parametrize("storage, compressed, with_info", [
    ("mcap", False, True), ("sqlite3", False, False), ("mcap", True, True)])
def test_round_trip(tmp_path, sample_images, random_weights, infer_npz, camera_yaml,
                    storage, compressed, with_info):
    bag_in, bag_out = tmp_path / "in", tmp_path / "out"
    make = ["make-bag", sample_images[0].parent, "--out", bag_in, "--rate", 5, "--storage", storage]
    make += ["--camera-info", camera_yaml] if with_info else []
    make += ["--compressed"] if compressed else []
    assert run(*make) == 0
    assert run("replay", bag_in, "--out", bag_out, "--weights", random_weights,
               "--storage", storage, "--keep-input") == 0

    # what `ros2 bag play` on Humble, Jazzy and Kilted reads, with the node's QoS per topic
    # (rmw values: durability 1 transient local, 2 volatile; reliability 1 reliable)
    latched = {"/drivable/grid", "/lane/grid"} | MODEL_TOPICS
    check_humble_metadata(bag_out, {t: (1 if t in latched else 2, 1) for t in
                                    OUTPUT_TOPICS | (CAMERA_TOPICS if with_info else set())})
    inputs, outputs = read_bag(bag_in), read_bag(bag_out)
    image_topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    frames = inputs[image_topic]
    assert len(frames) == 6
    expected_topics = OUTPUT_TOPICS | (CAMERA_TOPICS if with_info else set())
    # --keep-input copies the inputs; the class names once, as the node latches them
    assert set(outputs) == expected_topics | set(inputs) | MODEL_TOPICS
    assert all(len(outputs[topic]) == 1 for topic in MODEL_TOPICS)
    for topic in expected_topics:
        assert len(outputs[topic]) == len(frames), topic
        for (in_time, in_msg), (out_time, out_msg) in zip(frames, outputs[topic]):
            assert out_time == in_time  # recorded at the input's receive time
            # a MarkerArray has no header: its markers' stamps
            headers = ([m.header for m in out_msg.markers] if topic.endswith("/markers")
                       else [out_msg.header])
            assert all((h.stamp.sec, h.stamp.nanosec) ==
                       (in_msg.header.stamp.sec, in_msg.header.stamp.nanosec) for h in headers)
    if with_info:  # Nav2's semantic layer pairs these by stamp: one size per frame
        for label, confidence, cloud in zip(*(
                (m for _, m in outputs[f"/segmentation/{name}"])
                for name in ("label", "confidence", "points"))):
            assert ((label.width, label.height) == (confidence.width, confidence.height)
                    == (cloud.width, cloud.height) == (1280, 720))
            assert label.header.stamp == confidence.header.stamp == cloud.header.stamp
    if compressed:
        return  # JPEG frames differ from the files infer read; the raw cases compare below
    for path, (_, det) in zip(sorted(sample_images), outputs["/detections"]):
        ref = infer_npz[path.stem]
        boxes = np.array([[d.bbox.center.position.x - d.bbox.size_x / 2,
                           d.bbox.center.position.y - d.bbox.size_y / 2,
                           d.bbox.center.position.x + d.bbox.size_x / 2,
                           d.bbox.center.position.y + d.bbox.size_y / 2] for d in det.detections])
        scores = np.array([d.results[0].hypothesis.score for d in det.detections])
        match_detections(boxes.reshape(-1, 4), scores, np.zeros(len(scores), np.int64),
                         ref["det_boxes_xyxy"], ref["det_scores"], ref["det_classes"])


def test_ros1_bag_with_upper_case_camera_info(tmp_path, random_weights):
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore
    store = get_typestore(Stores.ROS1_NOETIC)
    Image, Info = store.types["sensor_msgs/msg/Image"], store.types["sensor_msgs/msg/CameraInfo"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    Roi = store.types["sensor_msgs/msg/RegionOfInterest"]
    frame = SyntheticRoad(default_camera(640, 360)).render(0.0)[0]
    camera = default_camera(640, 360)
    path = tmp_path / "drive.bag"
    with Writer(path) as bag:
        img_conn = bag.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=store)
        info_conn = bag.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        for i in range(2):
            header = Header(seq=i, stamp=Time(sec=100 + i, nanosec=0), frame_id="cam")
            info = Info(header=header, height=360, width=640, distortion_model="plumb_bob",
                        D=np.zeros(5), K=camera.K.ravel(), R=np.eye(3).ravel(),
                        P=np.hstack([camera.K, np.zeros((3, 1))]).ravel(), binning_x=0, binning_y=0,
                        roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            bag.write(info_conn, (100 + i) * 10**9, store.serialize_ros1(info, "sensor_msgs/msg/CameraInfo"))
            img = Image(header=header, height=360, width=640, encoding="bgr8", is_bigendian=0,
                        step=640 * 3, data=frame.ravel())
            bag.write(img_conn, (100 + i) * 10**9 + 1, store.serialize_ros1(img, "sensor_msgs/msg/Image"))
    out = tmp_path / "out"
    assert run("replay", path, "--out", out, "--weights", random_weights) == 0
    outputs = read_bag(out)
    assert len(outputs["/detections"]) == 2 and len(outputs["/drivable/grid"]) == 2


def test_interrupted_replay_leaves_a_readable_bag(tmp_path, random_weights):
    scene = SyntheticRoad(default_camera(640, 360))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(12):
        cv2.imwrite(str(frames / f"{i:03d}.png"), scene.render(i / 10)[0])
    assert run("make-bag", frames, "--out", tmp_path / "in") == 0
    out = tmp_path / "out"
    exe = Path(sys.executable).parent / "hybridnets"
    proc = subprocess.Popen([str(exe), "replay", str(tmp_path / "in"), "--out", str(out),
                             "--weights", str(random_weights), "--backend", "torch"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    seen, deadline = "", time.monotonic() + 120
    while " 3/12 " not in seen and time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stderr], [], [], 0.5)[0]:
            seen += os.read(proc.stderr.fileno(), 4096).decode(errors="replace")
    assert " 3/12 " in seen, seen
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stdout, stdout
    detections = read_bag(out)["/detections"]
    assert 3 <= len(detections) < 12


def test_missing_corrupt_empty_and_wrong_topics(tmp_path, random_weights, capsys, camera_yaml):
    def replay_error(bag, *extra, status=2):
        code = run("replay", bag, "--out", tmp_path / f"out{time.monotonic_ns()}",
                   "--weights", random_weights, *extra)
        assert code == status
        return capsys.readouterr().err

    assert "no such bag" in replay_error(tmp_path / "absent")
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x00" * 1000)
    assert "cannot read" in replay_error(junk)

    frame = tmp_path / "one"
    frame.mkdir()
    cv2.imwrite(str(frame / "a.png"), SyntheticRoad(default_camera(1280, 720)).render(0)[0])
    assert run("make-bag", frame, "--out", tmp_path / "one_bag", "--camera-info", camera_yaml) == 0
    err = replay_error(tmp_path / "one_bag", "--image-topic", "/front/image")
    assert "has no topic /front/image" in err and "/camera/image_raw (sensor_msgs/msg/Image)" in err
    assert "no CameraInfo topic /x" in replay_error(tmp_path / "one_bag", "--camera-info-topic", "/x")

    from hybridnets_ros.tools.bags import BagWriter
    with BagWriter(tmp_path / "empty") as bag:  # a valid bag without any messages
        bag._connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo")
    assert "no image topics in the bag" in replay_error(tmp_path / "empty")

    truncated = tmp_path / "sqlite_cut"
    assert run("make-bag", frame, "--out", truncated, "--storage", "sqlite3") == 0
    db = next(truncated.glob("*.db3"))
    db.write_bytes(db.read_bytes()[:5000])  # not even its topics: a damaged bag, nothing read
    assert "cannot read" in replay_error(truncated, status=3)


def test_vision_msgs_definitions_are_registered():
    store = typestore()
    fields = [name for name, _ in store.fielddefs["vision_msgs/msg/Detection2D"][1]]
    assert fields == ["header", "results", "bbox", "id"]
