"""Road geometry from segmentation masks: lane lines and the ego lane as ground-frame
polylines, and the drivable area's edges (method and tolerances: docs/road_geometry.md).

Lane lines: the lane mask's connected pieces in the image (a dash, or a line cut by an
occluder, is a piece), each pixel mapped to the ground by a per-camera table (every pixel's
ray met with z = 0, the lens's distortion undone, built once per camera); per piece the
pixels are averaged in 0.5 m slices along x (the marking's centre line, one weight per
slice whatever its pixel count); pieces whose points lie on one another's fit are joined
into a line; each line gets a Huber-weighted polynomial y(x) (degree 2: constant
curvature, less where the line is short). Lines are tracked over frames (ids by lateral
distance to the prediction, moved by the vehicle's motion when given) and their
coefficients smoothed by an alpha-beta filter.

Drivable edges: the drivable mask on a bird's-eye grid (core.bev), the drivable region
around the vehicle's path, its left and right extremes per x-slice, and the distance to the
first non-drivable cell per bearing (a LaserScan's ranges).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .bev import OCCUPIED, UNSEEN, BevProjector, GridSpec
from .camera import CameraModel

_POLY_TERMS = 3  # tracked coefficients: y = c0 + c1 x + c2 x^2
_OUTLIER = 4.0  # points farther from the fit than this many Huber thresholds are outliers


@dataclass
class LaneLine:
    id: int                        # stable over frames (tracked)
    points: np.ndarray             # (N, 2) float32, metres in the ground frame, near -> far
    confidence: float              # 0..1
    range_m: tuple[float, float]   # nearest, farthest x seen
    side: int                      # +1 left of the vehicle, -1 right (sign of y at the nearest point)
    residual_m: float              # RMS lateral residual of the fit
    dashed: bool
    coefficients: np.ndarray | None = None  # (3,) y = c0 + c1 x + c2 x^2 (filtered)


@dataclass
class EgoLane:
    valid: bool = False            # both boundaries seen, width plausible
    left_id: int = -1              # -1: none
    right_id: int = -1
    width_m: float = float("nan")
    center_offset_m: float = float("nan")  # the vehicle's offset from the lane centre, + = left
    heading_rad: float = float("nan")      # the vehicle's heading from the lane's, + = to the left
    curvature_1pm: float = float("nan")    # the lane's curvature at x = 0, + = curving left


@dataclass
class DrivableEdges:
    left: np.ndarray               # (N, 2) float32 polylines, ground frame, near -> far
    right: np.ndarray
    angle_min: float
    angle_increment: float
    range_max: float
    ranges: np.ndarray             # (M,) float32: inf = free to range_max, NaN = not seen


@dataclass
class RoadGeometry:
    lanes: list[LaneLine]          # left to right
    ego: EgoLane
    edges: DrivableEdges | None


@dataclass(frozen=True)
class RoadGeometrySettings:
    x_min: float = 2.0             # ground region used (m): nearer and farther pixels are left out
    x_max: float = 40.0
    y_max: float = 15.0
    min_pixels: int = 20           # a smaller lane piece is noise
    min_length_m: float = 3.0      # so is a line (its pieces joined) seen over less x than this
    min_inliers: float = 0.5       # ... or one whose fit keeps less than this share of its points
    max_pieces: int = 32           # the largest lane pieces are used, at most
    max_lines: int = 8             # lines per frame at most (the most confident)
    slice_m: float = 0.5           # along-x slice of a piece's points
    join_m: float = 0.3            # a piece joins a line when its points lie this close to the line's fit
    join_extent_m: float = 2.0     # ... and the line is this long at least (a blob's fit points anywhere)
    huber_m: float = 0.05          # Huber threshold of the fit's lateral residual
    full_degree_m: float = 10.0    # shorter lines get a straight fit, under 1 m a constant
    sample_m: float = 1.0          # spacing of a line's polyline points
    dash_gap_m: float = 1.5        # gaps (and at least two of them) that make a line dashed
    confident_length_m: float = 15.0  # a line seen this long with no residual has confidence 1
    lane_width_m: tuple[float, float] = (2.0, 5.5)  # a plausible ego lane
    ego_near_m: float = 15.0       # ego lane boundaries must be seen nearer than this
    gate_m: float = 1.0            # tracking: largest mean lateral distance to a track's prediction
    alpha: float = 0.5             # tracking: gain on the coefficients
    beta: float = 0.2              # tracking: gain on the lateral rate
    max_missed: int = 5            # frames a track coasts unseen (confidence halved each)
    edge_resolution: float = 0.1   # drivable edges: bird's-eye grid cell (m)
    edge_step_m: float = 0.5       # spacing of the edge polylines' points
    scan_angle_min: float = -np.pi / 4
    scan_angle_increment: float = np.pi / 360  # 0.5 deg

    def __post_init__(self):
        # a forward-looking camera: the slices are keyed by x >= 0
        if not 0 <= self.x_min < self.x_max:
            raise ValueError(f"road geometry: need 0 <= x_min < x_max (got {self.x_min:g}, "
                             f"{self.x_max:g})")
        if not (self.y_max > 0 and self.slice_m > 0 and self.sample_m > 0
                and self.edge_resolution > 0 and self.scan_angle_increment > 0
                and -np.pi <= self.scan_angle_min < 0):
            raise ValueError("road geometry: y_max, slice_m, sample_m, edge_resolution and "
                             "scan_angle_increment must be positive, scan_angle_min in [-pi, 0)")


@dataclass
class _Line:
    """A line measured in one frame."""
    coef: np.ndarray               # (3,)
    range_m: tuple[float, float]
    residual: float
    share: float                   # of its points' weight that the fit keeps
    dashed: bool
    confidence: float


@dataclass
class _Track:
    id: int
    coef: np.ndarray
    rate: float                    # d c0 / dt (m/s)
    range_m: tuple[float, float]
    residual: float
    dashed: bool
    confidence: float
    missed: int = 0


class _CameraTables:
    """What depends on the camera only: each pixel's ground point, the grid projector and
    the scan's cells."""

    def __init__(self, camera: CameraModel, s: RoadGeometrySettings):
        self.camera = camera
        ground = camera.intersect_ground(camera.pixel_rays())
        x, y = ground[..., 0], ground[..., 1]
        with np.errstate(invalid="ignore"):
            self.valid = (x >= s.x_min) & (x <= s.x_max) & (np.abs(y) <= s.y_max)
        self.xy = np.stack([x, y], -1).astype(np.float32).reshape(-1, 2)
        # the image rows that see the ground region: the lane pieces are labelled there only
        seen_rows = np.flatnonzero(self.valid.any(axis=1))
        self.rows = slice(int(seen_rows[0]), int(seen_rows[-1]) + 1) if seen_rows.size else slice(0, 0)
        self.valid_rows = np.where(self.valid[self.rows], 255, 0).astype(np.uint8)
        # ground x of each image row down the middle column: the rows' spacing, which
        # bounds the gaps that the pixel grid itself leaves between slices far away
        column = x[:, camera.width // 2]
        rows = np.isfinite(column)
        order = np.argsort(column[rows])
        self.row_x = column[rows][order]
        self.row_step = np.abs(np.gradient(self.row_x)) if self.row_x.size > 1 else self.row_x
        grid = GridSpec(s.edge_resolution, 0.0, s.x_max, -s.y_max, s.y_max)
        self.bev = BevProjector(camera, grid)
        self.grid = grid
        xs = grid.x_min + (np.arange(grid.width) + 0.5) * grid.resolution
        ys = grid.y_min + (np.arange(grid.height) + 0.5) * grid.resolution
        self.grid_x, self.grid_y = xs, ys
        every = max(1, int(round(s.edge_step_m / grid.resolution)))
        self.edge_columns = np.arange(every // 2, grid.width, every)
        # scan: per bearing, the grid cells at every resolution step out to x_max (the
        # index past the grid's end reads UNSEEN)
        count = int(round(-2 * s.scan_angle_min / s.scan_angle_increment)) + 1  # symmetric
        self.angles = s.scan_angle_min + np.arange(count) * s.scan_angle_increment
        self.radii = (np.arange(int(s.x_max / grid.resolution)) + 0.5) * grid.resolution
        px = self.radii[None, :] * np.cos(self.angles)[:, None]
        py = self.radii[None, :] * np.sin(self.angles)[:, None]
        col = np.floor((px - grid.x_min) / grid.resolution).astype(np.int64)
        row = np.floor((py - grid.y_min) / grid.resolution).astype(np.int64)
        inside = (col >= 0) & (col < grid.width) & (row >= 0) & (row < grid.height)
        self.scan_cells = np.where(inside, row * grid.width + col, grid.width * grid.height)
        self.scan_buffer = np.empty(grid.width * grid.height + 1, np.int8)
        self.scan_buffer[-1] = UNSEEN

    def gap_allowed(self, x: np.ndarray) -> np.ndarray:
        """Twice the ground spacing of image rows at ``x``: gaps smaller are the pixels'."""
        if self.row_x.size < 2:
            return np.full_like(x, np.inf)
        return 2.0 * np.interp(x, self.row_x, self.row_step)


def _same_camera(a: CameraModel, b: CameraModel) -> bool:
    if a is b:
        return True
    return (a.width == b.width and a.height == b.height
            and a.distortion_model == b.distortion_model
            and all(np.array_equal(u, v) for u, v in ((a.K, b.K), (a.R_ground_optical, b.R_ground_optical),
                                                      (a.t_ground_optical, b.t_ground_optical)))
            and (a.D is None) == (b.D is None) and (a.D is None or np.array_equal(a.D, b.D)))


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, degree: int,
         huber: float) -> tuple[np.ndarray, float, float]:
    """Huber-weighted polynomial y(x) (iteratively reweighted least squares): the
    coefficients in x (3), the weighted RMS residual of the inliers and their share."""
    degree = min(degree, len(x) - 1)
    centre, scale = float(np.mean(x)), max(float(np.ptp(x)) / 2, 1.0)  # conditioning
    A = np.vander((x - centre) / scale, degree + 1, increasing=True)
    robust = np.ones_like(w)
    for _ in range(4):
        root = np.sqrt(w * robust)
        c = np.linalg.lstsq(A * root[:, None], y * root, rcond=None)[0]
        r = y - A @ c
        a = np.abs(r)
        robust = np.where(a <= huber, 1.0, huber / np.maximum(a, 1e-12))
    # y = c0 + c1 t + c2 t^2 with t = (x - m) / s, expanded in x
    c0, c1, c2 = np.pad(c, (0, _POLY_TERMS - c.size))
    m, s = centre, scale
    coef = np.array([c0 - c1 * m / s + c2 * m * m / (s * s), c1 / s - 2 * c2 * m / (s * s),
                     c2 / (s * s)])
    # the residual of the points the fit kept (outliers, e.g. a blob touching the line,
    # count in the confidence as the weight they take away)
    inlier = np.abs(r) <= _OUTLIER * huber
    kept = float(np.sum(w[inlier]))
    rms = float(np.sqrt(np.sum((w * r * r)[inlier]) / kept)) if kept > 0 else float("inf")
    return coef, rms, kept / float(np.sum(w))


def _poly(coef: np.ndarray, x) -> np.ndarray:
    return coef[0] + x * (coef[1] + x * coef[2])


class RoadGeometryEstimator:
    """Lane lines, ego lane and drivable edges of a stream of masks from one camera."""

    def __init__(self, settings: RoadGeometrySettings | None = None):
        self.settings = settings or RoadGeometrySettings()
        self._tables: _CameraTables | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the tracks (a new drive; the camera's tables stay)."""
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._stamp: float | None = None

    def tables(self, camera: CameraModel) -> _CameraTables:
        if self._tables is None or not _same_camera(self._tables.camera, camera):
            self._tables = _CameraTables(camera, self.settings)
        return self._tables

    def update(self, camera: CameraModel, lane_mask: np.ndarray | None,
               drivable_mask: np.ndarray | None, stamp_s: float,
               motion: tuple[float, float, float] | None = None) -> RoadGeometry:
        """``lane_mask``/``drivable_mask``: (H, W) bool or uint8 (non-zero = lane/drivable)
        at the camera's image size, or None; ``motion`` = (dx, dy, dyaw) of the vehicle since
        the previous update, in the previous ground frame (None: the lines move as the filter
        predicts). Raises ValueError for a mask of another size."""
        tables = self.tables(camera)
        for name, mask in (("lane", lane_mask), ("drivable", drivable_mask)):
            if mask is not None and mask.shape[:2] != (camera.height, camera.width):
                raise ValueError(f"{name} mask {mask.shape[1]}x{mask.shape[0]} does not match "
                                 f"the camera's {camera.width}x{camera.height}")
        dt = 0.0 if self._stamp is None else float(stamp_s) - self._stamp
        self._stamp = float(stamp_s)
        measured = self._measure(tables, lane_mask) if lane_mask is not None else []
        lanes = self._track(measured, dt, motion) if lane_mask is not None else []
        edges = self._edges(tables, drivable_mask) if drivable_mask is not None else None
        return RoadGeometry(lanes, self._ego(lanes), edges)

    # lane lines in one frame

    def _measure(self, tables: _CameraTables, lane_mask: np.ndarray) -> list[_Line]:
        s = self.settings
        if tables.rows.stop <= tables.rows.start:  # no image row sees the road within range
            return []
        lanes = np.ascontiguousarray(lane_mask[tables.rows])
        lanes = lanes.view(np.uint8) if lanes.dtype == bool else (
            lanes if lanes.dtype == np.uint8 else (lanes != 0).view(np.uint8))
        lanes = cv2.bitwise_and(lanes, tables.valid_rows)
        # without stats: OpenCV's statistics pass costs ten times the labelling
        _, labels = cv2.connectedComponents(lanes, connectivity=8)
        found = cv2.findNonZero(lanes)
        if found is None:
            return []
        u, v = found.reshape(-1, 2).T
        label = labels[v, u]
        # the largest pieces only: a mask of noise (a failing network) has thousands
        sizes = np.bincount(label)
        sizes[0] = 0
        largest = np.argsort(sizes)[::-1][:s.max_pieces]
        keep = np.zeros(sizes.size, bool)
        keep[largest[sizes[largest] >= s.min_pixels]] = True
        chosen = keep[label]
        label = label[chosen]
        pixels = (v[chosen].astype(np.int64) + tables.rows.start) * tables.camera.width + u[chosen]
        if pixels.size == 0:
            return []
        xy = tables.xy[pixels]
        # slice means per (piece, slice): bincounts over a dense key (no sort)
        slices = int(np.ceil(s.x_max / s.slice_m)) + 1
        key = label * slices + (xy[:, 0] / s.slice_m).astype(np.int64)  # x > 0: floor
        counts = np.bincount(key)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
        mx = np.bincount(key, xy[:, 0])[keys] / counts
        my = np.bincount(key, xy[:, 1])[keys] / counts
        bounds = np.flatnonzero(np.diff(keys // slices)) + 1
        pieces = [(mx[a:b], my[a:b], np.sqrt(counts[a:b].astype(np.float64)))
                  for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(keys)])]
        pieces.sort(key=lambda p: -float(np.sum(p[2] ** 2)))  # most pixels first
        groups: list[list[int]] = []
        fits: list[np.ndarray] = []
        extents: list[float] = []
        for index, (x, y, w) in enumerate(pieces):
            best, best_cost = -1, s.join_m
            for g, coef in enumerate(fits):
                if extents[g] < s.join_extent_m:  # a blob's fit says nothing beyond it
                    continue
                cost = float(np.median(np.abs(y - _poly(coef, x))))
                if cost < best_cost:
                    best, best_cost = g, cost
            if best < 0:
                best = len(groups)
                groups.append([])
                fits.append(None)
                extents.append(0.0)
            groups[best].append(index)
            coef, _, _, gx, _, _ = self._fit_pieces([pieces[i] for i in groups[best]])
            fits[best], extents[best] = coef, float(gx[-1] - gx[0])
        lines = [self._line(tables, [pieces[i] for i in g]) for g in groups]
        lines = [line for line in lines if line.range_m[1] - line.range_m[0] >= s.min_length_m
                 and line.share >= s.min_inliers]
        return sorted(lines, key=lambda line: -line.confidence)[:s.max_lines]

    def _fit_pieces(self, pieces) -> tuple[np.ndarray, float, float, np.ndarray, np.ndarray,
                                           np.ndarray]:
        s = self.settings
        x = np.concatenate([p[0] for p in pieces])
        order = np.argsort(x)
        x = x[order]
        y = np.concatenate([p[1] for p in pieces])[order]
        w = np.concatenate([p[2] for p in pieces])[order]
        extent = float(x[-1] - x[0])
        degree = 2 if extent >= s.full_degree_m else 1 if extent >= 1.0 else 0
        coef, rms, share = _fit(x, y, w, degree, s.huber_m)
        return coef, rms, share, x, y, w

    def _line(self, tables: _CameraTables, pieces) -> _Line:
        s = self.settings
        coef, rms, share, x, _, _ = self._fit_pieces(pieces)
        gaps = np.diff(x)
        at = (x[1:] + x[:-1]) / 2
        real = (gaps > s.dash_gap_m) & (gaps > tables.gap_allowed(at))
        length = float(x[-1] - x[0])
        confidence = min(1.0, length / s.confident_length_m) * share / (1.0 + (rms / s.huber_m) ** 2)
        return _Line(coef, (float(x[0]), float(x[-1])), rms, share, int(np.count_nonzero(real)) >= 2,
                     float(confidence))

    # tracking

    def _track(self, measured: list[_Line], dt: float,
               motion: tuple[float, float, float] | None) -> list[LaneLine]:
        s = self.settings
        for track in self._tracks:
            self._predict(track, dt, motion)
        costs = []
        for m, line in enumerate(measured):
            near, far = line.range_m
            xs = np.linspace(near, far, 8)
            for t, track in enumerate(self._tracks):
                cost = float(np.mean(np.abs(_poly(line.coef, xs) - _poly(track.coef, xs))))
                if cost < s.gate_m:
                    costs.append((cost, m, t))
        costs.sort()
        taken_m, taken_t = set(), set()
        for _, m, t in costs:
            if m in taken_m or t in taken_t:
                continue
            taken_m.add(m)
            taken_t.add(t)
            self._correct(self._tracks[t], measured[m], dt)
        for t, track in enumerate(self._tracks):
            if t not in taken_t:
                track.missed += 1
                track.confidence *= 0.5
        self._tracks = [t for t in self._tracks if t.missed <= s.max_missed]
        for m, line in enumerate(measured):
            if m not in taken_m:
                self._tracks.append(_Track(self._next_id, line.coef.copy(), 0.0, line.range_m,
                                           line.residual, line.dashed, line.confidence))
                self._next_id += 1
        lanes = [self._lane(track) for track in self._tracks]
        reference = [_poly(t.coef, np.clip(10.0, *t.range_m)) for t in self._tracks]
        return [lanes[i] for i in np.argsort(reference)[::-1]]  # left to right

    def _predict(self, track: _Track, dt: float, motion) -> None:
        if motion is not None:
            # the line's points as seen from the vehicle's new pose, refitted
            dx, dy, dyaw = (float(v) for v in motion)
            near, far = track.range_m
            x = np.linspace(near, far, 16)
            px, py = x - dx, _poly(track.coef, x) - dy
            c, s_ = np.cos(dyaw), np.sin(dyaw)
            nx, ny = c * px + s_ * py, -s_ * px + c * py
            degree = 2 if far - near >= 1.0 else 0
            track.coef = np.pad(np.polynomial.polynomial.polyfit(nx, ny, degree),
                                (0, _POLY_TERMS - degree - 1))
            track.range_m = (float(nx.min()), float(nx.max()))
        elif 0 < dt < 1.0:
            track.coef = track.coef.copy()
            track.coef[0] += track.rate * dt

    def _correct(self, track: _Track, line: _Line, dt: float) -> None:
        s = self.settings
        innovation = line.coef - track.coef
        track.coef = track.coef + s.alpha * innovation
        track.rate = track.rate + s.beta * innovation[0] / dt if 0 < dt < 1.0 else 0.0
        track.range_m = line.range_m
        track.residual = line.residual
        track.dashed = line.dashed
        track.confidence = line.confidence
        track.missed = 0

    def _lane(self, track: _Track) -> LaneLine:
        near, far = track.range_m
        x = np.append(np.arange(near, far, self.settings.sample_m), far)
        points = np.column_stack([x, _poly(track.coef, x)]).astype(np.float32)
        return LaneLine(track.id, points, float(track.confidence), (float(near), float(far)),
                        1 if points[0, 1] >= 0 else -1, float(track.residual), track.dashed,
                        track.coef.copy())

    def _ego(self, lanes: list[LaneLine]) -> EgoLane:
        s = self.settings
        near = [lane for lane in lanes if lane.range_m[0] <= s.ego_near_m]
        left = [lane for lane in near if lane.coefficients[0] > 0]
        right = [lane for lane in near if lane.coefficients[0] <= 0]
        left = min(left, key=lambda lane: lane.coefficients[0], default=None)
        right = max(right, key=lambda lane: lane.coefficients[0], default=None)
        sides = [lane for lane in (left, right) if lane is not None]
        if not sides:
            return EgoLane()
        slope = float(np.mean([lane.coefficients[1] for lane in sides]))
        curvature = float(np.mean([2 * lane.coefficients[2] / (1 + lane.coefficients[1] ** 2) ** 1.5
                                   for lane in sides]))
        ego = EgoLane(left_id=left.id if left else -1, right_id=right.id if right else -1,
                      heading_rad=float(-np.arctan(slope)), curvature_1pm=curvature)
        if left is not None and right is not None:
            cos = 1.0 / np.sqrt(1.0 + slope ** 2)  # lateral -> perpendicular to the lane
            ego.width_m = float((left.coefficients[0] - right.coefficients[0]) * cos)
            ego.center_offset_m = float(-(left.coefficients[0] + right.coefficients[0]) / 2 * cos)
            ego.valid = s.lane_width_m[0] <= ego.width_m <= s.lane_width_m[1]
        return ego

    # drivable edges

    def _edges(self, tables: _CameraTables, drivable_mask: np.ndarray) -> DrivableEdges:
        s = self.settings
        grid, _ = tables.bev.project_masks(drivable_mask != 0, None)
        free = (grid == 0).view(np.uint8)
        _, labels = cv2.connectedComponents(free, connectivity=4)
        # the drivable region the vehicle is on: the one with most cells in its path
        band = np.abs(tables.grid_y) <= 1.5
        path = labels[band][:, tables.grid_x <= s.ego_near_m]
        votes = np.bincount(path[path > 0], minlength=1)
        left = right = np.zeros((0, 2), np.float32)
        if votes.size > 1 and votes.max() > 0:
            region = labels == int(np.argmax(votes))
            columns = region[:, tables.edge_columns]
            has = columns.any(axis=0)
            top = grid.shape[0] - 1 - np.argmax(columns[::-1], axis=0)  # leftmost row (y max)
            bottom = np.argmax(columns, axis=0)                         # rightmost row
            x = tables.grid_x[tables.edge_columns]
            left = self._edge(grid, tables, top, top + 1, has, x, +1)
            right = self._edge(grid, tables, bottom, bottom - 1, has, x, -1)
        buffer = tables.scan_buffer
        buffer[:-1] = grid.reshape(-1)
        cells = buffer[tables.scan_cells]
        hit = cells == OCCUPIED
        first = np.argmax(hit, axis=1)
        ranges = np.where(hit.any(axis=1), tables.radii[first] - s.edge_resolution / 2,
                          np.where((cells != UNSEEN).any(axis=1) & (cells[:, -1] != UNSEEN),
                                   np.inf, np.nan)).astype(np.float32)
        return DrivableEdges(left, right, float(tables.angles[0]), s.scan_angle_increment,
                             s.x_max, ranges)

    def _edge(self, grid, tables, row, beyond, has, x, sign) -> np.ndarray:
        """Edge points where the cell beyond the region's extreme is seen and not drivable
        (the view's or the grid's end is not an edge)."""
        inside = (beyond >= 0) & (beyond < grid.shape[0])
        beyond_value = grid[np.clip(beyond, 0, grid.shape[0] - 1), tables.edge_columns]
        ok = has & inside & (beyond_value == OCCUPIED)
        y = tables.grid_y[row] + sign * tables.grid.resolution / 2
        return np.column_stack([x[ok], y[ok]]).astype(np.float32)
