"""Metric depth -> 3D points in the ground frame and an occupancy grid from them.

Depth follows REP-118: metres along the optical axis (z of the optical frame), so a pixel's
point is ``depth * ray`` with ``ray = R (x_n, y_n, 1)`` through the undistorted pixel centre,
plus the camera centre. The rays are computed once per camera; a frame costs a multiply-add
per pixel and a scatter into the grid. No flat-ground assumption: a kerb, a parked car or a
wall lands where it stands.

Grid rule (nav_msgs/OccupancyGrid values): a cell is OCCUPIED when a point in it belongs
to an obstacle class or lies higher than ``obstacle_height`` above the ground; FREE when a
point of a drivable class lies within ``obstacle_height`` of the ground and nothing marks
it occupied; UNSEEN (-1) when no point falls into it. Points of classes without a surface
(sky) and invalid depths (not finite or <= 0) are left out.
"""
from __future__ import annotations

import cv2
import numpy as np

from .bev import FREE, OCCUPIED, UNSEEN, GridSpec
from .camera import CameraModel

# One point of the cloud: position in the ground frame and its class id.
POINT_DTYPE = np.dtype([("x", np.float32), ("y", np.float32), ("z", np.float32),
                        ("class", np.uint8)], align=True)


class DepthProjector:
    def __init__(self, camera: CameraModel, grid: GridSpec):
        self.camera = camera
        self.grid = grid
        u, v = np.meshgrid(np.arange(camera.width, dtype=np.float64),
                           np.arange(camera.height, dtype=np.float64))
        uv = np.stack([u, v], -1)
        if camera.D is not None:  # the ray through the pixel as the lens bent it
            uv = cv2.undistortPoints(uv.reshape(-1, 1, 2), camera.K, camera.D,
                                     P=camera.K).reshape(camera.height, camera.width, 2)
        self._rays = camera.pixel_rays(uv).astype(np.float32)          # [H, W, 3]
        self._origin = camera.t_ground_optical.astype(np.float32)
        self._points = np.empty_like(self._rays)
        self.values = np.empty((grid.height, grid.width), np.int8)

    def _check(self, depth_m: np.ndarray, class_map: np.ndarray) -> None:
        size = (self.camera.height, self.camera.width)
        if depth_m.shape != size or class_map.shape != size:
            raise ValueError(f"depth {depth_m.shape} and class map {class_map.shape} must both "
                             f"be the camera's {size}")

    def points(self, depth_m: np.ndarray, step: int = 1) -> np.ndarray:
        """Ground-frame points [H/step, W/step, 3] float32 of every step-th pixel (a view of
        a buffer the next call overwrites)."""
        rays = self._rays[::step, ::step]
        out = self._points[: rays.shape[0], : rays.shape[1]]
        np.multiply(rays, depth_m[::step, ::step, None], out=out)
        out += self._origin
        return out

    def cloud(self, depth_m: np.ndarray, class_map: np.ndarray, skip: np.ndarray,
              step: int = 1) -> np.ndarray:
        """Structured POINT_DTYPE array of every step-th pixel with a valid depth whose class
        is not in the bool lookup ``skip`` [256]."""
        self._check(depth_m, class_map)
        xyz = self.points(depth_m, step)
        classes = class_map[::step, ::step]
        depth = depth_m[::step, ::step]
        keep = (depth > 0) & np.isfinite(depth) & ~skip[classes]
        cloud = np.empty(int(keep.sum()), POINT_DTYPE)
        for axis, name in enumerate("xyz"):
            cloud[name] = xyz[..., axis][keep]
        cloud["class"] = classes[keep]
        return cloud

    def occupancy(self, depth_m: np.ndarray, class_map: np.ndarray, drivable: np.ndarray,
                  obstacle: np.ndarray, skip: np.ndarray, obstacle_height: float) -> np.ndarray:
        """The int8 grid (module doc). ``drivable``, ``obstacle``, ``skip``: bool lookups
        [256] by class id. Fills and returns a buffer the next call reuses."""
        self._check(depth_m, class_map)
        xyz = self.points(depth_m).reshape(-1, 3)
        g = self.grid
        col = np.floor((xyz[:, 0] - g.x_min) / g.resolution)
        row = np.floor((xyz[:, 1] - g.y_min) / g.resolution)
        classes = class_map.reshape(-1)
        depth = depth_m.reshape(-1)
        # NaN depths give NaN cells, which fail the bounds checks
        inside = ((col >= 0) & (col < g.width) & (row >= 0) & (row < g.height) & (depth > 0)
                  & ~skip[classes])
        cell = (row * g.width + col)[inside].astype(np.int64)
        height = xyz[inside, 2]
        classes = classes[inside]
        blocked = obstacle[classes] | (height > obstacle_height)
        free = drivable[classes] & (np.abs(height) <= obstacle_height)
        values = self.values.reshape(-1)
        values.fill(UNSEEN)
        values[cell[free]] = FREE
        values[cell[blocked]] = OCCUPIED  # after FREE: an obstacle in a cell wins
        return self.values


def class_lookup(ids, size: int = 256) -> np.ndarray:
    """bool [size] lookup, true at the class ids ``ids``."""
    lookup = np.zeros(size, bool)
    lookup[np.asarray(ids, np.int64)] = True
    return lookup
