"""The frame processor shared by the node, replay and bench, without DDS: what each input
yields, which outputs are built, and that bad calibration only turns the grids off."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_msgs.msg import Header

from hybridnets_ros.core.registry import adapter

HYBRIDNETS = adapter("hybridnets")
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
from hybridnets_ros.pipeline.config import NodeConfig
from hybridnets_ros.ros import messages
from hybridnets_ros.ros.frame import GridProblem
from hybridnets_ros.ros.outputs import ALWAYS, OUTPUTS, planner_outputs

CAMERA = default_camera()


@pytest.fixture(scope="module")
def frame_msg():
    bgr = SyntheticRoad(CAMERA).render(0.0)[0]
    return messages.image(Header(frame_id="camera_optical_frame"), bgr, "bgr8")


def test_every_enabled_output_is_built_with_its_stage_times(processor, frame_msg):
    outcome = processor.process(frame_msg)
    enabled = {o.name for o in OUTPUTS if o.per_frame and o.enabled_by is None
               and o.requires <= HYBRIDNETS.products}
    assert set(outcome.messages) == enabled and outcome.no_grids is None
    for name, msg in outcome.messages.items():
        assert isinstance(msg, next(o.msg_type for o in OUTPUTS if o.name == name))
    assert outcome.messages["drivable_grid"].header.frame_id == "base_footprint"
    assert outcome.messages["detections"].header.frame_id == "camera_optical_frame"
    assert set(outcome.timings_ms) == {"conversion", "preprocess", "network", "postprocess",
                                       "objects", "grids", "semantic", "road", "messages"}


def test_each_message_is_emitted_as_built_detections_first_pictures_last(processor, frame_msg):
    emitted = []
    outcome = processor.process(frame_msg, emit=lambda name, msg: emitted.append((name, msg)))
    assert [name for name, _ in emitted] == [o.name for o in OUTPUTS if o.name in outcome.messages]
    assert emitted[0][0] == "detections" and emitted[-1][0] == "overlay"
    assert all(outcome.messages[name] is msg for name, msg in emitted)


def test_only_wanted_outputs_and_detections_are_built(processor, frame_msg):
    assert set(processor.process(frame_msg, {"lane_mask"}).messages) == {"lane_mask"} | ALWAYS
    assert "drivable_points" not in processor.process(frame_msg, {"drivable_points"}).messages
    processor.update_config(NodeConfig().with_changes(publish_points=True))
    assert "drivable_points" in processor.process(frame_msg, {"drivable_points"}).messages
    assert planner_outputs() <= set(processor.process(frame_msg).messages)


@pytest.mark.parametrize("d", [np.full(6, 0.01), np.full(1000, 0.01), [np.nan] * 5])
def test_bad_calibration_turns_only_the_grids_3d_and_road_off(processor, frame_msg, d):
    info = processor.camera_info
    processor.camera_info = CameraInfo(width=info.width, height=info.height, k=info.k, d=list(d),
                                       p=info.p, distortion_model="plumb_bob")
    outcome = processor.process(frame_msg)
    assert outcome.no_grids is not None and outcome.no_grids.bad_input
    assert outcome.no_grids.reason is GridProblem.INVALID_CAMERA_INFO
    assert set(outcome.messages) == {o.name for o in OUTPUTS if o.per_frame and not o.needs_grids
                                     and not o.needs_camera and not o.needs_road
                                     and o.enabled_by is None
                                     and o.requires <= HYBRIDNETS.products}
    assert "detections" in outcome.messages


@pytest.mark.parametrize("field, change", [
    ("d", dict(d=[1e6, 0.0, 0.0, 0.0, 0.0])),  # finite but absurd: all grids were unknown
    ("k", dict(k=[1e-300, 0.0, 640.0, 0.0, 1e-300, 360.0, 0.0, 0.0, 1.0])),  # was a "pose"
])
def test_a_refused_calibration_is_named_and_detections_go_on(processor, frame_msg, field, change):
    info = processor.camera_info
    values = dict(width=info.width, height=info.height, k=info.k, d=info.d, p=info.p,
                  distortion_model=info.distortion_model)
    assert processor.set_camera_info(CameraInfo(**{**values, **change})) is not None
    outcome = processor.process(frame_msg)
    assert outcome.no_grids.reason is GridProblem.INVALID_CAMERA_INFO and outcome.no_grids.bad_input
    assert str(outcome.no_grids).startswith(f"camera_info.{field}: "), str(outcome.no_grids)
    assert {"detections", "drivable_mask", "lane_mask"} <= set(outcome.messages)
    assert not {o.name for o in OUTPUTS if o.needs_grids or o.needs_camera} & set(outcome.messages)


def test_missing_pose_and_calibration_are_told_apart_from_bad_input(processor, frame_msg):
    processor.update_config(NodeConfig().with_changes(camera_pose=[]))
    outcome = processor.process(frame_msg)
    assert outcome.no_grids.reason is GridProblem.NO_POSE and not outcome.no_grids.bad_input
    processor.update_config(NodeConfig())
    processor.camera_info = None
    assert processor.process(frame_msg).no_grids.reason is GridProblem.NO_CAMERA_INFO


def test_unusable_images_are_rejected_with_a_reason(processor):
    outcome = processor.process(CompressedImage(format="jpeg", data=b"\xff\xd8 not a jpeg"))
    assert outcome.rejected is not None and outcome.rejected.reason and not outcome.messages
