"""Metric depth -> 3D points in the ground frame and an occupancy grid from them.

Depth follows REP-118: metres along the optical axis (z of the optical frame), so a pixel's
point is ``depth * ray`` with ``ray = R (x_n, y_n, 1)`` through the pixel centre with the
lens's distortion undone (CameraModel.pixel_rays, any of its lens models), plus the camera
centre; pixels no ray of the lens reaches (a fisheye's corners) give no point. The rays are computed once per camera; a frame costs a multiply-add
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
        self._rays = camera.pixel_rays().astype(np.float32)             # [H, W, 3]
        seen = np.isfinite(self._rays[..., 0])
        self._no_ray = None if seen.all() else ~seen  # the cloud leaves those pixels out
        self._origin = camera.t_ground_optical.astype(np.float32)
        self._points = np.empty_like(self._rays)
        # occupancy's working planes: x, y, z of the rays, then of the points, contiguous
        self._ray_planes = np.ascontiguousarray(self._rays.transpose(2, 0, 1))
        self._planes = np.empty_like(self._ray_planes)
        self._masks = np.empty((2, camera.height, camera.width), np.uint8)
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
        if self._no_ray is not None:
            keep &= ~self._no_ray[::step, ::step]
        cloud = np.empty(int(keep.sum()), POINT_DTYPE)
        for axis, name in enumerate("xyz"):
            cloud[name] = xyz[..., axis][keep]
        cloud["class"] = classes[keep]
        return cloud

    def occupancy(self, depth_m: np.ndarray, class_map: np.ndarray, drivable: np.ndarray,
                  obstacle: np.ndarray, skip: np.ndarray, obstacle_height: float) -> np.ndarray:
        """The int8 grid (module doc). ``drivable``, ``obstacle``, ``skip``: bool lookups
        [256] by class id. Fills and returns a buffer the next call reuses.

        Per pixel in OpenCV and contiguous numpy planes (a class-flag table by cv2.LUT,
        range checks by cv2.inRange), then per kept point: the arithmetic of ``points``
        and the cell of each point unchanged, faster than numpy over strided [N, 3] points
        (docs/benchmarks.md)."""
        self._check(depth_m, class_map)
        g = self.grid
        x, y, z = self._planes
        for plane, ray, origin in zip(self._planes, self._ray_planes, self._origin):
            np.multiply(ray, depth_m, out=plane)
            plane += origin
        col, row = x, y  # in place: the cell coordinates, floor((v - min) / resolution)
        np.floor(np.divide(np.subtract(x, g.x_min, out=col), g.resolution, out=col), out=col)
        np.floor(np.divide(np.subtract(y, g.y_min, out=row), g.resolution, out=row), out=row)
        flags = cv2.LUT(class_map, _class_flags(skip, obstacle, drivable))
        # NaN coordinates or depths fail every comparison: left out
        inside, other = self._masks
        cv2.inRange(col, 0, g.width - 1, dst=inside)
        cv2.bitwise_and(inside, cv2.inRange(row, 0, g.height - 1, dst=other), dst=inside)
        cv2.bitwise_and(inside, cv2.compare(depth_m, 0, cv2.CMP_GT, dst=other), dst=inside)
        cv2.bitwise_and(inside, cv2.compare(flags, _SKIP, cv2.CMP_LT, dst=other), dst=inside)
        kept = np.flatnonzero(inside)
        cell = (row.reshape(-1)[kept] * g.width + col.reshape(-1)[kept]).astype(np.int64)
        height = z.reshape(-1)[kept]
        kept_flags = flags.reshape(-1)[kept]
        blocked = (kept_flags & _OBSTACLE).astype(bool) | (height > obstacle_height)
        free = (kept_flags & _DRIVABLE).astype(bool) & (np.abs(height) <= obstacle_height)
        values = self.values.reshape(-1)
        values.fill(UNSEEN)
        values[cell[free]] = FREE
        values[cell[blocked]] = OCCUPIED  # after FREE: an obstacle in a cell wins
        return self.values


# Class flags of occupancy's lookup table; skipped classes sort last (flags >= _SKIP).
_DRIVABLE, _OBSTACLE, _SKIP = 1, 2, 4


def _class_flags(skip: np.ndarray, obstacle: np.ndarray, drivable: np.ndarray) -> np.ndarray:
    """uint8 [256] table class id -> _SKIP | _OBSTACLE | _DRIVABLE bits."""
    flags = np.zeros(256, np.uint8)
    size = min(256, len(skip), len(obstacle), len(drivable))
    flags[:size] = ((skip[:size] * _SKIP) | (obstacle[:size] * _OBSTACLE)
                    | (drivable[:size] * _DRIVABLE))
    return flags


def class_lookup(ids, size: int = 256) -> np.ndarray:
    """bool [size] lookup, true at the class ids ``ids``."""
    lookup = np.zeros(size, bool)
    lookup[np.asarray(ids, np.int64)] = True
    return lookup
