"""When the node cannot publish, it says so (issue 26), without DDS: engines for new sizes
built beside the running ones, the engine bound, impossible camera poses, blank fused
grids. The node over DDS: test_signals_node.py."""
from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest
from std_msgs.msg import Header

from conftest import TinyNet
from hybridnets_ros.backends import create_backend
from hybridnets_ros.backends.engine_cache import EngineCache
from hybridnets_ros.core.bev import UNSEEN
from hybridnets_ros.core.camera import optical_transform
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
from hybridnets_ros.core.registry import adapter
from hybridnets_ros.pipeline.config import ConfigError, NodeConfig
from hybridnets_ros.pipeline.engines import RETRY_FIRST_S, EngineBuilds
from hybridnets_ros.pipeline.factory import build_pipeline
from hybridnets_ros.pipeline.pipeline import Pipeline
from hybridnets_ros.ros import messages, params
from hybridnets_ros.ros.camera_info import camera_info_from_model
from hybridnets_ros.ros.diagnostics import engine_values
from hybridnets_ros.ros.frame import FrameProcessor, GridProblem
from hybridnets_ros.ros.surround import SurroundStage

HYBRIDNETS = adapter("hybridnets")

CAMERA = default_camera(640, 360)
SMALL = np.zeros((96, 128, 3), np.uint8)     # network input 256x256 at input_size 256
TALL = np.zeros((256, 128, 3), np.uint8)     # another network input


def wait(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(0.01)
    return condition()


class GatedBuilds:
    """A real backend whose builds wait until the test lets them go (so that the test sees
    the state during a build without depending on how long one takes)."""

    def __init__(self, backend):
        self.gate = threading.Event()
        self.calls = 0
        self._prepare = backend.prepare
        backend.prepare = self.prepare

    def prepare(self, *args):
        self.calls += 1
        assert self.gate.wait(60)
        return self._prepare(*args)


def test_a_new_size_is_built_beside_the_sizes_that_run(hybridnets_module):
    backend = create_backend("torch", hybridnets_module, HYBRIDNETS, optimize=False)
    pipeline = Pipeline(backend, input_size=256)
    pipeline(SMALL)  # its engine exists from here on
    gated = GatedBuilds(backend)
    builds = EngineBuilds(pipeline)
    ready, waiting, started = builds.split([SMALL, TALL])
    assert ready == [0] and list(waiting) == [1] and started == [waiting[1]]
    build = waiting[1]
    assert build.describe() == "128x256, batch 1" and not build.done
    # The frame whose engine exists runs while the other is being built.
    assert len(pipeline.run_batch([SMALL])) == 1
    assert builds.current == [build] and builds.finished() == []
    assert builds.split([TALL])[:2] == ([], {0: build})  # asked again: the same build
    gated.gate.set()
    assert wait(lambda: build.done)
    assert build.error is None and builds.finished() == [build] and builds.built == 1
    assert builds.split([SMALL, TALL])[:2] == ([0, 1], {})
    assert gated.calls == 1 and builds.last is build


def test_a_failed_build_is_retried_after_a_back_off_and_its_error_shown_until_then(tmp_path):
    """A real failure that passes (the cache folder cannot be made: a file is in its way,
    then removed): frames keep waiting, the error stays in the diagnostics' values, and the
    first frame after the back-off builds the engine (issue 31: it was never tried again)."""
    blocked = tmp_path / "engines"
    blocked.write_text("a file where the cache folder goes")
    backend = create_backend("onnxruntime", TinyNet(), adapter=HYBRIDNETS,
                             cache=EngineCache(blocked))
    builds = EngineBuilds(Pipeline(backend, input_size=128))
    frame = np.zeros((96, 128, 3), np.uint8)
    build = builds.split([frame])[1][0]
    assert wait(lambda: build.done)
    assert build.error.startswith("FileExistsError: "), build.error
    failed_at = build.started + build.seconds
    values = engine_values(builds)
    assert "FileExistsError" in values.get("engine_build_failures", ""), values
    assert builds.split([frame])[:2] == ([], {0: build})  # within the back-off: it waits
    blocked.unlink()  # the folder can be made now
    assert wait(lambda: builds.split([frame])[0] == [0]), build  # frames keep coming
    assert wait(lambda: build.state == "built") and build.attempts >= 2  # then it says so
    assert build.started - failed_at >= RETRY_FIRST_S - 0.01  # not before its back-off
    ended = builds.finished()
    assert [b.state for b in ended] == ["failed"] * (len(ended) - 1) + ["built"]
    assert "engine_build_failures" not in engine_values(builds)


def test_a_configure_while_a_background_build_exports_waits_for_it(tmp_path):
    """Issue 31: a lifecycle manager's cleanup and configure during a background build
    failed ("GLOBALS.in_onnx_export must be False"): ONNX exports run one at a time."""
    import torch

    net, cache = TinyNet(depth=40).eval(), EngineCache(tmp_path)
    config = NodeConfig(backend="onnxruntime", device="cpu", input_size=128,
                        camera_resolution=(128, 96))
    running = build_pipeline(NodeConfig(backend="onnxruntime", device="cpu", input_size=256,
                                        camera_resolution=()), model=net, cache=cache)
    builds = EngineBuilds(running)
    build = builds.split([TALL])[1][0]  # exported in the background ...
    assert build.shape == (1, 256, 128)
    assert wait(lambda: torch.onnx.is_in_onnx_export() or build.done)
    configured = build_pipeline(config, model=net, cache=cache)  # ... while this configures
    assert configured.backend.has_engine((1, 128, 128))
    assert wait(lambda: build.done) and build.error is None, build.error
    assert running.backend.has_engine(build.shape)


def test_max_engines_bounds_the_engines_and_an_evicted_one_is_freed(hybridnets_module):
    config = NodeConfig(backend="torch", device="cpu", input_size=256, camera_resolution=(),
                        max_engines=1)
    pipeline = build_pipeline(config, model=hybridnets_module, optimize=False)
    pipeline(SMALL)
    engines = pipeline.backend.engines
    freed = weakref.ref(next(iter(engines.values()))[0])  # the engine's input buffer
    pipeline(TALL)
    assert list(engines) == [(1, 256, 128)]
    gc.collect()
    assert freed() is None, "the evicted engine is still referenced"
    with pytest.raises(ConfigError, match=r"max_engines must be within \[1, 64\]"):
        NodeConfig.from_mapping({"max_engines": 0})
    with pytest.raises(ConfigError, match="max_engines must be at least 2 with several cameras"):
        NodeConfig.from_mapping({"cameras": ["front", "left"], "max_engines": 1})


@pytest.mark.parametrize("pose, problem", [
    ((0.0, 0.0, -1.5, 0.0, 0.0, 0.0), "below the ground plane"),
    ((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), "on the ground plane"),
    ((0.0, 0.0, 1.5, np.pi, 0.0, 0.0), "upside down"),
])
def test_impossible_poses_are_refused_as_settings(pose, problem):
    with pytest.raises(ConfigError, match=f"camera_pose .*{problem}"):
        NodeConfig.from_mapping({"camera_pose": list(pose)})
    poses = [0.0, 0.0, 1.5, 0.0, 0.1, 0.0, *pose]
    with pytest.raises(ConfigError, match=f"camera_poses of camera left .*{problem}"):
        NodeConfig.from_mapping({"cameras": ["front", "left"], "camera_poses": poses})
    NodeConfig.from_mapping({"camera_pose": [0.0, 0.0, 1.5, 0.0, 0.0, 0.0]})  # level: fine


@pytest.fixture
def processor(hybridnets_module):
    pipeline = Pipeline(create_backend("torch", hybridnets_module, HYBRIDNETS, optimize=False), input_size=256)
    processor = FrameProcessor(pipeline, NodeConfig(input_size=256))
    processor.camera_info = camera_info_from_model(CAMERA, "camera_optical_frame")
    return processor


@pytest.fixture(scope="module")
def frame_msg():
    bgr = SyntheticRoad(CAMERA).render(0.0)[0]
    return messages.image(Header(frame_id="camera_optical_frame"), bgr, "bgr8")


def test_a_camera_that_sees_no_ground_gets_no_grids_or_3d(processor, frame_msg):
    sky = (0.0, 0.0, 1.5, 0.0, -0.8, 0.0)  # pitched 46 deg up: the whole image is sky
    processor.update_config(NodeConfig(input_size=256, camera_pose=sky))
    outcome = processor.process(frame_msg)
    assert outcome.no_grids.reason is GridProblem.IMPOSSIBLE_POSE
    assert "no part of the image sees the ground" in str(outcome.no_grids)
    assert "detections" in outcome.messages
    assert not {"detections_3d", "drivable_grid"} & set(outcome.messages)
    processor.update_config(NodeConfig(input_size=256))  # a good pose: all back
    assert {"detections_3d", "drivable_grid"} <= set(processor.process(frame_msg).messages)


@pytest.mark.parametrize("roll, z, problem", [(0.0, -1.5, "below the ground plane"),
                                             (np.pi, 1.5, "upside down")])
def test_an_impossible_pose_from_tf_is_refused(processor, frame_msg, roll, z, problem):
    processor.transform_lookup = lambda frame, header: optical_transform((0, 0, z, roll, 0, 0))
    processor.update_config(NodeConfig(input_size=256, camera_pose=()))
    outcome = processor.process(frame_msg)
    assert outcome.no_grids.reason is GridProblem.IMPOSSIBLE_POSE
    assert "from TF" in str(outcome.no_grids) and problem in str(outcome.no_grids)
    assert "detections_3d" not in outcome.messages


def test_fused_grids_go_blank_with_the_reason_when_no_camera_sees_a_cell(processor, frame_msg):
    config = NodeConfig(input_size=256, cameras=("front",))
    stage = SurroundStage()
    now = Header(frame_id="x").stamp
    header = frame_msg.header
    seeing = processor.process(frame_msg).result
    grids, reason = stage.messages([(processor, header, seeing)], config.fused_grid,
                                   "base_link", now, ["front"])
    assert reason is None and (np.frombuffer(grids["drivable"].data, np.int8) != UNSEEN).any()
    # 500 m ahead of the vehicle: a camera that sees the ground, but none of the grid
    processor.update_config(NodeConfig(input_size=256, camera_pose=(500, 0, 1.5, 0, 0.1, 0)))
    far = processor.process(frame_msg).result
    grids, reason = stage.messages([(processor, header, far), None], config.fused_grid,
                                   "base_link", now, ["front", "left"])
    assert reason == "no camera sees a cell of the fused grid (left: no result yet)"
    for grid in grids.values():
        assert (np.frombuffer(grid.data, np.int8) == UNSEEN).all()
        assert grid.header.frame_id == "base_link"
    processor.update_config(NodeConfig(input_size=256, camera_pose=(0, 0, 1.5, 0, -0.8, 0)))
    _, reason = stage.messages([(processor, header, far)], config.fused_grid, "base_link", now,
                               ["front"])
    assert "front: impossible camera pose" in reason and "sees the ground" in reason


def test_the_model_settings_may_change_while_unconfigured():
    assert params.configure_time(["model", "conf_threshold", "input_scale", "hyctas_path",
                                  "cameras", "max_engines"]) == [
        "model", "input_scale", "hyctas_path", "max_engines"]
