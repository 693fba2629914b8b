"""Bird's-eye-view occupancy grids by inverse perspective mapping onto the ground plane.

For a camera model and a grid, every cell centre (on z = 0 of the ground frame) is
projected into the image once, through the camera's lens model; a frame then costs one
gather from the class map plus a table lookup. Cells that fall outside the image, behind
the camera or beyond the lens's one-to-one field are unseen (-1).

Values follow nav_msgs/OccupancyGrid: drivable grid 0 = drivable (road or lane marking,
which is painted on the road), 100 = not drivable; lane grid 100 = lane line, 0 = none.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .camera import CameraModel

UNSEEN = -1
FREE, OCCUPIED = 0, 100


@dataclass(frozen=True)
class GridSpec:
    """A grid in the ground frame: x forward over [x_min, x_max), y left over [y_min, y_max).

    Its values are checked where settings are (pipeline.config), not here."""

    resolution: float = 0.10
    x_min: float = 0.0
    x_max: float = 40.0
    y_min: float = -10.0
    y_max: float = 10.0

    @property
    def width(self) -> int:   # cells along x (columns)
        return int(round((self.x_max - self.x_min) / self.resolution))

    @property
    def height(self) -> int:  # cells along y (rows)
        return int(round((self.y_max - self.y_min) / self.resolution))

    def cell_centres(self) -> np.ndarray:
        """[height, width, 3] ground-frame centres; row i is y, column j is x (row-major
        from the origin corner, as OccupancyGrid data)."""
        xs = self.x_min + (np.arange(self.width) + 0.5) * self.resolution
        ys = self.y_min + (np.arange(self.height) + 0.5) * self.resolution
        gx, gy = np.meshgrid(xs, ys)
        return np.stack([gx, gy, np.zeros_like(gx)], axis=-1)


# Cell code: drivable + 2 * lane (0 neither, 1 drivable, 2 lane, 3 lane on the drivable
# area), + 4 where unseen -> occupancy value, as 256-entry tables for cv2.LUT (int8 values
# stored as their bytes). A lane line is painted on the road: drivable.
_UNSEEN_BIT = 4


def _code_table(values: tuple[int, int, int, int]) -> np.ndarray:
    table = np.full(256, UNSEEN, np.int8)
    table[:4] = values
    return table.view(np.uint8)


_DRIVABLE_TABLE = _code_table((OCCUPIED, FREE, FREE, FREE))
_LANE_TABLE = _code_table((FREE, FREE, OCCUPIED, OCCUPIED))


class BevProjector:
    """Drivable and lane masks [H, W] (or a class map) -> drivable and lane grids."""

    def __init__(self, camera: CameraModel, grid: GridSpec):
        self.camera = camera
        self.grid = grid
        centres = grid.cell_centres().reshape(-1, 3)
        uv, in_view = camera.project(centres)
        # bounds on the floats: a far-off or NaN coordinate has no integer to compare
        seen = (in_view & (uv[:, 0] >= 0) & (uv[:, 0] < camera.width) & (uv[:, 1] >= 0)
                & (uv[:, 1] < camera.height))
        pixel = np.where(seen[:, None], np.floor(uv), 0).astype(np.int64)
        self._index = pixel[:, 1] * camera.width + pixel[:, 0]
        shape = (grid.height, grid.width)
        self._unseen = ~seen.reshape(shape)
        self._unseen_bits = np.where(self._unseen, _UNSEEN_BIT, 0).astype(np.uint8)
        self.seen_fraction = float(seen.mean())
        self._codes = np.empty(shape, np.uint8)
        self._lane_codes = np.empty(shape, np.uint8)
        self.drivable = np.empty(shape, np.int8)
        self.lane = np.empty(shape, np.int8)

    def project(self, class_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(drivable, lane) grids of a class map with 0 neither, 1 drivable, 2 lane line (a
        cell code as above); reused by the next call."""
        self._check(class_map)
        np.take(np.ascontiguousarray(class_map).reshape(-1), self._index,
                out=self._codes.reshape(-1))
        np.bitwise_and(self._codes, 3, out=self._codes)
        return self._grids()

    def project_masks(self, drivable: np.ndarray,
                      lane: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Fills and returns (drivable, lane) int8 grids from bool masks of the image (the
        lane mask may overlap the drivable one); reused by the next call."""
        self._check(drivable)
        np.take(np.ascontiguousarray(drivable).reshape(-1).view(np.uint8), self._index,
                out=self._codes.reshape(-1))
        if lane is not None:
            self._check(lane)
            np.take(np.ascontiguousarray(lane).reshape(-1).view(np.uint8), self._index,
                    out=self._lane_codes.reshape(-1))
            np.left_shift(self._lane_codes, 1, out=self._lane_codes)
            np.bitwise_or(self._codes, self._lane_codes, out=self._codes)
        return self._grids()

    def _grids(self) -> tuple[np.ndarray, np.ndarray]:
        # cv2.LUT: numpy's take would first widen the byte codes to 8-byte indices
        np.bitwise_or(self._codes, self._unseen_bits, out=self._codes)
        cv2.LUT(self._codes, _DRIVABLE_TABLE, dst=self.drivable.view(np.uint8))
        cv2.LUT(self._codes, _LANE_TABLE, dst=self.lane.view(np.uint8))
        return self.drivable, self.lane

    def _check(self, image_map: np.ndarray) -> None:
        if image_map.shape != (self.camera.height, self.camera.width):
            raise ValueError(f"mask {image_map.shape[1]}x{image_map.shape[0]} does not match "
                             f"the camera's {self.camera.width}x{self.camera.height}")

    def project_classes(self, class_map: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The grid of ``values[class]`` (int8 [256], see :func:`class_values`) at each cell's
        ground point, -1 where unseen: the class-based drivable grid. Fills and returns
        the drivable buffer, reused by the next call."""
        self._check(class_map)
        np.take(np.ascontiguousarray(class_map).reshape(-1), self._index,
                out=self._codes.reshape(-1))
        cv2.LUT(self._codes, values.view(np.uint8), dst=self.drivable.view(np.uint8))
        np.copyto(self.drivable, UNSEEN, where=self._unseen)
        return self.drivable

    def cell_points(self, cells: np.ndarray, z: float = 0.0) -> np.ndarray:
        """Ground-frame centres [N, 3] float32 of the cells where ``cells`` is true, at
        height ``z`` (an obstacle layer drops points outside its height band)."""
        rows, cols = np.nonzero(cells)
        g = self.grid
        pts = np.zeros((len(rows), 3), np.float32)
        pts[:, 0] = g.x_min + (cols + 0.5) * g.resolution
        pts[:, 1] = g.y_min + (rows + 0.5) * g.resolution
        pts[:, 2] = z
        return pts


def drivable_boundary(drivable: np.ndarray) -> np.ndarray:
    """Non-drivable cells that touch a drivable one (8-neighbourhood), as a bool grid."""
    free = (drivable == FREE).view(np.uint8)
    near_free = cv2.dilate(free, np.ones((3, 3), np.uint8)).view(bool)
    return (drivable == OCCUPIED) & near_free


def class_values(free_ids, occupied_ids) -> np.ndarray:
    """int8 [256] lookup class id -> occupancy: FREE for ``free_ids``, OCCUPIED for
    ``occupied_ids`` (they win where both name a class), UNSEEN for the rest: a class that
    is neither (sky, a traffic sign) hides the ground and says nothing about the cell."""
    values = np.full(256, UNSEEN, np.int8)
    values[np.asarray(free_ids, np.int64)] = FREE
    values[np.asarray(occupied_ids, np.int64)] = OCCUPIED
    return values
