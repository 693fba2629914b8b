"""A synthetic road scene rendered through a known camera: the built-in example input.

Real frames cannot ship with the package, so the demo renders a straight three-lane road
(lane lines at +-1.75 m and +-5.25 m, dashed inside, solid at the edges), grass, sky and a
few box-shaped vehicles, moving forward over time. It also returns the ground-truth class
map (0 background, 1 road, 2 lane), which the bird's-eye-view tests use.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .camera import CameraModel

LANE_LINES_Y = (-5.25, -1.75, 1.75, 5.25)  # metres, left positive
LINE_WIDTH = 0.15
ROAD_HALF_WIDTH = 5.25 + LINE_WIDTH / 2
DASH, GAP = 3.0, 6.0
# (x forward, y left, length, width, height, BGR colour) of the vehicles at t = 0, and
# their speed relative to the ego vehicle (m/s).
VEHICLES = ((14.0, 3.5, 4.5, 1.8, 1.5, (40, 40, 170)),
            (26.0, -3.5, 4.5, 1.8, 1.6, (150, 110, 40)),
            (45.0, 0.0, 4.8, 1.9, 1.5, (60, 60, 60)))
RELATIVE_SPEED = (-1.5, 2.0, 0.5)


def default_camera(width: int = 1280, height: int = 720, pose=(0.0, 0.0, 1.5, 0.0, 0.0, 0.0),
                   hfov_deg: float = 70.0) -> CameraModel:
    fx = (width / 2) / np.tan(np.radians(hfov_deg) / 2)
    return CameraModel.from_pose(CameraModel.intrinsics(fx, fx, width / 2, height / 2),
                                 width, height, pose)


@dataclass
class SyntheticRoad:
    camera: CameraModel
    speed: float = 10.0  # ego speed, m/s, moves the dashes
    seed: int = 0
    lines: tuple[float, ...] = LANE_LINES_Y  # lateral positions of the lane lines
    dashed: bool = True                      # inner lines (|y| < 5 m) dashed
    vehicles: bool = True

    def __post_init__(self):
        rays = self.camera.pixel_rays()
        points = self.camera.intersect_ground(rays)
        self._ground = np.isfinite(points[..., 0]) & (
            np.linalg.norm(points - self.camera.t_ground_optical, axis=-1) < 500.0)
        self._gx = np.where(self._ground, points[..., 0], 0.0)
        self._gy = np.where(self._ground, points[..., 1], 0.0)
        rng = np.random.default_rng(self.seed)
        h, w = self._ground.shape
        self._noise = rng.normal(0, 6, (h, w, 1)).astype(np.float32)
        # Sky: a vertical gradient from light to deeper blue, computed once.
        elevation = np.clip(rays[..., 2] / np.linalg.norm(rays, axis=-1), 0, 1)[..., None]
        self._sky = (np.array([235, 215, 190]) * (1 - elevation) + np.array([200, 140, 70]) * elevation)

    def render(self, t: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """BGR image and ground-truth class map at time ``t`` seconds."""
        gx = self._gx + self.speed * t
        gy = self._gy
        ground = self._ground
        on_road = ground & (np.abs(gy) <= ROAD_HALF_WIDTH)
        lane = np.zeros_like(ground)
        for y in self.lines:
            line = ground & (np.abs(gy - y) <= LINE_WIDTH / 2)
            if self.dashed and abs(y) < 5:
                line &= np.mod(gx, DASH + GAP) < DASH
            lane |= line
        classes = np.where(lane, 2, np.where(on_road, 1, 0)).astype(np.uint8)
        image = np.where(ground[..., None], np.array([70, 130, 60], np.float32), self._sky)
        image = np.where(on_road[..., None], np.array([95, 95, 95], np.float32), image)
        image = np.where(lane[..., None], np.array([235, 235, 235], np.float32), image)
        image = np.clip(image + self._noise, 0, 255).astype(np.uint8)
        if self.vehicles:
            self._draw_vehicles(image, classes, t)
        return image, classes

    def _draw_vehicles(self, image: np.ndarray, classes: np.ndarray, t: float) -> None:
        placed = [(x + v * t, y, length, width, height, color)
                  for (x, y, length, width, height, color), v in zip(VEHICLES, RELATIVE_SPEED)]
        for x, y, length, width, height, color in sorted(placed, key=lambda v: -v[0]):
            if x - length / 2 < 2.0:
                continue
            corners = np.array([[x + dx, y + dy, z] for dx in (-length / 2, length / 2)
                                for dy in (-width / 2, width / 2) for z in (0.0, height)])
            uv, in_front = self.camera.project(corners)
            if not in_front.all():
                continue
            hull = cv2.convexHull(np.round(uv).astype(np.int32))
            cv2.fillConvexPoly(image, hull, color)
            cv2.fillConvexPoly(classes, hull, 0)
            # rear window, for a little structure
            top = uv[:, 1].min()
            rear = uv[[0, 1, 2, 3]]
            x0, x1 = rear[:, 0].min(), rear[:, 0].max()
            y_mid = top + (rear[:, 1].max() - top) * 0.35
            cv2.rectangle(image, (int(x0 + 0.15 * (x1 - x0)), int(top + 0.1 * (y_mid - top) + 2)),
                          (int(x1 - 0.15 * (x1 - x0)), int(y_mid)), (50, 40, 30), -1)
