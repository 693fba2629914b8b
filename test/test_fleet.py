"""``hybridnets fleet`` over generated bags (single-camera, two-camera, corrupt): in this
process without Ray, on a real local Ray cluster (2 CPUs) with a worker killed mid-bag, and
a rerun; outputs and index against single-bag ``replay`` of the same bags. Also: the bags we
write carry /tf_static and zstd chunks, read back with rosbags and mcap."""
from __future__ import annotations

import json
import math
import shutil
import sys

import numpy as np
import pytest

import ros_graph  # noqa: F401  (isolated DDS environment; rclpy message types)
from hybridnets_ros.cli import main
from hybridnets_ros.core.camera import optical_transform
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
from hybridnets_ros.ros.camera_info import camera_info_from_model
from hybridnets_ros.tools.bags import BagReader
from hybridnets_ros.tools.fleet import EXIT_HOOK_ENV, bag_names, find_bags
from hybridnets_ros.tools.make_bag import CameraStream, make_bag, make_camera_bag
from hybridnets_ros.tools.static_tf import read_static_transforms

WIDTH, HEIGHT = 320, 192
POSES = {"front": (0.0, 0.0, 1.5, 0.0, 0.15, 0.0),
         "left": (0.0, 0.5, 1.5, 0.0, 0.15, math.pi / 2)}
SINGLE = ("drive0", "drive1", "drive2")  # 3 frames each
MULTI_FRAMES = 2                         # per camera of the two-camera bag
# The smallest network input and the fastest engine here; a threshold that keeps some of
# the random network's boxes (fewer than the cap, so that no tie at the cap decides).
PARAMS = """/**:
  ros__parameters:
    input_size: 128
    backend: onnxruntime
    allow_random_weights: true
    conf_threshold: 0.1
"""


def read_bag(path) -> dict[str, list]:
    """{topic: [(bag timestamp, message)]}."""
    out = {}
    with BagReader(path) as reader:
        for topic, _, timestamp, msg in reader.messages({t.name for t in reader.topics()}):
            out.setdefault(topic, []).append((timestamp, msg))
    return out


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A folder of bags: three one-camera drives, a two-camera drive, a corrupt file."""
    root = tmp_path_factory.mktemp("archive")
    camera = default_camera(WIDTH, HEIGHT)
    scene = SyntheticRoad(camera)
    frames = [scene.render(i / 10)[0] for i in range(3)]
    for index, name in enumerate(SINGLE):
        make_bag(frames, root / name, 10.0, camera_info_from_model(camera, "camera_optical_frame"),
                 start_ns=(index + 1) * 10**9, camera_pose=(0.0, 0.0, 1.5, 0.0, 0.0, 0.0))
    streams = []
    for name, pose in POSES.items():
        model = default_camera(WIDTH, HEIGHT, pose)
        view = SyntheticRoad(model)
        streams.append(CameraStream([view.render(i / 10)[0] for i in range(MULTI_FRAMES)],
                                    camera_info_from_model(model, f"{name}_optical"), pose,
                                    f"/{name}", f"{name}_optical"))
    make_camera_bag(streams, root / "surround", 10.0, start_ns=5 * 10**9)
    (root / "corrupt.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 8)
    params = root.parent / "params.yaml"
    params.write_text(PARAMS)
    return root, params


@pytest.fixture(scope="module")
def replays(archive, tmp_path_factory):
    """Single-bag `hybridnets replay` of drive0 and the two-camera bag: the reference."""
    root, params = archive
    out = tmp_path_factory.mktemp("replays")
    for name in ("drive0", "surround"):
        assert main(["replay", str(root / name), "--out", str(out / name),
                     "--params-file", str(params)]) == 0
    return out


def index_of(out):
    import pyarrow.parquet as pq
    return pq.read_table(out / "index.parquet").to_pylist()


def assert_same_outputs(bag, reference, exact: bool) -> None:
    """The fleet's output bag against replay's: topics, counts, times; detections (equal,
    or to a tenth of a pixel when another process with other thread counts ran them)."""
    got, want = read_bag(bag), read_bag(reference)
    assert set(got) == set(want)
    for topic in want:
        assert [t for t, _ in got[topic]] == [t for t, _ in want[topic]], topic
        if topic.endswith("/detections"):
            for (_, a), (_, b) in zip(got[topic], want[topic]):
                boxes = [[[d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x,
                           d.bbox.size_y] for d in m.detections] for m in (a, b)]
                assert len(boxes[0]) == len(boxes[1]), topic
                np.testing.assert_allclose(np.reshape(boxes[0], (-1, 4)),
                                           np.reshape(boxes[1], (-1, 4)),
                                           atol=0 if exact else 0.1)
        if topic.endswith("/grid"):
            for (_, a), (_, b) in zip(got[topic], want[topic]):
                agree = np.mean(np.asarray(a.data) == np.asarray(b.data))
                assert agree == 1.0 if exact else agree > 0.99, topic


def assert_index_matches(rows, name, reference) -> None:
    """The index rows of bag ``name`` say what replay's output bag holds, frame by frame."""
    outputs = read_bag(reference)
    mine = [r for r in rows if r["bag"] == name]
    detections = {k: v for k, v in outputs.items() if k.endswith("/detections")}
    assert len(mine) == sum(len(v) for v in detections.values())
    for topic, messages in detections.items():
        camera_rows = sorted((r for r in mine if r["topic"].startswith(topic.rsplit("/", 1)[0] or "/camera")),
                             key=lambda r: r["stamp_ns"])
        masks = outputs[topic.replace("detections", "drivable/mask")]
        assert len(camera_rows) == len(messages)
        for row, (_, det), (_, mask) in zip(camera_rows, messages, masks):
            assert row["rejected"] is None
            assert row["stamp_ns"] == det.header.stamp.sec * 10**9 + det.header.stamp.nanosec
            assert row["det_car"] == len(det.detections)
            scores = [d.results[0].hypothesis.score for d in det.detections]
            assert row["max_score"] == pytest.approx(max(scores), abs=1e-4)
            fraction = np.mean(np.frombuffer(bytes(mask.data), np.uint8) > 0)
            assert row["drivable_fraction"] == pytest.approx(fraction, abs=1e-3)
            assert row["processing_ms"] > 0


def test_inputs_found_and_named(tmp_path, archive):
    root, _ = archive
    found = find_bags([root])
    assert sorted(p.name for p in found) == ["corrupt.mcap", *SINGLE, "surround"]
    listing = tmp_path / "bags.txt"
    listing.write_text(f"# two of them\n{root / 'drive0'}\n\n{root / 'surround'}  # the surround one\n")
    assert [p.name for p in find_bags([listing, root / "drive0"])] == ["drive0", "surround"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert bag_names([tmp_path / "a" / "x.mcap", tmp_path / "b" / "x.mcap", tmp_path / "y"]) == \
        ["a_x", "b_x", "y"]


def assert_tf_static_and_zstd(bag, frames: dict) -> None:
    """``bag`` holds one /tf_static message relating each optical frame of ``frames`` to
    base_footprint by its pose, and zstd chunks; rosbags and the mcap library both read it."""
    from mcap.reader import make_reader
    with BagReader(bag) as reader:
        static = read_static_transforms(reader)
    for frame, pose in frames.items():
        R, t = static.lookup("base_footprint", frame)
        R_want, t_want = optical_transform(pose)
        np.testing.assert_allclose(R, R_want, atol=1e-9)
        np.testing.assert_allclose(t, t_want, atol=1e-9)
    (path,) = bag.glob("*.mcap")
    with open(path, "rb") as stream:
        reader = make_reader(stream)
        assert {c.compression for c in reader.get_summary().chunk_indexes} == {"zstd"}
        counts = {}
        for _, channel, _ in reader.iter_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
    assert counts["/tf_static"] == 1  # one latched message with every camera
    assert counts == {topic: len(messages) for topic, messages in read_bag(bag).items()}


SURROUND_FRAMES = {f"{name}_optical": pose for name, pose in POSES.items()}


def test_make_bag_writes_tf_static_and_zstd_chunks(archive):
    """Foxglove and RViz can relate the camera frames to base_footprint."""
    root, _ = archive
    assert_tf_static_and_zstd(root / "surround", SURROUND_FRAMES)
    assert_tf_static_and_zstd(root / "drive0", {"camera_optical_frame": (0, 0, 1.5, 0, 0, 0)})


def test_static_transforms_compose_a_chain():
    from hybridnets_ros.core.camera import quaternion_from_rotation, rotation_from_quaternion
    from hybridnets_ros.tools.static_tf import StaticTransforms
    rng = np.random.default_rng(0)
    for q in rng.normal(size=(200, 4)):
        R = rotation_from_quaternion(*(q / np.linalg.norm(q)))
        np.testing.assert_allclose(rotation_from_quaternion(*quaternion_from_rotation(R)), R,
                                   atol=1e-12)
    tree = StaticTransforms()
    R_body, t_body = optical_transform((1.0, 0.5, 1.2, 0.0, 0.1, 0.3))
    tree.set("base_footprint", "camera_link", np.eye(3), np.array([1.0, 0.5, 1.2]))
    tree.set("camera_link", "camera_optical", R_body, np.zeros(3))
    R, t = tree.lookup("base_footprint", "/camera_optical")
    np.testing.assert_allclose(R, R_body, atol=1e-12)
    np.testing.assert_allclose(t, t_body, atol=1e-12)
    assert tree.lookup("map", "camera_optical") is None
    tree.set("camera_optical", "camera_link", np.eye(3), np.zeros(3))  # a loop
    assert tree.lookup("base_footprint", "camera_optical") is None


@pytest.mark.slow
def test_replay_writes_every_camera_tf_static_and_zstd_chunks(replays):
    assert_tf_static_and_zstd(replays / "surround", SURROUND_FRAMES)
    assert_tf_static_and_zstd(replays / "drive0", {"camera_optical_frame": (0, 0, 1.5, 0, 0, 0)})
    # the outputs of several cameras as the multi-camera node publishes them
    topics = set(read_bag(replays / "surround"))
    assert {"/front/detections", "/left/detections", "/front/drivable/grid",
            "/left/detections_3d", "/fused/drivable/grid", "/fused/lane/grid"} <= topics


@pytest.mark.slow
def test_fleet_in_process_without_ray(tmp_path, archive, replays):
    root, params = archive
    if "ray" in sys.modules:
        pytest.skip("ray was imported by an earlier test")
    listing = tmp_path / "bags.txt"
    listing.write_text(f"{root / 'drive0'}\n{root / 'surround'}\n")
    out = tmp_path / "out"
    assert main(["fleet", str(listing), "--out", str(out), "--params-file", str(params)]) == 0
    assert "ray" not in sys.modules  # one worker, no --ray: everything in this process
    for name in ("drive0", "surround"):
        assert_same_outputs(out / name, replays / name, exact=True)
        assert_index_matches(index_of(out), name, replays / name)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the module: starting one takes seconds."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_fleet_on_ray_with_a_killed_worker_then_a_rerun(tmp_path, archive, replays, ray_cluster,
                                                      monkeypatch, capsys):
    root, params = archive
    out = tmp_path / "out"
    # The worker that takes drive1 dies after 2 of its 3 frames, in the first attempt only.
    monkeypatch.setenv(EXIT_HOOK_ENV, "drive1:2")
    code = main(["fleet", str(root), "--out", str(out), "--params-file", str(params),
                 "--ray", "local", "--workers", "2", "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 1, printed  # the corrupt bag
    summary = {b["name"]: b for b in json.loads((out / "summary.json").read_text())["bags"]}
    assert summary["corrupt"]["status"] == "failed"
    assert "cannot read" in summary["corrupt"]["error"]
    assert all(summary[n]["status"] == "done" for n in (*SINGLE, "surround"))
    assert summary["drive1"]["attempts"] == 2 and summary["drive1"]["frames"] == 3
    assert "redone after a lost worker: drive1 (2 attempts)" in printed
    assert "FAILED corrupt" in printed
    rows = index_of(out)
    keys = [(r["bag"], r["topic"], r["stamp_ns"]) for r in rows]
    assert len(keys) == len(set(keys)) == 3 * len(SINGLE) + 2 * MULTI_FRAMES  # each frame once
    assert not list(out.glob(".*partial"))
    for name in ("drive0", "surround"):
        assert_same_outputs(out / name, replays / name, exact=False)
        assert_index_matches(rows, name, replays / name)

    # A rerun: complete bags are skipped, a partial one (its worker gone) is redone.
    monkeypatch.delenv(EXIT_HOOK_ENV)
    shutil.rmtree(out / "drive2")
    (out / ".drive2.partial").mkdir()
    (out / ".drive2.partial" / "junk").write_text("a worker died here")
    code = main(["fleet", str(root), "--out", str(out), "--params-file", str(params)])
    assert code == 1
    summary = {b["name"]: b for b in json.loads((out / "summary.json").read_text())["bags"]}
    assert summary["drive2"]["status"] == "done"
    assert all(summary[n]["status"] == "skipped" for n in ("drive0", "drive1", "surround"))
    assert summary["drive1"]["frames"] == 3  # carried over from the first run
    assert sorted(keys) == sorted((r["bag"], r["topic"], r["stamp_ns"]) for r in index_of(out))
    assert not (out / ".drive2.partial").exists()
