"""Damaged bags are read as far as they can be, and say so (issue 31, item 7): an MCAP
recording cut off, a chunk of garbage in the middle (the chunks after it read through the
summary's chunk index, or, with the summary cut off too, from the next chunk found), a file
cut off near its start; sqlite3 files read as far as sqlite allows. replay and fleet report
what was lost and where and exit with the damaged status (3). Also (item 8): infer names the
file of an image it refuses for its size.

The bags are real: make-bag's writer with chunks of three 320x192 frames, damaged on disk."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import ros_graph  # noqa: F401  (isolated DDS environment; rclpy message types)
from conftest import REPO
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
from hybridnets_ros.ros.camera_info import camera_info_from_model
from hybridnets_ros.tools.bags import BagReader, DamagedBag
from hybridnets_ros.tools.make_bag import IMAGE_TOPIC, make_bag

WIDTH, HEIGHT, FRAMES = 320, 192, 12
PER_CHUNK = 3
# An MCAP chunk is closed once it holds more than this: two and a half frames, so after its
# third (with their CameraInfo).
CHUNK_SIZE = WIDTH * HEIGHT * 3 * 5 // 2
START_NS, PERIOD_NS = 10**9, 10**8  # 10 Hz
PARAMS = """/**:
  ros__parameters:
    input_size: 128
    backend: onnxruntime
    allow_random_weights: true
"""


def stamps(frames) -> list[int]:
    """Bag times of the frames with these indexes."""
    return [START_NS + i * PERIOD_NS for i in frames]


@pytest.fixture(scope="module")
def frames():
    camera = default_camera(WIDTH, HEIGHT)
    scene = SyntheticRoad(camera)
    return camera, [scene.render(i / 10)[0] for i in range(FRAMES)]


def write_bag(path: Path, frames, storage: str = "mcap") -> Path:
    camera, images = frames
    make_bag(images, path, 10.0, camera_info_from_model(camera, "camera_optical_frame"),
             storage=storage, start_ns=START_NS, camera_pose=(0.0, 0.0, 1.5, 0.0, 0.0, 0.0),
             chunk_size=CHUNK_SIZE)
    return path


@pytest.fixture(scope="module")
def intact(tmp_path_factory, frames) -> Path:
    return write_bag(tmp_path_factory.mktemp("bags") / "drive", frames)


@pytest.fixture(scope="module")
def chunks(intact) -> list[tuple[int, int]]:
    """(offset, length) of the intact file's chunks, from its summary (the mcap library)."""
    from mcap.reader import make_reader
    with open(intact / "drive.mcap", "rb") as file:
        summary = make_reader(file).get_summary()
    return sorted((c.chunk_start_offset, c.chunk_length) for c in summary.chunk_indexes)


def damaged(intact: Path, folder: Path, change) -> Path:
    """A copy of the bag whose MCAP file's bytes ``change(bytearray)`` returns."""
    bag = folder / "damaged"
    shutil.copytree(intact, bag)
    data = bag / "drive.mcap"
    data.write_bytes(bytes(change(bytearray(data.read_bytes()))))
    return bag


def garbage(data: bytearray, start: int, end: int) -> bytearray:
    data[start:end] = np.random.default_rng(7).integers(0, 256, end - start, np.uint8).tobytes()
    return data


def read_images(bag: Path) -> tuple[list[int], list[str], int | None]:
    """(bag times of the images read, the damage, the images the bag's index counts)."""
    with BagReader(bag) as reader:
        (count,) = [t.count for t in reader.topics() if t.name == IMAGE_TOPIC]
        times = [t for _, _, t, _ in reader.messages({IMAGE_TOPIC})]
        return times, reader.damage, count


def test_the_bag_has_four_chunks_of_three_frames(intact, chunks):
    assert len(chunks) == FRAMES // PER_CHUNK
    times, damage, count = read_images(intact)
    assert times == stamps(range(FRAMES)) and count == FRAMES and damage == []


def test_a_cut_off_recording_is_read_up_to_the_cut(intact, chunks, tmp_path):
    offset, length = chunks[2]
    cut = offset + length // 2  # in the third chunk, about 60 % into the file
    bag = damaged(intact, tmp_path, lambda data: data[:cut])
    times, damage, count = read_images(bag)
    assert times == stamps(range(2 * PER_CHUNK))  # the two complete chunks
    assert count == FRAMES  # as metadata.yaml counts them: 6 lost
    assert damage == [f"drive.mcap: truncated at byte {cut} of an MCAP file (no end magic): "
                      f"chunk 3 at byte {offset} is cut off"]


def test_a_bad_chunk_is_skipped_and_the_next_read_from_the_index(intact, chunks, tmp_path):
    offset, length = chunks[1]
    bag = damaged(intact, tmp_path, lambda data: garbage(data, offset + 60, offset + length))
    times, damage, count = read_images(bag)
    assert times == stamps([0, 1, 2, *range(6, FRAMES)])
    assert count == FRAMES
    assert len(damage) == 1
    assert damage[0].startswith(f"drive.mcap: chunk 2 of 4 (at byte {offset}, messages "
                                "1.300-1.500 s): ") and damage[0].endswith("; skipped")


def test_without_its_summary_reading_resumes_at_the_next_chunk(intact, chunks, tmp_path):
    """Garbage over the second chunk and the file cut inside the fourth: no summary."""
    (second, length), (third, _), (fourth, _) = chunks[1:]

    def change(data):
        return garbage(data, second, second + length)[:fourth + 100]

    times, damage, count = read_images(damaged(intact, tmp_path, change))
    assert times == stamps([0, 1, 2, 6, 7, 8])
    assert len(damage) == 2
    assert damage[0].startswith(f"drive.mcap: bytes {second}-{third} unreadable (")
    assert damage[0].endswith(f"read on from the chunk at byte {third}")
    assert damage[1] == (f"drive.mcap: truncated at byte {fourth + 100} of an MCAP file (no "
                         f"end magic): chunk 3 at byte {fourth} is cut off")
    assert count == FRAMES  # from metadata.yaml


def test_a_file_cut_near_its_start_says_it_is_truncated(intact, tmp_path):
    size = (intact / "drive.mcap").stat().st_size
    bag = damaged(intact, tmp_path, lambda data: data[:size // 100])
    with pytest.raises(DamagedBag) as raised:
        BagReader(bag)
    assert f"truncated at byte {size // 100} of an MCAP file (no end magic)" in str(raised.value)
    assert "end magic is invalid" not in str(raised.value)


@pytest.fixture(scope="module")
def sqlite_bag(tmp_path_factory, frames) -> Path:
    return write_bag(tmp_path_factory.mktemp("sqlite") / "drive", frames, "sqlite3")


def damaged_db(bag: Path, folder: Path, change) -> Path:
    copy = folder / "damaged"
    shutil.copytree(bag, copy)
    db = copy / "drive.db3"
    db.write_bytes(bytes(change(bytearray(db.read_bytes()))))
    return copy


def test_sqlite3_rows_after_an_unreadable_one_are_read(sqlite_bag, tmp_path):
    """40 KB of garbage in the middle of the file: the messages whose pages it hit are lost,
    every other one is read (rosbags' one query stops at the first bad page)."""
    middle = (sqlite_bag / "drive.db3").stat().st_size // 2
    bag = damaged_db(sqlite_bag, tmp_path, lambda data: garbage(data, middle, middle + 40_000))
    times, damage, count = read_images(bag)
    assert count == FRAMES
    assert FRAMES - 2 <= len(times) < FRAMES and times[-1] == stamps([FRAMES - 1])[0]
    assert any("drive.db3: the data of" in d and "unreadable" in d for d in damage), damage


def test_a_cut_off_sqlite3_file_is_read_as_far_as_sqlite_can(sqlite_bag, tmp_path):
    size = (sqlite_bag / "drive.db3").stat().st_size
    bag = damaged_db(sqlite_bag, tmp_path, lambda data: data[:size * 6 // 10])
    times, damage, count = read_images(bag)
    assert count == FRAMES
    assert times == stamps(range(len(times))) and 0 < len(times) < FRAMES
    assert any("drive.db3: the message rows after id" in d for d in damage), damage


# --------------------------------------------------- replay and fleet over damaged bags

@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(PARAMS)
    return path


@pytest.fixture(scope="module")
def pipeline(params):
    from hybridnets_ros.pipeline.config import NodeConfig
    from hybridnets_ros.pipeline.factory import build_pipeline
    config = NodeConfig.from_params_file(params).with_changes(camera_resolution=[])
    return config, build_pipeline(config)


def detections(bag: Path) -> list[int]:
    with BagReader(bag) as reader:
        return [t for _, _, t, _ in reader.messages({"/detections"})]


@pytest.mark.slow
def test_replay_of_damaged_bags(intact, chunks, pipeline, tmp_path):
    from hybridnets_ros.tools.replay import replay
    config, network = pipeline
    size = (intact / "drive.mcap").stat().st_size
    cut = damaged(intact, tmp_path / "cut", lambda data: data[:size * 6 // 10])
    summary = replay(cut, tmp_path / "cut_out", network, config, say=lambda text: None)
    read = sum(offset + length <= size * 6 // 10 for offset, length in chunks) * PER_CHUNK
    assert (summary.frames, summary.images_read, summary.images_indexed, summary.lost) == \
        (read, read, FRAMES, FRAMES - read)
    assert "truncated at byte" in summary.damage[0]
    assert summary.reading() == f"{read} of {FRAMES} images read, {FRAMES - read} lost"
    assert detections(tmp_path / "cut_out") == stamps(range(read))

    offset, length = chunks[1]
    bad_chunk = damaged(intact, tmp_path / "garbage",
                        lambda data: garbage(data, offset + 60, offset + length))
    summary = replay(bad_chunk, tmp_path / "garbage_out", network, config, say=lambda text: None)
    assert (summary.frames, summary.lost) == (FRAMES - PER_CHUNK, PER_CHUNK)
    assert "chunk 2 of 4" in summary.damage[0]
    assert detections(tmp_path / "garbage_out") == stamps([0, 1, 2, *range(6, FRAMES)])


@pytest.mark.slow
def test_fleet_records_a_damaged_bag_as_done_with_loss(intact, pipeline, tmp_path):
    from hybridnets_ros.cli.fleet import exit_status
    from hybridnets_ros.tools.fleet import InProcessPool, run_fleet
    config, network = pipeline
    archive = tmp_path / "archive"
    shutil.copytree(intact, archive / "whole")
    size = (intact / "drive.mcap").stat().st_size
    damaged(intact, archive, lambda data: data[:size * 6 // 10])
    out = tmp_path / "out"

    def run():
        report = run_fleet([archive / "whole", archive / "damaged"], out,
                           lambda: InProcessPool(config, network), root=archive)
        summary = json.loads((out / "summary.json").read_text())
        return report, {b["bag"]: b for b in summary["bags"]}

    report, bags = run()
    assert bags["whole"]["status"] == "done", bags["whole"]["error"]
    assert bags["whole"]["damage"] == []
    assert bags["damaged"]["status"] == "damaged"
    assert bags["damaged"]["frames"] + bags["damaged"]["lost"] == FRAMES
    assert "truncated at byte" in bags["damaged"]["damage"][0]
    assert exit_status(report) == 3
    # A rerun skips both (complete) and still reports the loss.
    report, bags = run()
    assert [(b.status, b.earlier_status) for b in report.bags] == [("skipped", "done"),
                                                                   ("skipped", "damaged")]
    assert bags["damaged"]["status"] == "damaged" and bags["damaged"]["damage"]
    assert exit_status(report) == 3


@pytest.mark.slow
def test_replay_exit_statuses(intact, chunks, params, tmp_path):
    """The command as a user runs it: 3 for a damaged bag, read in part (or not at all: told
    before the model is loaded), with what was lost and where."""
    size = (intact / "drive.mcap").stat().st_size
    read = sum(offset + length <= size * 6 // 10 for offset, length in chunks) * PER_CHUNK
    exe = Path(sys.executable).parent / "hybridnets"

    def replay(bag, out):
        return subprocess.run([str(exe), "replay", str(bag), "--out", str(tmp_path / out),
                               "--params-file", str(params)],
                              capture_output=True, text=True, cwd=REPO, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    done = replay(damaged(intact, tmp_path / "cut", lambda data: data[:size * 6 // 10]), "cut_out")
    assert done.returncode == 3, done.stderr
    assert f"damaged bag: {read} frames" in done.stdout, done.stdout
    assert f"{read} of 12 images read, {12 - read} lost" in done.stdout
    assert f"damage: drive.mcap: truncated at byte {size * 6 // 10} of an MCAP file" in done.stderr
    done = replay(damaged(intact, tmp_path / "start", lambda data: data[:size // 100]),
                  "start_out")
    assert done.returncode == 3
    assert f"truncated at byte {size // 100} of an MCAP file (no end magic)" in done.stderr
    assert not (tmp_path / "start_out").exists() and "RANDOM WEIGHTS" not in done.stderr


def test_infer_names_the_file_of_an_image_it_refuses_for_its_size(random_pipeline, tmp_path):
    from hybridnets_ros.cli.infer import process_sources
    from hybridnets_ros.core.sources import expand_sources
    folder = tmp_path / "images"
    folder.mkdir()
    for name, (width, height) in {"sliver.png": (1, 100000), "strip.png": (900, 100)}.items():
        cv2.imwrite(str(folder / name), np.zeros((height, width, 3), np.uint8))
    sources, _ = expand_sources([str(folder)])
    stats, failures = process_sources(random_pipeline, sources, tmp_path / "out", False)
    assert stats.frames == 0
    assert sorted(failures) == [
        f"{folder / 'sliver.png'}: unsupported image size: 1x100000: a side is smaller than "
        "32 pixels",
        f"{folder / 'strip.png'}: unsupported image size: 900x100: more elongated than 8:1"]
