"""What one processed frame turns into: the output messages, by name.

Shared by the node (which builds only what has subscribers) and the bag replay (which
builds everything), so both publish/record exactly the same messages.
"""
from __future__ import annotations

import numpy as np
from nav_msgs.msg import OccupancyGrid
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from ..bev import OCCUPIED, BevProjector, GridSpec, drivable_boundary
from ..camera import CameraModel
from ..pipeline import Result
from ..spec import SEG_LANE, SEG_ROAD
from ..visualize import draw_overlay
from . import messages

# Reliable, so both reliable (RViz, recorders) and best-effort subscribers connect.
OUTPUT_QOS = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE,
                        history=QoSHistoryPolicy.KEEP_LAST, depth=2,
                        durability=QoSDurabilityPolicy.VOLATILE)

# output name -> (topic relative to the node's namespace, message type)
OUTPUTS = {
    "detections": ("detections", Detection2DArray),
    "drivable_mask": ("drivable/mask", Image),
    "lane_mask": ("lane/mask", Image),
    "drivable_grid": ("drivable/grid", OccupancyGrid),
    "lane_grid": ("lane/grid", OccupancyGrid),
    "drivable_points": ("drivable/points", PointCloud2),
    "lane_points": ("lane/points", PointCloud2),
    "overlay": ("overlay", Image),
}
GRID_OUTPUTS = {"drivable_grid", "lane_grid", "drivable_points", "lane_points"}


class GridUnavailable(Exception):
    """No grids for this frame; ``reason`` is a short category, the text has details."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def camera_model_from_info(info: CameraInfo, pose, rectified: bool,
                           transform=None) -> CameraModel:
    """CameraModel from a CameraInfo and either a pose [x,y,z,r,p,y] of the camera body
    frame or a (R_ground_optical, t) transform; raises ValueError on bad calibration."""
    if rectified and any(info.p):
        K = np.asarray(info.p, np.float64).reshape(3, 4)[:, :3]
        D = None
    else:
        K = np.asarray(info.k, np.float64)
        D = np.asarray(info.d, np.float64) if len(info.d) else None
    if transform is not None:
        return CameraModel.from_transform(K, info.width, info.height, *transform, D=D)
    return CameraModel.from_pose(K, info.width, info.height, pose, D=D)


def grid_spec(resolution: float, x_range, y_range) -> GridSpec:
    return GridSpec(float(resolution), float(x_range[0]), float(x_range[1]),
                    float(y_range[0]), float(y_range[1]))


class ProjectorCache:
    """The bird's-eye lookup for the current calibration, pose and grid; rebuilt only when
    one of them changes."""

    def __init__(self):
        self.projector: BevProjector | None = None
        self._key = None

    def get(self, info: CameraInfo | None, image_hw, grid: tuple, rectified: bool,
            pose=None, transform=None) -> tuple[BevProjector, bool]:
        """(projector, rebuilt?); raises GridUnavailable."""
        if info is None:
            raise GridUnavailable("no camera_info", "no CameraInfo received yet")
        if (info.height, info.width) != tuple(image_hw):
            raise GridUnavailable("camera_info size mismatch",
                                  f"camera_info is {info.width}x{info.height} but the image is "
                                  f"{image_hw[1]}x{image_hw[0]}")
        key = (tuple(info.k), tuple(info.d), tuple(info.p), info.width, info.height,
               tuple(pose or ()), None if transform is None else
               tuple(np.round(np.concatenate([transform[0].ravel(), transform[1]]), 6)),
               rectified, grid)
        if key == self._key:
            return self.projector, False
        try:
            camera = camera_model_from_info(info, pose, rectified, transform)
            spec = grid_spec(*grid)
        except ValueError as exc:
            raise GridUnavailable("invalid camera_info", f"cannot use camera_info: {exc}") from None
        self.projector, self._key = BevProjector(camera, spec), key
        return self.projector, True


def build_outputs(wanted: set[str], header: Header, bgr: np.ndarray, result: Result,
                  class_names, projector: BevProjector | None, ground_frame: str,
                  grids: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The wanted output messages of one frame (grids only when a projector is given;
    ``grids`` = its (drivable, lane) for this frame if already projected)."""
    out = {}
    if "detections" in wanted:
        out["detections"] = messages.detection_array(header, result.detections, class_names)
    for name, cls in (("drivable_mask", SEG_ROAD), ("lane_mask", SEG_LANE)):
        if name in wanted:
            mask = (result.seg_mask == cls).view(np.uint8) * np.uint8(255)
            out[name] = messages.image(header, mask, "mono8")
    if projector is not None and wanted & GRID_OUTPUTS:
        drivable, lane = grids if grids is not None else projector.project(result.seg_mask)
        grid_header = Header(stamp=header.stamp, frame_id=ground_frame)
        if "drivable_grid" in wanted:
            out["drivable_grid"] = messages.occupancy_grid(grid_header, drivable, projector.grid)
        if "lane_grid" in wanted:
            out["lane_grid"] = messages.occupancy_grid(grid_header, lane, projector.grid)
        if "drivable_points" in wanted:
            out["drivable_points"] = messages.point_cloud(
                grid_header, projector.cell_points(drivable_boundary(drivable)))
        if "lane_points" in wanted:
            out["lane_points"] = messages.point_cloud(grid_header, projector.cell_points(lane == OCCUPIED))
    if "overlay" in wanted:
        overlay = draw_overlay(bgr, result.seg_mask, result.detections, class_names)
        out["overlay"] = messages.image(header, overlay, "bgr8")
    return out
