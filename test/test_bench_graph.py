"""`hybridnets bench --graph`: the node's throughput and latency in a real ROS graph, as
ros2_benchmark measures them (tools/bench_graph.py)."""
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import ros_graph  # noqa: F401  (an isolated DDS domain for the graph the bench starts)
from hybridnets_ros.cli import main
from hybridnets_ros.tools.bench_graph import (dds_environment, input_hash, probe_result,
                                              search_throughput, serialized_stamp_ns)


def test_the_recorder_reads_each_outputs_stamp_without_deserializing():
    from nav_msgs.msg import OccupancyGrid
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2D, Detection2DArray, Detection3DArray

    stamp = 1_765_000_000 * 10**9 + 123_456_789
    for msg in (Image(height=2, width=3, encoding="mono8", step=3, data=bytes(6)),
                OccupancyGrid(data=[0, 100, -1]), Detection3DArray(),
                Detection2DArray(detections=[Detection2D(id="7")])):
        msg.header.frame_id = "camera_optical_frame"
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        assert serialized_stamp_ns(serialize_message(msg)) == stamp, type(msg).__name__


def test_a_probe_counts_every_frame_once_per_topic():
    stamps = [10**9 * (i + 1) for i in range(21)]
    # detections of all but one frame, 100 ms + i ms late; the mask of every other frame
    arrivals = {s: {"detections": s + (100 + i) * 10**6} for i, s in enumerate(stamps[:20])}
    for s in stamps[::2]:
        arrivals.setdefault(s, {})["drivable/mask"] = s + 250 * 10**6
    arrivals[5] = {"detections": 6}  # another probe's frame: not counted
    result = probe_result(10.0, stamps, arrivals, ["detections", "drivable/mask"], 9.9)
    detections, mask = result["topics"]["detections"], result["topics"]["drivable/mask"]
    assert result["published"] == 21 and result["playback_rate_hz"] == 9.9
    assert (detections["received"], detections["dropped"]) == (20, 1)
    assert (mask["received"], mask["dropped"]) == (11, 10)
    assert detections["latency_ms"] == pytest.approx(  # rounded to 0.1 ms
        {"median": 109.5, "p95": 118.05, "max": 119.0}, abs=0.06)
    assert mask["latency_ms"] == {"median": 250.0, "p95": 250.0, "max": 250.0}
    assert detections["output_rate_hz"] == pytest.approx(19 / 19.019, abs=0.01)
    assert not result["sustained"]  # the mask lost half the frames
    # the rule: under 5 % dropped on every topic (1 of 21 passes, 1 of 20 does not)
    assert probe_result(10.0, stamps, arrivals, ["detections"], 10.0)["sustained"]
    assert not probe_result(10.0, stamps[:20], {s: {"detections": s} for s in stamps[:19]},
                            ["detections"], 10.0)["sustained"]
    nothing = probe_result(10.0, stamps, {}, ["detections"], None)["topics"]["detections"]
    assert nothing["received"] == 0 and nothing["latency_ms"]["median"] is None
    assert nothing["output_rate_hz"] is None


@pytest.mark.parametrize("guess", [0.1, 1.0, 4.3, 30.0, 200.0])
def test_the_throughput_search_brackets_the_node_rate(guess):
    probed = []

    def sustained(rate):  # a node that keeps up to 4.3 Hz
        probed.append(rate)
        return rate <= 4.3
    passed, failed = search_throughput(sustained, guess)
    assert passed <= 4.3 < failed and failed <= passed * 1.1
    assert len(probed) <= 12 and len(set(probed)) == len(probed)


def test_the_throughput_search_at_its_bounds():
    assert search_throughput(lambda rate: False, 3.0) == (None, 0.25)
    assert search_throughput(lambda rate: True, 3.0) == (120.0, None)


def test_dds_settings_of_the_player_and_the_recorder():
    from hybridnets_ros.ros.resources import share_file
    user = {"PATH": "/usr/bin", "ROS_DOMAIN_ID": "42", "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA",
            "FASTDDS_DEFAULT_PROFILES_FILE": "/home/me/mine.xml",
            "FASTRTPS_DEFAULT_PROFILES_FILE": "/home/me/old.xml"}
    stock, note = dds_environment("stock", user)
    assert stock == {"PATH": "/usr/bin", "ROS_DOMAIN_ID": "42"} and "stock" in note
    shipped, note = dds_environment("shipped", user)
    profile = {k: v for k, v in shipped.items() if k.startswith(("FASTDDS_", "FASTRTPS_"))}
    # one of the project's profiles (configure_dds chooses which), not the user's
    (value,) = profile.values()
    assert Path(value).parent == share_file("config/fastdds.xml").parent
    assert shipped["ROS_DOMAIN_ID"] == "42" and "profile" in note
    with pytest.raises(ValueError, match="unknown DDS setting 'large'"):
        dds_environment("large", user)


def test_the_input_hash_names_the_frames_published():
    frames = [np.zeros((4, 6, 3), np.uint8), np.full((4, 6, 3), 7, np.uint8)]
    assert input_hash(frames) == input_hash([f.copy() for f in frames])
    changed = [frames[0], frames[1].copy()]
    changed[1][3, 5, 2] = 8
    assert input_hash(changed) != input_hash(frames)
    assert input_hash(frames[::-1]) != input_hash(frames)
    assert input_hash([f.reshape(6, 4, 3) for f in frames]) != input_hash(frames)


def test_the_input_from_a_bag_or_a_folder(tmp_path):
    """The same frames give the same hash from a bag and a folder; the bag's CameraInfo is
    used, a folder gets config/hybridnets.yaml's camera model at the frames' size."""
    from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
    from hybridnets_ros.ros.camera_info import camera_info_from_model
    from hybridnets_ros.tools.bench_graph import load_input
    from hybridnets_ros.tools.make_bag import make_bag

    camera = default_camera(160, 96)
    frames = [SyntheticRoad(camera).render(i / 5)[0] for i in range(3)]
    info = camera_info_from_model(camera, "cam")
    k = [100.0, 0.0, 80.0, 0.0, 100.0, 48.0, 0.0, 0.0, 1.0]
    info.k = k
    make_bag(frames, tmp_path / "bag", 10.0, info)
    from_bag = load_input(str(tmp_path / "bag"), 2)
    assert len(from_bag.frames) == 2 and from_bag.sha256 == input_hash(frames[:2])
    assert list(from_bag.camera_info.k) == k and "the bag's" in from_bag.camera_info_source
    assert from_bag.camera_info.header.frame_id == "camera_optical_frame"
    folder = tmp_path / "images"
    folder.mkdir()
    for i, frame in enumerate(frames[:2]):
        cv2.imwrite(str(folder / f"{i}.png"), frame)
    from_folder = load_input(str(folder), 30)
    assert from_folder.sha256 == from_bag.sha256
    assert (from_folder.camera_info.width, from_folder.camera_info.height) == (160, 96)
    assert from_folder.record()["size"] == "160x96" and from_folder.record()["frames"] == 2


@pytest.mark.parametrize("argv, message", [
    (["bench", "--rates", "10"], "--rates only apply with --graph"),
    (["bench", "--graph", "--backend", "torch-eager"], "torch-eager is a bench variant"),
    (["bench", "--graph", "--threads", "2"], "--threads is not a node setting"),
    (["bench", "--graph", "--backend", "auto:fp64"], "unknown precision 'fp64'"),
    (["bench", "--graph", "--layers"], "--layers profiles the engines in process"),
])
def test_graph_options_are_checked(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_rates_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--graph", "--rates", "10,0"])
    assert exit_.value.code == 2 and "rates must be 0.1 to 1000 Hz" in capsys.readouterr().err


@pytest.mark.slow  # the node, a player and a recorder over DDS
def test_bench_graph_measures_the_node_in_a_graph(tmp_path, random_weights, capsys):
    from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
    from hybridnets_ros.ros.outputs import planner_outputs, supported
    from hybridnets_ros.core.registry import adapter

    scene = SyntheticRoad(default_camera(320, 192))
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), scene.render(i / 5)[0])
    digest = hashlib.sha256()  # the frames as published: shape, then pixels
    for i in range(2):
        frame = cv2.imread(str(tmp_path / f"{i}.png"))
        digest.update(b"192x320x3;" + frame.tobytes())
    out = tmp_path / "graph.json"
    assert main(["bench", "--graph", "--backend", "torch", "--source", str(tmp_path), "--weights",
                 str(random_weights), "--rates", "2", "--seconds", "3", "--no-search",
                 "--dds", "shipped", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["input"]["sha256"] == digest.hexdigest() and doc["input"]["frames"] == 2
    assert doc["machine"]["cpu"] and "rclpy" in doc["machine"]["versions"]
    planner = planner_outputs(adapter("hybridnets"))
    topics = [o.topic for o in supported(adapter("hybridnets")) if o.name in planner]
    assert doc["settings"]["topics"] == topics and "overlay" not in topics
    (run,) = doc["runs"]
    assert (run["backend"], run["dds"], run["node_exit_code"]) == ("torch", "shipped", 0)
    assert run["node_backend"].startswith("torch") and run["throughput_hz"] is None
    probe = run["rates"]["2"]
    published = probe["published"]
    assert published == 6
    for topic in topics:
        got = probe["topics"][topic]
        assert got["received"] + got["dropped"] == published and got["received"] >= 1, topic
        latency = got["latency_ms"]
        assert 0 < latency["median"] <= latency["p95"] <= latency["max"], topic
    # what the node counted for the same frames: each frame it processed yields detections
    node = probe["node"]
    assert probe["topics"]["detections"]["received"] <= node["frames_processed"]
    assert node["frames_processed"] + node["frames_dropped"] <= node["frames_received"] <= published
    printed = capsys.readouterr().out
    assert "throughput" in printed and "detections @2 Hz" in printed and "lane/grid" in printed
