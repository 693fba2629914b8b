"""``hybridnets fleet`` over generated bags (issue 36): names that do not depend on the run,
an index that keeps every bag across runs and is never merged, cameras that need a
CameraInfo (our own outputs are not inputs), one run per output folder, exit statuses that
tell the truth (full or unwritable output, Ctrl-C), a detections table that answers the
README's mining queries, output size as a choice, time ranges as the unit of work with one
writer each; on a real local Ray cluster (2 CPUs): workers that cannot be placed are an
error at once, a worker killed mid-bag has its range redone. Also: the bags we write carry
/tf_static and zstd chunks, read back with rosbags and mcap."""
from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ros_graph  # noqa: F401  (isolated DDS environment; rclpy message types)
from conftest import REPO, read_bag
from hybridnets_ros.cli import main
from hybridnets_ros.core.camera import optical_transform
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
from hybridnets_ros.ros.camera_info import camera_info_from_model
from hybridnets_ros.tools.bags import BagReader, Topic
from hybridnets_ros.tools.fleet import (FRAMES, InProcessPool, OutLock, Piece, bag_key,
                                        choose_root, find_bags, grant, plan_windows, run_fleet)
from hybridnets_ros.tools.make_bag import CameraStream, make_bag, make_camera_bag
from hybridnets_ros.tools.static_tf import read_static_transforms

WIDTH, HEIGHT = 320, 192
POSES = {"front": (0.0, 0.0, 1.5, 0.0, 0.15, 0.0),
         "left": (0.0, 0.5, 1.5, 0.0, 0.15, math.pi / 2)}
SINGLE = ("drive0", "drive1", "drive2")  # 3 frames each
MULTI_FRAMES = 2                         # per camera of the two-camera bag
LONG_FRAMES = 30                         # 3 s at 10 Hz: three 1-s ranges
# The smallest network input and the fastest engine here; a threshold that keeps some of
# the random network's boxes (fewer than the cap, so that no tie at the cap decides).
PARAMS = """/**:
  ros__parameters:
    input_size: 128
    backend: onnxruntime
    allow_random_weights: true
    conf_threshold: 0.1
"""


def road(count: int, camera=None) -> list[np.ndarray]:
    scene = SyntheticRoad(camera or default_camera(WIDTH, HEIGHT))
    return [scene.render(i / 10)[0] for i in range(count)]


def drive(path: Path, count: int, start_s: float = 1.0) -> Path:
    camera = default_camera(WIDTH, HEIGHT)
    make_bag(road(count, camera), path, 10.0, camera_info_from_model(camera, "camera_optical_frame"),
             start_ns=round(start_s * 1e9), camera_pose=(0.0, 0.0, 1.5, 0.0, 0.0, 0.0))
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A folder of bags: three one-camera drives, a two-camera drive, a corrupt file."""
    root = tmp_path_factory.mktemp("archive")
    for index, name in enumerate(SINGLE):
        drive(root / name, 3, index + 1)
    streams = []
    for name, pose in POSES.items():
        model = default_camera(WIDTH, HEIGHT, pose)
        streams.append(CameraStream(road(MULTI_FRAMES, model),
                                    camera_info_from_model(model, f"{name}_optical"), pose,
                                    f"/{name}", f"{name}_optical"))
    make_camera_bag(streams, root / "surround", 10.0, start_ns=5 * 10**9)
    (root / "corrupt.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 8)
    params = root.parent / "params.yaml"
    params.write_text(PARAMS)
    return root, params


@pytest.fixture(scope="module")
def pipeline(archive):
    """The configuration and pipeline of ``fleet --params-file`` (built once)."""
    from hybridnets_ros.pipeline.config import NodeConfig
    from hybridnets_ros.pipeline.factory import build_pipeline
    config = NodeConfig.from_params_file(archive[1]).with_changes(camera_resolution=[])
    return config, build_pipeline(config)


def fleet(pipeline, paths, out, **options):
    config, network = pipeline
    return run_fleet(list(paths), out, lambda: InProcessPool(config, network), **options)


def dataset(out, kind="frames") -> list[dict]:
    import pyarrow.dataset as ds
    return ds.dataset(out / kind, format="parquet").to_table().to_pylist()


def summary_of(out) -> dict[str, dict]:
    return {b["bag"]: b for b in json.loads((out / "summary.json").read_text())["bags"]}


# ------------------------------------------------------------------- names and inputs
def test_inputs_found_and_named(tmp_path, archive):
    root, _ = archive
    found, notes = find_bags([root])
    assert sorted(p.name for p in found) == ["corrupt.mcap", *SINGLE, "surround"] and not notes
    listing = tmp_path / "bags.txt"
    listing.write_text(f"# two of them\n{root / 'drive0'}\n\n{root / 'surround'}  # the surround one\n")
    assert [p.name for p in find_bags([listing, root / "drive0"])[0]] == ["drive0", "surround"]
    # An --out inside the inputs is not searched (its output bags are not inputs).
    found, notes = find_bags([root], exclude=root / "drive1")
    assert "drive1" not in [p.name for p in found] and "inside the inputs" in notes[0]
    # A bag's name is its path under the root, whatever else is passed.
    assert bag_key(tmp_path / "a" / "day1" / "drive.mcap", tmp_path) == "a/day1/drive.mcap"
    assert bag_key(tmp_path / "b" / "day1" / "drive.mcap", tmp_path) == "b/day1/drive.mcap"
    assert bag_key(tmp_path / "x", Path("/")) == str(tmp_path / "x").lstrip("/")
    with pytest.raises(ValueError):
        bag_key(Path("/elsewhere/drive.mcap"), tmp_path)
    assert choose_root(None, None) == (Path("/"), None)
    assert choose_root(None, str(tmp_path)) == (tmp_path, None)
    from hybridnets_ros.tools.fleet import FleetError
    with pytest.raises(FleetError, match="differs from the root"):
        choose_root(root, str(tmp_path))  # would rename every bag done
    with pytest.raises(FleetError, match="is not under the archive root"):
        run_fleet([root / "drive0"], tmp_path / "out", lambda: None, root=tmp_path / "a")
    assert not (tmp_path / "out" / "fleet.json").exists()  # a wrong --root is not recorded


def test_cameras_are_image_topics_with_a_camera_info_beside_them():
    """A replayed bag's masks and overlays are image topics without a CameraInfo: never
    cameras; a bag's only image topic is one, calibrated or not."""
    from hybridnets_ros.tools.bags import BagError
    from hybridnets_ros.tools.replay import choose_cameras
    image, info = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
    recorded = [Topic("/cam/image_raw", image, 5), Topic("/cam/camera_info", info, 5),
                Topic("/drivable/mask", image, 5), Topic("/overlay", image, 5),
                Topic("/cam/drivable/mask", image, 5)]
    assert [c.image.name for c in choose_cameras(recorded)] == ["/cam/image_raw"]
    with pytest.raises(BagError, match="no camera in the bag"):
        choose_cameras([t for t in recorded if "cam/" not in t.name])  # outputs only
    assert [c.image.name for c in choose_cameras([Topic("/dash/image", image, 3)])] == ["/dash/image"]
    named = choose_cameras(recorded, ["/overlay"])  # named: taken as they are
    assert [c.image.name for c in named] == ["/overlay"]


def test_time_ranges_of_a_bag():
    assert plan_windows(None, 600) == [None]                    # no index: the whole bag
    assert plan_windows((0, 5 * 10**9), 600) == [None]         # shorter than a range
    windows = plan_windows((10**9, 4 * 10**9 - 1), 1.0)         # 3 s in 1 s ranges
    assert windows == [(None, 2 * 10**9), (2 * 10**9, 3 * 10**9), (3 * 10**9, None)]


# ------------------------------------------------------------- the cumulative index
def test_index_keeps_every_bag_across_runs_and_bags_are_visible(pipeline, archive, tmp_path):
    """Item 1: `fleet drive0`, then `fleet drive1` into the same --out: both in the index
    and the summary; item 8: the output bag is not hidden; item 7: after a run killed
    before its summary, the rerun still knows each bag's frames."""
    from hybridnets_ros.tools.replay import replay
    root, _ = archive
    out = tmp_path / "out"
    fleet(pipeline, [root / "drive0"], out, root=root)
    fleet(pipeline, [root / "drive1"], out)  # the root DIR was first run with
    rows = dataset(out)
    assert sorted({(r["bag"], r["source"]) for r in rows}) == [
        ("drive0", str(root / "drive0")), ("drive1", str(root / "drive1"))]
    assert len(rows) == 6
    # The ego lane per frame: NaN where none is valid (lane_valid is null only without a camera).
    assert all(isinstance(r["lane_valid"], bool) for r in rows)
    assert all(math.isfinite(r[c]) == r["lane_valid"] for r in rows
               for c in ("width_m", "center_offset_m", "curvature_1pm"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["root"] == str(root) and summary["totals"]["frames"] == 6
    assert {k: b["status"] for k, b in summary_of(out).items()} == {"drive0": "done",
                                                                  "drive1": "done"}
    bag = out / "bags" / "drive0"
    assert sorted(p.name for p in bag.iterdir()) == ["drive0_0.mcap", "metadata.yaml"]
    reference = tmp_path / "replayed"  # what replay writes, with the same pipeline
    config, network = pipeline
    replay(root / "drive0", reference, network, config, say=lambda text: None)
    got, want = read_bag(bag), read_bag(reference)
    assert [t for t, _ in got["/detections"]] == [t for t, _ in want["/detections"]]
    for (_, a), (_, b) in zip(got["/detections"], want["/detections"]):
        assert [(d.bbox.center.position.x, d.bbox.size_y, d.id) for d in a.detections] == \
            [(d.bbox.center.position.x, d.bbox.size_y, d.id) for d in b.detections]
    for (_, a), (_, b) in zip(got["/drivable/grid"], want["/drivable/grid"], strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    for topic in ("/road_geometry", "/drivable/scan"):  # replay writes the road geometry
        assert [t for t, _ in got[topic]] == [t for t, _ in want[topic]] == \
            [t for t, _ in want["/detections"]], topic
        assert {m.header.frame_id for _, m in want[topic]} == {config.ground_frame}, topic

    (out / "summary.json").unlink()  # as a driver killed after its bags were done leaves it
    report = fleet(pipeline, [root / "drive0", root / "drive1"], out)
    assert [(b.bag, b.status, b.frames) for b in report.bags] == [("drive0", "skipped", 3),
                                                                 ("drive1", "skipped", 3)]
    assert summary_of(out)["drive1"]["frames"] == 3


def test_bag_names_do_not_depend_on_the_run(pipeline, archive, tmp_path):
    """Item 2: a/day1/drive.mcap in run 1, then b/day1/drive.mcap a/day1/drive.mcap: b is
    done under its own name, a is skipped, each source is where its rows came from."""
    root, _ = archive
    for side, source in (("a", "drive0"), ("b", "drive1")):
        (tmp_path / side / "day1").mkdir(parents=True)
        shutil.copy(root / source / f"{source}.mcap", tmp_path / side / "day1" / "drive.mcap")
    a, b = (tmp_path / side / "day1" / "drive.mcap" for side in "ab")
    out = tmp_path / "out"
    fleet(pipeline, [a], out)
    report = fleet(pipeline, [b, a], out)
    key_a, key_b = (str(p).lstrip("/") for p in (a, b))
    assert [(x.bag, x.status) for x in report.bags] == [(key_b, "done"), (key_a, "skipped")]
    rows = dataset(out)
    assert len(rows) == 6 and {(r["bag"], r["source"]) for r in rows} == {(key_a, str(a)),
                                                                        (key_b, str(b))}
    first = {key: min(r["stamp_ns"] for r in rows if r["bag"] == key) for key in (key_a, key_b)}
    assert first == {key_a: 10**9, key_b: 2 * 10**9}  # drive0's frames, drive1's
    assert {k: v["source"] for k, v in summary_of(out).items()} == {key_a: str(a), key_b: str(b)}


def test_our_outputs_are_never_inputs(pipeline, archive, tmp_path):
    """Item 3: --out inside the input folder, run twice; and an output bag named as input."""
    root, _ = archive
    inputs = tmp_path / "archive"
    shutil.copytree(root / "drive0", inputs / "drive0")
    out = inputs / "results"
    paths, notes = find_bags([inputs], exclude=out)
    fleet(pipeline, paths, out, root=inputs)
    paths, notes = find_bags([inputs], exclude=out)
    assert [p.name for p in paths] == ["drive0"] and "inside the inputs" in notes[0]
    report = fleet(pipeline, [*paths, out / "bags" / "drive0"], out)  # and one named directly
    assert [(b.bag, b.status) for b in report.bags] == [("drive0", "skipped"),
                                                        ("results/bags/drive0", "ignored")]
    assert "written by hybridnets fleet" in report.bags[1].notes[0]
    assert len(dataset(out)) == 3


# ---------------------------------------------------------------------- the mining tables
def bag_with_a_bad_image(path: Path, count: int) -> Path:
    """A drive whose second image has an encoding no one knows: rejected."""
    from std_msgs.msg import Header

    from hybridnets_ros.ros import messages
    from hybridnets_ros.tools.bags import BagWriter
    camera = default_camera(WIDTH, HEIGHT)
    info = camera_info_from_model(camera, "camera_optical_frame")
    with BagWriter(path) as bag:
        for index, bgr in enumerate(road(count, camera)):
            stamp = 10**9 + index * 10**8
            header = Header(frame_id="camera_optical_frame")
            header.stamp.sec, header.stamp.nanosec = divmod(stamp, 10**9)
            info.header = header
            bag.write("/camera/camera_info", info, stamp)
            image = messages.image(header, bgr, "bgr8")
            if index == 1:
                image.encoding = "yuv9"
            bag.write("/camera/image_raw", image, stamp)
    return path


def readme_block(language: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## A drive archive"):]
    return re.search(rf"```{language}\n(.*?)```", section, re.S)[1]


def test_readme_queries_answer_the_mining_questions(pipeline, tmp_path, capsys):
    """Item 9: "frames with >= 5 cars within 20 m" and "frames where the drivable area is
    small", as the README writes them, against the tables worked out by hand; a rejected
    frame has nulls (no "no cars" answer counts it); the detections say what the output
    bag says and lie where the camera model puts them."""
    from hybridnets_ros.core.objects3d import ground_positions
    from hybridnets_ros.ros.frame import camera_model_from_info
    bag = bag_with_a_bad_image(tmp_path / "in" / "drive", 6)
    out = tmp_path / "results" / "v7"
    fleet(pipeline, [bag], out, root=tmp_path / "in")
    frames, detections = dataset(out), dataset(out, "detections")
    [rejected] = [r for r in frames if r["rejected"]]
    assert rejected["rejected"].startswith("unsupported encoding")
    assert rejected["det_car"] is None and rejected["drivable_fraction"] is None

    scope = {}
    exec(readme_block("python").replace("results/v7", str(out)), scope)
    cars: dict[tuple, int] = {}
    for d in detections:
        if d["class_name"] == "car" and d["distance_m"] < 20:
            frame = (d["bag"], d["camera"], d["stamp_ns"])
            cars[frame] = cars.get(frame, 0) + 1
    busy = sorted(frame for frame, n in cars.items() if n >= 5)
    assert busy and sorted((r["bag"], r["camera"], r["stamp_ns"]) for r in
                           scope["busy"].to_pylist()) == busy
    assert sorted(r["stamp_ns"] for r in scope["small_road"].to_pylist()) == sorted(
        r["stamp_ns"] for r in frames if r["drivable_fraction"] is not None
        and r["drivable_fraction"] < 0.1)
    assert rejected["stamp_ns"] not in [r["stamp_ns"] for r in scope["no_car"].to_pylist()]
    assert "busy frames" in capsys.readouterr().out
    try:
        import duckdb
    except ImportError:
        duckdb = None
    if duckdb is not None:
        first, second = readme_block("sql").replace("results/v7", str(out)).split(";")[:2]
        assert sorted(duckdb.sql(first).fetchall()) == [(*f, cars[f]) for f in busy]
        assert len(duckdb.sql(second).fetchall()) == scope["small_road"].num_rows

    # The detections table against the output bag and the camera model.
    published = read_bag(out / "bags" / "drive")
    config, _ = pipeline
    model = camera_model_from_info(camera_info_from_model(default_camera(WIDTH, HEIGHT),
                                                          "camera_optical_frame"),
                                   config.camera_pose, False)
    assert len(published["/detections"]) == 5
    for _, message in published["/detections"]:
        stamp = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
        mine = [d for d in detections if d["stamp_ns"] == stamp]
        assert [str(d["track_id"]) for d in mine] == [d.id for d in message.detections]
        assert [d["score"] for d in mine] == pytest.approx(
            [d.results[0].hypothesis.score for d in message.detections], abs=1e-6)
        boxes = np.array([[d["x1"], d["y1"], d["x2"], d["y2"]] for d in mine], np.float64)
        np.testing.assert_allclose((boxes[:, 0] + boxes[:, 2]) / 2,
                                   [d.bbox.center.position.x for d in message.detections],
                                   atol=1e-3)
        contacts = ground_positions(model, boxes, False, config.max_range)
        xy = np.array([[d["x_m"], d["y_m"]] for d in mine])
        np.testing.assert_allclose(xy[contacts.valid], contacts.points[contacts.valid, :2],
                                   atol=1e-4)
        assert np.isnan(xy[~contacts.valid]).all()


def test_output_size_is_a_choice(pipeline, archive, tmp_path):
    """Item 10: --outputs index writes the tables only; bags writes the planner's outputs
    with masks as lossless PNG; all adds the pictures."""
    import cv2
    root, _ = archive
    sizes = {}
    for choice in (["index"], ["bags"], ["all"]):
        out = tmp_path / choice[0]
        fleet(pipeline, [root / "drive0"], out, root=root, outputs=choice)
        sizes[choice[0]] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert not (tmp_path / "index" / "bags").exists()
    topics = read_bag(tmp_path / "bags" / "bags" / "drive0")
    assert "/drivable/mask/compressed" in topics and "/overlay/compressed" not in topics
    assert "/overlay/compressed" in read_bag(tmp_path / "all" / "bags" / "drive0")
    assert sizes["index"] < sizes["bags"] < sizes["all"]
    rows = sorted(dataset(tmp_path / "bags"), key=lambda r: r["stamp_ns"])
    for row, (_, mask) in zip(rows, topics["/drivable/mask/compressed"]):
        assert mask.format == "mono8; png compressed mono8"
        pixels = cv2.imdecode(np.frombuffer(mask.data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.mean(pixels > 0) == pytest.approx(row["drivable_fraction"], abs=1e-9)


# ------------------------------------------------------- ranges, leases, resumption
def test_a_long_bag_is_done_in_ranges(pipeline, tmp_path):
    """Item 11: 3 s in 1-s ranges: the same frames and boxes as one range, each once, a
    split bag rosbag2 reads as one; a lost range is all a rerun redoes."""
    bag = drive(tmp_path / "in" / "long", LONG_FRAMES)
    whole, split = tmp_path / "whole", tmp_path / "split"
    fleet(pipeline, [bag], whole, root=tmp_path / "in")
    report = fleet(pipeline, [bag], split, root=tmp_path / "in", range_s=1.0)
    assert report.bags[0].ranges == 3 and report.bags[0].frames == LONG_FRAMES
    parts = sorted(p.name for p in (split / FRAMES / "long").iterdir())
    assert parts == ["00000-of-00003.parquet", "00001-of-00003.parquet", "00002-of-00003.parquet"]
    rows, reference = dataset(split, "detections"), dataset(whole, "detections")
    key = ["stamp_ns", "x1", "y1", "x2", "y2", "score"]
    assert sorted(tuple(r[k] for k in key) for r in rows) == \
        sorted(tuple(r[k] for k in key) for r in reference)
    assert len({r["stamp_ns"] for r in dataset(split)}) == LONG_FRAMES == len(dataset(split))
    assert {r["track_id"] >> 32 for r in rows} == {0, 1, 2}  # ids unique within the bag
    # The warm-up (3 s: from the bag's start here) gives each range the tracks a whole
    # replay has there: the same ids, range k's offset aside.
    assert sorted((r["stamp_ns"], r["x1"], r["track_id"] & 0xFFFFFFFF) for r in rows) == \
        sorted((r["stamp_ns"], r["x1"], r["track_id"]) for r in reference)
    published = read_bag(split / "bags" / "long")
    assert [t for t, _ in published["/detections"]] == [10**9 + i * 10**8 for i in range(30)]
    with BagReader(split / "bags" / "long") as reader:
        assert {t.name: t.count for t in reader.topics()}["/detections"] == LONG_FRAMES

    (split / FRAMES / "long" / "00001-of-00003.parquet").unlink()  # a range that died
    (split / "summary.json").unlink()
    report = fleet(pipeline, [bag], split, range_s=1.0)
    assert report.bags[0].status == "done" and report.bags[0].frames == LONG_FRAMES
    assert report.per_worker["local"]["frames"] == 10  # only the lost range was redone
    assert len(dataset(split)) == LONG_FRAMES


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_bag_is_read_by_time(tmp_path, storage):
    """What a range reads: the messages of a time window (an indexed MCAP file skips the
    chunks outside it), and each topic's last message before a time (read backwards)."""
    from hybridnets_ros.tools.bags import BagReader
    camera = default_camera(WIDTH, HEIGHT)
    frames = road(12, camera)
    make_bag(frames, tmp_path / "bag", 10.0, camera_info_from_model(camera, "camera_optical_frame"),
             storage=storage, start_ns=10**9, chunk_size=WIDTH * HEIGHT * 3 * 2)
    with BagReader(tmp_path / "bag") as reader:
        assert reader.time_range() == (10**9, 10**9 + 11 * 10**8)
        window = [t for _, _, t, _ in reader.messages({"/camera/image_raw"}, 14 * 10**8,
                                                      17 * 10**8)]
        assert window == [14 * 10**8, 15 * 10**8, 16 * 10**8]
        latest = reader.latest_before({"/camera/camera_info", "/nothing"}, 16 * 10**8 + 1)
        assert list(latest) == ["/camera/camera_info"]
        msgtype, stamp, info = latest["/camera/camera_info"]
        assert stamp == 16 * 10**8 and info.width == WIDTH
        assert reader.latest_before({"/camera/camera_info"}, 10**9) == {}


def test_a_range_has_one_writer(pipeline, archive, tmp_path):
    """A worker whose lease went to another (it was thought lost) writes nothing."""
    from hybridnets_ros.tools.fleet import BagWorker
    root, _ = archive
    config, network = pipeline
    worker = BagWorker(config, pipeline=network)
    piece = Piece("drive0", str(root / "drive0"), str(tmp_path), 0, 1, None, ["bags"])
    first = grant(piece)
    second = grant(piece)  # the range handed out again
    assert worker.run(first).status == "superseded"
    assert not (tmp_path / FRAMES).exists() and not (tmp_path / "bags" / "drive0").exists()
    assert worker.run(second).status == "done"
    assert len(dataset(tmp_path)) == 3


def test_the_driver_reads_no_part_of_the_bags_done(pipeline, archive, tmp_path):
    """Item 6: a resume of one bag beside 200 bags done: the driver's memory does not grow
    with their index (nothing is merged, their parts are not opened)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hybridnets_ros.tools.fleet import RECORD_KEY, frame_schema
    root, _ = archive
    out = tmp_path / "out"
    config, network = pipeline
    schema = frame_schema(network.adapter.detection_classes)
    rows = 20_000
    table = pa.table({f.name: pa.nulls(rows, f.type) if f.name == "rejected" else
                      pa.array(np.zeros(rows), f.type) if f.type != pa.string() else
                      pa.array(["x" * 40] * rows) for f in schema})
    records = []
    for index in range(200):
        key = f"old/day{index}"
        record = dict(frames=rows, source=f"/archive/{key}.mcap")
        (out / FRAMES / key).mkdir(parents=True)
        pq.write_table(table.replace_schema_metadata({RECORD_KEY: json.dumps(record)}),
                       out / FRAMES / key / "00000-of-00001.parquet")
        records.append(dict(bag=key, source=record["source"], status="done", frames=rows))
    (out / "summary.json").write_text(json.dumps(dict(root=str(root.parent), bags=records)))
    everything = table.nbytes * 200
    clear = Path("/proc/self/clear_refs")
    try:
        clear.write_text("5")  # resets this process' peak resident memory (VmHWM)
    except OSError:
        pytest.skip("cannot reset the peak memory here")
    before = _status_kib("VmRSS")
    report = fleet(pipeline, [root / "drive0"], out, outputs=["index"])
    grown = (_status_kib("VmHWM") - before) * 1024
    assert [(b.status, b.frames) for b in report.bags] == [("done", 3)]
    assert report.totals["complete"] == 201 and report.totals["frames"] == 200 * rows + 3
    assert grown < everything / 10, (grown, everything)


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


# ------------------------------------------------------------- locks and exit statuses
def test_one_run_per_output_folder(archive, tmp_path, capsys):
    """Item 4: a second run says who holds --out, at once, with its own exit status; a lock
    left by a run that died is taken over."""
    root, params = archive
    out = tmp_path / "out"
    out.mkdir()
    lock = OutLock(out)
    lock.acquire()
    started = time.monotonic()
    try:
        code = main(["fleet", str(root / "drive0"), "--out", str(out), "--params-file",
                     str(params)])
    finally:
        lock.release()
    assert code == 4
    assert f"pid {os.getpid()}" in capsys.readouterr().err
    assert time.monotonic() - started < 60  # no model was loaded
    assert not (out / "summary.json").exists()
    # A run that died (kill -9) left its holder's name in the file, not the lock.
    (out / "fleet.lock").write_text(json.dumps(dict(host="gone", pid=999999, since="then")))
    report = run_fleet([], out, lambda: None, root=root)
    assert "took over the lock of a run that ended without releasing it (host gone, pid " \
           "999999" in report.notes[0]


def test_unwritable_or_full_output_is_a_set_up_error(pipeline, archive, tmp_path, capsys):
    """Item 7: --out that cannot be created, or a disk that fills up mid-run: exit status
    2 (not 'a bag failed'), a message, no traceback; summary.json says what was done."""
    from hybridnets_ros.cli.fleet import exit_status
    root, params = archive
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["fleet", str(root / "drive0"), "--out", str(blocker / "out"),
                 "--params-file", str(params)]) == 2
    assert "cannot write --out" in capsys.readouterr().err

    out = tmp_path / "out"
    fleet(pipeline, [root / "drive0"], out, root=root)  # one bag done before the disk fills
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limit[1]))
    try:
        report = fleet(pipeline, [root / "drive1", root / "drive2"], out)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    assert exit_status(report) == 2 and "File too large" in report.stopped
    assert not report.failed  # no bag is to blame
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["stopped"] == report.stopped and summary["totals"]["complete"] == 1
    assert len(dataset(out)) == 3 and not (out / ".work").exists()


@pytest.mark.slow
def test_ctrl_c_keeps_the_index_and_a_second_run_waits_for_none(pipeline, archive, tmp_path,
                                                                capsys):
    """Items 4 and 7 as a user runs them: while a run works, a second one into the same
    --out exits 4 at once; Ctrl-C ends the first with 130, summary.json and an index of the
    complete bags that reads; the rerun finishes the rest."""
    root, params = archive
    inputs = tmp_path / "in"
    shutil.copytree(root / "drive0", inputs / "a")
    drive(inputs / "b", 200)  # long enough to be interrupted
    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "hybridnets"), "fleet", str(inputs), "--out",
               str(out), "--params-file", str(params), "--root", str(inputs)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 300
        while not list((out / ".work").glob("*/owner.json")) or \
                not (out / FRAMES / "a").is_dir():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.2)
        assert main(command[1:]) == 4  # at once: no model is loaded
        assert f"pid {first.pid}" in capsys.readouterr().err
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, stderr
    assert "INTERRUPTED" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["interrupted"] and summary_of(out)["a"]["status"] == "done"
    assert summary_of(out)["b"]["status"] == "partial"
    assert [r["bag"] for r in dataset(out)] == ["a"] * 3 and not (out / ".work").exists()
    report = fleet(pipeline, find_bags([inputs])[0], out)
    assert [(b.bag, b.status) for b in report.bags] == [("a", "skipped"), ("b", "done")]
    assert len(dataset(out)) == 203


# ------------------------------------------------------------------------- Ray
def test_workers_are_placed_on_nodes_or_refused():
    """Item 5: threads per worker from the nodes (a worker runs on one node), and a
    request no node can hold is refused naming what was asked and what there is."""
    from hybridnets_ros.tools.fleet import FleetError
    from hybridnets_ros.tools.fleet_ray import plan_workers
    nodes = [dict(address="a", CPU=8.0, GPU=0.0), dict(address="b", CPU=8.0, GPU=0.0)]
    assert plan_workers(nodes, 4, None, 0) == 4       # two on each node
    assert plan_workers(nodes, 3, None, 0) == 4       # not 16 // 3 = 5: no node holds two
    assert plan_workers(nodes, 2, None, 0) == 8
    small = [dict(address="a", CPU=8.0, GPU=0.0), dict(address="c", CPU=2.0, GPU=0.0)]
    assert plan_workers(small, 3, None, 0) == 2       # not 10 // 3 = 3: c holds one of 2
    with pytest.raises(FleetError, match=r"cannot place 1 worker of 12 CPUs each \(no node "
                                         r"has that much\); its nodes: a: 8 CPU; b: 8 CPU"):
        plan_workers(nodes, 1, 12, 0)
    with pytest.raises(FleetError, match="at most 2 such workers fit"):
        plan_workers([dict(address="a", CPU=2.0, GPU=0.0)], 3, 1, 0)
    with pytest.raises(FleetError, match="1 GPU each"):
        plan_workers(nodes, 1, None, 1)


def test_only_a_dead_actor_has_its_range_redone():
    """Item 11: an actor Ray reports unreachable for now may still be writing its range."""
    pytest.importorskip("ray")
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    from hybridnets_ros.tools.fleet_ray import on_actor_error
    assert on_actor_error(ActorUnavailableError("unreachable", None)) == "ask"
    assert on_actor_error(ActorDiedError()) == "dead"


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the module: starting one takes seconds."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_refuses_workers_it_cannot_place(archive, tmp_path, ray_cluster, capsys):
    """Item 5: --threads 4 or --workers 3 on 2 CPUs: an error within seconds (it waited
    for ever), naming what was asked and what the cluster has."""
    root, params = archive
    for options in (["--threads", "4"], ["--workers", "3"]):
        done: list[int] = []
        thread = threading.Thread(target=lambda: done.append(main([
            "fleet", str(root / "drive0"), "--out", str(tmp_path / "out"), "--params-file",
            str(params), "--ray", "local", *options])), daemon=True)
        thread.start()
        thread.join(timeout=120)
        assert done == [2], options
        assert "the Ray cluster cannot place" in capsys.readouterr().err


@pytest.mark.slow
def test_fleet_on_ray_with_a_killed_worker(pipeline, archive, tmp_path, ray_cluster, capsys):
    """A worker killed mid-bag (from outside, by the pid its work folder names): the range
    goes to another worker, each frame is in the index once, and the outputs are those of
    the in-process fleet."""
    root, params = archive
    inputs = tmp_path / "in"
    for name in ("drive0", "surround", "corrupt.mcap"):
        (shutil.copytree if (root / name).is_dir() else shutil.copy)(root / name, inputs / name)
    drive(inputs / "long", 40, 20.0)
    out = tmp_path / "out"
    killed = []

    def kill_the_long_bags_worker():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            for owner in (out / ".work").glob("*/owner.json"):
                try:
                    data = json.loads(owner.read_text())
                except (OSError, ValueError):
                    continue
                if data["bag"] == "long":
                    os.kill(data["pid"], signal.SIGKILL)
                    killed.append(data["pid"])
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_long_bags_worker, daemon=True)
    killer.start()
    code = main(["fleet", str(inputs), "--out", str(out), "--params-file", str(params),
                 "--root", str(inputs), "--ray", "local", "--workers", "2", "--threads", "1"])
    killer.join(timeout=5)
    printed = capsys.readouterr().out
    assert code == 1, printed  # the corrupt bag
    assert killed, "the long bag's worker was never seen"
    bags = summary_of(out)
    assert bags["corrupt.mcap"]["status"] == "failed" and "cannot read" in bags["corrupt.mcap"]["error"]
    assert bags["long"]["status"] == "done" and bags["long"]["attempts"] == 2
    assert bags["long"]["frames"] == 40
    assert "redone after a lost worker: long (2 attempts)" in printed
    rows = dataset(out)
    keys = [(r["bag"], r["topic"], r["stamp_ns"]) for r in rows]
    assert len(keys) == len(set(keys)) == 3 + 2 * MULTI_FRAMES + 40  # each frame once
    reference = tmp_path / "reference"
    fleet(pipeline, [inputs / "drive0", inputs / "surround"], reference, root=inputs)
    for name in ("drive0", "surround"):
        got = read_bag(out / "bags" / name)
        want = read_bag(reference / "bags" / name)
        assert set(got) == set(want)
        for topic in want:
            assert [t for t, _ in got[topic]] == [t for t, _ in want[topic]], topic
    ray_rows = {(r["bag"], r["topic"], r["stamp_ns"]): r for r in rows}
    for row in dataset(reference):
        mine = ray_rows[(row["bag"], row["topic"], row["stamp_ns"])]
        assert mine["det_car"] == row["det_car"]
        assert mine["drivable_fraction"] == pytest.approx(row["drivable_fraction"], abs=1e-3)


def _processes_below(root: int) -> dict[tuple[int, int], str]:
    """(pid, start time) -> command line of the processes below ``root``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]),
                                []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    found, pending = {}, [root]
    while pending:
        for pid in children.get(pending.pop(), []):
            pending.append(pid)
            try:
                start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
                found[(pid, start)] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                    errors="replace").replace("\0", " ")
            except (OSError, ValueError, IndexError):
                continue
    return found


def _alive(processes) -> list[str]:
    alive = []
    for (pid, start), command in processes.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[19]) == start and fields[0] != "Z":
            alive.append(command)
    return alive


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_a_killed_driver_leaves_no_ray_process_behind(archive, tmp_path):
    """Item 7: kill -9 of a driver that started a local Ray cluster: all of the cluster's
    processes go at once (Ray's agents waited 60 s for the dead GCS)."""
    pytest.importorskip("ray")
    root, params = archive
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    driver = subprocess.Popen(
        [str(Path(sys.executable).parent / "hybridnets"), "fleet", str(root / "drive0"),
         "--out", str(tmp_path / "out"), "--params-file", str(params), "--ray", "local"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 300
        while not {"DashboardAgent", "RuntimeEnvAgent"} <= {
                word.removeprefix("ray::") for command in _processes_below(driver.pid).values()
                for word in command.split()}:
            assert driver.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        cluster = _processes_below(driver.pid)
    finally:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + 45
    while _alive(cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(cluster)


# --------------------------------------------------------- bags carry /tf_static, zstd
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


def test_fleet_writes_every_camera_tf_static_and_zstd_chunks(pipeline, archive, tmp_path):
    root, _ = archive
    fleet(pipeline, [root / "surround"], tmp_path, root=root)
    assert_tf_static_and_zstd(tmp_path / "bags" / "surround", SURROUND_FRAMES)
    # the outputs of several cameras as the multi-camera node publishes them
    topics = set(read_bag(tmp_path / "bags" / "surround"))
    assert {"/front/detections", "/left/detections", "/front/drivable/grid",
            "/left/detections_3d", "/fused/drivable/grid", "/fused/lane/grid"} <= topics
    assert {r["camera"] for r in dataset(tmp_path)} == {"front", "left"}


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
