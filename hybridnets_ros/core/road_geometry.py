"""Road geometry from segmentation masks: lane lines and the ego lane as ground-frame
polylines, and the drivable area's edges (see docs/road_geometry.md)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import CameraModel


@dataclass
class LaneLine:
    id: int                        # stable over frames (tracked)
    points: np.ndarray             # (N, 2) float32, metres in the ground frame, near -> far
    confidence: float              # 0..1
    range_m: tuple[float, float]   # nearest, farthest x seen
    side: int                      # +1 left of the vehicle, -1 right
    residual_m: float              # RMS lateral residual of the fit
    dashed: bool


@dataclass
class EgoLane:
    valid: bool = False
    left_id: int = -1
    right_id: int = -1
    width_m: float = float("nan")
    center_offset_m: float = float("nan")
    heading_rad: float = float("nan")
    curvature_1pm: float = float("nan")


@dataclass
class DrivableEdges:
    left: np.ndarray
    right: np.ndarray
    angle_min: float
    angle_increment: float
    range_max: float
    ranges: np.ndarray


@dataclass
class RoadGeometry:
    lanes: list[LaneLine]
    ego: EgoLane
    edges: DrivableEdges | None


@dataclass(frozen=True)
class RoadGeometrySettings:
    x_min: float = 3.0
    x_max: float = 40.0


class RoadGeometryEstimator:
    def __init__(self, settings: RoadGeometrySettings | None = None):
        self.settings = settings or RoadGeometrySettings()

    def update(self, camera: CameraModel, lane_mask: np.ndarray | None,
               drivable_mask: np.ndarray | None, stamp_s: float,
               motion: tuple[float, float, float] | None = None) -> RoadGeometry:
        return RoadGeometry([], EgoLane(), None)

    def reset(self) -> None:
        pass
