"""The road geometry's outputs (road_geometry, lanes, lanes/markers, drivable/scan) through
the frame processor shared by the node, replay and bench, without DDS; and the
hybridnets_msgs messages they are made of. The node over DDS: test_node.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import rclpy.serialization
from hybridnets_msgs.msg import LaneBoundary, LaneBoundaryArray, RoadGeometry
from sensor_msgs.msg import LaserScan
from std_msgs.msg import Header
from builtin_interfaces.msg import Time
from visualization_msgs.msg import Marker, MarkerArray

from hybridnets_ros.core.registry import adapter
from hybridnets_ros.core.road_geometry import DrivableEdges, EgoLane, LaneLine
from hybridnets_ros.core.road_geometry import RoadGeometry as Geometry
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
from hybridnets_ros.pipeline.config import NodeConfig
from hybridnets_ros.ros import messages, road_messages
from hybridnets_ros.ros.frame import FrameProcessor, GridProblem
from hybridnets_ros.ros.outputs import supported

CAMERA = default_camera()
ROAD = {"road_geometry", "lanes", "lanes_markers", "drivable_scan"}
STAMP = Time(sec=12, nanosec=345)


def _line(id_, y, side):
    x = np.linspace(6.0, 25.0, 20, dtype=np.float32)
    # values float32 holds exactly, so that a round trip compares equal
    return LaneLine(id_, np.stack([x, np.full_like(x, y)], 1), 0.75, (6.0, 25.0), side, 0.03125,
                    id_ == 2)


def _geometry():
    edges = DrivableEdges(left=np.array([[5, 4], [30, 4]], np.float32),
                          right=np.array([[5, -4], [30, -4]], np.float32),
                          angle_min=-0.5, angle_increment=0.25, range_max=40.0,
                          ranges=np.array([10, 20, np.inf, 20, 10], np.float32))
    ego = EgoLane(True, 1, 2, 3.5, 0.25, 0.015625, 0.0078125)
    return Geometry([_line(1, 1.75, 1), _line(2, -1.75, -1)], ego, edges)


def test_messages_carry_the_geometry_and_round_trip():
    header = Header(stamp=STAMP, frame_id="base_footprint")
    msg = road_messages.road_geometry(header, _geometry())
    assert [l.id for l in msg.lanes] == [1, 2] and msg.lanes[1].dashed
    assert msg.lanes[0].side == LaneBoundary.SIDE_LEFT and msg.lanes[1].side == LaneBoundary.SIDE_RIGHT
    assert msg.lanes[0].points[-1].x == pytest.approx(25.0) and msg.lanes[0].points[0].y == pytest.approx(1.75)
    assert (msg.lanes[0].range_start, msg.lanes[0].range_end) == (6.0, 25.0)
    assert msg.ego_valid and (msg.ego_left_id, msg.ego_right_id) == (1, 2)
    assert msg.ego_width == pytest.approx(3.5) and msg.ego_curvature == 0.0078125
    assert [(p.x, p.y) for p in msg.drivable_right] == [(5, -4), (30, -4)]
    for message, kind in ((msg, RoadGeometry),
                          (road_messages.lane_array(header, _geometry()), LaneBoundaryArray)):
        assert rclpy.serialization.deserialize_message(
            rclpy.serialization.serialize_message(message), kind) == message
    scan = road_messages.drivable_scan(header, _geometry().edges)
    assert scan.angle_max == pytest.approx(0.5) and math.isinf(scan.ranges[2])
    assert scan.range_max == 40.0 and len(scan.ranges) == 5
    markers = road_messages.lane_markers(header, _geometry()).markers
    assert markers[0].action == Marker.DELETEALL  # the previous frame's lines go
    strips = [(m.ns, m.id) for m in markers[1:]]
    assert strips == [("lanes", 1), ("lanes", 2), ("drivable_edges", 0), ("drivable_edges", 1)]
    assert all(m.type == Marker.LINE_STRIP and m.header.frame_id == "base_footprint"
               for m in markers[1:])


def test_an_invalid_ego_lane_is_said_and_no_edges_give_an_empty_scan():
    geometry = Geometry([], EgoLane(), None)
    msg = road_messages.road_geometry(Header(), geometry)
    assert not msg.ego_valid and msg.ego_left_id == -1 and math.isnan(msg.ego_width)
    assert msg.drivable_left == [] and len(road_messages.drivable_scan(Header(), None).ranges) == 0


@pytest.fixture(scope="module")
def frame_msg():
    bgr = SyntheticRoad(CAMERA).render(0.0)[0]
    return messages.image(Header(stamp=STAMP, frame_id="camera_optical_frame"), bgr, "bgr8")


def test_road_outputs_in_the_ground_frame_with_the_image_stamp(processor, frame_msg):
    outcome = processor.process(frame_msg, ROAD)
    assert ROAD <= set(outcome.messages) and outcome.no_grids is None
    for name in ROAD - {"lanes_markers"}:
        msg = outcome.messages[name]
        assert msg.header.frame_id == "base_footprint" and msg.header.stamp == STAMP, name
    assert isinstance(outcome.messages["drivable_scan"], LaserScan)
    assert all(m.header.frame_id == "base_footprint"
               for m in outcome.messages["lanes_markers"].markers)
    assert outcome.timings_ms["road"] > 0.0


def test_road_geometry_only_when_wanted_and_with_a_camera(processor, frame_msg):
    outcome = processor.process(frame_msg, {"lane_mask"})
    assert outcome.products.road is None and not ROAD & set(outcome.messages)
    processor.camera_info = None  # no calibration: no road outputs, the reason said
    outcome = processor.process(frame_msg, ROAD)
    assert not ROAD & set(outcome.messages) and outcome.no_grids.reason is GridProblem.NO_CAMERA_INFO


def test_lanes_only_for_networks_with_a_lane_output_edges_for_all():
    for name in ("hybridnets", "yolop", "hydra", "hyctas"):
        rows = {o.name for o in supported(adapter(name))}
        assert {"road_geometry", "drivable_scan", "lanes_markers"} <= rows, name
        assert ("lanes" in rows) == ("lane" in adapter(name).products), name


def test_road_max_range_reaches_the_estimator(processor):
    processor.update_config(NodeConfig().with_changes(road_max_range=25.0))
    assert processor.road.settings.x_max == 25.0


def test_the_vehicle_motion_between_images_comes_from_odom_tf(random_pipeline):
    # ground_frame in odom: turned left by 90 degrees, then 1 m further along it and 0.1 rad
    poses = iter([(0.0, 0.0, math.pi / 2), (0.0, 1.0, math.pi / 2 + 0.1)])

    def lookup(target: str, header: Header):
        assert (target, header.frame_id) == ("odom", "base_footprint")
        x, y, yaw = next(poses)
        c, s = math.cos(yaw), math.sin(yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.array([x, y, 0.0])

    processor = FrameProcessor(random_pipeline, NodeConfig(), lookup)
    assert processor._motion(Header(stamp=STAMP)) is None  # no odom_frame: no motion
    processor.update_config(NodeConfig().with_changes(odom_frame="odom"))
    assert processor._motion(Header(stamp=STAMP)) is None  # the first pose
    # forward in the previous ground frame, not along odom's y
    assert processor._motion(Header(stamp=STAMP)) == pytest.approx((1.0, 0.0, 0.1))
