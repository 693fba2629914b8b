"""3D detections, track ids and their markers through the frame path (FrameProcessor) and
``hybridnets replay``, without DDS.

The random network finds no cars, so the real pipeline (at a small input size, for speed)
runs on each frame and its detections are replaced by the 2D boxes of cars placed at known
ground positions, computed from the geometry as in test_objects3d.
"""
from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Header

import ros_graph  # noqa: F401  (isolated DDS environment before rclpy)
from test_objects3d import image_box, line_of_sight_contact
from hybridnets_ros.core.postprocess import Detections
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
from hybridnets_ros.pipeline.config import NodeConfig
from hybridnets_ros.ros import messages
from hybridnets_ros.ros.camera_info import camera_info_from_model
from hybridnets_ros.ros.frame import FrameProcessor, GridProblem
from hybridnets_ros.tools.bags import BagReader
from hybridnets_ros.tools.make_bag import make_bag
from hybridnets_ros.tools.replay import replay

CAMERA = default_camera()  # 1280x720, 1.5 m high, level: config/hybridnets.yaml's pose
CAR = (4.5, 1.8, 1.5)
FRAME_S = 0.1
# Centres (x, y) of cars whose near faces are 8-40 m ahead, +-5 m aside.
PLACED = [(8.0 + CAR[0] / 2, -5.0), (10.0 + CAR[0] / 2, 2.5), (20.0 + CAR[0] / 2, 0.0),
          (40.0 + CAR[0] / 2, 5.0), (40.0 + CAR[0] / 2, -2.5)]


class ScriptedDetections:
    """The real pipeline, with each frame's detections replaced by the next scripted ones."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.adapter = pipeline.adapter
        self.script: list[Detections] = []

    def __call__(self, bgr, settings=None, confidence=False):
        result = self.pipeline(bgr, settings, confidence)
        result.detections = self.script.pop(0)
        return result

    def run_batch(self, bgrs, settings=None, confidence=False):
        return [self(bgr, settings, confidence) for bgr in bgrs]


def cars(centres, camera=CAMERA) -> Detections:
    boxes = np.array([image_box(camera, c) for c in centres], np.float32).reshape(-1, 4)
    scores = np.linspace(0.9, 0.5, len(boxes)).astype(np.float32)
    return Detections(boxes, scores, np.zeros(len(boxes), np.int64))


@pytest.fixture(scope="module")
def small_pipeline(hybridnets_module):
    from hybridnets_ros.backends import create_backend
    from hybridnets_ros.core.registry import adapter
    from hybridnets_ros.pipeline.pipeline import Pipeline
    return Pipeline(create_backend("torch", hybridnets_module, adapter("hybridnets")), input_size=128)


@pytest.fixture(scope="module")
def road_bgr():
    return SyntheticRoad(CAMERA, vehicles=False).render(0.0)[0]


@pytest.fixture
def detector(small_pipeline):
    return ScriptedDetections(small_pipeline)


def make_processor(detector, **changes) -> FrameProcessor:
    processor = FrameProcessor(detector, NodeConfig().with_changes(**changes))
    processor.camera_info = camera_info_from_model(CAMERA, "camera_optical_frame")
    return processor


def frame(bgr, index: int):
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec, header.stamp.nanosec = divmod(round((100 + index * FRAME_S) * 1e9), 10**9)
    return messages.image(header, bgr, "bgr8")


OBJECT_OUTPUTS = {"detections_3d", "detections_3d_markers"}


def run(processor, detector, bgr, scenes, wanted=OBJECT_OUTPUTS):
    """Outcomes of one frame per scene (a list of car centres)."""
    outcomes = []
    for i, centres in enumerate(scenes):
        detector.script.append(cars(centres))
        outcomes.append(processor.process(frame(bgr, i), wanted))
    return outcomes


def ids_2d(outcome) -> list[str]:
    return [d.id for d in outcome.messages["detections"].detections]


def ids_3d(outcome) -> list[str]:
    return [d.id for d in outcome.messages["detections_3d"].detections]


@pytest.mark.slow  # a synthetic sequence through the network
def test_positions_within_2_percent_with_the_2d_ids(detector, road_bgr):
    processor = make_processor(detector)
    (outcome,) = run(processor, detector, road_bgr, [PLACED])
    det2d, det3d = outcome.messages["detections"], outcome.messages["detections_3d"]
    assert det3d.header.frame_id == "base_footprint" and det3d.header.stamp == det2d.header.stamp
    assert ids_3d(outcome) == ids_2d(outcome) and len(set(ids_2d(outcome))) == len(PLACED)
    assert all(i.isdigit() for i in ids_2d(outcome))
    for centre, detection in zip(PLACED, det3d.detections):
        truth = line_of_sight_contact(CAMERA, centre)
        hypothesis = detection.results[0]
        p = hypothesis.pose.pose.position
        true_range = np.hypot(*(truth[:2] - CAMERA.t_ground_optical[:2]))
        measured = np.hypot(p.x - CAMERA.t_ground_optical[0], p.y - CAMERA.t_ground_optical[1])
        assert abs(measured - true_range) <= 0.02 * true_range, (centre, measured, true_range)
        assert p.z == pytest.approx(0.0, abs=1e-9) and hypothesis.hypothesis.class_id == "car"
        covariance = np.array(hypothesis.pose.covariance).reshape(6, 6)
        assert covariance[0, 0] > 0 and covariance[1, 1] > 0 and covariance[2, 2] == 0
        size = detection.bbox.size
        assert size.x == pytest.approx(4.5)  # the car length prior
        assert 1.7 < size.y < 4.0 and 1.2 < size.z < 1.8  # width (side included), height
        assert detection.bbox.center.position.z == pytest.approx(size.z / 2)
    # range uncertainty grows with range
    variances = [np.array(d.results[0].pose.covariance).reshape(6, 6)[:2, :2].trace()
                 for d in det3d.detections]
    assert variances[2] > variances[0] and variances[3] > variances[2]


@pytest.mark.slow  # a synthetic sequence through the network
def test_max_range_and_the_horizon_leave_detections_out_of_3d_only(detector, road_bgr):
    processor = make_processor(detector, max_range=30.0)
    horizon = CAMERA.K[1, 2]
    above_horizon = np.array([[600.0, horizon - 60, 680.0, horizon - 10]], np.float32)
    scripted = cars(PLACED)
    detector.script.append(Detections(np.concatenate([scripted.boxes, above_horizon]),
                                      np.append(scripted.scores, 0.3).astype(np.float32),
                                      np.zeros(len(PLACED) + 1, np.int64)))
    outcome = processor.process(frame(road_bgr, 0), OBJECT_OUTPUTS)
    assert len(ids_2d(outcome)) == len(PLACED) + 1
    assert ids_3d(outcome) == ids_2d(outcome)[:3]  # the two cars at 40 m and the sky are out
    markers = outcome.messages["detections_3d_markers"].markers
    assert sorted(m.id for m in markers if m.ns == messages.MARKER_BOX) == \
        sorted(int(i) for i in ids_3d(outcome))


def test_ids_are_stable_never_reused_and_markers_follow_the_tracks(detector, road_bgr):
    processor = make_processor(detector, track_max_missed=2)
    a, b = np.array([14.0, 3.5]), np.array([26.0, -3.5])
    va, vb = np.array([-1.5, 0.0]), np.array([2.0, 0.0])
    moving = [[a + va * i * FRAME_S, b + vb * i * FRAME_S] for i in range(8)]
    # then a is missed for 3 frames (> track_max_missed) and comes back
    gone = [[b + vb * i * FRAME_S] for i in range(8, 11)]
    back = [[a + va * 11 * FRAME_S, b + vb * 11 * FRAME_S]]
    outcomes = run(processor, detector, road_bgr, moving + gone + back)

    first = ids_2d(outcomes[0])
    assert all(ids_2d(o) == first for o in outcomes[:8])
    assert all(ids_3d(o) == ids_2d(o) for o in outcomes)
    id_a, id_b = (int(i) for i in first)
    assert all(ids_2d(o) == [str(id_b)] for o in outcomes[8:11])
    new_a = int(ids_2d(outcomes[-1])[0])
    assert ids_2d(outcomes[-1])[1] == str(id_b) and new_a > max(id_a, id_b)

    # velocities: arrows along each car's motion, its speed in the label
    markers = outcomes[7].messages["detections_3d_markers"].markers
    arrows = {m.id: m for m in markers if m.ns == messages.MARKER_VELOCITY}
    assert set(arrows) == {id_a, id_b}
    for key, velocity in ((id_a, va), (id_b, vb)):
        start, end = arrows[key].points
        assert end.x - start.x == pytest.approx(velocity[0], abs=0.5)
        assert abs(end.y - start.y) < 0.3
    labels = {m.id: m.text for m in markers if m.ns == messages.MARKER_LABEL}
    assert labels[id_a].startswith(f"{id_a}  ") and " m\n" in labels[id_a] and "m/s" in labels[id_a]
    assert all(m.action == m.ADD for m in markers)

    # a's markers are deleted the frame it is no longer seen, and not drawn again
    deleted = {(m.ns, m.id) for m in outcomes[8].messages["detections_3d_markers"].markers
               if m.action == m.DELETE}
    assert deleted == {(ns, id_a) for ns in (messages.MARKER_BOX, messages.MARKER_LABEL,
                                             messages.MARKER_VELOCITY)}
    later = [m for o in outcomes[9:] for m in o.messages["detections_3d_markers"].markers]
    assert not any(m.id == id_a for m in later)


def test_tracking_off_leaves_ids_empty_and_on_again_reuses_none(detector, road_bgr):
    processor = make_processor(detector)
    (before,) = run(processor, detector, road_bgr, [PLACED[:2]])
    processor.update_config(NodeConfig().with_changes(tracking=False))
    outcomes = run(processor, detector, road_bgr, [PLACED[:2], PLACED[:2]])
    for outcome in outcomes:
        assert ids_2d(outcome) == ["", ""] and ids_3d(outcome) == ["", ""]
    labels = [m.text for m in outcomes[1].messages["detections_3d_markers"].markers
              if m.ns == messages.MARKER_LABEL]
    assert len(labels) == 2 and all(text.endswith(" m") for text in labels)
    processor.update_config(NodeConfig())
    (after,) = run(processor, detector, road_bgr, [PLACED[:2]])
    assert min(int(i) for i in ids_2d(after)) > max(int(i) for i in ids_2d(before))


def test_without_a_camera_ids_come_from_overlap_and_3d_is_not_built(detector, road_bgr):
    processor = make_processor(detector)
    processor.camera_info = None
    outcomes = run(processor, detector, road_bgr, [PLACED[:3]] * 3)
    assert outcomes[0].no_grids.reason is GridProblem.NO_CAMERA_INFO
    assert all(ids_2d(o) == ids_2d(outcomes[0]) and ids_2d(o)[0] for o in outcomes)
    assert not {"detections_3d", "detections_3d_markers"} & set(outcomes[0].messages)


def test_3d_is_built_only_when_wanted(detector, road_bgr):
    processor = make_processor(detector)
    (outcome,) = run(processor, detector, road_bgr, [PLACED], wanted={"detections"})
    assert set(outcome.messages) == {"detections"} and outcome.products.boxes_3d is None
    assert ids_2d(outcome)[0]  # tracking still runs


def test_replay_writes_3d_detections(tmp_path, detector, road_bgr):
    centres = [np.array(PLACED[1]), np.array(PLACED[2])]
    count = 4
    in_bag, out_bag = tmp_path / "in", tmp_path / "out"
    make_bag([road_bgr] * count, in_bag, 10.0,
             camera_info_from_model(CAMERA, "camera_optical_frame"), start_ns=10**9)
    detector.script = [cars(centres) for _ in range(count)]
    summary = replay(in_bag, out_bag, detector, NodeConfig(), say=lambda text: None)
    assert summary.frames == count
    with BagReader(out_bag) as reader:
        read = {t.name for t in reader.topics()}
        assert {"/detections_3d", "/detections_3d/markers"} <= read
        got = {}
        for topic, _, _, msg in reader.messages(read):
            got.setdefault(topic, []).append(msg)
    assert len(got["/detections_3d"]) == count
    first_ids = [d.id for d in got["/detections"][0].detections]
    for det2d, det3d in zip(got["/detections"], got["/detections_3d"]):
        assert det3d.header.frame_id == "base_footprint"
        assert [d.id for d in det3d.detections] == [d.id for d in det2d.detections] == first_ids
        x = [d.results[0].pose.pose.position.x for d in det3d.detections]
        assert x == pytest.approx([10.0, 20.0], rel=0.03)


def test_rviz_layout_shows_the_markers():
    import yaml
    layout = yaml.safe_load((ros_graph.REPO / "config" / "hybridnets.rviz").read_text())
    displays = layout["Visualization Manager"]["Displays"]
    assert any(d["Class"] == "rviz_default_plugins/MarkerArray"
               and d["Topic"]["Value"] == "/detections_3d/markers" for d in displays)
