"""Result, masks and grids -> ROS messages.

Array payloads are assigned as ``array.array`` filled from the numpy buffer: rclpy then
takes them in one copy instead of converting element by element (docs/benchmarks.md).
"""
from __future__ import annotations

import array

import numpy as np
from geometry_msgs.msg import Pose
from nav_msgs.msg import MapMetaData, OccupancyGrid
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose)

from ..core.bev import GridSpec
from ..core.postprocess import Detections


def stamp_ns(header) -> int:
    """A header's stamp in nanoseconds."""
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def _bytes(arr: np.ndarray, typecode: str = "B") -> array.array:
    buf = array.array(typecode)
    buf.frombytes(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return buf


def detection_array(header: Header, detections: Detections, class_names) -> Detection2DArray:
    """Boxes in input-image pixels: centre + size, one hypothesis (class name, score)."""
    msg = Detection2DArray(header=header)
    boxes = detections.boxes.astype(np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = boxes[:, 2:] - boxes[:, :2]
    items = []
    for (cx, cy), (w, h), score, cls in zip(centres.tolist(), sizes.tolist(),
                                            detections.scores.tolist(), detections.classes.tolist()):
        bbox = BoundingBox2D(size_x=w, size_y=h)
        bbox.center.position.x, bbox.center.position.y = cx, cy
        hypothesis = ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=class_names[cls], score=score))
        items.append(Detection2D(header=header, bbox=bbox, results=[hypothesis]))
    msg.detections = items
    return msg


def image(header: Header, pixels: np.ndarray, encoding: str) -> Image:
    """mono8 ([H, W] uint8) or bgr8 ([H, W, 3] uint8) image message."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * channels, data=_bytes(pixels))


def occupancy_grid(header: Header, values: np.ndarray, grid: GridSpec) -> OccupancyGrid:
    """int8 [rows = y, cols = x] grid with its origin at (x_min, y_min) of the frame."""
    origin = Pose()
    origin.position.x, origin.position.y = float(grid.x_min), float(grid.y_min)
    origin.orientation.w = 1.0
    info = MapMetaData(map_load_time=header.stamp, resolution=float(grid.resolution),
                       width=grid.width, height=grid.height, origin=origin)
    return OccupancyGrid(header=header, info=info, data=_bytes(values, "b"))


_XYZ_FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
               for i, n in enumerate("xyz")]


def depth_image(header: Header, depth_m: np.ndarray) -> Image:
    """REP-118 depth image: 32FC1, metres along the optical axis."""
    height, width = depth_m.shape
    return Image(header=header, height=height, width=width, encoding="32FC1",
                 is_bigendian=int(not np.little_endian), step=width * 4,
                 data=_bytes(np.ascontiguousarray(depth_m, np.float32)))


def labelled_cloud(header: Header, cloud: np.ndarray) -> PointCloud2:
    """Unorganised cloud of a structured array with float32 x, y, z and uint8 class."""
    fields = [PointField(name=name, offset=cloud.dtype.fields[name][1],
                         datatype=PointField.UINT8 if name == "class" else PointField.FLOAT32,
                         count=1) for name in cloud.dtype.names]
    step = cloud.dtype.itemsize
    return PointCloud2(header=header, height=1, width=len(cloud), fields=fields,
                       is_bigendian=False, point_step=step, row_step=step * len(cloud),
                       data=_bytes(cloud.view(np.uint8)), is_dense=True)


def point_cloud(header: Header, points: np.ndarray) -> PointCloud2:
    """Unorganised cloud of float32 x, y, z points."""
    points = np.ascontiguousarray(points, np.float32)
    return PointCloud2(header=header, height=1, width=len(points), fields=_XYZ_FIELDS,
                       is_bigendian=False, point_step=12, row_step=12 * len(points),
                       data=_bytes(points), is_dense=True)
