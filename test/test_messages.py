"""The output messages built for speed (slots set directly, payloads written in place) are
the messages the generated constructors give: the same messages on the wire, the same fields."""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion, Vector3
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, BoundingBox3D, Detection2D, Detection2DArray,
                             Detection3D, Detection3DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose, Point2D, Pose2D)

import ros_graph  # noqa: F401  (isolated DDS environment before rclpy)
from hybridnets_ros.core.objects3d import BoxEstimates, GroundContacts
from hybridnets_ros.core.postprocess import Detections
from hybridnets_ros.core.visualize import colorize
from hybridnets_ros.ros import messages

HEADER = Header(stamp=Time(sec=12, nanosec=345), frame_id="camera_optical_frame")
NAMES = ("car", "pedestrian")


def assert_same_wire(built, expected) -> None:
    """``built`` goes on the wire as ``expected`` does: the same length, read back equal.
    Not bytes ==: the serialiser leaves CDR alignment padding (e.g. after the frame id)
    uninitialised, so the raw bytes of equal messages can differ there."""
    wire = serialize_message(built)
    assert len(wire) == len(serialize_message(expected))
    assert deserialize_message(wire, type(expected)) == expected


def random_detections(rng, n: int) -> Detections:
    xy = rng.uniform(0, 1000, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 200, (n, 2))], 1).astype(np.float32)
    return Detections(boxes, np.sort(rng.uniform(0.2, 1, n)).astype(np.float32)[::-1].copy(),
                      rng.integers(0, len(NAMES), n).astype(np.int64))


def constructed_2d(detections: Detections, track_ids) -> Detection2DArray:
    """Detection2DArray the plain way: every message through its constructor."""
    items = []
    for k, ((x1, y1, x2, y2), score, cls) in enumerate(zip(
            detections.boxes.astype(np.float64).tolist(), detections.scores.tolist(),
            detections.classes.tolist())):
        bbox = BoundingBox2D(center=Pose2D(position=Point2D(x=(x1 + x2) / 2, y=(y1 + y2) / 2)),
                             size_x=x2 - x1, size_y=y2 - y1)
        hypothesis = ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=NAMES[cls], score=score))
        items.append(Detection2D(header=HEADER, results=[hypothesis], bbox=bbox,
                                 id="" if track_ids is None else str(track_ids[k])))
    return Detection2DArray(header=HEADER, detections=items)


def test_detection_array_is_the_constructed_message():
    rng = np.random.default_rng(3)
    for n, track_ids in ((0, None), (1, None), (37, None), (37, np.arange(100, 137))):
        detections = random_detections(rng, n)
        built = messages.detection_array(HEADER, detections, NAMES, track_ids)
        expected = constructed_2d(detections, track_ids)
        assert_same_wire(built, expected)
        assert built == expected
        if n:  # fields read back like any message's
            assert built.detections[-1].results[0].hypothesis.class_id in NAMES
            assert built.detections[0].bbox.center.position.x == \
                expected.detections[0].bbox.center.position.x


def test_detection3d_array_is_the_constructed_message():
    rng = np.random.default_rng(4)
    n = 23
    detections = random_detections(rng, n)
    valid = rng.uniform(size=n) < 0.7
    points = np.concatenate([rng.uniform(-20, 60, (n, 2)), np.zeros((n, 1))], 1)
    spread = rng.uniform(0.1, 2, (n, 3, 3))
    contacts = GroundContacts(valid, points, spread @ spread.transpose(0, 2, 1),
                              np.hypot(points[:, 0], points[:, 1]))
    yaw = rng.uniform(-np.pi, np.pi, n)
    quaternions = np.stack([np.zeros(n), np.zeros(n), np.sin(yaw / 2), np.cos(yaw / 2)], 1)
    boxes = BoxEstimates(points + [0, 0, 0.75], rng.uniform(1, 5, (n, 3)), yaw, quaternions)
    track_ids = np.arange(7, 7 + n)
    built = messages.detection3d_array(HEADER, detections, NAMES, track_ids, contacts, boxes)

    items = []
    for i in np.flatnonzero(valid):
        covariance = np.zeros((6, 6))
        covariance[:3, :3] = contacts.covariance[i]
        covariance[[3, 4, 5], [3, 4, 5]] = messages.UNKNOWN_ROTATION_VARIANCE
        x, y, z = points[i].tolist()
        hypothesis = ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=NAMES[detections.classes[i]],
                                        score=float(detections.scores[i])),
            pose=PoseWithCovariance(pose=Pose(position=Point(x=x, y=y, z=z)),
                                    covariance=covariance.ravel()))
        cx, cy, cz = boxes.centres[i].tolist()
        qx, qy, qz, qw = quaternions[i].tolist()
        sx, sy, sz = boxes.sizes[i].tolist()
        bbox = BoundingBox3D(center=Pose(position=Point(x=cx, y=cy, z=cz),
                                         orientation=Quaternion(x=qx, y=qy, z=qz, w=qw)),
                             size=Vector3(x=sx, y=sy, z=sz))
        items.append(Detection3D(header=HEADER, results=[hypothesis], bbox=bbox,
                                 id=str(track_ids[i])))
    expected = Detection3DArray(header=HEADER, detections=items)
    assert len(built.detections) == valid.sum() > 0
    assert_same_wire(built, expected)
    back = deserialize_message(serialize_message(built), Detection3DArray)
    assert back.detections[0].results[0].pose.covariance[0] == \
        expected.detections[0].results[0].pose.covariance[0]


def test_images_written_in_place_are_the_plain_ones():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, (45, 80)).astype(np.uint8)
    mask = labels == 2
    colors = ((0, 0, 0), (75, 180, 60), (255, 215, 0))
    plain_mask = messages.image(HEADER, mask.view(np.uint8) * np.uint8(255), "mono8")
    assert_same_wire(messages.mask_image(HEADER, mask), plain_mask)
    plain_colour = messages.image(HEADER, colorize(labels, colors), "rgb8")
    colour = messages.colour_image(HEADER, labels, colors)
    assert_same_wire(colour, plain_colour)
    # class 3 is past the palette: black
    assert bytes(colour.data[:3]) == bytes(colors[labels[0, 0]] if labels[0, 0] < 3 else (0, 0, 0))


def test_clouds_are_what_sensor_msgs_py_builds_and_reads():
    """Both clouds against sensor_msgs_py's point_cloud2 (kept out of the product: it builds
    the same bytes with more copies, docs/benchmarks.md): the same layout and data, read
    back by its read_points as the values that went in."""
    from conftest import need_modules
    need_modules("sensor_msgs_py")
    from sensor_msgs.msg import PointField
    from sensor_msgs_py import point_cloud2
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-40, 40, (500, 3)).astype(np.float32)
    built, theirs = messages.point_cloud(HEADER, xyz), point_cloud2.create_cloud_xyz32(HEADER, xyz)
    labelled = np.zeros(500, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("class", "u1")])
    for i, name in enumerate("xyz"):
        labelled[name] = xyz[:, i]
    labelled["class"] = rng.integers(0, 19, 500)
    fields = [PointField(name=name, offset=labelled.dtype.fields[name][1], count=1,
                         datatype=PointField.UINT8 if name == "class" else PointField.FLOAT32)
              for name in labelled.dtype.names]
    pairs = [(built, theirs, xyz, ("x", "y", "z")),
             (messages.labelled_cloud(HEADER, labelled),
              point_cloud2.create_cloud(HEADER, fields, labelled), labelled, labelled.dtype.names)]
    for ours, reference, points, names in pairs:
        # is_dense: ours says that every point is finite (they are); create_cloud never does
        for field in ("header", "height", "width", "fields", "is_bigendian", "point_step",
                      "row_step", "data"):
            assert getattr(ours, field) == getattr(reference, field), field
        read = point_cloud2.read_points(ours, field_names=names)
        if points.dtype.names:
            assert np.array_equal(read, points)
        else:
            np.testing.assert_array_equal(np.stack([read[n] for n in names], 1), points)
        assert ours.is_dense and np.isfinite(np.stack([read[n] for n in "xyz"])).all()
