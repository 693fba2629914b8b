"""Result, masks and grids -> ROS messages.

Array payloads are ``array.array`` written in place by numpy or OpenCV (``payload``) or
filled from a numpy buffer in one copy, and handed to the message without another
(``_with_payload``): converting element by element, or the copy the generated constructor
makes, cost more than the rest of the frame's messages (docs/benchmarks.md). Detection
arrays are assembled on the message slots (``_blank``), not through the generated
constructors.
"""
from __future__ import annotations

import array

import cv2
import numpy as np
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion, Vector3
from nav_msgs.msg import MapMetaData, OccupancyGrid
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from vision_msgs.msg import (BoundingBox2D, BoundingBox3D, Detection2D, Detection2DArray,
                             Detection3D, Detection3DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose, Point2D, Pose2D)
from visualization_msgs.msg import Marker, MarkerArray

from ..core.bev import GridSpec
from ..core.objects3d import BoxEstimates, GroundContacts
from ..core.postprocess import Detections
from ..core.visualize import colorize

# Variance of a rotation that is not estimated (the hypothesis pose is a point): "unknown".
UNKNOWN_ROTATION_VARIANCE = 1e6
# Marker namespaces of object_markers: the box, its label and its velocity arrow.
MARKER_BOX, MARKER_LABEL, MARKER_VELOCITY = "boxes", "labels", "velocities"
_BOX_COLOR = ColorRGBA(r=1.0, g=0.45, b=0.0, a=0.5)
_LABEL_COLOR = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
_VELOCITY_COLOR = ColorRGBA(r=1.0, g=0.9, b=0.0, a=1.0)


def stamp_ns(header) -> int:
    """A header's stamp in nanoseconds."""
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def message_stamp_ns(msg) -> int | None:
    """An output message's stamp in nanoseconds: its header's; a MarkerArray has no header,
    so its first marker's (None when it is empty)."""
    if isinstance(msg, MarkerArray):
        return stamp_ns(msg.markers[0].header) if msg.markers else None
    return stamp_ns(msg.header)


def _bytes(arr: np.ndarray, typecode: str = "B") -> array.array:
    buf = array.array(typecode)
    buf.frombytes(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return buf


def payload(shape: tuple[int, ...], typecode: str = "B") -> tuple[array.array, np.ndarray]:
    """A new ``array.array`` of ``prod(shape)`` elements and a writable numpy view of it in
    ``shape``: a builder writes the view (OpenCV or numpy ``dst=``/``out=``) and hands the
    array to the message, one pass over the pixels instead of a picture and then a copy."""
    buf = array.array(typecode, [0]) * int(np.prod(shape))
    return buf, np.frombuffer(buf, np.dtype(typecode)).reshape(shape)


def _set_data(msg, buf: array.array):
    """``msg`` with ``data`` set to ``buf`` as it is. The generated constructor copies an
    array.array it is given, and so does the setter with field checks off (the default
    since Jazzy); with them on (always on Humble) the setter keeps it as it is."""
    checks = getattr(msg, "_check_fields", None)
    if checks is not None:
        msg._check_fields = True
    msg.data = buf
    if checks is not None:
        msg._check_fields = checks
    return msg


def _with_payload(msg, arr: np.ndarray, typecode: str = "B"):
    """``msg`` with ``data`` set to ``arr``'s bytes (one copy)."""
    return _set_data(msg, _bytes(arr, typecode))


def _blank(msg_type):
    """A maker of ``msg_type`` messages whose every field the caller then sets on its slot
    (``msg._x = ...``). The generated constructor builds a default for every field, even
    one given as an argument, and checks each value in Python: with tens of detections a
    frame that was most of the cost of the detection messages. Values must have the
    field's exact type; test_messages checks the serialised bytes against constructed
    messages."""
    check_fields = getattr(msg_type(), "_check_fields", None)  # Jazzy on; absent on Humble
    new = object.__new__

    def make():
        msg = new(msg_type)
        if check_fields is not None:
            msg._check_fields = check_fields
        return msg
    return make


(_detection2d, _detection3d, _hypothesis_with_pose, _hypothesis, _bbox2d, _pose2d, _point2d,
 _bbox3d, _pose_with_covariance, _pose, _point, _quaternion, _vector3) = map(_blank, (
    Detection2D, Detection3D, ObjectHypothesisWithPose, ObjectHypothesis, BoundingBox2D,
    Pose2D, Point2D, BoundingBox3D, PoseWithCovariance, Pose, Point, Quaternion, Vector3))


def detection_ids(track_ids: np.ndarray | None, count: int) -> list[str]:
    """The ``id`` strings of ``count`` detections: their track ids, or empty without tracking."""
    return [""] * count if track_ids is None else [str(i) for i in track_ids.tolist()]


def _hypothesis_of(class_id: str, score: float,
                   pose: PoseWithCovariance) -> ObjectHypothesisWithPose:
    hypothesis = _hypothesis()
    hypothesis._class_id, hypothesis._score = class_id, score
    result = _hypothesis_with_pose()
    result._hypothesis, result._pose = hypothesis, pose
    return result


def detection_array(header: Header, detections: Detections, class_names,
                    track_ids: np.ndarray | None = None) -> Detection2DArray:
    """Boxes in input-image pixels: centre + size, one hypothesis (class name, score), the
    track id (empty without)."""
    boxes = detections.boxes.astype(np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = boxes[:, 2:] - boxes[:, :2]
    no_pose = PoseWithCovariance()  # a 2D hypothesis has no pose: one default for all
    names = [class_names[c] for c in detections.classes.tolist()]
    items = []
    for (cx, cy), (w, h), score, name, det_id in zip(
            centres.tolist(), sizes.tolist(), detections.scores.tolist(), names,
            detection_ids(track_ids, len(boxes))):
        centre = _point2d()
        centre._x, centre._y = cx, cy
        pose = _pose2d()
        pose._position, pose._theta = centre, 0.0
        bbox = _bbox2d()
        bbox._center, bbox._size_x, bbox._size_y = pose, w, h
        detection = _detection2d()
        detection._header, detection._bbox, detection._id = header, bbox, det_id
        detection._results = [_hypothesis_of(name, score, no_pose)]
        items.append(detection)
    return Detection2DArray(header=header, detections=items)


def _pose_of(x: float, y: float, z: float, qx: float, qy: float, qz: float, qw: float) -> Pose:
    position = _point()
    position._x, position._y, position._z = x, y, z
    orientation = _quaternion()
    orientation._x, orientation._y, orientation._z, orientation._w = qx, qy, qz, qw
    pose = _pose()
    pose._position, pose._orientation = position, orientation
    return pose


def detection3d_array(header: Header, detections: Detections, class_names,
                      track_ids: np.ndarray | None, contacts: GroundContacts,
                      boxes: BoxEstimates) -> Detection3DArray:
    """The detections with a ground contact (``contacts.valid``), in their 2D order and with
    their 2D ids, in ``header``'s (the ground) frame: the hypothesis pose is the contact
    point with its x/y covariance (z: 0, on the ground; rotation not estimated), the bbox
    the estimated box (size x = length along its yaw, y = width, z = height)."""
    keep = np.flatnonzero(contacts.valid)
    ids = detection_ids(track_ids, len(detections))
    covariance = np.zeros((len(keep), 6, 6))
    covariance[:, :3, :3] = contacts.covariance[keep]
    covariance[:, [3, 4, 5], [3, 4, 5]] = UNKNOWN_ROTATION_VARIANCE
    covariance = covariance.reshape(-1, 36)  # each row is a detection's float64[36]
    classes, scores = detections.classes.tolist(), detections.scores.tolist()
    items = []
    for row, (i, point, centre, size, quaternion) in enumerate(zip(
            keep.tolist(), contacts.points[keep].tolist(), boxes.centres[keep].tolist(),
            boxes.sizes[keep].tolist(), boxes.quaternions[keep].tolist())):
        pose = _pose_with_covariance()
        pose._pose, pose._covariance = _pose_of(*point, 0.0, 0.0, 0.0, 1.0), covariance[row]
        extent = _vector3()
        extent._x, extent._y, extent._z = size
        bbox = _bbox3d()
        bbox._center, bbox._size = _pose_of(*centre, *quaternion), extent
        detection = _detection3d()
        detection._header, detection._bbox, detection._id = header, bbox, ids[i]
        detection._results = [_hypothesis_of(class_names[classes[i]], scores[i], pose)]
        items.append(detection)
    return Detection3DArray(header=header, detections=items)


def object_markers(header: Header, track_ids: np.ndarray | None, contacts: GroundContacts,
                   boxes: BoxEstimates, velocities: np.ndarray | None,
                   stale: set[tuple[str, int]]) -> tuple[MarkerArray, set[tuple[str, int]]]:
    """RViz markers of the detections with a ground contact: a translucent CUBE (the
    estimated box), a TEXT_VIEW_FACING label above it ("<id>  <range> m", and the speed
    "<v> m/s" in ground_frame once known) and an ARROW of the ground velocity (where it
    will be in 1 s). Marker ids are the track ids (without tracking: the detection's index).
    First comes a DELETE for each (namespace, id) of ``stale`` not drawn now. Returns the
    message and the (namespace, id) pairs drawn."""
    keep = np.flatnonzero(contacts.valid)
    keys = np.arange(len(contacts.valid)) if track_ids is None else track_ids
    drawn: set[tuple[str, int]] = set()
    adds = []
    for i in keep.tolist():
        key = int(keys[i])
        (cx, cy, cz), (length, width, height) = boxes.centres[i].tolist(), boxes.sizes[i].tolist()
        box = Marker(header=header, ns=MARKER_BOX, id=key, type=Marker.CUBE, action=Marker.ADD,
                     color=_BOX_COLOR)
        box.pose.position.x, box.pose.position.y, box.pose.position.z = cx, cy, cz
        (box.pose.orientation.x, box.pose.orientation.y, box.pose.orientation.z,
         box.pose.orientation.w) = boxes.quaternions[i].tolist()
        box.scale.x, box.scale.y, box.scale.z = length, width, height
        text = f"{contacts.ranges[i]:.1f} m" if track_ids is None else \
            f"{key}  {contacts.ranges[i]:.1f} m"
        velocity = None if velocities is None else velocities[i]
        known = velocity is not None and bool(np.isfinite(velocity).all())
        if known:
            text += f"\n{float(np.hypot(*velocity)):.1f} m/s"
        label = Marker(header=header, ns=MARKER_LABEL, id=key, type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, color=_LABEL_COLOR, text=text)
        label.pose.position.x, label.pose.position.y = cx, cy
        label.pose.position.z = 2 * cz + 0.8
        label.pose.orientation.w = 1.0
        label.scale.z = 0.8  # text height, metres
        adds += [box, label]
        drawn |= {(MARKER_BOX, key), (MARKER_LABEL, key)}
        if known:
            arrow = Marker(header=header, ns=MARKER_VELOCITY, id=key, type=Marker.ARROW,
                           action=Marker.ADD, color=_VELOCITY_COLOR)
            arrow.pose.orientation.w = 1.0
            top = 2 * cz + 0.1
            arrow.points = [Point(x=cx, y=cy, z=top),
                            Point(x=cx + float(velocity[0]), y=cy + float(velocity[1]), z=top)]
            arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.15, 0.4, 0.4  # shaft, head
            adds.append(arrow)
            drawn.add((MARKER_VELOCITY, key))
    deletes = [Marker(header=header, ns=ns, id=key, action=Marker.DELETE)
               for ns, key in sorted(stale - drawn)]
    return MarkerArray(markers=deletes + adds), drawn


def _image(header: Header, height: int, width: int, channels: int, encoding: str) -> Image:
    return Image(header=header, height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=width * channels)


def image(header: Header, pixels: np.ndarray, encoding: str) -> Image:
    """mono8 ([H, W] uint8) or bgr8 ([H, W, 3] uint8) image message."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return _with_payload(_image(header, height, width, channels, encoding), pixels)


def mask_image(header: Header, mask: np.ndarray) -> Image:
    """mono8 image of a bool (or 0/1) mask: 255 where set, 0 elsewhere (written in place)."""
    buf, pixels = payload(mask.shape)
    cv2.compare(mask.view(np.uint8), 0, cv2.CMP_NE, dst=pixels)
    return _set_data(_image(header, *mask.shape, 1, "mono8"), buf)


def colour_image(header: Header, class_map: np.ndarray, colors_rgb) -> Image:
    """rgb8 rendering of a uint8 class map, ``colors_rgb[i]`` for class i (written in place)."""
    buf, pixels = payload((*class_map.shape, 3))
    colorize(class_map, colors_rgb, out=pixels)
    return _set_data(_image(header, *class_map.shape, 3, "rgb8"), buf)


def occupancy_grid(header: Header, values: np.ndarray, grid: GridSpec) -> OccupancyGrid:
    """int8 [rows = y, cols = x] grid with its origin at (x_min, y_min) of the frame."""
    origin = Pose()
    origin.position.x, origin.position.y = float(grid.x_min), float(grid.y_min)
    origin.orientation.w = 1.0
    info = MapMetaData(map_load_time=header.stamp, resolution=float(grid.resolution),
                       width=grid.width, height=grid.height, origin=origin)
    return _with_payload(OccupancyGrid(header=header, info=info), values, "b")


_XYZ_FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
               for i, n in enumerate("xyz")]


def depth_image(header: Header, depth_m: np.ndarray) -> Image:
    """REP-118 depth image: 32FC1, metres along the optical axis."""
    height, width = depth_m.shape
    msg = Image(header=header, height=height, width=width, encoding="32FC1",
                is_bigendian=int(not np.little_endian), step=width * 4)
    return _with_payload(msg, np.ascontiguousarray(depth_m, np.float32))


def labelled_cloud(header: Header, cloud: np.ndarray) -> PointCloud2:
    """Unorganised cloud of a structured array with float32 x, y, z and uint8 class."""
    fields = [PointField(name=name, offset=cloud.dtype.fields[name][1],
                         datatype=PointField.UINT8 if name == "class" else PointField.FLOAT32,
                         count=1) for name in cloud.dtype.names]
    step = cloud.dtype.itemsize
    msg = PointCloud2(header=header, height=1, width=len(cloud), fields=fields,
                      is_bigendian=False, point_step=step, row_step=step * len(cloud),
                      is_dense=True)
    return _with_payload(msg, cloud.view(np.uint8))


def organized_cloud(header: Header, points: np.ndarray) -> PointCloud2:
    """Organized cloud of float32 x, y, z points [H, W, 3], NaN where a pixel has none
    (so not dense): point (u, v) belongs to pixel (u, v) of an image of the same size."""
    points = np.ascontiguousarray(points, np.float32)
    height, width = points.shape[:2]
    msg = PointCloud2(header=header, height=height, width=width, fields=_XYZ_FIELDS,
                      is_bigendian=False, point_step=12, row_step=12 * width, is_dense=False)
    return _with_payload(msg, points)


def point_cloud(header: Header, points: np.ndarray) -> PointCloud2:
    """Unorganised cloud of float32 x, y, z points."""
    points = np.ascontiguousarray(points, np.float32)
    msg = PointCloud2(header=header, height=1, width=len(points), fields=_XYZ_FIELDS,
                      is_bigendian=False, point_step=12, row_step=12 * len(points),
                      is_dense=True)
    return _with_payload(msg, points)
